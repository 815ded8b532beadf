//! `dgym sample RUN_DIR`: samples of a run's final sampler as CSV.

use std::path::Path;

use anyhow::{bail, Context, Result};
use denoise_gym::rng::Stream;
use denoise_gym::tensor::Backend;

use denoise_gym::sampler::Sampler;

use crate::build::load_any_sampler;
use crate::catalog::Catalog;

/// Samples drawn (and held in memory) at once by `dgym sample`.
pub const SAMPLES_PER_BLOCK: usize = 65_536;

/// Writes `n` samples of a run's sampler to a CSV file with header `x0,x1,…`.
pub fn write_samples<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
    n: usize,
    seed: u64,
    out: &Path,
) -> Result<()> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let policy = load_any_sampler(dev, catalog, run_dir)?;
    let run = denoise_gym::train::RunDir::new(run_dir);
    crate::build::warn_if_unfinished(&run);
    let config = crate::build::load_run_config(&run, catalog)?;
    // Samples leave in the data's own units (a standardised run's statistics undone).
    let stats = crate::data::run_data_stats(&run, &config)?;
    let dim = policy.dim();
    let mut writer =
        csv::Writer::from_path(out).with_context(|| format!("creating {}", out.display()))?;
    writer.write_record((0..dim).map(|i| format!("x{i}")))?;
    for_each_sample_block(policy.as_ref(), n, seed, |samples| {
        let mut samples = samples.to_vec();
        if let Some(stats) = &stats {
            stats.to_data_units(&mut samples)?;
        }
        for row in samples.chunks(dim) {
            writer
                .write_record(row.iter().map(|v| v.to_string()))
                .with_context(|| format!("writing {}", out.display()))?;
        }
        Ok(())
    })?;
    writer
        .flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The `n` samples `dgym sample --seed seed` writes, handed to `each` in blocks of at most
/// [`SAMPLES_PER_BLOCK`] rows (row-major `rows × d`): memory does not grow with `n`, and
/// up to one block the samples are those of a single batch. The Python binding's
/// `Sampler.sample` draws through this too, so both give the same numbers.
pub fn for_each_sample_block<D: Backend>(
    sampler: &dyn Sampler<D>,
    n: usize,
    seed: u64,
    mut each: impl FnMut(&[f32]) -> Result<()>,
) -> Result<()> {
    let mut rng = Stream::Eval.rng(seed);
    let mut left = n;
    while left > 0 {
        let block = left.min(SAMPLES_PER_BLOCK);
        each(&sampler.sample(block, &mut rng).as_vec())?;
        left -= block;
    }
    Ok(())
}
