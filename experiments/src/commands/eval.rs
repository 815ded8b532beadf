//! `dgym eval RUN_DIR`: `eval.json` and the figures of a finished run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use denoise_gym::rng::Stream;
use denoise_gym::tensor::Backend;
use denoise_gym::train::RunDir;

use crate::build::{build_data, load_any_sampler, load_energy_model, load_run_config};
use crate::catalog::Catalog;
use crate::data::TableSplits;
use crate::eval::{energy_metrics, evaluate_heldout, evaluate_sampler, metrics_to_json};
use crate::plots;
use crate::registry::Registry;
use denoise_gym_envs::{Dataset, TabularDataset};

/// `dgym eval RUN_DIR`: writes `eval.json` and the figures into the run directory;
/// returns the path of `eval.json`.
pub fn evaluate_run<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    run_dir: &Path,
    n: Option<usize>,
    seed: Option<u64>,
) -> Result<PathBuf> {
    let started = Instant::now();
    let run = RunDir::new(run_dir);
    let catalog = registry.catalog();
    let config = load_run_config(&run, catalog)?;
    let (checkpoint, _) = run.load_latest_checkpoint()?;
    crate::build::warn_if_unfinished(&run);
    let prepared = build_data(registry, &config)?;
    let dataset = prepared.train.clone();
    let sampler = load_any_sampler(dev, catalog, run_dir)?;
    let n = n.unwrap_or(config.eval.n_samples);
    if n < 2 {
        bail!("--n must be at least 2");
    }
    let seed = seed.unwrap_or(config.run.seed);
    let (mut metrics, samples, data) = match prepared.test_split() {
        Some((splits, test)) => {
            let (m, samples) =
                evaluate_heldout(&*sampler, splits, test, n, config.eval.swd_directions, seed)?;
            (m, samples, test.points().to_vec())
        }
        None => evaluate_sampler(
            &*sampler,
            dataset.as_ref(),
            n,
            config.eval.swd_directions,
            seed,
        )?,
    };
    let dim = dataset.dim();
    let mut figures = vec![];
    let figure = |name: &str| run.root.join(name);
    plots::samples_over_data(
        &figure("samples.png"),
        &samples,
        &data,
        dim,
        "samples of the final sampler over fresh data",
    )?;
    figures.push("samples.png");
    let mut rng = Stream::EvalTrajectory.rng(seed);
    let trajectory: Vec<Vec<f32>> = sampler
        .sample_trajectory(n.min(2000), &mut rng)
        .iter()
        .map(|x| x.as_vec())
        .collect();
    plots::trajectory(
        &figure("trajectory.png"),
        &trajectory,
        dim,
        "denoising trajectory x_T ... x_0",
    )?;
    figures.push("trajectory.png");
    if let Some(sigmas) = sampler.sigmas() {
        let sigmas: Vec<f64> = sigmas.iter().map(|&s| s as f64).collect();
        for (t, sigma) in sigmas.iter().enumerate() {
            metrics.insert(format!("sigma_{}", t + 1), *sigma);
        }
        plots::sigma_per_step(&figure("sigma.png"), &sigmas, "sigma_t per step")?;
        figures.push("sigma.png");
    }
    let curves = [
        "dsm/loss",
        "reward/return_mean",
        "ebm/energy_pos",
        "ebm/energy_neg",
        "ebm/L_E",
        "policy/loss",
        "policy/entropy",
        "ddaebm/loss_D",
        "ddaebm/loss_G",
        "ddaebm/D_gap",
        "eval/swd",
    ];
    if plots::training_curves(
        &figure("curves.png"),
        &run.metrics(),
        &curves,
        "training curves",
    )
    .is_ok()
    {
        figures.push("curves.png");
    }
    if checkpoint.metadata.get("reward_kind").map(String::as_str) == Some("ebm") && dim == 2 {
        let model = load_energy_model(dev, catalog, run_dir)?;
        let energy = energy_metrics(&model, dataset.as_ref(), &config, &mut rng)?;
        metrics.extend(energy.metrics);
        plots::density_side_by_side(
            &figure("density.png"),
            &energy.model_density,
            energy.true_density.as_deref(),
            energy.grid.n,
            energy.grid.lo[0],
            energy.grid.hi[0],
            "EBM density exp(-E/T_E) (left) and the true density (right)",
        )?;
        figures.push("density.png");
    }
    let has_energy = config.run.method == denoise_gym_agents::ddaebm::PHASE
        || checkpoint.metadata.get("reward_kind").map(String::as_str) == Some("ebm");
    if let Some((splits, test)) = prepared.test_split() {
        if config.data.dataset == "digits" {
            figures.extend(digit_figures(
                dev, catalog, run_dir, splits, test, &samples, has_energy,
            )?);
        }
        if !config.data.inlier_classes.is_empty() && has_energy {
            let set = crate::anomaly::test_set(splits)?;
            metrics.extend(crate::anomaly::anomaly_report(
                dev, catalog, run_dir, &config, splits, &set,
            )?);
            figures.push("roc.png");
        }
    }
    metrics.insert("eval_time_s".into(), started.elapsed().as_secs_f64());
    let mut json = metrics_to_json(&metrics);
    json["figures"] = serde_json::json!(figures);
    json["run"] = serde_json::json!(run_dir.display().to_string());
    let path = run.root.join("eval.json");
    denoise_gym::io::write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(path)
}

/// Images of each figure of [`digit_figures`] (four rows of ten).
const DIGITS_SHOWN: usize = 40;

/// `digits.png`, generated digits beside test images, and with an energy
/// `energy_extremes.png`, the test images of lowest and highest energy; all in the data's
/// own units.
fn digit_figures<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
    splits: &TableSplits,
    test: &TabularDataset,
    samples: &[f32],
    has_energy: bool,
) -> Result<Vec<&'static str>> {
    let dim = test.dim();
    let units = |points: &[f32]| splits.stats.in_data_units(points);
    let shown = |points: &[f32]| points[..points.len().min(DIGITS_SHOWN * dim)].to_vec();
    let generated = units(&shown(samples))?;
    let real = units(&shown(test.points()))?;
    let run = RunDir::new(run_dir);
    plots::image_grids(
        &run.root.join("digits.png"),
        &[
            plots::ImagePanel {
                caption: "generated".into(),
                images: generated,
            },
            plots::ImagePanel {
                caption: "test split".into(),
                images: real,
            },
        ],
        8,
        8,
        10,
        "generated digits beside real ones",
    )?;
    let mut figures = vec!["digits.png"];
    if has_energy {
        let model = load_energy_model(dev, catalog, run_dir)?;
        let energy = model.energy_host(test.points());
        let mut order: Vec<usize> = (0..energy.len()).collect();
        order.sort_by(|&a, &b| energy[a].total_cmp(&energy[b]));
        let k = (DIGITS_SHOWN / 2).min(order.len());
        let pick = |rows: &[usize]| -> Result<Vec<f32>> {
            let mut out = Vec::with_capacity(rows.len() * dim);
            for &r in rows {
                out.extend_from_slice(&test.points()[r * dim..(r + 1) * dim]);
            }
            units(&out)
        };
        plots::image_grids(
            &run.root.join("energy_extremes.png"),
            &[
                plots::ImagePanel {
                    caption: "lowest energy (most typical)".into(),
                    images: pick(&order[..k])?,
                },
                plots::ImagePanel {
                    caption: "highest energy (least typical)".into(),
                    images: pick(&order[order.len() - k..])?,
                },
            ],
            8,
            8,
            10,
            "test images by the learned energy",
        )?;
        figures.push("energy_extremes.png");
    }
    Ok(figures)
}
