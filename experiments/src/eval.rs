//! Evaluation (SPEC §7): the metrics of a sampler against fresh data, used by
//! `summary.json`, by `eval_every` during training, and by `dgym eval`, which also draws
//! the figures; and `dgym compare`, which puts runs' `eval.json` side by side.
//!
//! `eval.json` keys (flat, stable; absent when they do not apply):
//! `swd`, `mmd2` (sum over the fixed bandwidths), `mmd2_median`, `swd_prior`,
//! `mmd2_prior`, `swd_data_vs_data`, `mmd2_data_vs_data` (the same figures for `N(0, I)` and
//! for a second data sample: the scale and the noise floor); for mixtures `mode_weight_tv`,
//! `off_mode_fraction`, `modes_covered`, `n_modes`; for a 2-D EBM `energy_temperature`,
//! `energy_kl`, `energy_kl_raw`, `energy_tv`, `energy_nll`, `energy_nll_raw` (KL and TV
//! where the true density is known) and `energy_auroc` (data versus uniform points in the
//! grid box, energy as the anomaly score); and `n_samples`, `seed`, `eval_time_s`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use denoise_gym::ebm::{grid_kl, held_out_nll, EnergyModel, Grid2d};
use denoise_gym::metrics::{
    auroc, grid_total_variation, mmd2, mode_stats, normalised_from_log_density,
    normalised_grid_density, sliced_wasserstein,
};
use denoise_gym::rng::{normal_vec, seeded, ProjectRng};
use denoise_gym::sampler::Sampler;
use denoise_gym::tensor::Backend;
use denoise_gym_envs::Dataset;
use rand::Rng;

use crate::config::TrainConfig;
use crate::plots;
use crate::run::{build_dataset, load_any_sampler, RunDir};

/// RNG stream of evaluations (seeded per run and per step, so evaluation never moves
/// training's numbers and a resumed run evaluates identically).
const STREAM_EVAL: u64 = 3;

/// A flat map of named figures.
pub type Metrics = BTreeMap<String, f64>;

/// Keys whose values are counts or seeds, written to JSON as integers.
const INTEGER_KEYS: &[&str] = &["n_samples", "seed", "modes_covered", "n_modes"];

/// Metrics as a JSON object, counts and seeds as integers.
pub fn metrics_to_json(metrics: &Metrics) -> serde_json::Value {
    let object = metrics
        .iter()
        .map(|(k, &v)| {
            let value = if INTEGER_KEYS.contains(&k.as_str()) && v >= 0.0 && v.fract() == 0.0 {
                serde_json::json!(v as u64)
            } else {
                serde_json::json!(v)
            };
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object)
}

/// SWD, MMD² and, for mixtures, the per-mode statistics of `samples` against `data`.
pub fn sample_metrics(
    samples: &[f32],
    data: &[f32],
    dataset: &dyn Dataset,
    swd_directions: usize,
    rng: &mut ProjectRng,
) -> Result<Metrics> {
    let dim = dataset.dim();
    let mut m = Metrics::new();
    m.insert(
        "swd".into(),
        sliced_wasserstein(samples, data, dim, swd_directions, rng),
    );
    let mmd = mmd2(samples, data, dim);
    m.insert("mmd2".into(), mmd.fixed_sum);
    m.insert("mmd2_median".into(), mmd.median);
    if let Some(mixture) = dataset.as_mixture() {
        let stats = mode_stats(
            samples,
            dim,
            mixture.means(),
            mixture.stds(),
            mixture.weights(),
        )?;
        m.insert("mode_weight_tv".into(), stats.weight_tv);
        m.insert("off_mode_fraction".into(), stats.off_mode_fraction);
        m.insert("modes_covered".into(), stats.modes_covered as f64);
        m.insert("n_modes".into(), mixture.n_components() as f64);
        for (k, weight) in stats.weights.iter().enumerate() {
            m.insert(format!("mode_weight_{}", k + 1), *weight);
        }
    }
    Ok(m)
}

/// The full sample evaluation of `summary.json` and `eval.json`: the sampler's figures
/// plus those of the prior and of a second data sample, for scale.
pub fn evaluate_sampler<D: Backend>(
    sampler: &dyn Sampler<D>,
    dataset: &dyn Dataset,
    n: usize,
    swd_directions: usize,
    seed: u64,
) -> Result<(Metrics, Vec<f32>, Vec<f32>)> {
    let dim = dataset.dim();
    let mut rng = seeded(seed, STREAM_EVAL);
    let samples = sampler.sample(n, &mut rng).as_vec();
    let data = dataset.sample(n, &mut rng);
    let mut m = sample_metrics(&samples, &data, dataset, swd_directions, &mut rng)?;
    let prior = normal_vec(&mut rng, n * dim);
    let data_again = dataset.sample(n, &mut rng);
    m.insert(
        "swd_prior".into(),
        sliced_wasserstein(&prior, &data, dim, swd_directions, &mut rng),
    );
    m.insert("mmd2_prior".into(), mmd2(&prior, &data, dim).fixed_sum);
    m.insert(
        "swd_data_vs_data".into(),
        sliced_wasserstein(&data_again, &data, dim, swd_directions, &mut rng),
    );
    m.insert(
        "mmd2_data_vs_data".into(),
        mmd2(&data_again, &data, dim).fixed_sum,
    );
    m.insert("n_samples".into(), n as f64);
    m.insert("seed".into(), seed as f64);
    Ok((m, samples, data))
}

/// What an in-training evaluation logs.
pub struct Snapshot {
    /// `eval/...` scalars.
    pub scalars: Vec<(String, f64)>,
    /// A square RGB8 scatter of samples over data.
    pub image: Vec<u8>,
    /// The image's side in pixels.
    pub image_size: usize,
}

/// The quick evaluation logged every `eval_every` steps: metrics as `eval/...` scalars and
/// a scatter of samples over data as a square RGB image.
pub fn training_snapshot<D: Backend>(
    sampler: &dyn Sampler<D>,
    dataset: &dyn Dataset,
    config: &TrainConfig,
    step: u64,
) -> Result<Snapshot> {
    let n = config.eval.snapshot_samples.max(2);
    let mut rng = seeded(
        config.run.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        STREAM_EVAL,
    );
    let samples = sampler.sample(n, &mut rng).as_vec();
    let data = dataset.sample(n, &mut rng);
    let metrics = sample_metrics(
        &samples,
        &data,
        dataset,
        config.eval.swd_directions,
        &mut rng,
    )?;
    let scalars = metrics
        .into_iter()
        .filter(|(k, _)| k != "n_modes")
        .map(|(k, v)| (format!("eval/{k}"), v))
        .collect();
    let size = 400;
    let (image, _, _) = plots::samples_over_data_rgb(
        &samples,
        &data,
        dataset.dim(),
        &format!("step {step}"),
        size,
    )?;
    Ok(Snapshot {
        scalars,
        image,
        image_size: size as usize,
    })
}

/// A 2-D EBM's density figures and the grid densities behind them.
pub struct EnergyEvaluation {
    /// `energy_*` figures.
    pub metrics: Metrics,
    /// `exp(-E/T_E)/Z` on the grid.
    pub model_density: Vec<f64>,
    /// The true density on the grid, when known.
    pub true_density: Option<Vec<f64>>,
    /// The grid.
    pub grid: Grid2d,
}

/// Density figures of a 2-D EBM on its config's grid: calibrated and raw KL, TV and
/// held-out NLL (where the truth is known), AUROC of data versus uniform points; also
/// the grid densities for plotting.
pub fn energy_metrics<D: Backend>(
    model: &EnergyModel<D>,
    dataset: &dyn Dataset,
    config: &TrainConfig,
    rng: &mut ProjectRng,
) -> Result<EnergyEvaluation> {
    let r = &config.reward;
    let b = r.grid_half_width;
    let grid = Grid2d::new([-b, -b], [b, b], r.grid_size)?;
    let area = grid.cell_area();
    let points = grid.points();
    let energy: Vec<f64> = model
        .energy_host(&points)
        .iter()
        .map(|&e| e as f64)
        .collect();
    let t = model.temperature;
    let held_out = dataset.sample(r.held_out, rng);
    let held_out_energy: Vec<f64> = model
        .energy_host(&held_out)
        .iter()
        .map(|&e| e as f64)
        .collect();
    let mut m = Metrics::new();
    m.insert("energy_temperature".into(), t);
    m.insert(
        "energy_nll".into(),
        held_out_nll(&energy, area, &held_out_energy, t),
    );
    m.insert(
        "energy_nll_raw".into(),
        held_out_nll(&energy, area, &held_out_energy, 1.0),
    );
    let truth = dataset.log_density(&points);
    if let Some(log_p) = &truth {
        m.insert("energy_kl".into(), grid_kl(log_p, &energy, t, area));
        m.insert("energy_kl_raw".into(), grid_kl(log_p, &energy, 1.0, area));
        m.insert(
            "energy_tv".into(),
            grid_total_variation(log_p, &energy, t, area),
        );
    }
    let uniform: Vec<f32> = (0..held_out.len())
        .map(|_| rng.gen_range(-b..b) as f32)
        .collect();
    let outlier_energy: Vec<f64> = model
        .energy_host(&uniform)
        .iter()
        .map(|&e| e as f64)
        .collect();
    m.insert(
        "energy_auroc".into(),
        auroc(&held_out_energy, &outlier_energy)?,
    );
    Ok(EnergyEvaluation {
        metrics: m,
        model_density: normalised_grid_density(&energy, t, area),
        true_density: truth.map(|log_p| normalised_from_log_density(&log_p, area)),
        grid,
    })
}

/// `dgym eval RUN_DIR`: writes `eval.json` and the figures into the run directory;
/// returns the path of `eval.json`.
pub fn evaluate_run<D: Backend>(
    dev: &D,
    run_dir: &Path,
    n: Option<usize>,
    seed: Option<u64>,
) -> Result<PathBuf> {
    let started = Instant::now();
    let run = RunDir::new(run_dir);
    let config = run.load_config()?;
    let checkpoint = run.load_last_checkpoint()?;
    let dataset = build_dataset(&config.data)?;
    let sampler = load_any_sampler(dev, run_dir)?;
    let n = n.unwrap_or(config.eval.n_samples);
    if n < 2 {
        bail!("--n must be at least 2");
    }
    let seed = seed.unwrap_or(config.run.seed);
    let (mut metrics, samples, data) = evaluate_sampler(
        &*sampler,
        dataset.as_ref(),
        n,
        config.eval.swd_directions,
        seed,
    )?;
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
    let mut rng = seeded(seed, STREAM_EVAL + 1);
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
        let model = crate::energy::load_energy_model(dev, run_dir)?;
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
    metrics.insert("eval_time_s".into(), started.elapsed().as_secs_f64());
    let mut json = metrics_to_json(&metrics);
    json["figures"] = serde_json::json!(figures);
    json["run"] = serde_json::json!(run_dir.display().to_string());
    let path = run.root.join("eval.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The columns `dgym compare` shows first, in this order; other numeric keys follow.
const COMPARE_FIRST: &[&str] = &[
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
    "n_samples",
    "seed",
];

/// `dgym compare RUN...`: the runs' `eval.json` side by side, as Markdown and CSV text.
pub fn compare_runs(runs: &[PathBuf]) -> Result<(String, String)> {
    if runs.is_empty() {
        bail!("give at least one run directory");
    }
    let mut tables = Vec::new();
    for run in runs {
        let path = run.join("eval.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} has no eval.json: run `dgym eval {}` first",
                run.display(),
                run.display()
            )
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let numbers: BTreeMap<String, f64> = value
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                    .collect()
            })
            .unwrap_or_default();
        tables.push((run.display().to_string(), numbers));
    }
    let mut columns: Vec<String> = COMPARE_FIRST
        .iter()
        .filter(|c| tables.iter().any(|(_, m)| m.contains_key(**c)))
        .map(|c| c.to_string())
        .collect();
    for (_, m) in &tables {
        for k in m.keys() {
            if !columns.contains(k) && k != "eval_time_s" {
                columns.push(k.clone());
            }
        }
    }
    let cell = |m: &BTreeMap<String, f64>, c: &str| {
        m.get(c).map_or_else(String::new, |&v| {
            if INTEGER_KEYS.contains(&c) && v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.4}")
            }
        })
    };
    let mut md = format!(
        "| run | {} |\n|---|{}\n",
        columns.join(" | "),
        "---|".repeat(columns.len())
    );
    let mut csv = format!("run,{}\n", columns.join(","));
    for (name, m) in &tables {
        let cells: Vec<String> = columns.iter().map(|c| cell(m, c)).collect();
        md.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
        csv.push_str(&format!("{},{}\n", csv_quote(name), cells.join(",")));
    }
    Ok((md, csv))
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
