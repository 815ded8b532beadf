//! Runs a sweep's runs as child `dgym` processes, at most `--jobs` at once, resumably.

use crate::catalog::Catalog;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::dir::{
    check_dir, default_sweep_dir, prepare_dir, read_json_object, run_state, write_atomic, RunState,
    BASE_FILE, ERROR_FILE, LOG_DIR,
};
use super::plan::{load_plan, PlannedRun, Shard};

/// Options of `dgym sweep`.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The sweep directory (default [`default_sweep_dir`]).
    pub out: Option<PathBuf>,
    /// Runs at once.
    pub jobs: usize,
    /// Only this slice of the runs.
    pub shard: Option<Shard>,
    /// Print the runs, run nothing.
    pub dry_run: bool,
}

/// The `dgym` binary that runs each run (`std::env::current_exe()` from the CLI).
#[derive(Debug, Clone)]
pub struct Runner {
    /// Path of the `dgym` executable.
    pub exe: PathBuf,
    /// `RAYON_NUM_THREADS` for every run (`None`: the runs inherit the sweep's
    /// environment); see [`threads_per_run`].
    pub threads_per_run: Option<usize>,
}

/// The threads each of `jobs` concurrent runs gets: the cores divided among them, when
/// more than one run at once shares the machine and `RAYON_NUM_THREADS` is not set already.
/// A run's fused kernels split every network pass over its threads, with a helper thread
/// that spins between passes; two runs each splitting over all cores would take turns on
/// them instead. Runs resumed with the same `--jobs` keep their thread count (the row
/// blocks, and so the numbers, depend on it).
pub fn threads_per_run(jobs: usize) -> Option<usize> {
    if jobs <= 1 || std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / jobs).max(1))
}

/// What a sweep invocation did.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    /// Runs finished by this invocation.
    pub finished: usize,
    /// Runs already finished before.
    pub skipped: usize,
    /// Runs that failed (names).
    pub failed: Vec<String>,
    /// Whether `dgym aggregate` ran at the end.
    pub aggregated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Stage {
    Train,
    Eval,
}

pub(super) struct Active {
    run: usize,
    stage: Stage,
    child: Child,
    log: PathBuf,
    log_start: u64,
    command: String,
    started: Instant,
    train_s: f64,
}

pub(super) enum Outcome {
    Pending,
    Done,
    Failed,
}

/// Runs `dgym <args>` with its output appended to `log`; the child dies with the sweep.
pub(super) fn spawn(runner: &Runner, args: &[String], log: &Path) -> Result<(Child, u64)> {
    let exe = &runner.exe;
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let start = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file));
    if let Some(threads) = runner.threads_per_run {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe, and nothing else runs between fork and exec.
        // The children are spawned from the main thread, which lives as long as the
        // sweep, so PDEATHSIG fires exactly when the sweep process dies (SIGKILL
        // included): a restarted sweep never finds a stray child writing into a run.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok((child, start))
}

/// The text a child wrote to its log since `start`.
pub(super) fn log_since(log: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let _ = file.read_to_string(&mut text);
        }
    }
    text
}

/// The most telling line of a failed child's output: its `error:` line, else the last.
pub(super) fn error_line(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("error:"))
        .or_else(|| output.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

pub(super) fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("exit status {}", status.code().unwrap_or(-1))
}

/// `dgym sweep`: runs (or, with `dry_run`, lists) the runs of a sweep file.
pub fn run_sweep(
    sweep_file: &Path,
    options: &SweepOptions,
    runner: &Runner,
    catalog: &Catalog,
) -> Result<SweepReport> {
    if options.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let plan = load_plan(sweep_file, catalog)?;
    let dir = options
        .out
        .clone()
        .unwrap_or_else(|| default_sweep_dir(sweep_file));
    let runs = plan.shard_runs(options.shard);
    let shard_note = options.shard.map_or_else(String::new, |s| {
        format!(", shard {}/{}: {} runs", s.index, s.count, runs.len())
    });
    let header = format!(
        "{} runs ({} grid points × {} seeds, {} groups){shard_note} in {}",
        plan.runs.len(),
        plan.runs.len() / plan.seeds.len(),
        plan.seeds.len(),
        plan.n_groups(),
        dir.display()
    );
    if options.dry_run {
        check_dir(&dir, &plan)?;
        println!("{header}");
        for run in &runs {
            let state = match run_state(&dir.join(&run.name)) {
                RunState::Done => "done",
                RunState::NeedsEval => "trained, eval pending",
                RunState::Partial => "partial: resumes",
                RunState::New if dir.join(&run.name).join(ERROR_FILE).exists() => "failed: retries",
                RunState::New => "new",
            };
            let from = run
                .init_from
                .as_ref()
                .map_or_else(String::new, |s| format!("  init_from {s}"));
            let sets: Vec<&str> = run.overrides.iter().map(String::as_str).collect();
            println!(
                "  {:<40} [{state}]  --set {}{from}",
                run.name,
                sets.join(" --set ")
            );
        }
        println!("{} runs", runs.len());
        return Ok(SweepReport::default());
    }
    if runs.is_empty() {
        // Right for a job array with more tasks than the sweep has groups; said, not silent.
        println!("{header}: this shard has no runs, nothing to do");
        return Ok(SweepReport::default());
    }
    prepare_dir(&dir, &plan, sweep_file)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    println!("{header}");

    let index: BTreeMap<&str, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut outcome: Vec<Outcome> = runs.iter().map(|_| Outcome::Pending).collect();
    let mut report = SweepReport::default();
    for (i, run) in runs.iter().enumerate() {
        if run_state(&dir.join(&run.name)) == RunState::Done {
            outcome[i] = Outcome::Done;
            report.skipped += 1;
        }
    }
    if report.skipped > 0 {
        println!("{} runs finished earlier: skipped", report.skipped);
    }
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} runs [{elapsed_precise}] {msg}",
        )
        .map_err(|e| anyhow!("progress template: {e}"))?,
    );
    bar.set_position(report.skipped as u64);
    let mut active: Vec<Active> = Vec::new();
    let total = runs.len();
    let mut completed = report.skipped;
    loop {
        // Start what is ready, in plan order.
        while active.len() < options.jobs {
            let next = (0..runs.len()).find(|&i| {
                matches!(outcome[i], Outcome::Pending)
                    && !active.iter().any(|a| a.run == i)
                    && runs[i].init_from.as_ref().is_none_or(|s| {
                        index
                            .get(s.as_str())
                            .is_none_or(|&j| matches!(outcome[j], Outcome::Done))
                    })
            });
            let Some(i) = next else { break };
            let run = runs[i];
            match start_run(&dir, run, runner) {
                Ok(Some(a)) => active.push(Active { run: i, ..a }),
                Ok(None) => {
                    // Finished meanwhile by another invocation on the same directory.
                    outcome[i] = Outcome::Done;
                    completed += 1;
                    report.skipped += 1;
                    bar.set_position(completed as u64);
                }
                Err(error) => {
                    record_failure(&dir, run, "", &format!("{error:#}"));
                    outcome[i] = Outcome::Failed;
                    completed += 1;
                    report.failed.push(run.name.clone());
                    bar.suspend(|| {
                        println!("[{completed}/{total}] FAILED {}: {error:#}", run.name)
                    });
                    bar.set_position(completed as u64);
                }
            }
        }
        // Runs whose source failed cannot start.
        for i in 0..runs.len() {
            if !matches!(outcome[i], Outcome::Pending) {
                continue;
            }
            if let Some(&j) = runs[i]
                .init_from
                .as_ref()
                .and_then(|s| index.get(s.as_str()))
            {
                if matches!(outcome[j], Outcome::Failed) {
                    let message = format!("its init_from run {} failed", runs[j].name);
                    record_failure(&dir, runs[i], "", &message);
                    outcome[i] = Outcome::Failed;
                    completed += 1;
                    report.failed.push(runs[i].name.clone());
                    bar.suspend(|| {
                        println!("[{completed}/{total}] FAILED {}: {message}", runs[i].name)
                    });
                    bar.set_position(completed as u64);
                }
            }
        }
        if active.is_empty() {
            break;
        }
        let names: Vec<&str> = active.iter().map(|a| runs[a.run].name.as_str()).collect();
        bar.set_message(names.join("  "));
        std::thread::sleep(Duration::from_millis(50));
        let mut k = 0;
        while k < active.len() {
            let status = match active[k].child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => {
                    k += 1;
                    continue;
                }
                Err(e) => bail!("waiting for {}: {e}", runs[active[k].run].name),
            };
            let a = active.remove(k);
            let run = runs[a.run];
            if !status.success() {
                let output = log_since(&a.log, a.log_start);
                let message = format!("{}: {}", describe_status(status), error_line(&output));
                record_failure(&dir, run, &a.command, &format!("{message}\n\n{output}"));
                outcome[a.run] = Outcome::Failed;
                completed += 1;
                report.failed.push(run.name.clone());
                bar.suspend(|| {
                    println!(
                        "[{completed}/{total}] FAILED {} ({} failed, {message}; see {})",
                        run.name,
                        if a.stage == Stage::Train {
                            "train"
                        } else {
                            "eval"
                        },
                        dir.join(&run.name).join(ERROR_FILE).display()
                    )
                });
                bar.set_position(completed as u64);
                continue;
            }
            match a.stage {
                Stage::Train => {
                    let train_s = a.started.elapsed().as_secs_f64();
                    match spawn_eval(&dir, run, runner) {
                        Ok(mut next) => {
                            next.run = a.run;
                            next.train_s = train_s;
                            active.insert(k, next);
                            k += 1;
                        }
                        Err(error) => {
                            record_failure(&dir, run, "", &format!("{error:#}"));
                            outcome[a.run] = Outcome::Failed;
                            completed += 1;
                            report.failed.push(run.name.clone());
                            bar.suspend(|| {
                                println!("[{completed}/{total}] FAILED {}: {error:#}", run.name)
                            });
                            bar.set_position(completed as u64);
                        }
                    }
                }
                Stage::Eval => {
                    outcome[a.run] = Outcome::Done;
                    completed += 1;
                    report.finished += 1;
                    let eval_s = a.started.elapsed().as_secs_f64();
                    let figures = read_json_object(&dir.join(&run.name).join("eval.json"))
                        .map(|e| {
                            plan.metrics
                                .iter()
                                .filter_map(|m| e[m].as_f64().map(|v| format!("{m} {v:.4}")))
                                .collect::<Vec<_>>()
                                .join("  ")
                        })
                        .unwrap_or_default();
                    bar.suspend(|| {
                        println!(
                            "[{completed}/{total}] done {}  (train {:.1} s, eval {eval_s:.1} s)  {figures}",
                            run.name, a.train_s
                        )
                    });
                    bar.set_position(completed as u64);
                }
            }
        }
    }
    bar.finish_and_clear();
    let all_complete = plan.runs.iter().all(|r| {
        let d = dir.join(&r.name);
        run_state(&d) == RunState::Done || d.join(ERROR_FILE).exists()
    });
    if options.shard.is_none() || all_complete {
        // The runs are what matters: a table that cannot be written is reported, and
        // `dgym aggregate` can be run again by hand.
        match crate::commands::aggregate::aggregate(
            &dir,
            &crate::commands::aggregate::AggregateOptions::default(),
        ) {
            Ok(written) => {
                println!("aggregate: {}", written.markdown_path.display());
                report.aggregated = true;
            }
            Err(error) => eprintln!(
                "warning: dgym aggregate {} failed: {error:#}",
                dir.display()
            ),
        }
    }
    println!(
        "{} runs finished now, {} earlier, {} failed",
        report.finished,
        report.skipped,
        report.failed.len()
    );
    Ok(report)
}

/// Starts the next stage of a run: `train` (new or `--resume`) or `eval`.
pub(super) fn start_run(dir: &Path, run: &PlannedRun, runner: &Runner) -> Result<Option<Active>> {
    let run_dir = dir.join(&run.name);
    let _ = std::fs::remove_file(run_dir.join(ERROR_FILE));
    let args: Vec<String> = match run_state(&run_dir) {
        RunState::Done => return Ok(None),
        RunState::NeedsEval => return spawn_eval(dir, run, runner).map(Some),
        RunState::Partial => vec![
            "train".into(),
            "--resume".into(),
            run_dir.display().to_string(),
        ],
        RunState::New => {
            if run_dir.exists() {
                // Killed before its first checkpoint: nothing to keep, and `train`
                // wants an empty directory.
                std::fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("clearing {}", run_dir.display()))?;
            }
            let mut args = vec![
                "train".to_string(),
                dir.join(BASE_FILE).display().to_string(),
                "--out".into(),
                run_dir.display().to_string(),
            ];
            let mut sets = run.overrides.clone();
            sets.push("run.quiet=true".into());
            if let Some(source) = &run.init_from {
                let path = dir.join(source).display().to_string();
                sets.push(format!("finetune.init_from={}", toml::Value::String(path)));
            }
            for set in sets {
                args.push("--set".into());
                args.push(set);
            }
            args
        }
    };
    let log = log_path(dir, run);
    let (child, log_start) = spawn(runner, &args, &log)?;
    Ok(Some(Active {
        run: 0,
        stage: Stage::Train,
        child,
        log,
        log_start,
        command: format!("dgym {}", args.join(" ")),
        started: Instant::now(),
        train_s: 0.0,
    }))
}

pub(super) fn spawn_eval(dir: &Path, run: &PlannedRun, runner: &Runner) -> Result<Active> {
    let args = vec![
        "eval".to_string(),
        dir.join(&run.name).display().to_string(),
    ];
    let log = log_path(dir, run);
    let (child, log_start) = spawn(runner, &args, &log)?;
    Ok(Active {
        run: 0,
        stage: Stage::Eval,
        child,
        log,
        log_start,
        command: format!("dgym {}", args.join(" ")),
        started: Instant::now(),
        train_s: 0.0,
    })
}

pub(super) fn log_path(dir: &Path, run: &PlannedRun) -> PathBuf {
    dir.join(LOG_DIR)
        .join(&run.point)
        .join(format!("seed={}.log", run.seed))
}

/// Writes `error.txt` into the run directory (created if the run never started).
pub(super) fn record_failure(dir: &Path, run: &PlannedRun, command: &str, message: &str) {
    let run_dir = dir.join(&run.name);
    let _ = std::fs::create_dir_all(&run_dir);
    let text = if command.is_empty() {
        format!("{message}\n")
    } else {
        format!("command: {command}\n{message}\n")
    };
    let _ = write_atomic(&run_dir.join(ERROR_FILE), &text);
}

// ---------------------------------------------------------------------------------------
// Slurm
// ---------------------------------------------------------------------------------------

/// Quotes a string for a POSIX shell.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub(super) fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}
