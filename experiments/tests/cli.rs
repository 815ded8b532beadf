//! End-to-end tests of the `dgym` binary: `train` (run directory layout, metrics,
//! TensorBoard events, checkpoints, summary), `train --resume`, `sample`, `config`, and
//! the error messages of bad input.
//!
//! Every run is tiny (60 DSM steps of a 16-wide, 1-layer network) so the whole file takes
//! a few seconds.

mod common;

use common::{base_config, dgym, stderr, stdout, train_args_for, TINY, TINY_FINETUNE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::log::read_tensorboard_scalars;
use denoise_gym_experiments::builtin;
use denoise_gym_experiments::config::TrainConfig;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `train CONFIG --out OUT --set <TINY> --set <extra>...`.
fn train_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let sets: Vec<&str> = TINY.iter().chain(extra).copied().collect();
    train_args_for(&base_config(), out, &sets)
}

/// Runs a tiny `train` that must succeed; returns its stdout.
fn train_ok(cwd: &Path, out: &Path, extra: &[&str]) -> String {
    let o = dgym(cwd, &train_args(out, extra));
    assert!(
        o.status.success(),
        "dgym train failed:\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Asserts a clean failure: non-zero exit, no panic, and every `needle` in stderr.
fn assert_fails_with(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected a failure, got success:\nstdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected exit code 1 (error), not a crash/signal:\n{err}"
    );
    assert!(!err.contains("panicked"), "dgym panicked:\n{err}");
    assert!(
        err.starts_with("error: "),
        "stderr should start with `error: `:\n{err}"
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "stderr should mention {needle:?}:\n{err}"
        );
    }
    err
}

/// A CSV file parsed into its header and its rows of raw cells.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_else(|| panic!("{} is empty", path.display()))
        .split(',')
        .map(str::to_string)
        .collect();
    let rows: Vec<Vec<String>> = lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row.len(),
            header.len(),
            "{} line {}: {} cells, header has {}",
            path.display(),
            i + 2,
            row.len(),
            header.len()
        );
    }
    (header, rows)
}

/// A sample file written by `dgym sample`: header and finite values.
fn read_samples(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let (header, rows) = read_csv(path);
    let values = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| {
                    let v: f64 = c
                        .parse()
                        .unwrap_or_else(|_| panic!("sample cell {c:?} is not a number"));
                    assert!(v.is_finite(), "sample cell {c:?} is not finite");
                    v
                })
                .collect()
        })
        .collect();
    (header, values)
}

/// Equal to 6 significant digits.
fn close6(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 5e-6 * a.abs().max(b.abs())
}

/// Asserts two runs' metrics.csv hold the same steps and, except `time/` columns, the same
/// values to 6 significant digits.
fn assert_same_metrics(a: &Path, b: &Path) {
    let (header_a, rows_a) = read_csv(&a.join("metrics.csv"));
    let (header_b, rows_b) = read_csv(&b.join("metrics.csv"));
    assert_eq!(header_a, header_b);
    let steps = |rows: &[Vec<String>]| -> Vec<(String, String)> {
        rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect()
    };
    assert_eq!(
        steps(&rows_a),
        steps(&rows_b),
        "missing or duplicated steps"
    );
    for (ra, rb) in rows_a.iter().zip(&rows_b) {
        for ((name, ca), cb) in header_a.iter().zip(ra).zip(rb) {
            if name.starts_with("time/") {
                continue;
            }
            if name == "phase" || ca.is_empty() || cb.is_empty() {
                assert_eq!(ca, cb, "step {} column {name}", ra[0]);
                continue;
            }
            let (va, vb): (f64, f64) = (ca.parse().unwrap(), cb.parse().unwrap());
            assert!(
                close6(va, vb),
                "step {} column {name}: straight {va} vs resumed {vb}",
                ra[0]
            );
        }
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", path.display()))
}

fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    files.sort();
    files
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

// ---------------------------------------------------------------------------------------
// 1. The run directory of `dgym train`
// ---------------------------------------------------------------------------------------

#[test]
fn train_writes_a_complete_run_directory() {
    let tmp = TempDir::new().unwrap();
    let run = tmp.path().join("run");
    let printed = train_ok(tmp.path(), &run, &["run.seed=3"]);
    assert!(printed.contains("finished"), "stdout: {printed}");

    // config.toml: TOML, with the overridden values, loadable as a TrainConfig.
    let config_text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let config: toml::Value = toml::from_str(&config_text).expect("config.toml is not TOML");
    assert_eq!(config["policy"]["hidden"].as_integer(), Some(16));
    assert_eq!(config["pretrain"]["iterations"].as_integer(), Some(60));
    assert_eq!(config["run"]["seed"].as_integer(), Some(3));
    assert_eq!(config["data"]["dataset"].as_str(), Some("8gaussians"));
    let resolved = TrainConfig::load(
        Some(&run.join("config.toml")),
        &[],
        &builtin::catalog().unwrap(),
    )
    .unwrap();
    assert_eq!(resolved.policy.depth, 1);
    assert_eq!(resolved.pretrain.log_every, 5);

    // run.json: seed and the command line.
    let run_json = read_json(&run.join("run.json"));
    assert_eq!(run_json["seed"].as_u64(), Some(3));
    let invocations = run_json["invocations"].as_array().expect("invocations");
    assert_eq!(invocations.len(), 1);
    let command_line: Vec<&str> = invocations[0]["command_line"]
        .as_array()
        .expect("command_line")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(command_line.contains(&"train"), "{command_line:?}");
    assert!(
        command_line.contains(&"policy.hidden=16"),
        "{command_line:?}"
    );
    assert!(invocations[0]["resumed_from_step"].is_null());

    // metrics.csv
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    assert_eq!(&header[..3], &["step", "phase", "dsm/loss"], "{header:?}");
    for t in 1..=4 {
        let column = format!("policy/sigma_{t}");
        assert!(header.contains(&column), "no {column} in {header:?}");
    }
    assert!(
        !header.contains(&"policy/sigma_5".to_string()),
        "T = 4 but {header:?}"
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let pretrain: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "pretrain").collect();
    let steps: Vec<u64> = pretrain.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(steps, (1..=12).map(|k| 5 * k).collect::<Vec<u64>>());
    assert!(steps.windows(2).all(|w| w[0] < w[1]));
    // No (step, phase) pair twice; the only other phase is the final evaluation.
    let mut seen = std::collections::BTreeSet::new();
    for row in &rows {
        assert!(
            seen.insert((row[0].clone(), row[1].clone())),
            "duplicate row {row:?}"
        );
        assert!(
            row[1] == "pretrain" || row[1] == "eval",
            "phase {:?}",
            row[1]
        );
    }
    for row in &pretrain {
        for name in [
            "dsm/loss",
            "dsm/grad_norm",
            "policy/sigma_1",
            "policy/sigma_4",
        ] {
            let v: f64 = row[col(name)].parse().unwrap();
            assert!(v.is_finite(), "{name} = {v}");
        }
        let sigma: f64 = row[col("policy/sigma_1")].parse().unwrap();
        assert!(sigma > 0.0);
    }
    let eval_rows: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "eval").collect();
    assert_eq!(eval_rows.len(), 1);
    assert_eq!(eval_rows[0][0], "60");

    // Checkpoints.
    let checkpoints = run.join("checkpoints");
    for name in [
        "last.safetensors",
        "step_0000020.safetensors",
        "step_0000040.safetensors",
        "step_0000060.safetensors",
    ] {
        assert!(
            checkpoints.join(name).is_file(),
            "missing checkpoints/{name}"
        );
    }
    // Same contents (not bytes: the safetensors header's key order is not fixed).
    let last = Checkpoint::load(&checkpoints.join("last.safetensors")).unwrap();
    let step60 = Checkpoint::load(&checkpoints.join("step_0000060.safetensors")).unwrap();
    let step20 = Checkpoint::load(&checkpoints.join("step_0000020.safetensors")).unwrap();
    assert!(
        last == step60,
        "last.safetensors should be the step-60 state"
    );
    assert_eq!(last.metadata["iteration"], "60");
    assert_eq!(step20.metadata["iteration"], "20");
    assert!(step20.tensors != last.tensors, "the weights did not change");

    // TensorBoard: dsm/loss at the same steps and values as metrics.csv.
    let events = event_files(&run);
    assert_eq!(events.len(), 1, "{events:?}");
    let scalars = read_tensorboard_scalars(&events[0]).expect("event file reads back");
    let tb_loss: BTreeMap<i64, f32> = scalars
        .iter()
        .filter(|s| s.tag == "dsm/loss")
        .map(|s| (s.step, s.value))
        .collect();
    assert_eq!(
        scalars.iter().filter(|s| s.tag == "dsm/loss").count(),
        tb_loss.len(),
        "a step logged twice to TensorBoard"
    );
    let csv_loss: BTreeMap<i64, f32> = pretrain
        .iter()
        .map(|r| {
            let v: f64 = r[col("dsm/loss")].parse().unwrap();
            (r[0].parse().unwrap(), v as f32)
        })
        .collect();
    assert_eq!(tb_loss, csv_loss);
    for tag in ["dsm/grad_norm", "policy/sigma_1", "eval/swd", "eval/mmd2"] {
        assert!(
            scalars.iter().any(|s| s.tag == tag),
            "no {tag} in the event file"
        );
    }

    // summary.json, written last.
    let summary_path = run.join("summary.json");
    let summary = read_json(&summary_path);
    assert_eq!(summary["pretrain"]["iterations"].as_u64(), Some(60));
    for key in ["swd", "mmd2"] {
        let v = summary["eval"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("eval.{key} missing: {summary}"));
        assert!(v.is_finite(), "eval.{key} = {v}");
    }
    assert_eq!(summary["eval"]["n_samples"].as_u64(), Some(200));
    let eval_swd: f64 = eval_rows[0][col("eval/swd")].parse().unwrap();
    assert!(close6(eval_swd, summary["eval"]["swd"].as_f64().unwrap()));
    let summary_time = std::fs::metadata(&summary_path)
        .unwrap()
        .modified()
        .unwrap();
    for other in [
        run.join("config.toml"),
        run.join("run.json"),
        run.join("metrics.csv"),
        checkpoints.join("last.safetensors"),
    ] {
        let t = std::fs::metadata(&other).unwrap().modified().unwrap();
        assert!(
            t <= summary_time,
            "{} written after summary.json",
            other.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. --stop-after / --resume
// ---------------------------------------------------------------------------------------

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let tmp = TempDir::new().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    train_ok(tmp.path(), &a, &[]);

    let stopped = dgym(tmp.path(), &{
        let mut args = train_args(&b, &[]);
        args.extend(["--stop-after".to_string(), "37".to_string()]);
        args
    });
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert!(
        stdout(&stopped).contains("stopped"),
        "stdout: {}",
        stdout(&stopped)
    );
    assert!(!stdout(&stopped).contains("finished"));
    assert!(
        !b.join("summary.json").exists(),
        "a stopped run wrote summary.json"
    );
    assert!(b.join("checkpoints/last.safetensors").is_file());
    assert!(!b.join("checkpoints/step_0000040.safetensors").exists());

    let resumed = dgym(tmp.path(), &["train", "--resume", b.to_str().unwrap()]);
    assert!(
        resumed.status.success(),
        "resume failed:\n{}",
        stderr(&resumed)
    );
    assert!(stdout(&resumed).contains("finished"));
    assert!(b.join("summary.json").is_file());

    assert_same_metrics(&a, &b);
    let summary_a = read_json(&a.join("summary.json"));
    let summary_b = read_json(&b.join("summary.json"));
    for key in ["swd", "mmd2"] {
        let (x, y) = (
            summary_a["eval"][key].as_f64().unwrap(),
            summary_b["eval"][key].as_f64().unwrap(),
        );
        assert!(close6(x, y), "eval.{key}: {x} vs {y}");
    }
    assert_eq!(summary_b["pretrain"]["iterations"].as_u64(), Some(60));
    assert_eq!(
        summary_b["pretrain"]["iterations_this_invocation"].as_u64(),
        Some(40)
    );

    // run.json records both invocations, the second resumed from the step-20 checkpoint.
    let run_json = read_json(&b.join("run.json"));
    let invocations = run_json["invocations"].as_array().unwrap();
    assert_eq!(invocations.len(), 2, "{run_json}");
    assert_eq!(invocations[1]["resumed_from_step"].as_u64(), Some(20));

    // Resuming a finished run is an error and leaves it alone.
    let metrics_before = std::fs::read(b.join("metrics.csv")).unwrap();
    let again = dgym(tmp.path(), &["train", "--resume", b.to_str().unwrap()]);
    assert_fails_with(&again, &["already finished", "summary.json"]);
    assert_eq!(
        std::fs::read(b.join("metrics.csv")).unwrap(),
        metrics_before
    );
}

#[test]
fn resume_without_checkpoint_or_config_is_an_error() {
    let tmp = TempDir::new().unwrap();
    let run = tmp.path().join("no-checkpoint");
    std::fs::create_dir_all(&run).unwrap();
    let config = dgym(tmp.path(), &["config", "--set", "run.quiet=true"]);
    assert!(config.status.success());
    write(&run.join("config.toml"), &stdout(&config));
    let o = dgym(tmp.path(), &["train", "--resume", run.to_str().unwrap()]);
    assert_fails_with(&o, &["no checkpoint", "last.safetensors"]);

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = dgym(tmp.path(), &["train", "--resume", empty.to_str().unwrap()]);
    assert_fails_with(&o, &["empty", "config.toml"]);
}

// ---------------------------------------------------------------------------------------
// 3. dgym sample
// ---------------------------------------------------------------------------------------

#[test]
fn sample_writes_reproducible_samples() {
    let tmp = TempDir::new().unwrap();
    let run = tmp.path().join("run");
    train_ok(tmp.path(), &run, &[]);
    let sample = |seed: &str, file: &str| {
        let out = tmp.path().join(file);
        let o = dgym(
            tmp.path(),
            &[
                "sample",
                run.to_str().unwrap(),
                "--n",
                "50",
                "--out",
                out.to_str().unwrap(),
                "--seed",
                seed,
            ],
        );
        assert!(o.status.success(), "sample failed:\n{}", stderr(&o));
        out
    };
    let first = sample("1", "s1.csv");
    let (header, values) = read_samples(&first);
    assert_eq!(header, ["x0", "x1"]);
    assert_eq!(values.len(), 50);
    assert!(values.iter().all(|r| r.len() == 2));

    let again = sample("1", "s1-again.csv");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&again).unwrap(),
        "same seed, different samples"
    );
    let other = sample("2", "s2.csv");
    assert_ne!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&other).unwrap(),
        "different seeds, same samples"
    );
}

// ---------------------------------------------------------------------------------------
// 4. dgym config
// ---------------------------------------------------------------------------------------

#[test]
fn config_prints_documented_defaults_and_overrides() {
    let tmp = TempDir::new().unwrap();
    let o = dgym(tmp.path(), &["config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for section in ["[run]", "[data]", "[policy]", "[pretrain]", "[eval]"] {
        assert!(
            text.lines().any(|l| l == section),
            "no {section} in:\n{text}"
        );
    }
    assert!(text.lines().any(|l| l == "n_steps = 4"), "{text}");
    // An optional key that is not set is listed, commented out, under its doc.
    let lines: Vec<&str> = text.lines().collect();
    let unset = lines
        .iter()
        .position(|l| *l == "# label_column = (not set)")
        .unwrap_or_else(|| panic!("data.label_column is not listed:\n{text}"));
    assert!(
        lines[unset - 1].contains("column of class labels"),
        "{}",
        lines[unset - 1]
    );
    // Every key line is preceded by its one-line doc.
    let lines: Vec<&str> = text.lines().collect();
    let mut keys = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.contains(" = ") && !line.starts_with('#') {
            keys += 1;
            assert!(
                i > 0 && lines[i - 1].starts_with("# ") && lines[i - 1].len() > 4,
                "key line {line:?} has no doc line above it"
            );
        }
    }
    assert!(keys >= 20, "only {keys} keys printed");
    // The output is itself a valid config.
    let parsed: TrainConfig = toml::from_str(&text).expect("dgym config prints valid TOML");
    assert_eq!(parsed, TrainConfig::default());

    let o = dgym(tmp.path(), &["config", "--set", "policy.n_steps=7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.lines().any(|l| l == "n_steps = 7"), "{text}");
    assert!(!text.lines().any(|l| l == "n_steps = 4"), "{text}");
}

// ---------------------------------------------------------------------------------------
// 5. Bad input
// ---------------------------------------------------------------------------------------

#[test]
fn bad_config_files_are_reported_with_file_and_key() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let train = |config: &Path, sets: &[&str]| {
        let mut args = vec![
            "train".to_string(),
            config.display().to_string(),
            "--out".to_string(),
            out.display().to_string(),
        ];
        for s in sets {
            args.extend(["--set".to_string(), s.to_string()]);
        }
        dgym(dir, &args)
    };

    // Missing file.
    let missing = dir.join("does-not-exist.toml");
    assert_fails_with(&train(&missing, &[]), &["does-not-exist.toml"]);

    // Malformed TOML: names the file and the line.
    let malformed = dir.join("malformed.toml");
    write(&malformed, "[run]\nseed = 0\n[policy]\nn_steps = \n");
    assert_fails_with(&train(&malformed, &[]), &["malformed.toml", "line 4"]);

    // Unknown section and unknown key.
    let unknown_section = dir.join("unknown-section.toml");
    write(&unknown_section, "[polcy]\nn_steps = 4\n");
    assert_fails_with(
        &train(&unknown_section, &[]),
        &["unknown-section.toml", "polcy", "line 1", "policy"],
    );
    let unknown_key = dir.join("unknown-key.toml");
    write(&unknown_key, "[policy]\nhidden = 16\nwidht = 4\n");
    assert_fails_with(
        &train(&unknown_key, &[]),
        &["unknown-key.toml", "widht", "line 3", "hidden"],
    );

    // Wrong type.
    let wrong_type = dir.join("wrong-type.toml");
    write(&wrong_type, "[policy]\nn_steps = \"four\"\n");
    assert_fails_with(
        &train(&wrong_type, &[]),
        &["wrong-type.toml", "line 2", "four", "usize"],
    );
    assert_fails_with(
        &dgym(dir, &["config", "--set", "policy.n_steps=four"]),
        &["policy.n_steps", "four", "usize"],
    );

    // T = 0, from the file and from --set.
    let zero = dir.join("zero-steps.toml");
    write(&zero, "[policy]\nn_steps = 0\n");
    assert_fails_with(
        &train(&zero, &[]),
        &["zero-steps.toml", "policy.n_steps", "at least 1"],
    );
    assert_fails_with(
        &train(&base_config(), &["policy.n_steps=0"]),
        &["ddpm-8gaussians.toml", "policy.n_steps", "at least 1"],
    );

    // A schedule that misses the N(0, I) prior.
    let e = assert_fails_with(
        &train(&base_config(), &["policy.vp_beta_max=1.0"]),
        &["ddpm-8gaussians.toml", "prior", "allow_unmatched_prior"],
    );
    assert!(e.contains("policy."), "names no policy key: {e}");
    // ... which allow_unmatched_prior then accepts.
    let o = dgym(
        dir,
        &[
            "config",
            "--set",
            "policy.vp_beta_max=1.0",
            "--set",
            "policy.allow_unmatched_prior=true",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // --set of an unknown key / section / malformed assignment.
    assert_fails_with(
        &train(&base_config(), &["policy.widht=3"]),
        &["policy.widht", "hidden"],
    );
    assert_fails_with(
        &dgym(dir, &["config", "--set", "polcy.hidden=3"]),
        &["polcy", "policy"],
    );
    assert_fails_with(
        &dgym(dir, &["config", "--set", "policy.hidden"]),
        &["policy.hidden", "section.key=value"],
    );

    // None of these created the run directory.
    assert!(!out.exists(), "a rejected config created {}", out.display());
}

#[test]
fn unknown_dataset_lists_known_ones() {
    let tmp = TempDir::new().unwrap();
    let o = dgym(
        tmp.path(),
        &train_args(&tmp.path().join("out"), &["data.dataset=9gaussians"]),
    );
    assert_fails_with(
        &o,
        &[
            "data.dataset",
            "9gaussians",
            "8gaussians",
            "swissroll",
            "moons",
        ],
    );
}

#[test]
fn bad_csv_data_sets_name_file_and_line() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "not-a-number.csv",
            "a,b\n1,2\n3,x\n",
            &["line 3", "column 2", "\"x\""],
        ),
        (
            "nan.csv",
            "a,b\n1,2\n3,4\nNaN,1\n",
            &["line 4", "column 1", "NaN"],
        ),
        (
            "infinite.csv",
            "1,2\n3,inf\n",
            &["line 2", "column 2", "inf"],
        ),
        (
            "ragged.csv",
            "a,b\n1,2\n3,4,5\n",
            &["line 3", "3 columns", "expected 2"],
        ),
        ("header-only.csv", "a,b\n", &["no", "row"]),
        ("empty.csv", "", &["no", "row"]),
    ];
    for (i, (name, text, needles)) in cases.iter().enumerate() {
        let path = dir.join(name);
        write(&path, text);
        let set_path = format!("data.path={}", path.display());
        let o = dgym(
            dir,
            &train_args(
                &dir.join(format!("out{i}")),
                &["data.dataset=csv", &set_path],
            ),
        );
        let mut all = vec![*name];
        all.extend_from_slice(needles);
        assert_fails_with(&o, &all);
    }
    // A csv data set without a path, and one whose file is missing.
    let o = dgym(
        dir,
        &train_args(&dir.join("out-nopath"), &["data.dataset=csv"]),
    );
    assert_fails_with(&o, &["data.path"]);
    let o = dgym(
        dir,
        &train_args(
            &dir.join("out-missing"),
            &["data.dataset=csv", "data.path=no-such-file.csv"],
        ),
    );
    assert_fails_with(&o, &["no-such-file.csv"]);
}

#[test]
fn sample_and_train_refuse_bad_directories() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let samples = dir.join("s.csv");

    // A run directory with a config but no checkpoint.
    let run = dir.join("no-checkpoint");
    std::fs::create_dir_all(&run).unwrap();
    write(&run.join("config.toml"), "[run]\nquiet = true\n");
    let o = dgym(
        dir,
        &[
            "sample",
            run.to_str().unwrap(),
            "--out",
            samples.to_str().unwrap(),
        ],
    );
    assert_fails_with(&o, &["no-checkpoint", "no checkpoint", "last.safetensors"]);
    assert!(!samples.exists());

    // Not a run directory at all.
    let o = dgym(
        dir,
        &["sample", "nowhere", "--out", samples.to_str().unwrap()],
    );
    assert_fails_with(&o, &["nowhere", "config.toml"]);

    // --out pointing to a non-empty directory.
    let busy = dir.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    write(&busy.join("keep.txt"), "precious");
    let o = dgym(dir, &train_args(&busy, &[]));
    assert_fails_with(&o, &["busy", "not empty", "--resume"]);
    assert_eq!(
        std::fs::read_to_string(busy.join("keep.txt")).unwrap(),
        "precious"
    );
    assert_eq!(
        std::fs::read_dir(&busy).unwrap().count(),
        1,
        "wrote into busy/"
    );

    // --n 0.
    let good = dir.join("good");
    train_ok(dir, &good, &[]);
    let o = dgym(
        dir,
        &[
            "sample",
            good.to_str().unwrap(),
            "--n",
            "0",
            "--out",
            samples.to_str().unwrap(),
        ],
    );
    assert_fails_with(&o, &["--n"]);
}

// ---------------------------------------------------------------------------------------
// 6. A CSV data set end to end
// ---------------------------------------------------------------------------------------

fn three_column_csv() -> String {
    let mut text = String::from("u,v,w\n");
    for i in 0..64 {
        let t = i as f64 / 64.0 * std::f64::consts::TAU;
        text.push_str(&format!(
            "{:.4},{:.4},{:.4}\n",
            t.cos(),
            t.sin(),
            0.5 * (2.0 * t).cos()
        ));
    }
    text
}

#[test]
fn csv_data_set_trains_and_samples_in_its_dimension() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    write(&dir.join("points.csv"), &three_column_csv());
    let run = dir.join("run");
    // A relative data.path is resolved against the working directory.
    let printed = train_ok(dir, &run, &["data.dataset=csv", "data.path=points.csv"]);
    assert!(printed.contains("finished"), "{printed}");
    let summary = read_json(&run.join("summary.json"));
    assert!(summary["eval"]["swd"].as_f64().unwrap().is_finite());
    assert!(summary["eval"]["mmd2"].as_f64().unwrap().is_finite());

    let out = dir.join("samples.csv");
    let o = dgym(
        dir,
        &[
            "sample",
            run.to_str().unwrap(),
            "--n",
            "20",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, values) = read_samples(&out);
    assert_eq!(header, ["x0", "x1", "x2"]);
    assert_eq!(values.len(), 20);

    // drop_last_column: the same file as a 2-D data set.
    let run2 = dir.join("run2");
    train_ok(
        dir,
        &run2,
        &[
            "data.dataset=csv",
            "data.path=points.csv",
            "data.drop_last_column=true",
        ],
    );
    let o = dgym(
        dir,
        &[
            "sample",
            run2.to_str().unwrap(),
            "--n",
            "5",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_samples(&out).0, ["x0", "x1"]);
}

// ---------------------------------------------------------------------------------------
// Known bugs (each test asserts the correct behaviour and fails until the bug is fixed)
// ---------------------------------------------------------------------------------------

/// A `train` that fails on its data (bad CSV, unknown dataset) must not leave a half-written
/// run directory behind: after fixing the data the very same command must work.
#[test]
fn a_failed_start_leaves_no_run_directory_behind() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let data = dir.join("data.csv");
    write(&data, "a,b\n1,2\n3,x\n");
    let out = dir.join("run");
    let set_path = format!("data.path={}", data.display());
    let args = train_args(&out, &["data.dataset=csv", &set_path]);
    assert_fails_with(&dgym(dir, &args), &["data.csv", "line 3"]);
    // Fix the data and run the very same command again.
    write(&data, "a,b\n1,2\n3,4\n5,6\n");
    let o = dgym(dir, &args);
    assert!(
        o.status.success(),
        "rerunning after fixing the data failed:\n{}",
        stderr(&o)
    );
}

/// I/O errors print their cause once (not `...: No such file ... : No such file ...`,
/// which a message that also exposes its cause as `source()` would give under `{:#}`).
#[test]
fn an_io_error_cause_is_printed_once() {
    let tmp = TempDir::new().unwrap();
    let o = dgym(
        tmp.path(),
        &[
            "train",
            "missing.toml",
            "--out",
            "out",
            "--set",
            "run.quiet=true",
        ],
    );
    let err = assert_fails_with(&o, &["missing.toml"]);
    assert_eq!(
        err.matches("os error 2").count(),
        1,
        "cause repeated: {err}"
    );
}

// ---------------------------------------------------------------------------------------
// Fine-tuning (GCD / oracle) through the CLI
// ---------------------------------------------------------------------------------------

fn finetune_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let all: Vec<&str> = TINY_FINETUNE.iter().chain(extra).copied().collect();
    train_args(out, &all)
}

/// Trains `full_args` (writing to `a`) uninterrupted, and `stopped_args` (writing to `b`)
/// stopped after `stop_after` global steps without a final checkpoint (as a kill) and then
/// resumed; asserts that both logged the same metrics.
fn assert_kill_and_resume_match(
    cwd: &Path,
    a: &Path,
    b: &Path,
    full_args: &[String],
    stopped_args: &[String],
    stop_after: u64,
) {
    let o = dgym(cwd, full_args);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = stopped_args.to_vec();
    args.extend(["--stop-after".to_string(), stop_after.to_string()]);
    let stopped = dgym(cwd, &args);
    assert!(stdout(&stopped).contains("stopped"), "{}", stderr(&stopped));
    let resumed = dgym(cwd, &["train", "--resume", b.to_str().unwrap()]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_same_metrics(a, b);
}

#[test]
fn a_gcd_run_resumed_mid_finetuning_matches_an_uninterrupted_one() {
    let tmp = TempDir::new().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    // 60 pretraining + 15 fine-tuning iterations, then a simulated kill; the last
    // checkpoint is fine-tuning's step-70 one, so steps 71-75 are logged twice over.
    assert_kill_and_resume_match(
        tmp.path(),
        &a,
        &b,
        &finetune_args(&a, &[]),
        &finetune_args(&b, &[]),
        75,
    );
    let (header, rows) = read_csv(&a.join("metrics.csv"));
    for column in [
        "ebm/energy_pos",
        "ebm/energy_neg",
        "ebm/L_E",
        "reward/return_mean",
        "policy/sigma_4",
        "policy/entropy",
        "policy/velocity_cost",
        "policy/advantage_std",
        "policy/grad_norm",
        "baseline/value_loss",
    ] {
        assert!(
            header.iter().any(|h| h == column),
            "no {column} in {header:?}"
        );
    }
    assert!(rows.iter().any(|r| r[1] == "finetune"));
    let summary = read_json(&b.join("summary.json"));
    assert_eq!(summary["phase"], "finetune");
    assert_eq!(summary["finetune"]["iterations"].as_u64(), Some(30));
    assert!(
        summary["ebm"]["temperature"]
            .as_f64()
            .is_some_and(|t| t > 0.0),
        "{summary}"
    );
    assert!(
        summary["ebm"]["kl_calibrated"]
            .as_f64()
            .is_some_and(f64::is_finite),
        "{summary}"
    );

    // `dgym energy` writes the input columns, the calibrated and the raw energy.
    let points = tmp.path().join("points.csv");
    write(&points, "x,y\n0,0\n1.5,-2\n");
    let energies = tmp.path().join("energies.csv");
    let o = dgym(
        tmp.path(),
        &[
            "energy",
            b.to_str().unwrap(),
            "--points",
            points.to_str().unwrap(),
            "--out",
            energies.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, rows) = read_csv(&energies);
    assert_eq!(header, ["x", "y", "energy", "energy_raw"]);
    assert_eq!(rows.len(), 2);
    let temperature = summary["ebm"]["temperature"].as_f64().unwrap();
    for row in rows {
        let (calibrated, raw): (f64, f64) = (row[2].parse().unwrap(), row[3].parse().unwrap());
        assert!(
            (calibrated - raw / temperature).abs() < 1e-4 * (1.0 + calibrated.abs()),
            "{calibrated} vs {raw}/{temperature}"
        );
    }
    // A pretraining-only run has no energy; a file of the wrong width is refused.
    assert_fails_with(
        &dgym(
            tmp.path(),
            &[
                "energy",
                a.join("missing").to_str().unwrap(),
                "--points",
                points.to_str().unwrap(),
                "--out",
                energies.to_str().unwrap(),
            ],
        ),
        &["config.toml"],
    );
    let wide = tmp.path().join("wide.csv");
    write(&wide, "1,2,3\n");
    assert_fails_with(
        &dgym(
            tmp.path(),
            &[
                "energy",
                b.to_str().unwrap(),
                "--points",
                wide.to_str().unwrap(),
                "--out",
                energies.to_str().unwrap(),
            ],
        ),
        &["wide.csv", "3 columns", "takes 2"],
    );
}

/// PPO with the diffusion-RL options: the frozen early steps, the σ floors and the
/// shuffling RNG are all part of the checkpoint.
const TINY_PPO: &[&str] = &[
    "finetune.agent=\"ppo\"",
    "agent.ft_steps=2",
    "ppo.minibatch_size=16",
    "ppo.epochs=2",
    "ppo.target_kl=0.5",
    "agent.gamma_denoising=0.9",
    "agent.min_sigma_sample=0.05",
    "agent.min_sigma_logprob=0.05",
];

#[test]
fn a_ppo_run_with_frozen_steps_resumes_to_the_same_numbers() {
    let tmp = TempDir::new().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    assert_kill_and_resume_match(
        tmp.path(),
        &a,
        &b,
        &finetune_args(&a, TINY_PPO),
        &finetune_args(&b, TINY_PPO),
        75,
    );

    let (header, rows) = read_csv(&a.join("metrics.csv"));
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"))
    };
    let finetune: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "finetune").collect();
    for name in [
        "policy/approx_kl",
        "policy/clip_fraction",
        "policy/ppo_updates",
    ] {
        let k = column(name);
        assert!(
            finetune.iter().all(|r| r[k].parse::<f64>().is_ok()),
            "{name}"
        );
    }
    // σ_3, σ_4 (frozen, t > ft_steps = 2) keep their value; σ_2 learns.
    for (name, frozen) in [
        ("policy/sigma_4", true),
        ("policy/sigma_3", true),
        ("policy/sigma_2", false),
    ] {
        let k = column(name);
        let values: Vec<&str> = finetune.iter().map(|r| r[k].as_str()).collect();
        let constant = values.iter().all(|v| *v == values[0]);
        assert_eq!(constant, frozen, "{name}: {values:?}");
    }
    // The finished run's sampler loads with its frozen steps.
    let samples = tmp.path().join("s.csv");
    let o = dgym(
        tmp.path(),
        &[
            "sample",
            a.to_str().unwrap(),
            "--n",
            "5",
            "--out",
            samples.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // grad-variance at the run's fixed point (its policy with frozen steps, its EBM).
    let table = dgym(
        tmp.path(),
        &[
            "grad-variance",
            a.to_str().unwrap(),
            "--batches",
            "3",
            "--warmup",
            "1",
            "--baselines",
            "batch_mean,value",
        ],
    );
    assert!(table.status.success(), "{}", stderr(&table));
    let table = stdout(&table);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[2].starts_with("| none |") && lines[2].contains("| 1.000 |"),
        "{table}"
    );
    assert!(
        lines[3].starts_with("| batch_mean |") && lines[4].starts_with("| value |"),
        "{table}"
    );
    assert_fails_with(
        &dgym(
            tmp.path(),
            &["grad-variance", a.to_str().unwrap(), "--batches", "1"],
        ),
        &["--batches", "at least 2"],
    );
    // A minibatch larger than the batch (32 samples × 2 steps) is refused up front.
    assert_fails_with(
        &dgym(
            tmp.path(),
            &finetune_args(
                &tmp.path().join("big"),
                &[
                    "finetune.agent=\"ppo\"",
                    "agent.ft_steps=2",
                    "ppo.minibatch_size=65",
                ],
            ),
        ),
        &["ppo.minibatch_size", "64"],
    );
}

#[test]
fn a_dxdp_run_resumes_to_the_same_numbers_and_logs_its_values() {
    let tmp = TempDir::new().unwrap();
    let dxdp = [
        "finetune.agent=dxdp",
        "dxdp.value_hidden=16",
        "dxdp.value_depth=1",
    ];
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    assert_kill_and_resume_match(
        tmp.path(),
        &a,
        &b,
        &finetune_args(&a, &dxdp),
        &finetune_args(&b, &dxdp),
        75,
    );
    let (header, _) = read_csv(&a.join("metrics.csv"));
    for column in [
        "value/loss_1",
        "value/loss_4",
        "value/V_1",
        "value/V_4",
        "policy/loss",
        "policy/value_term",
        "policy/entropy_term",
        "policy/velocity_cost",
        "policy/sigma_2",
        "ebm/energy_gap",
    ] {
        assert!(
            header.iter().any(|h| h == column),
            "no {column} in {header:?}"
        );
    }
    // The oracle is a host-side density: the pathwise agent cannot differentiate it.
    let o = dgym(
        tmp.path(),
        &finetune_args(
            &tmp.path().join("c"),
            &["finetune.agent=dxdp", "finetune.reward=oracle"],
        ),
    );
    assert_fails_with(&o, &["finetune.reward", "dxdp"]);
    let o = dgym(
        tmp.path(),
        &finetune_args(
            &tmp.path().join("d"),
            &["finetune.agent=dxdp", "dxdp.value_lr=-1"],
        ),
    );
    assert_fails_with(&o, &["dxdp.value_lr"]);
}

#[test]
fn init_from_and_agent_options_are_checked() {
    let tmp = TempDir::new().unwrap();
    let base = tmp.path().join("base");
    train_ok(tmp.path(), &base, &[]);
    let from = format!("finetune.init_from={}", base.display());
    // A run with another T, a missing run, and unknown names are clear errors.
    assert_fails_with(
        &dgym(
            tmp.path(),
            &finetune_args(&tmp.path().join("x1"), &[&from, "policy.n_steps=5"]),
        ),
        &["init_from", "policy.n_steps"],
    );
    let nowhere = format!(
        "finetune.init_from={}",
        tmp.path().join("nowhere").display()
    );
    assert_fails_with(
        &dgym(
            tmp.path(),
            &finetune_args(&tmp.path().join("x2"), &[&nowhere]),
        ),
        &["init_from", "nowhere"],
    );
    assert_fails_with(
        &dgym(
            tmp.path(),
            &finetune_args(&tmp.path().join("x3"), &["finetune.baseline=\"lob\""]),
        ),
        &["finetune.baseline", "leave_one_out"],
    );
    assert_fails_with(
        &dgym(
            tmp.path(),
            &finetune_args(&tmp.path().join("x4"), &["finetune.agent=\"sac\""]),
        ),
        &["finetune.agent", "reinforce"],
    );
    assert_fails_with(
        &dgym(
            tmp.path(),
            &finetune_args(
                &tmp.path().join("x5"),
                &[
                    "finetune.baseline=\"leave_one_out\"",
                    "finetune.batch_size=1",
                ],
            ),
        ),
        &["leave_one_out", "at least 2"],
    );
    // The oracle needs an exact density.
    assert_fails_with(
        &dgym(
            tmp.path(),
            &finetune_args(
                &tmp.path().join("x6"),
                &["finetune.reward=\"oracle\"", "data.dataset=\"moons\""],
            ),
        ),
        &["moons", "log-density"],
    );
    // Starting from the base run skips pretraining: steps start at 1 in fine-tuning.
    let run = tmp.path().join("from");
    let o = dgym(
        tmp.path(),
        &finetune_args(&run, &[&from, "finetune.reward=\"oracle\""]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, rows) = read_csv(&run.join("metrics.csv"));
    assert!(rows.iter().all(|r| r[1] != "pretrain"));
    assert_eq!(rows[0][0], "5");
}

#[test]
fn a_diverging_reward_stops_the_run_naming_the_quantity_and_iteration() {
    let tmp = TempDir::new().unwrap();
    let run = tmp.path().join("nan");
    let o = dgym(
        tmp.path(),
        &finetune_args(&run, &["reward.lr=1e30", "reward.gamma=0"]),
    );
    let err = assert_fails_with(&o, &["non-finite", "at iteration", "last good checkpoint"]);
    assert!(
        err.contains("ebm/") || err.contains("policy/") || err.contains("reward/"),
        "{err}"
    );
    assert!(run.join("checkpoints/last.safetensors").is_file());
    assert!(!run.join("summary.json").exists());
}

#[test]
fn eval_writes_metrics_and_figures_and_compare_tabulates_runs() {
    let tmp = TempDir::new().unwrap();
    let gcd = tmp.path().join("gcd");
    let o = dgym(
        tmp.path(),
        &finetune_args(&gcd, &["eval.eval_every=40", "eval.snapshot_samples=100"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // eval_every: eval/* scalars in the rows of steps 40 and 80, and an image in TensorBoard.
    let (header, rows) = read_csv(&gcd.join("metrics.csv"));
    let swd = header
        .iter()
        .position(|h| h == "eval/swd")
        .expect("eval/swd column");
    let off_mode = header
        .iter()
        .position(|h| h == "eval/off_mode_fraction")
        .expect("off-mode column");
    for step in ["40", "80"] {
        let row = rows
            .iter()
            .find(|r| r[0] == step && r[1] != "eval")
            .unwrap();
        assert!(
            row[swd].parse::<f64>().unwrap() > 0.0,
            "step {step}: {row:?}"
        );
        assert!((0.0..=1.0).contains(&row[off_mode].parse::<f64>().unwrap()));
    }
    let events = std::fs::read(&event_files(&gcd)[0]).unwrap();
    assert!(
        events.windows(4).any(|w| w == b"\x89PNG"),
        "no PNG image in the event file"
    );

    let o = dgym(tmp.path(), &["eval", gcd.to_str().unwrap(), "--n", "300"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval = read_json(&gcd.join("eval.json"));
    for key in [
        "swd",
        "mmd2",
        "mmd2_median",
        "mode_weight_tv",
        "off_mode_fraction",
        "modes_covered",
        "energy_kl",
        "energy_kl_raw",
        "energy_tv",
        "energy_nll",
        "energy_auroc",
        "eval_time_s",
    ] {
        assert!(
            eval[key].as_f64().is_some_and(f64::is_finite),
            "eval.{key}: {eval}"
        );
    }
    assert_eq!(eval["n_samples"].as_f64(), Some(300.0));
    assert_eq!(eval["modes_covered"].as_f64().map(|m| m <= 8.0), Some(true));
    // Every mode's weight (they sum to one) and every σ_t of the final sampler.
    let weights: f64 = (1..=8)
        .map(|k| {
            eval[format!("mode_weight_{k}")]
                .as_f64()
                .unwrap_or(f64::NAN)
        })
        .sum();
    assert!(
        (weights - 1.0).abs() < 1e-9,
        "mode weights sum to {weights}: {eval}"
    );
    for t in 1..=4 {
        assert!(
            eval[format!("sigma_{t}")].as_f64().is_some_and(|s| s > 0.0),
            "eval.sigma_{t}: {eval}"
        );
    }
    for figure in [
        "samples.png",
        "trajectory.png",
        "sigma.png",
        "curves.png",
        "density.png",
    ] {
        let bytes = std::fs::read(gcd.join(figure)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{figure} is not a PNG");
        // Width and height from the IHDR chunk.
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert!(width >= 600 && height >= 600, "{figure}: {width}×{height}");
    }

    let base = tmp.path().join("base");
    train_ok(tmp.path(), &base, &[]);
    assert_fails_with(
        &dgym(
            tmp.path(),
            &["compare", gcd.to_str().unwrap(), base.to_str().unwrap()],
        ),
        &["base", "eval.json", "dgym eval"],
    );
    let o = dgym(tmp.path(), &["eval", base.to_str().unwrap(), "--n", "300"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table_dir = tmp.path().join("tables");
    let o = dgym(
        tmp.path(),
        &[
            "compare",
            gcd.to_str().unwrap(),
            base.to_str().unwrap(),
            "--out",
            table_dir.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let markdown = stdout(&o);
    assert!(markdown.starts_with("| run | swd | mmd2 |"), "{markdown}");
    assert_eq!(
        std::fs::read_to_string(table_dir.join("compare.md")).unwrap(),
        markdown
    );
    let (header, rows) = read_csv(&table_dir.join("compare.csv"));
    assert_eq!(&header[..3], ["run", "swd", "mmd2"]);
    assert_eq!(rows.len(), 2);
    let energy_kl = header.iter().position(|h| h == "energy_kl").unwrap();
    assert!(
        !rows[0][energy_kl].is_empty() && rows[1][energy_kl].is_empty(),
        "{rows:?}"
    );
    let swd_gcd: f64 = rows[0][1].parse().unwrap();
    assert!((swd_gcd - eval["swd"].as_f64().unwrap()).abs() < 1e-4);
}

// ---------------------------------------------------------------------------------------
// DDAEBM runs (run.method = "ddaebm")
// ---------------------------------------------------------------------------------------

/// A tiny DDAEBM run of the shipped 25-Gaussians config.
fn ddaebm_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ddaebm-25gaussians.toml");
    let mut args = vec![
        "train".to_string(),
        config.display().to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ];
    let tiny = [
        "ddaebm.iterations=30",
        "ddaebm.batch_size=32",
        "ddaebm.hidden=16",
        "ddaebm.depth=1",
        "ddaebm.log_every=5",
        "ddaebm.checkpoint_every=10",
        "eval.n_samples=200",
        "eval.swd_directions=50",
        "eval.eval_every=20",
        "eval.snapshot_samples=100",
        "reward.grid_size=32",
        "reward.held_out=300",
        "run.quiet=true",
    ];
    for set in tiny.iter().chain(extra) {
        args.push("--set".to_string());
        args.push(set.to_string());
    }
    args
}

#[test]
fn a_ddaebm_run_resumes_exactly_and_samples_energies_and_evaluates() {
    let tmp = TempDir::new().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    // Killed after 17 iterations: the last checkpoint is step 10, so 11-17 run twice.
    assert_kill_and_resume_match(
        tmp.path(),
        &a,
        &b,
        &ddaebm_args(&a, &[]),
        &ddaebm_args(&b, &[]),
        17,
    );
    let (header, rows) = read_csv(&a.join("metrics.csv"));
    for column in [
        "ddaebm/loss_D",
        "ddaebm/loss_G",
        "ddaebm/r1",
        "ddaebm/D_real",
        "ddaebm/D_fake",
        "ddaebm/reverse_kl",
        "ddaebm/latent_nll",
        "ddaebm/recon_nll",
        "ddaebm/kl_z",
        "eval/swd",
    ] {
        assert!(
            header.iter().any(|h| h == column),
            "no {column} in {header:?}"
        );
    }
    assert!(rows.iter().any(|r| r[1] == "ddaebm"));
    let summary = read_json(&b.join("summary.json"));
    assert_eq!(summary["phase"], "ddaebm");
    assert_eq!(summary["ddaebm"]["iterations"].as_u64(), Some(30));
    let temperature = summary["ebm"]["temperature"].as_f64().unwrap();
    assert!(temperature > 0.0, "{summary}");
    assert!(summary["eval"]["mmd2"].as_f64().is_some_and(f64::is_finite));

    // Sampling is deterministic given the seed, and differs across seeds.
    let sample = |seed: &str, name: &str| {
        let path = tmp.path().join(name);
        let o = dgym(
            tmp.path(),
            &[
                "sample",
                b.to_str().unwrap(),
                "--n",
                "50",
                "--seed",
                seed,
                "--out",
                path.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        read_samples(&path)
    };
    let (header, first) = sample("3", "s1.csv");
    assert_eq!(header, ["x0", "x1"]);
    assert_eq!(first.len(), 50);
    assert_eq!(first, sample("3", "s2.csv").1);
    assert_ne!(first, sample("4", "s3.csv").1);

    // `dgym energy`: -D(x, 0) calibrated by T_E, with the raw value beside it.
    let points = tmp.path().join("points.csv");
    write(&points, "x,y\n0,0\n0.7,-0.7\n");
    let energies = tmp.path().join("energies.csv");
    let o = dgym(
        tmp.path(),
        &[
            "energy",
            b.to_str().unwrap(),
            "--points",
            points.to_str().unwrap(),
            "--out",
            energies.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, rows) = read_csv(&energies);
    assert_eq!(header, ["x", "y", "energy", "energy_raw"]);
    for row in rows {
        let (calibrated, raw): (f64, f64) = (row[2].parse().unwrap(), row[3].parse().unwrap());
        assert!((calibrated - raw / temperature).abs() < 1e-4 * (1.0 + calibrated.abs()));
    }

    // `dgym eval` measures the samples and the t = 0 energy's grid density.
    let o = dgym(tmp.path(), &["eval", b.to_str().unwrap(), "--n", "200"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval = read_json(&b.join("eval.json"));
    for key in ["swd", "mmd2", "energy_kl", "energy_kl_raw", "energy_auroc"] {
        assert!(
            eval[key].as_f64().is_some_and(f64::is_finite),
            "{key}: {eval}"
        );
    }
    assert!(b.join("density.png").exists() && b.join("samples.png").exists());
}

#[test]
fn ddaebm_options_are_checked_with_file_and_key() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("x");
    assert_fails_with(
        &dgym(tmp.path(), &ddaebm_args(&out, &["run.method=gan"])),
        &["run.method", "diffusion, ddaebm"],
    );
    assert_fails_with(
        &dgym(tmp.path(), &ddaebm_args(&out, &["ddaebm.n_z=0"])),
        &["ddaebm-25gaussians.toml", "ddaebm.n_z", "at least 1"],
    );
    assert_fails_with(
        &dgym(tmp.path(), &ddaebm_args(&out, &["ddaebm.r1=-1"])),
        &["ddaebm.r1"],
    );
    assert_fails_with(
        &dgym(tmp.path(), &ddaebm_args(&out, &["finetune.iterations=5"])),
        &["finetune", "from scratch"],
    );
    assert!(!out.exists());
}

#[test]
fn bench_times_every_row_and_writes_the_report_as_json() {
    let tmp = TempDir::new().unwrap();
    let json = tmp.path().join("bench.json");
    let o = dgym(
        tmp.path(),
        &[
            "bench",
            "--quick",
            "--batches",
            "8",
            "--block-seconds",
            "0.001",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report = read_json(&json);
    assert_eq!(report["implementation"], "denoise-gym");
    let machine = &report["machine"];
    assert!(machine["cores"].as_u64().is_some_and(|c| c >= 1));
    assert!(machine["threads"].as_u64().is_some_and(|c| c >= 1));
    assert_eq!(machine["profile"], "debug", "tests run a debug build");
    assert_eq!(machine["device"], "cpu");
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        denoise_gym_experiments::commands::bench::ROW_NAMES.to_vec()
    );
    for row in rows {
        let name = row["name"].as_str().unwrap();
        assert_eq!(row["batch"], 8, "{name}");
        let (min, median, rate) = (
            row["min_s"].as_f64().unwrap(),
            row["median_s"].as_f64().unwrap(),
            row["rate"].as_f64().unwrap(),
        );
        assert!(
            min > 0.0 && min <= median,
            "{name}: min {min}, median {median}"
        );
        let per_iteration = if row["unit"] == "samples/s" { 8.0 } else { 1.0 };
        assert!(
            (rate - per_iteration / median).abs() <= 1e-9 * rate,
            "{name}"
        );
        assert_eq!(row["repeats"], 2, "--quick times two blocks");
        let expected_steps = if name == "sample_t100" { 100 } else { 4 };
        assert_eq!(row["n_steps"], expected_steps, "{name}");
        let expected_width = if name == "ddaebm" { 300 } else { 128 };
        assert_eq!(row["width"], expected_width, "{name}");
    }
    assert!(stdout(&o).contains("| gcd_reinforce | 8 | 4 | 128 |"));
    for row in rows {
        let name = row["name"].as_str().unwrap();
        let (own, alone, fraction) = (
            row["matmul_own_gflops"].as_f64().unwrap(),
            row["gemm_same_shapes_gflops"].as_f64().unwrap(),
            row["matmul_fraction_of_gemm"].as_f64().unwrap(),
        );
        assert!(alone > 0.0, "{name}: the same matmuls alone");
        assert!(
            (fraction - own / alone).abs() <= 1e-9 * fraction.max(1e-9),
            "{name}"
        );
    }

    // --set reaches the sampling rows too: with d = 8 instead of 2 each of the T = 4
    // forwards of 8 rows has 6 more inputs and 6 more outputs on its 128-wide layers.
    let json_d8 = tmp.path().join("bench-d8.json");
    let o = dgym(
        tmp.path(),
        &[
            "bench",
            "--quick",
            "--rows",
            "sample_t4",
            "--batches",
            "8",
            "--block-seconds",
            "0.001",
            "--set",
            "data.dataset=gmm",
            "--set",
            "data.gmm_dim=8",
            "--json",
            json_d8.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let gflop = |report: &serde_json::Value| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "sample_t4")
            .unwrap()["matmul_gflop"]
            .as_f64()
            .unwrap()
    };
    let extra = gflop(&read_json(&json_d8)) - gflop(&report);
    let expected = 2.0 * 4.0 * 8.0 * (6.0 * 128.0 + 128.0 * 6.0) / 1e9;
    assert!(
        (extra - expected).abs() < 1e-12,
        "{extra} GFLOP more, expected {expected}"
    );

    assert_fails_with(
        &dgym(tmp.path(), &["bench", "--rows", "gcd"]),
        &["--rows", "\"gcd\"", "gcd_reinforce"],
    );
    assert_fails_with(
        &dgym(tmp.path(), &["bench", "--batches", "0"]),
        &["--batches", "at least 1"],
    );
    let unwritable = tmp.path().join("missing-dir/bench.json");
    assert_fails_with(
        &dgym(
            tmp.path(),
            &[
                "bench",
                "--rows",
                "dsm_step",
                "--json",
                unwritable.to_str().unwrap(),
            ],
        ),
        &["missing-dir"],
    );
}
