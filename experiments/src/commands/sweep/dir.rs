//! The sweep directory's format: the stored plan, atomic writes, the state of each run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use denoise_gym::train::RunDir;

use super::plan::Plan;

/// The expanded plan in a sweep directory.
pub const PLAN_FILE: &str = "sweep.json";
/// A copy of the sweep file as last run, for people.
pub const SWEEP_COPY: &str = "sweep.toml";
/// The base config with the sweep's `[set]` applied; every run is this plus its overrides.
pub const BASE_FILE: &str = "base.toml";
/// Written into a run directory when the run failed: the command, exit status and error.
pub const ERROR_FILE: &str = "error.txt";
/// Children's stdout and stderr, one file per run: `logs/<point>/seed=S.log`.
pub const LOG_DIR: &str = "logs";

/// `runs/sweeps/<sweep file stem>`.
pub fn default_sweep_dir(sweep_file: &Path) -> PathBuf {
    let stem = sweep_file
        .file_stem()
        .map_or_else(|| "sweep".to_string(), |s| s.to_string_lossy().to_string());
    PathBuf::from("runs").join("sweeps").join(stem)
}

/// Writes `text` to `path` atomically and durably ([`denoise_gym::io::write_atomic`]), so
/// that readers (other shards, a killed sweep's restart) never see half a file.
pub(super) fn write_atomic(path: &Path, text: &str) -> Result<()> {
    Ok(denoise_gym::io::write_atomic(path, text.as_bytes())?)
}

/// Reads the plan stored in a sweep directory.
pub fn read_plan(dir: &Path) -> Result<Plan> {
    let path = dir.join(PLAN_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a sweep directory (no {PLAN_FILE}; `dgym sweep` writes it)",
            dir.display()
        )
    })?;
    let plan: Plan = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a sweep plan", path.display()))?;
    plan.migrated()
        .with_context(|| format!("{}: the stored plan", path.display()))
}

/// Refuses a directory holding another sweep's runs (or anything else).
pub(super) fn check_dir(dir: &Path, plan: &Plan) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    if !dir.join(PLAN_FILE).exists() {
        let visible = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'));
        if visible {
            bail!(
                "{} exists and is not a sweep directory (no {PLAN_FILE}): choose another --out",
                dir.display()
            );
        }
        return Ok(false);
    }
    let stored = read_plan(dir)?;
    if !stored.same_runs(plan) {
        let what = if stored.base_config != plan.base_config {
            "base config".to_string()
        } else if stored.axes != plan.axes {
            "axes".to_string()
        } else if stored.seeds != plan.seeds {
            "seeds".to_string()
        } else {
            "runs".to_string()
        };
        bail!(
            "{} holds the runs of a different sweep (made by {}; its {what} differ from {}): \
             refusing to mix results; choose another --out or delete the directory",
            dir.display(),
            stored.sweep_file,
            plan.sweep_file
        );
    }
    Ok(true)
}

/// Creates (or checks) the sweep directory and records the plan.
pub(super) fn prepare_dir(dir: &Path, plan: &Plan, sweep_file: &Path) -> Result<()> {
    check_dir(dir, plan)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The plan goes first: its presence makes the directory a sweep directory.
    write_atomic(&dir.join(PLAN_FILE), &serde_json::to_string_pretty(plan)?)?;
    write_atomic(&dir.join(BASE_FILE), &plan.base_config)?;
    let text = std::fs::read_to_string(sweep_file)
        .with_context(|| format!("reading {}", sweep_file.display()))?;
    write_atomic(&dir.join(SWEEP_COPY), &text)
}

/// Where a run stands on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// `summary.json` and a readable `eval.json`.
    Done,
    /// Trained, not evaluated.
    NeedsEval,
    /// A checkpoint without `summary.json`: continue with `--resume`.
    Partial,
    /// Nothing worth keeping (absent, or killed before its first checkpoint).
    New,
}

/// Reads `path` as a JSON object, `None` when absent or not (yet) complete.
pub fn read_json_object(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.is_object().then_some(value)
}

/// The state of a run directory.
pub fn run_state(run_dir: &Path) -> RunState {
    let run = RunDir::new(run_dir);
    if run.summary().exists() {
        if read_json_object(&run_dir.join("eval.json")).is_some() {
            RunState::Done
        } else {
            RunState::NeedsEval
        }
    } else if run.last_checkpoint().exists() && run.config().exists() {
        RunState::Partial
    } else {
        RunState::New
    }
}

// ---------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------
