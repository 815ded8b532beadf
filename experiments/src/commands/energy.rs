//! `dgym energy`: the trained EBM's energies at given points, for anomaly scoring and
//! density plots.

use std::path::Path;

use anyhow::{bail, Context, Result};
use denoise_gym::tensor::Backend;
use denoise_gym_envs::TabularDataset;

use crate::build::load_energy_model;
use crate::catalog::Catalog;

/// Writes the input columns of `points` plus `energy` (calibrated: `E/T_E`, so that
/// `p ∝ exp(-energy)`) and `energy_raw`.
pub fn write_energies<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
    points: &Path,
    out: &Path,
) -> Result<usize> {
    let model = load_energy_model(dev, catalog, run_dir)?;
    let run = denoise_gym::train::RunDir::new(run_dir);
    let config = crate::build::load_run_config(&run, catalog)?;
    let table = TabularDataset::from_csv(points, false)?;
    let dim = table.points().len() / table.len().max(1);
    if dim != model.dim() {
        bail!(
            "{}: points have {dim} columns, the run's EBM takes {} (points in the data's own units, one per row, without a label column)",
            points.display(),
            model.dim()
        );
    }
    let header = input_header(points, dim)?;
    // Points arrive in the data's own units; a standardised run's EBM takes them
    // standardised with the train split's statistics.
    let mut model_points = table.points().to_vec();
    if let Some(stats) = crate::data::run_data_stats(&run, &config)? {
        stats.to_model_space(&mut model_points)?;
    }
    let raw = model.energy_host(&model_points);
    let mut writer =
        csv::Writer::from_path(out).with_context(|| format!("creating {}", out.display()))?;
    let mut columns = header;
    columns.push("energy".to_string());
    columns.push("energy_raw".to_string());
    writer.write_record(&columns)?;
    for (row, e) in table.points().chunks(dim).zip(&raw) {
        let mut cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        cells.push((*e as f64 / model.temperature).to_string());
        cells.push(e.to_string());
        writer.write_record(&cells)?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(raw.len())
}

/// The input file's own column names when its first line is a header, else `x0, x1, …`.
fn input_header(points: &Path, dim: usize) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(points).with_context(|| format!("reading {}", points.display()))?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let cells: Vec<&str> = first.split(',').map(str::trim).collect();
    if cells.len() == dim && cells.iter().any(|c| c.parse::<f64>().is_err()) {
        Ok(cells.iter().map(|c| c.to_string()).collect())
    } else {
        Ok((0..dim).map(|i| format!("x{i}")).collect())
    }
}
