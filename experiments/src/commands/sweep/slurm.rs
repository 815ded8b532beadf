//! `--emit-slurm`: a Slurm job array whose task i runs shard i of the sweep.

use crate::catalog::Catalog;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::dir::{default_sweep_dir, prepare_dir};
use super::plan::load_plan;
use super::scheduler::{absolute, shell_quote, Runner, SweepOptions};

/// `dgym sweep --emit-slurm`: prepares the sweep directory and writes a job-array script
/// whose task `i` (1..=shards) runs `dgym sweep SWEEP --shard i/shards`. `shards`
/// defaults to one task per group of runs. Returns the number of array tasks.
pub fn emit_slurm(
    sweep_file: &Path,
    options: &SweepOptions,
    script: &Path,
    shards: Option<usize>,
    runner: &Runner,
    catalog: &Catalog,
) -> Result<usize> {
    let plan = load_plan(sweep_file, catalog)?;
    let shards = shards.unwrap_or(plan.n_groups()).max(1);
    if options.shard.is_some() {
        bail!("--emit-slurm writes one task per shard; give --shards N, not --shard");
    }
    if options.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let dir = absolute(
        &options
            .out
            .clone()
            .unwrap_or_else(|| default_sweep_dir(sweep_file)),
    )?;
    prepare_dir(&dir, &plan, sweep_file)?;
    let sweep_abs = absolute(sweep_file)?;
    let exe = absolute(&runner.exe)?;
    let cwd = std::env::current_dir()?;
    let stem = sweep_file
        .file_stem()
        .map_or_else(|| "sweep".to_string(), |s| s.to_string_lossy().to_string());
    let text = format!(
        "#!/bin/bash\n\
         # Written by `dgym sweep {sweep} --emit-slurm`: a job array of {shards} tasks; task i runs\n\
         # shard i/{shards} of the sweep ({runs} runs in {groups} groups). Submit with `sbatch {script}`.\n\
         # A task that is cut short can be resubmitted: finished runs are skipped.\n\
         #SBATCH --job-name=dgym-{stem}\n\
         #SBATCH --array=1-{shards}\n\
         #SBATCH --cpus-per-task={jobs}\n\
         #SBATCH --output={out}\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         exec {exe} sweep {sweep_q} --out {dir_q} --jobs {jobs} --shard \"${{SLURM_ARRAY_TASK_ID}}/{shards}\"\n",
        sweep = sweep_file.display(),
        runs = plan.runs.len(),
        groups = plan.n_groups(),
        script = script.display(),
        jobs = options.jobs,
        out = dir.join("slurm-%A_%a.out").display(),
        cwd = shell_quote(&cwd.display().to_string()),
        exe = shell_quote(&exe.display().to_string()),
        sweep_q = shell_quote(&sweep_abs.display().to_string()),
        dir_q = shell_quote(&dir.display().to_string()),
    );
    if let Some(parent) = script.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(script, text).with_context(|| format!("writing {}", script.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755));
    }
    Ok(shards)
}
