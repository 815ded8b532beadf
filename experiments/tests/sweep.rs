//! End-to-end tests of `dgym sweep` and `dgym aggregate`: a sweep killed with SIGKILL and
//! restarted, shards, `init_from` siblings, failed runs, bad sweep files, and the
//! statistics of the tables.
//!
//! Every run is tiny (a 16-wide, 1-layer network, a few dozen DSM steps) so that the
//! file takes seconds.

mod common;

use common::{dgym, stderr, stdout};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use denoise_gym_experiments::commands::aggregate::{seed_stats, t_quantile_975};
use denoise_gym_experiments::commands::sweep::read_json_object;
use tempfile::TempDir;

/// The shipped config the tiny sweeps start from.
fn ddpm_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ddpm-8gaussians.toml")
}

/// A `[set]` table that makes each run take well under a second.
const TINY_SET: &str = r#"
[set]
"policy.hidden" = 16
"policy.depth" = 1
"pretrain.iterations" = 40
"pretrain.checkpoint_every" = 20
"eval.n_samples" = 100
"eval.swd_directions" = 20
"eval.eval_every" = 0
"#;

/// Extra `[set]` lines for tiny fine-tuning runs.
const TINY_FINETUNE: &str = r#"
"finetune.batch_size" = 32
"finetune.checkpoint_every" = 5
"reward.hidden" = 16
"reward.depth" = 1
"reward.grid_size" = 32
"reward.held_out" = 100
"value_baseline.hidden" = 16
"value_baseline.depth" = 1
"#;

/// `dgym sweep FILE --out OUT EXTRA...` in `cwd`.
fn sweep(cwd: &Path, file: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    dgym(cwd, &args)
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "dgym failed:\nstdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// Asserts a clean failure (exit 1, `error: ` first, no panic) mentioning every needle.
fn assert_fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit 1:\nstdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert!(!err.contains("panicked"), "dgym panicked:\n{err}");
    assert!(err.contains("error: "), "no `error: ` in stderr:\n{err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr should mention {needle:?}:\n{err}"
        );
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A sweep file on the ddpm config with the tiny settings and `rest` (grid, zip, ...).
fn sweep_file(dir: &Path, name: &str, extra_set: &str, rest: &str) -> PathBuf {
    let path = dir.join(name);
    write(
        &path,
        &format!(
            "base = {:?}\n{rest}\n{TINY_SET}{extra_set}",
            ddpm_config().display().to_string()
        ),
    );
    path
}

fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Run directories (`<point>/seed=S`) under a sweep directory, as relative names.
fn run_dirs(sweep_dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for point in std::fs::read_dir(sweep_dir).unwrap().flatten() {
        let name = point.file_name().to_string_lossy().to_string();
        if !point.path().is_dir() || name == "logs" {
            continue;
        }
        for seed in std::fs::read_dir(point.path()).unwrap().flatten() {
            out.insert(format!("{name}/{}", seed.file_name().to_string_lossy()));
        }
    }
    out
}

fn invocations(run: &Path) -> Vec<serde_json::Value> {
    read_json(&run.join("run.json"))["invocations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The runs a `--dry-run` lists (with their init_from source, if any).
fn dry_run_list(cwd: &Path, args: &[&str]) -> Vec<(String, Option<String>)> {
    let o = dgym(cwd, args);
    assert_ok(&o);
    stdout(&o)
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap().to_string();
            let from = l.split("init_from ").nth(1).map(|s| s.trim().to_string());
            (name, from)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------

#[test]
fn a_killed_sweep_restarts_without_redoing_or_losing_runs() {
    let tmp = TempDir::new().unwrap();
    // Two short runs finish first; the two long ones are then mid-run when the sweep is
    // killed.
    let file = sweep_file(
        tmp.path(),
        "kill.toml",
        "",
        "seeds = [0, 1]\n[grid]\n\"pretrain.iterations\" = { name = \"steps\", values = [40, 2000] }\n",
    );
    let out = tmp.path().join("out");
    let args = [
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_dgym"))
        .args(args)
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let long = ["steps=2000/seed=0", "steps=2000/seed=1"];
    let short = ["steps=40/seed=0", "steps=40/seed=1"];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let partial = long.iter().any(|r| {
            let d = out.join(r);
            d.join("checkpoints/last.safetensors").exists() && !d.join("summary.json").exists()
        });
        let done = short.iter().any(|r| out.join(r).join("eval.json").exists());
        if partial && done {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep finished before it could be killed mid-run"
        );
        assert!(Instant::now() < deadline, "no run started within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The children die with the sweep: a partial run's checkpoint stops changing.
    std::thread::sleep(Duration::from_millis(300));
    let partial: Vec<&str> = long
        .iter()
        .copied()
        .filter(|r| {
            out.join(r).join("checkpoints/last.safetensors").exists()
                && !out.join(r).join("summary.json").exists()
        })
        .collect();
    assert!(!partial.is_empty());
    let before: Vec<SystemTime> = partial
        .iter()
        .map(|r| mtime(&out.join(r).join("checkpoints/last.safetensors")))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    for (r, t) in partial.iter().zip(&before) {
        assert_eq!(
            mtime(&out.join(r).join("checkpoints/last.safetensors")),
            *t,
            "{r} is still being written after the sweep was killed"
        );
    }
    let finished: Vec<(&str, SystemTime)> = short
        .iter()
        .chain(&long)
        .copied()
        // A complete eval.json (one cut mid-write by the kill is redone, rightly).
        .filter(|r| read_json_object(&out.join(r).join("eval.json")).is_some())
        .map(|r| (r, mtime(&out.join(r).join("eval.json"))))
        .collect();
    assert!(!finished.is_empty());

    let o = dgym(tmp.path(), &args);
    assert_ok(&o);
    assert!(
        stdout(&o).contains(&format!("{} runs finished earlier", finished.len())),
        "{}",
        stdout(&o)
    );
    // Every run exists once and is complete.
    let expected: BTreeSet<String> = short.iter().chain(&long).map(|s| s.to_string()).collect();
    assert_eq!(run_dirs(&out), expected);
    for r in &expected {
        let d = out.join(r);
        assert!(d.join("summary.json").exists(), "{r} has no summary.json");
        let eval = read_json(&d.join("eval.json"));
        assert!(
            eval["swd"].as_f64().is_some_and(f64::is_finite),
            "{r}: {eval}"
        );
        let summary = read_json(&d.join("summary.json"));
        let steps = if r.starts_with("steps=40") { 40 } else { 2000 };
        assert_eq!(
            summary["pretrain"]["iterations"].as_u64(),
            Some(steps),
            "{r}"
        );
    }
    // Finished runs were not run again; interrupted ones were resumed, not restarted.
    for (r, t) in &finished {
        assert_eq!(invocations(&out.join(r)).len(), 1, "{r} was trained again");
        assert_eq!(
            mtime(&out.join(r).join("eval.json")),
            *t,
            "{r} was evaluated again"
        );
    }
    for r in &partial {
        let inv = invocations(&out.join(r));
        assert_eq!(inv.len(), 2, "{r}: {inv:?}");
        assert!(
            inv[1]["resumed_from_step"].as_u64().is_some_and(|s| s > 0),
            "{r} was not resumed: {inv:?}"
        );
    }
    let table = std::fs::read_to_string(out.join("aggregate.md")).unwrap();
    assert!(table.contains("| 2000 | 2/2 |"), "{table}");
}

/// A grid of 3 T × 2 methods × 2 seeds where gcd starts from dsm.
fn sibling_sweep(dir: &Path) -> PathBuf {
    sweep_file(
        dir,
        "siblings.toml",
        TINY_FINETUNE,
        r#"seeds = [0, 1]
[grid]
"policy.n_steps" = { name = "T", values = [1, 2, 4] }
[[zip]]
name = "method"
labels = ["gcd", "dsm"]
"finetune.iterations" = [10, 0]
"finetune.init_from" = ["@method=dsm", ""]
"#,
    )
}

#[test]
fn shards_cover_the_grid_once_and_keep_init_from_sources_together() {
    let tmp = TempDir::new().unwrap();
    let file = sibling_sweep(tmp.path());
    let f = file.to_str().unwrap();
    let all = dry_run_list(tmp.path(), &["sweep", f, "--dry-run"]);
    assert_eq!(all.len(), 12);
    let names: BTreeSet<String> = all.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names.len(), 12);
    assert!(names.contains("T=4,method=gcd/seed=1"), "{names:?}");
    assert!(all.contains(&(
        "T=2,method=gcd/seed=1".to_string(),
        Some("T=2,method=dsm/seed=1".to_string())
    )));
    let mut union = BTreeSet::new();
    for i in 1..=3 {
        let shard = format!("{i}/3");
        let part = dry_run_list(tmp.path(), &["sweep", f, "--dry-run", "--shard", &shard]);
        assert!(!part.is_empty(), "shard {shard} is empty");
        let in_shard: BTreeSet<String> = part.iter().map(|(n, _)| n.clone()).collect();
        for (name, from) in &part {
            if let Some(from) = from {
                assert!(
                    in_shard.contains(from),
                    "{name} in shard {shard}, its source {from} not"
                );
            }
            assert!(union.insert(name.clone()), "{name} is in two shards");
        }
    }
    assert_eq!(union, names);
    for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
        let o = dgym(tmp.path(), &["sweep", f, "--dry-run", "--shard", bad]);
        assert!(!o.status.success(), "--shard {bad} was accepted");
        assert!(stderr(&o).contains("shard"), "{}", stderr(&o));
    }
}

#[test]
fn a_sibling_init_from_runs_after_its_source_and_starts_from_it() {
    let tmp = TempDir::new().unwrap();
    let file = sweep_file(
        tmp.path(),
        "pair.toml",
        TINY_FINETUNE,
        r#"[[zip]]
name = "method"
labels = ["gcd", "dsm"]
"finetune.iterations" = [10, 0]
"finetune.init_from" = ["@method=dsm", ""]
"#,
    );
    let out = tmp.path().join("out");
    let o = sweep(tmp.path(), &file, &out, &[]);
    assert_ok(&o);
    let text = stdout(&o);
    let dsm = text.find("done method=dsm/seed=0").expect(&text);
    let gcd = text.find("done method=gcd/seed=0").expect(&text);
    assert!(dsm < gcd, "gcd ran before its source:\n{text}");
    let gcd_dir = out.join("method=gcd/seed=0");
    let config = std::fs::read_to_string(gcd_dir.join("config.toml")).unwrap();
    let source = out.canonicalize().unwrap().join("method=dsm/seed=0");
    assert!(
        config.contains(&format!("init_from = {:?}", source.display().to_string())),
        "{config}"
    );
    // Fine-tuning started from the source's sampler: its starting figures are the
    // source's final ones (same sampler, same evaluation seed).
    let start = read_json(&gcd_dir.join("summary.json"))["eval_start"]["swd"]
        .as_f64()
        .unwrap();
    let source_end = read_json(&source.join("summary.json"))["eval"]["swd"]
        .as_f64()
        .unwrap();
    assert!((start - source_end).abs() < 1e-9, "{start} vs {source_end}");
    assert_eq!(
        read_json(&gcd_dir.join("summary.json"))["pretrain"],
        serde_json::Value::Null,
        "the gcd run pretrained again"
    );
}

#[test]
fn curves_average_the_logged_evaluations_over_seeds_against_episodes() {
    let tmp = TempDir::new().unwrap();
    let file = sweep_file(
        tmp.path(),
        "curves.toml",
        TINY_FINETUNE,
        r#"seeds = [0, 1]
[[zip]]
name = "method"
labels = ["dsm", "gcd", "gcd2", "own"]
"finetune.iterations" = [0, 8, 8, 7]
"finetune.n_critic" = [1, 1, 2, 1]
"finetune.init_from" = ["", "@method=dsm", "@method=dsm", ""]
"eval.eval_every" = [4, 4, 4, 3]

[curves]
metrics = ["swd"]
target = "method=gcd"
"#,
    );
    let out = tmp.path().join("out");
    assert_ok(&sweep(tmp.path(), &file, &out, &[]));
    // Each seed's own evaluations of the fine-tuning (and the end-of-run one), as
    // iterations: iteration 0 is the start sampler's; `own` pretrains 40 steps in the run,
    // so its evaluations every 3 global steps fall on iterations 2 and 5, and the
    // end-of-run evaluation adds iteration 7.
    let seed_values = |method: &str, seed: u64, offset: u64| -> Vec<(u64, f64)> {
        let run = out.join(format!("method={method}/seed={seed}"));
        let summary = read_json(&run.join("summary.json"));
        let mut values = vec![(0, summary["eval_start"]["swd"].as_f64().unwrap())];
        let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let column = header.iter().position(|h| *h == "eval/swd").unwrap();
        for line in text.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            if cells[1] == "pretrain" {
                continue;
            }
            if let Ok(v) = cells[column].parse::<f64>() {
                let iteration = cells[0].parse::<u64>().unwrap() - offset;
                if values.last().unwrap().0 != iteration {
                    values.push((iteration, v));
                }
            }
        }
        values
    };
    let csv = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    for (method, n_critic, offset, iterations) in [
        ("gcd", 1.0, 0, vec![0, 4, 8]),
        ("gcd2", 2.0, 0, vec![0, 4, 8]),
        ("own", 1.0, 40, vec![0, 2, 5, 7]),
    ] {
        let (a, b) = (
            seed_values(method, 0, offset),
            seed_values(method, 1, offset),
        );
        assert_eq!(
            a.iter().map(|p| p.0).collect::<Vec<_>>(),
            iterations,
            "{a:?}"
        );
        for ((iteration, va), (_, vb)) in a.iter().zip(&b) {
            let row = csv
                .lines()
                .find(|l| l.starts_with(&format!("swd,method={method},{iteration},")))
                .unwrap_or_else(|| panic!("no row for {method} {iteration}:\n{csv}"));
            let cells: Vec<f64> = row.split(',').skip(3).map(|c| c.parse().unwrap()).collect();
            // episodes = iteration × batch_size (32) × n_critic; n = 2 seeds; the mean.
            assert_eq!(cells[0], *iteration as f64 * 32.0 * n_critic, "{row}");
            assert_eq!(cells[1], 2.0, "{row}");
            assert!((cells[2] - (va + vb) / 2.0).abs() < 1e-12, "{row}");
        }
    }
    assert!(
        !csv.contains("method=dsm,"),
        "the DSM point has no curve:\n{csv}"
    );
    let md = std::fs::read_to_string(out.join("aggregate.md")).unwrap();
    assert!(
        md.contains("episodes to reach method=gcd's settled value"),
        "{md}"
    );
    assert!(out.join("curves_swd.png").exists());
}

#[test]
fn a_failed_run_is_recorded_the_sweep_goes_on_and_exits_non_zero() {
    let tmp = TempDir::new().unwrap();
    let mut csv = String::from("x,y\n");
    for i in 0..200 {
        let a = i as f64 * 0.1;
        csv.push_str(&format!("{},{}\n", a.cos(), a.sin()));
    }
    write(&tmp.path().join("good.csv"), &csv);
    let file = sweep_file(
        tmp.path(),
        "fail.toml",
        "\"data.dataset\" = \"csv\"\n",
        "[grid]\n\"data.path\" = [\"missing.csv\", \"good.csv\"]\n",
    );
    let out = tmp.path().join("out");
    let o = sweep(tmp.path(), &file, &out, &[]);
    assert_fails_with(&o, &["1 runs failed", "path=missing.csv/seed=0"]);
    assert!(
        stdout(&o).contains("FAILED path=missing.csv/seed=0"),
        "{}",
        stdout(&o)
    );
    let error = std::fs::read_to_string(out.join("path=missing.csv/seed=0/error.txt")).unwrap();
    assert!(error.contains("missing.csv"), "{error}");
    assert!(error.contains("exit status 1"), "{error}");
    assert!(out.join("path=good.csv/seed=0/eval.json").exists());
    let table = std::fs::read_to_string(out.join("aggregate.md")).unwrap();
    assert!(
        table.contains("| missing.csv | 0/1, 1 failed | — |"),
        "{table}"
    );
    assert!(table.contains("| good.csv | 1/1 |"), "{table}");
}

#[test]
fn bad_sweep_files_are_refused_with_the_key_and_a_suggestion() {
    let tmp = TempDir::new().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown_key.toml",
            "[grid]\n\"policy.nsteps\" = [1, 2]\n",
            &["policy.nsteps", "did you mean \"policy.n_steps\""],
        ),
        (
            "empty_axis.toml",
            "[grid]\n\"agent.lr\" = []\n",
            &["agent.lr", "no values"],
        ),
        (
            "unequal.toml",
            "[[zip]]\n\"agent.tau_entropy\" = [0.1, 0.0]\n\"agent.tau_velocity\" = [0.01]\n",
            &["equal lengths", "agent.tau_entropy has 2", "agent.tau_velocity has 1"],
        ),
        ("no_seeds.toml", "seeds = []\n", &["seeds"]),
        (
            "top_level.toml",
            "sedes = [1]\n",
            &["unknown key \"sedes\"", "did you mean \"seeds\""],
        ),
        (
            "seed_axis.toml",
            "[grid]\n\"run.seed\" = [1, 2]\n",
            &["run.seed", "seeds = [...]"],
        ),
        (
            "bad_value.toml",
            "[grid]\n\"policy.n_steps\" = [4, 0]\n",
            &["policy.n_steps", "n_steps=0/seed=0"],
        ),
        (
            "bad_sibling.toml",
            "[[zip]]\nname = \"m\"\nlabels = [\"a\", \"b\"]\n\"finetune.iterations\" = [0, 5]\n\"finetune.init_from\" = [\"\", \"@m=c\"]\n",
            &["@m=c", "no value \"c\""],
        ),
        (
            "duplicate_name.toml",
            "[grid]\n\"agent.lr\" = [1e-3]\n\"reward.lr\" = [1e-3]\n",
            &["two axes are called \"lr\""],
        ),
        (
            "curves_key.toml",
            "[curves]\nmetric = [\"swd\"]\n",
            &["[curves]", "unknown key \"metric\"", "metrics, target"],
        ),
        (
            "curves_empty.toml",
            "[curves]\nmetrics = []\n",
            &["[curves] metrics", "non-empty array"],
        ),
        (
            "curves_target.toml",
            "[grid]\n\"agent.lr\" = [1e-3]\n[curves]\nmetrics = [\"swd\"]\ntarget = \"lr=0.1\"\n",
            &["[curves] target", "\"lr=0.1\" is not a grid point", "lr=0.001"],
        ),
    ];
    for (name, body, needles) in cases {
        let file = sweep_file(tmp.path(), name, "", body);
        let o = dgym(tmp.path(), &["sweep", file.to_str().unwrap(), "--dry-run"]);
        assert_fails_with(&o, needles);
        assert_fails_with(&o, &[name]);
    }
    // A sweep directory made by a different sweep file is refused.
    let out = tmp.path().join("out");
    let first = sweep_file(
        tmp.path(),
        "first.toml",
        "",
        "[grid]\n\"agent.lr\" = [1e-3]\n",
    );
    let second = sweep_file(
        tmp.path(),
        "second.toml",
        "",
        "[grid]\n\"agent.lr\" = [1e-4]\n",
    );
    let script = tmp.path().join("first.sbatch");
    let o = sweep(
        tmp.path(),
        &first,
        &out,
        &["--emit-slurm", script.to_str().unwrap()],
    );
    assert_ok(&o);
    for extra in [&[][..], &["--dry-run"][..]] {
        assert_fails_with(
            &sweep(tmp.path(), &second, &out, extra),
            &["different sweep", "first.toml"],
        );
    }
    // The same sweep (comments aside) is accepted again.
    let text = std::fs::read_to_string(&first).unwrap();
    write(&first, &format!("# a comment\n{text}"));
    let o = sweep(tmp.path(), &first, &out, &["--dry-run"]);
    assert_ok(&o);
    // A directory that is not a sweep directory is refused too.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    write(&other.join("notes.txt"), "mine");
    assert_fails_with(
        &sweep(tmp.path(), &first, &other, &[]),
        &["not a sweep directory"],
    );
}

#[test]
fn emit_slurm_writes_a_job_array_over_the_shards() {
    let tmp = TempDir::new().unwrap();
    let file = sibling_sweep(tmp.path());
    let script = tmp.path().join("sweep.sbatch");
    let out = tmp.path().join("out");
    let o = sweep(
        tmp.path(),
        &file,
        &out,
        &["--emit-slurm", script.to_str().unwrap(), "--shards", "3"],
    );
    assert_ok(&o);
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#!/bin/bash\n"), "{text}");
    assert!(text.contains("#SBATCH --array=1-3\n"), "{text}");
    assert!(
        text.contains("--shard \"${SLURM_ARRAY_TASK_ID}/3\""),
        "{text}"
    );
    assert!(text.contains(&format!("'{}'", file.display())), "{text}");
    assert!(out.join("sweep.json").exists());
    // Default: one task per group (3 T × 2 seeds).
    let o = sweep(
        tmp.path(),
        &file,
        &out,
        &["--emit-slurm", script.to_str().unwrap()],
    );
    assert_ok(&o);
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=1-6\n"), "{text}");
}

#[test]
fn seed_statistics_match_hand_computed_values() {
    // t quantiles: the table and its continuation agree with published values.
    for (dof, t) in [
        (1, 12.7062),
        (2, 4.3027),
        (4, 2.7764),
        (30, 2.0423),
        (31, 2.0395),
        (60, 2.0003),
        (120, 1.9799),
        (1000, 1.9623),
    ] {
        assert!(
            (t_quantile_975(dof) - t).abs() < 1e-4,
            "t({dof}) = {}",
            t_quantile_975(dof)
        );
    }
    let s = seed_stats(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(s.n, 4);
    assert!((s.mean - 2.5).abs() < 1e-12);
    let std = (5.0f64 / 3.0).sqrt(); // sample std: sum of squares 5, n - 1 = 3
    assert!((s.std.unwrap() - std).abs() < 1e-12);
    let half = 3.182_446_305 * std / 2.0;
    let (lo, hi) = s.ci95.unwrap();
    assert!((lo - (2.5 - half)).abs() < 1e-9 && (hi - (2.5 + half)).abs() < 1e-9);
    let one = seed_stats(&[7.0]).unwrap();
    assert_eq!((one.mean, one.std, one.ci95), (7.0, None, None));
    assert!(seed_stats(&[]).is_none());
}

#[test]
fn aggregate_counts_failed_and_missing_runs_and_computes_the_statistics() {
    let tmp = TempDir::new().unwrap();
    let file = sweep_file(
        tmp.path(),
        "agg.toml",
        "",
        "seeds = [0, 1, 2]\nmetrics = [\"swd\"]\n[grid]\n\"finetune.baseline\" = { name = \"b\", values = [\"none\", \"value\"] }\n",
    );
    let out = tmp.path().join("out");
    let script = tmp.path().join("agg.sbatch");
    // --emit-slurm prepares the sweep directory without running anything.
    assert_ok(&sweep(
        tmp.path(),
        &file,
        &out,
        &["--emit-slurm", script.to_str().unwrap()],
    ));
    // Fabricated results: b=none has all three seeds; b=value one finished, one failed,
    // one never ran.
    let finish = |run: &str, swd: f64| {
        let d = out.join(run);
        std::fs::create_dir_all(&d).unwrap();
        write(&d.join("summary.json"), "{}");
        write(&d.join("eval.json"), &format!("{{\"swd\": {swd}}}"));
    };
    finish("b=none/seed=0", 1.0);
    finish("b=none/seed=1", 2.0);
    finish("b=none/seed=2", 4.0);
    finish("b=value/seed=0", 0.5);
    std::fs::create_dir_all(out.join("b=value/seed=1")).unwrap();
    write(&out.join("b=value/seed=1/error.txt"), "boom");
    let o = dgym(tmp.path(), &["aggregate", out.to_str().unwrap()]);
    assert_ok(&o);
    let md = stdout(&o);
    assert!(md.contains("| none | 3/3 | 2.3333 | 1.5275 |"), "{md}");
    assert!(
        md.contains("| value | 1/3, 1 failed, 1 not finished | 0.5000 | — | — |"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("aggregate.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "metric,point,b,n,n_runs,n_failed,n_not_finished,n_without_metric,mean,std,ci95_lo,ci95_hi"
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(
        &row[..8],
        ["swd", "b=none", "none", "3", "3", "0", "0", "0"]
    );
    let num = |i: usize| row[i].parse::<f64>().unwrap();
    let (mean, std) = (7.0 / 3.0, (7.0f64 / 3.0).sqrt()); // squares: 16/9 + 1/9 + 25/9
    assert!((num(8) - mean).abs() < 1e-12 && (num(9) - std).abs() < 1e-12);
    let half = 4.302_652_730 * std / 3f64.sqrt();
    assert!((num(10) - (mean - half)).abs() < 1e-9 && (num(11) - (mean + half)).abs() < 1e-9);
    assert!(out.join("swd_vs_b.png").exists());
    // Plot options are checked against the axes.
    assert_fails_with(
        &dgym(
            tmp.path(),
            &["aggregate", out.to_str().unwrap(), "--x", "bb"],
        ),
        &["no axis \"bb\"", "did you mean \"b\""],
    );
}

#[test]
fn the_wide_table_averages_each_seed_over_the_grid_points_then_over_seeds() {
    let tmp = TempDir::new().unwrap();
    let file = sweep_file(
        tmp.path(),
        "wide.toml",
        "",
        "seeds = [0, 1]\nmetrics = [\"a\", \"b\"]\n[grid]\n\"finetune.baseline\" = { name = \"k\", values = [\"none\", \"value\"] }\n",
    );
    let out = tmp.path().join("out");
    let script = tmp.path().join("wide.sbatch");
    assert_ok(&sweep(
        tmp.path(),
        &file,
        &out,
        &["--emit-slurm", script.to_str().unwrap()],
    ));
    let finish = |run: &str, a: f64, b: f64| {
        let d = out.join(run);
        std::fs::create_dir_all(&d).unwrap();
        write(&d.join("summary.json"), "{}");
        write(&d.join("eval.json"), &format!("{{\"a\": {a}, \"b\": {b}}}"));
    };
    finish("k=none/seed=0", 1.0, 10.0);
    finish("k=none/seed=1", 3.0, 10.0);
    finish("k=value/seed=0", 5.0, 20.0);
    // Seed 1 has no `b` at k=value: it drops out of b's mean row, not of a's.
    let d = out.join("k=value/seed=1");
    std::fs::create_dir_all(&d).unwrap();
    write(&d.join("summary.json"), "{}");
    write(&d.join("eval.json"), "{\"a\": 7.0}");
    let o = dgym(tmp.path(), &["aggregate", out.to_str().unwrap()]);
    assert_ok(&o);
    let md = stdout(&o);
    // Rows: mean ± std over seeds.
    assert!(
        md.contains("| none | 2.0000 ± 1.4142 | 10.0000 ± 0.0000 |"),
        "{md}"
    );
    assert!(md.contains("| value | 6.0000 ± 1.4142 | 20.0000 |"), "{md}");
    // a: seed 0 averages (1 + 5) / 2 = 3, seed 1 (3 + 7) / 2 = 5: 4 ± 1.4142.
    // b: only seed 0 has every point: (10 + 20) / 2 = 15.
    assert!(
        md.contains("| **mean** | **4.0000 ± 1.4142** | **15.0000** |"),
        "{md}"
    );
}

#[test]
fn sweep_keys_include_every_documented_key_and_unset_optional_ones() {
    let keys = denoise_gym_experiments::commands::sweep::config_keys(
        &denoise_gym_experiments::builtin::catalog().unwrap(),
    );
    for key in [
        "policy.n_steps",
        "agent.tau_entropy",
        "ppo.minibatch_size",
        "agent.ft_steps",
        "dxdp.value_target",
        "ddaebm.r1",
        "data.mixture_weights",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing");
    }
    assert!(!keys.iter().any(|k| k == "agent.no_such_key"));
}

#[test]
fn concurrent_runs_share_the_cores_and_a_single_run_inherits() {
    use denoise_gym_experiments::commands::sweep::threads_per_run;
    assert_eq!(threads_per_run(1), None);
    assert_eq!(threads_per_run(0), None);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads_per_run(2), Some((cores / 2).max(1)));
        // More runs than cores: one thread each, never zero.
        assert_eq!(threads_per_run(cores + 3), Some(1));
    }
}
