//! Helpers the CLI test binaries share: running the `dgym` binary and reading its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `dgym args...` in `cwd`.
#[allow(dead_code)]
pub fn dgym<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgym"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("cannot start dgym")
}

/// The process's standard output, lossily decoded.
#[allow(dead_code)]
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The process's standard error, lossily decoded.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The shipped config the tiny runs start from.
#[allow(dead_code)]
pub fn base_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/ddpm-8gaussians.toml")
}

/// Overrides that make a run take well under a second: 60 DSM steps of a 16-wide,
/// 1-layer network.
#[allow(dead_code)]
pub const TINY: &[&str] = &[
    "pretrain.iterations=60",
    "policy.hidden=16",
    "policy.depth=1",
    "eval.n_samples=200",
    "eval.swd_directions=50",
    "pretrain.log_every=5",
    "pretrain.checkpoint_every=20",
    "run.quiet=true",
];

/// Overrides that add a tiny fine-tuning phase (30 GCD iterations) to [`TINY`].
#[allow(dead_code)]
pub const TINY_FINETUNE: &[&str] = &[
    "finetune.iterations=30",
    "finetune.batch_size=32",
    "finetune.log_every=5",
    "finetune.checkpoint_every=10",
    "reward.hidden=16",
    "reward.depth=1",
    "reward.grid_size=32",
    "reward.held_out=200",
    "value_baseline.hidden=16",
    "value_baseline.depth=1",
];

/// `train CONFIG --out OUT --set <set>...`.
#[allow(dead_code)]
pub fn train_args_for(config: &Path, out: &Path, sets: &[&str]) -> Vec<String> {
    let mut args = vec![
        "train".to_string(),
        config.display().to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ];
    for set in sets {
        args.push("--set".to_string());
        args.push(set.to_string());
    }
    args
}

/// A run's `metrics.csv` without its wall-clock (`time/`) columns: what two runs that
/// must agree are compared on.
#[allow(dead_code)]
pub fn rows_without_time(dir: &Path) -> Vec<denoise_gym::log::CsvRow> {
    let (_, mut rows) = denoise_gym::log::read_metrics_csv(&dir.join("metrics.csv")).unwrap();
    for row in &mut rows {
        row.values.retain(|k, _| !k.starts_with("time/"));
    }
    rows
}
