//! `dgym sample RUN_DIR`: samples of a run's final sampler as CSV.

use std::path::Path;

use anyhow::{bail, Context, Result};
use denoise_gym::rng::Stream;
use denoise_gym::tensor::Backend;

use crate::build::load_any_sampler;

/// Writes `n` samples of a run's sampler to a CSV file with header `x0,x1,…`.
pub fn write_samples<D: Backend>(
    dev: &D,
    run_dir: &Path,
    n: usize,
    seed: u64,
    out: &Path,
) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let policy = load_any_sampler(dev, run_dir)?;
    crate::build::warn_if_unfinished(&denoise_gym::train::RunDir::new(run_dir));
    let mut rng = Stream::Eval.rng(seed);
    let samples = policy.sample(n, &mut rng).as_vec();
    let dim = policy.dim();
    let mut writer =
        csv::Writer::from_path(out).with_context(|| format!("creating {}", out.display()))?;
    writer.write_record((0..dim).map(|i| format!("x{i}")))?;
    for row in samples.chunks(dim) {
        writer.write_record(row.iter().map(|v| v.to_string()))?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
