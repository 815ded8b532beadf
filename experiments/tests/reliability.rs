//! A run never computes with a damaged checkpoint, never has two writers, survives a torn
//! log row and a SIGTERM, and fails on bad settings before it starts: each case resumed
//! to the numbers of the straight run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    base_config, dgym, rows_without_time, stderr, stdout, train_args_for, TINY, TINY_FINETUNE,
};
use tempfile::TempDir;

/// A tiny GCD run: 60 DSM steps, 30 GCD iterations, checkpoints every 20 and 10.
fn tiny_gcd() -> Vec<&'static str> {
    TINY.iter().chain(TINY_FINETUNE).copied().collect()
}

fn train_args(out: &Path, sets: &[&str]) -> Vec<String> {
    train_args_for(&base_config(), out, sets)
}

/// A tiny GCD run stopped, as if killed, after `stop_after` steps.
fn stopped_gcd(cwd: &Path, stop_after: u64) -> PathBuf {
    stopped_run(cwd, &tiny_gcd(), stop_after)
}

/// A run of the base config with `sets`, stopped, as if killed, after `stop_after` steps.
fn stopped_run(cwd: &Path, sets: &[&str], stop_after: u64) -> PathBuf {
    let run = cwd.join("run");
    let mut args = train_args(&run, sets);
    args.extend(["--stop-after".into(), stop_after.to_string()]);
    let o = dgym(cwd, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    run
}

fn resume(cwd: &Path, dir: &Path) -> std::process::Output {
    dgym(cwd, &["train", "--resume", dir.to_str().unwrap()])
}

fn straight_run(cwd: &Path, sets: &[&str]) -> PathBuf {
    let dir = cwd.join("straight");
    let o = dgym(cwd, &train_args(&dir, sets));
    assert!(o.status.success(), "{}", stderr(&o));
    dir
}

/// Flips one byte in the tensor data of a safetensors file.
fn flip_a_tensor_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header + (bytes.len() - 8 - header) / 2;
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_checkpoint_is_refused_and_resume_falls_back_to_the_newest_intact_one() {
    let tmp = TempDir::new().unwrap();
    let straight = straight_run(tmp.path(), &tiny_gcd());
    let run = stopped_gcd(tmp.path(), 75);
    let last = run.join("checkpoints/last.safetensors");
    flip_a_tensor_byte(&last);

    // `sample` computes with the newest checkpoint that verifies, and says so.
    let csv = tmp.path().join("samples.csv");
    let o = dgym(
        tmp.path(),
        &[
            "sample",
            run.to_str().unwrap(),
            "--n",
            "10",
            "--out",
            csv.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("checksum mismatch") && err.contains("step_0000070.safetensors"),
        "{err}"
    );
    assert!(err.contains("has not finished"), "{err}");

    // The resume continues from step 70 (not the damaged 75) to the straight run's numbers.
    let o = resume(tmp.path(), &run);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("step_0000070.safetensors"),
        "{}",
        stderr(&o)
    );
    assert_eq!(rows_without_time(&straight), rows_without_time(&run));

    // With every checkpoint damaged nothing is computed.
    for entry in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        flip_a_tensor_byte(&entry.unwrap().path());
    }
    let o = dgym(
        tmp.path(),
        &[
            "sample",
            run.to_str().unwrap(),
            "--n",
            "10",
            "--out",
            csv.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
}

#[test]
fn a_torn_last_row_of_metrics_csv_is_dropped_and_the_resume_matches() {
    let tmp = TempDir::new().unwrap();
    let straight = straight_run(tmp.path(), &tiny_gcd());
    let run = stopped_gcd(tmp.path(), 73);
    // A row cut short by a crash or a full disk: no newline, too few cells.
    let metrics = run.join("metrics.csv");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("74,finetune,0.12");
    std::fs::write(&metrics, text).unwrap();
    let o = resume(tmp.path(), &run);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("cut short"), "{}", stderr(&o));
    assert_eq!(rows_without_time(&straight), rows_without_time(&run));
}

#[test]
fn a_kl_anchored_run_stopped_between_checkpoints_resumes_to_the_straight_numbers() {
    // The anchor (its reference, and the KL it logs) resumes exactly with every agent.
    for agent in ["ppo", "dxdp", "reinforce"] {
        let tmp = TempDir::new().unwrap();
        let agent_set = format!("finetune.agent={agent}");
        let mut sets = tiny_gcd();
        sets.extend([
            "agent.kl_reference=0.5",
            "ppo.minibatch_size=32",
            &agent_set,
        ]);
        let straight = straight_run(tmp.path(), &sets);
        let run = stopped_run(tmp.path(), &sets, 77);
        let o = resume(tmp.path(), &run);
        assert!(o.status.success(), "{agent}: {}", stderr(&o));
        let straight_rows = rows_without_time(&straight);
        assert!(
            straight_rows.iter().any(|r| r
                .values
                .get("policy/kl_reference")
                .is_some_and(|v| *v > 0.0)),
            "{agent}: no positive policy/kl_reference logged"
        );
        assert_eq!(straight_rows, rows_without_time(&run), "{agent}");
    }
}

#[test]
fn a_standardised_selecting_run_stopped_anywhere_resumes_to_the_straight_numbers() {
    // A digits run with splits, standardisation, held-out curves and eval.select = "best",
    // stopped as if killed in pretraining, at the hand-over and between fine-tuning
    // checkpoints: the resumed run logs, selects and evaluates exactly as the straight one.
    let mut sets = tiny_gcd();
    sets.extend([
        "data.dataset=digits",
        "data.validation_fraction=0.15",
        "data.test_fraction=0.15",
        "data.standardize=true",
        "data.min_std=0.1",
        "eval.select=best",
        "eval.eval_every=10",
        "eval.snapshot_samples=100",
    ]);
    for stop_after in [33, 60, 75] {
        let tmp = TempDir::new().unwrap();
        let straight = straight_run(tmp.path(), &sets);
        let run = stopped_run(tmp.path(), &sets, stop_after);
        assert!(
            !run.join("summary.json").exists(),
            "stopped at {stop_after}"
        );
        let o = resume(tmp.path(), &run);
        assert!(o.status.success(), "{stop_after}: {}", stderr(&o));
        assert_eq!(
            rows_without_time(&straight),
            rows_without_time(&run),
            "{stop_after}"
        );
        for file in ["data_stats.json", "selected.json"] {
            assert_eq!(
                std::fs::read_to_string(straight.join(file)).unwrap(),
                std::fs::read_to_string(run.join(file)).unwrap(),
                "{stop_after}: {file}"
            );
        }
        let summary = |dir: &Path| -> serde_json::Value {
            let mut s: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                    .unwrap();
            for key in ["eval", "eval_last", "eval_start", "selection"] {
                assert!(s.get(key).is_some(), "{stop_after}: summary lacks {key}");
            }
            s.as_object_mut()
                .unwrap()
                .retain(|k, _| k.starts_with("eval") || k == "selection");
            s
        };
        assert_eq!(summary(&straight), summary(&run), "{stop_after}");
    }
}

/// Waits until `path` exists with content (or panics after a minute).
fn wait_for(path: &Path, what: &str) {
    let started = Instant::now();
    while !std::fs::read_to_string(path).is_ok_and(|t| t.lines().count() > 2) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A DSM run long enough to be signalled mid-way (thousands of steps of a tiny network).
const LONG_DSM: &[&str] = &[
    "pretrain.iterations=30000",
    "policy.hidden=16",
    "policy.depth=1",
    "eval.n_samples=200",
    "eval.swd_directions=50",
    "eval.eval_every=0",
    "pretrain.log_every=100",
    "pretrain.checkpoint_every=5000",
    "run.quiet=true",
];

#[test]
fn a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_releases_the_run() {
    let tmp = TempDir::new().unwrap();
    let run = tmp.path().join("run");
    let mut sets = LONG_DSM.to_vec();
    sets.push("pretrain.checkpoint_every=100");
    let mut first = Command::new(env!("CARGO_BIN_EXE_dgym"))
        .args(train_args(&run, &sets))
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&run.join("metrics.csv"), "metrics.csv");
    let o = resume(tmp.path(), &run);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        still_running,
        "the first run ended before the second started"
    );
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("in use by another process") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // SIGKILL released the lock: a resume now runs (briefly, to keep the test short).
    let o = dgym(
        tmp.path(),
        &[
            "train",
            "--resume",
            run.to_str().unwrap(),
            "--stop-after",
            "10",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn sigterm_checkpoints_between_iterations_and_the_resume_matches_the_straight_run() {
    let tmp = TempDir::new().unwrap();
    let run = tmp.path().join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_dgym"))
        .args(train_args(&run, LONG_DSM))
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&run.join("metrics.csv"), "metrics.csv");
    // SAFETY: `kill` with a live child's pid and a valid signal number has no memory
    // effects in this process.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(128 + 15), "{}", stderr(&o));
    assert!(stdout(&o).contains("interrupted"), "{}", stdout(&o));
    assert!(!run.join("summary.json").exists());
    let o = resume(tmp.path(), &run);
    assert!(o.status.success(), "{}", stderr(&o));
    let straight = straight_run(tmp.path(), LONG_DSM);
    assert_eq!(rows_without_time(&straight), rows_without_time(&run));
}

#[test]
fn settings_that_only_fine_tuning_or_the_end_of_a_run_use_fail_before_any_work() {
    let tmp = TempDir::new().unwrap();
    for (set, key) in [
        ("reward.hidden=0", "reward.hidden"),
        ("value_baseline.hidden=0", "value_baseline.hidden"),
        ("reward.held_out=0", "reward.held_out"),
        ("agent.grad_clip=-1", "agent.grad_clip"),
        ("pretrain.grad_clip=nan", "pretrain.grad_clip"),
        ("agent.lr=0", "agent.lr"),
        ("reward.lr=0", "reward.lr"),
        ("value_baseline.steps=0", "value_baseline.steps"),
        ("eval.swd_directions=0", "eval.swd_directions"),
    ] {
        let run = tmp.path().join("never");
        let mut sets = tiny_gcd();
        sets.push(set);
        let o = dgym(tmp.path(), &train_args(&run, &sets));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{set}: {err}");
        assert!(
            err.contains(key) && !err.contains("panicked"),
            "{set}: {err}"
        );
        assert!(
            !run.exists(),
            "{set}: a failed start left {}",
            run.display()
        );
    }
}

#[test]
fn a_damaged_run_json_is_kept_aside_not_overwritten() {
    let tmp = TempDir::new().unwrap();
    let run = stopped_gcd(tmp.path(), 30);
    std::fs::write(run.join("run.json"), "{ not json").unwrap();
    let o = resume(tmp.path(), &run);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(run.join("run.json.damaged")).unwrap(),
        "{ not json"
    );
    assert!(stderr(&o).contains("run.json.damaged"), "{}", stderr(&o));
}

/// SIGKILLs a run at `kills` points, resuming after each, then lets it finish; its metrics
/// must equal the straight run's.
///
/// The kill points are progress, not time: kill k waits until `metrics.csv` has reached a
/// line count drawn uniformly over the straight run's (sorted, from a printed seed, so that
/// a failure replays with `DGYM_FAULT_SEED`), then kills 0-7 ms later. Fixed delays were
/// machine-dependent: CI's faster cores finished the run after 8 of 20 kills (stop 28),
/// and delays scaled to the wall time landed in the end-of-run evaluation, after every
/// metrics line, since that is where the time of a tiny run goes.
fn kill_9_repeatedly_then_compare(config: &str, sets: &[&str], kills: usize) {
    let seed: u64 = std::env::var("DGYM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    println!("fault seed {seed} (replay with DGYM_FAULT_SEED={seed})");
    let mut state = seed | 1;
    let mut next_random = || {
        // xorshift64*: a reproducible stream.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let tmp = TempDir::new().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(config);
    let args = |out: &Path| train_args_for(&config, out, sets);
    let straight = tmp.path().join("straight");
    let o = dgym(tmp.path(), &args(&straight));
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = |dir: &Path| {
        std::fs::read_to_string(dir.join("metrics.csv")).map_or(0, |s| s.lines().count() as u64)
    };
    let total_lines = lines(&straight);
    let mut targets: Vec<u64> = (0..kills)
        .map(|_| 2 + next_random() % (total_lines - 1))
        .collect();
    targets.sort_unstable();
    println!("kill points (metrics lines of {total_lines}): {targets:?}");

    let run = tmp.path().join("killed");
    // A resumed run first cuts metrics.csv back to its checkpoint: a kill point counts only
    // once the process now running has written the file.
    let written_since = |since: std::time::SystemTime| {
        std::fs::metadata(run.join("metrics.csv"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > since)
    };
    let mut spawned = std::time::SystemTime::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgym"))
        .args(args(&run))
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first kill once a checkpoint exists (before it there is nothing to resume).
    let started = Instant::now();
    while !run.join("checkpoints/last.safetensors").exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut landed = 0;
    for target in targets {
        let waiting = Instant::now();
        while (lines(&run) < target || !written_since(spawned))
            && child.try_wait().unwrap().is_none()
        {
            assert!(
                waiting.elapsed() < Duration::from_secs(60),
                "seed {seed}: no progress to line {target}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(next_random() % 8));
        if child.try_wait().unwrap().is_none() {
            landed += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if run.join("summary.json").exists() {
            break;
        }
        spawned = std::time::SystemTime::now();
        child = Command::new(env!("CARGO_BIN_EXE_dgym"))
            .args(["train", "--resume", run.to_str().unwrap()])
            .current_dir(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    }
    let status = child.wait().unwrap();
    if !run.join("summary.json").exists() {
        let o = resume(tmp.path(), &run);
        assert!(o.status.success(), "seed {seed}: {} / {status}", stderr(&o));
    }
    println!("seed {seed}: {landed} of {kills} kills landed mid-run");
    assert!(
        landed >= kills / 2,
        "seed {seed}: only {landed} kills landed mid-run"
    );
    assert_eq!(
        rows_without_time(&straight),
        rows_without_time(&run),
        "seed {seed}"
    );
}

#[test]
fn a_gcd_run_killed_at_twenty_points_resumes_to_the_straight_numbers() {
    let mut sets = tiny_gcd();
    sets.extend(["pretrain.iterations=2000", "finetune.iterations=600"]);
    kill_9_repeatedly_then_compare("configs/ddpm-8gaussians.toml", &sets, 20);
}

#[test]
fn a_ddaebm_run_killed_at_twenty_points_resumes_to_the_straight_numbers() {
    let sets = [
        "ddaebm.iterations=2000",
        "ddaebm.batch_size=32",
        "ddaebm.hidden=16",
        "ddaebm.depth=1",
        "ddaebm.log_every=5",
        "ddaebm.checkpoint_every=10",
        "eval.n_samples=200",
        "eval.swd_directions=50",
        "eval.eval_every=50",
        "eval.snapshot_samples=100",
        "reward.grid_size=32",
        "reward.held_out=300",
        "run.quiet=true",
    ];
    kill_9_repeatedly_then_compare("configs/ddaebm-25gaussians.toml", &sets, 20);
}

#[test]
fn messages_name_the_override_the_file_and_the_field_without_debug_dumps() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    // A value from --set that validation refuses is blamed on the --set.
    let o = dgym(
        dir,
        &[
            "config",
            base_config().to_str().unwrap(),
            "--set",
            "policy.depth=0",
        ],
    );
    assert!(
        stderr(&o).contains("--set policy.depth=0"),
        "{}",
        stderr(&o)
    );
    // A non-UTF-8 CSV cell: the line and the field, not a Debug struct.
    let csv = dir.join("bad.csv");
    std::fs::write(&csv, b"a,b\n1,\xff\xfe\n").unwrap();
    let path = format!("data.path={}", csv.display());
    let o = dgym(
        dir,
        &train_args(&dir.join("r"), &["data.dataset=csv", path.as_str()]),
    );
    let err = stderr(&o);
    assert!(err.contains("line 2") && err.contains("field 2"), "{err}");
    assert!(!err.contains("Utf8 {"), "{err}");
    // `dgym compare` on an eval.json that is not an object of metrics.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("eval.json"), "[]").unwrap();
    let o = dgym(dir, &["compare", run.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("expected a JSON object"),
        "{}",
        stderr(&o)
    );
    // --jobs 0 is refused with --dry-run too.
    let sweep = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps/steps.toml");
    let o = dgym(
        dir,
        &["sweep", sweep.to_str().unwrap(), "--jobs", "0", "--dry-run"],
    );
    assert!(
        stderr(&o).contains("--jobs must be at least 1"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_config_edited_below_the_checkpoint_is_an_error_not_a_silent_finish() {
    let tmp = TempDir::new().unwrap();
    let run = stopped_gcd(tmp.path(), 80);
    let config = run.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let edited = text.replace("iterations = 30", "iterations = 5");
    assert_ne!(
        text, edited,
        "finetune.iterations = 30 is in the resolved config"
    );
    std::fs::write(&config, edited).unwrap();
    let o = resume(tmp.path(), &run);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("past its 5 iterations"),
        "{}",
        stderr(&o)
    );
    assert!(!run.join("summary.json").exists());
}

/// A disk that fills at the `n`-th write to a file named like `name` (the write-fault
/// hook, `DGYM_FAIL_WRITE`): the run stops with an error naming the file and the cause,
/// no panic, and a resume on a disk with room ends at the straight run's numbers.
fn full_disk_at(name: &str, writes: &[u64]) {
    let tmp = TempDir::new().unwrap();
    let straight = straight_run(tmp.path(), &tiny_gcd());
    for &n in writes {
        let run = tmp.path().join(format!("full-{name}-{n}"));
        let o = Command::new(env!("CARGO_BIN_EXE_dgym"))
            .args(train_args(&run, &tiny_gcd()))
            .env(denoise_gym::io::FAULT_HOOK, format!("{name}:{n}"))
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}:{n}: {err}");
        assert!(
            err.contains("No space left on device")
                && err.contains(name)
                && !err.contains("panicked"),
            "{name}:{n}: {err}"
        );
        if !run.join("checkpoints/last.safetensors").exists() {
            // Full before the first checkpoint: nothing to resume, start again.
            std::fs::remove_dir_all(&run).unwrap();
            let o = dgym(tmp.path(), &train_args(&run, &tiny_gcd()));
            assert!(o.status.success(), "{}", stderr(&o));
        } else {
            let o = resume(tmp.path(), &run);
            assert!(o.status.success(), "{name}:{n}: {}", stderr(&o));
        }
        assert_eq!(
            rows_without_time(&straight),
            rows_without_time(&run),
            "{name}:{n}"
        );
    }
}

#[test]
fn a_full_disk_at_metrics_csv_stops_the_run_cleanly_and_the_resume_matches() {
    full_disk_at("metrics.csv", &[3, 12, 19]);
}

#[test]
fn a_full_disk_at_the_event_file_stops_the_run_cleanly_and_the_resume_matches() {
    full_disk_at("tfevents", &[4, 13, 20]);
}

#[test]
fn a_full_disk_at_a_checkpoint_stops_the_run_cleanly_and_the_resume_matches() {
    full_disk_at("last.safetensors", &[2, 5, 8]);
    full_disk_at("step_", &[3, 6]);
}

#[test]
fn a_metrics_csv_missing_rows_before_its_checkpoint_is_an_error_not_a_gap() {
    let tmp = TempDir::new().unwrap();
    let run = stopped_gcd(tmp.path(), 75);
    let metrics = run.join("metrics.csv");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(3);
    std::fs::write(&metrics, lines.join("\n") + "\n").unwrap();
    let o = resume(tmp.path(), &run);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("rows are missing"), "{}", stderr(&o));
}
