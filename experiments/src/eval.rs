//! Evaluation (docs/algorithms.md §7): the metrics of a sampler against fresh data, used by
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

use anyhow::Result;
use denoise_gym::anomaly::{nearest_distances, nearest_neighbours};
use denoise_gym::ebm::{grid_kl, held_out_nll, EnergyModel, Grid2d};
use denoise_gym::log::{Logger, MultiLogger};
use denoise_gym::metrics::{
    auroc, grid_total_variation, mmd2, mode_stats, normalised_from_log_density,
    normalised_grid_density, sliced_wasserstein,
};
use denoise_gym::rng::{normal_vec, ProjectRng, Stream};
use denoise_gym::sampler::Sampler;
use denoise_gym::tensor::Backend;
use denoise_gym_envs::{Dataset, TabularDataset};

use crate::data::{spread_rows, PreparedData, TableSplits};
use rand::Rng;

use crate::config::TrainConfig;
use crate::plots;

/// A flat map of named figures.
pub type Metrics = BTreeMap<String, f64>;

/// Keys whose values are counts or seeds, written to JSON as integers.
pub const INTEGER_KEYS: &[&str] = &[
    "n_samples",
    "seed",
    "modes_covered",
    "n_modes",
    "n_reference",
    "classes_generated",
    "n_classes",
];

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

/// `swd`, `mmd2` (the fixed bandwidths' sum) and `mmd2_median` of `samples` against `data`.
fn swd_and_mmd(
    samples: &[f32],
    data: &[f32],
    dim: usize,
    swd_directions: usize,
    rng: &mut ProjectRng,
) -> Metrics {
    let mut m = Metrics::new();
    m.insert(
        "swd".into(),
        sliced_wasserstein(samples, data, dim, swd_directions, rng),
    );
    let mmd = mmd2(samples, data, dim);
    m.insert("mmd2".into(), mmd.fixed_sum);
    m.insert("mmd2_median".into(), mmd.median);
    m
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
    let mut m = swd_and_mmd(samples, data, dim, swd_directions, rng);
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
    let mut rng = Stream::Eval.rng(seed);
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

/// The multiples of the median-heuristic bandwidth the held-out MMD² is computed at.
pub const HELDOUT_BANDWIDTH_FACTORS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// The `eval.json` key of the held-out MMD² at `factor` × the median bandwidth.
pub fn mmd2_bandwidth_key(factor: f64) -> String {
    format!("mmd2_bw_{factor}")
}

/// Rows of each sample the held-out MMD² and its bandwidth use.
const HELDOUT_MAX_POINTS: usize = 2000;

/// The median pairwise distance of a held-out split: the bandwidth [`heldout_mmd`] scales,
/// fixed by the data alone so that every method is measured with the same kernels.
pub fn heldout_bandwidth(reference: &[f32], dim: usize) -> f64 {
    denoise_gym::metrics::median_bandwidth(reference, &[], dim, HELDOUT_MAX_POINTS)
}

/// Unbiased MMD² of `samples` against a held-out split at [`HELDOUT_BANDWIDTH_FACTORS`] ×
/// `h`, the split's [`heldout_bandwidth`] (computed once per split by the caller), and
/// their sum, `mmd2_multiscale`.
pub fn heldout_mmd(samples: &[f32], reference: &[f32], dim: usize, h: f64) -> Metrics {
    const MAX_POINTS: usize = HELDOUT_MAX_POINTS;
    let bandwidths: Vec<f64> = HELDOUT_BANDWIDTH_FACTORS.iter().map(|f| f * h).collect();
    let values =
        denoise_gym::metrics::mmd2_unbiased(samples, reference, dim, &bandwidths, MAX_POINTS);
    let mut m = Metrics::new();
    for (factor, value) in HELDOUT_BANDWIDTH_FACTORS.iter().zip(&values) {
        m.insert(mmd2_bandwidth_key(*factor), *value);
    }
    m.insert("mmd2_multiscale".into(), values.iter().sum());
    m.insert("mmd2_median_bandwidth".into(), h);
    m
}

/// The sample figures of a run on a table with splits, against its held-out `reference`
/// split (the test split for `summary.json` and `eval.json`, the validation split for
/// selection): SWD and MMD² as on fresh data, the multi-scale held-out MMD² (also of a
/// train-split subsample of the same size, `*_data_vs_data`, for scale), the mean
/// distance of each sample to its nearest training point beside the reference points'
/// own (`nn_train_distance`, `nn_train_distance_reference`; in the data's units: a
/// sampler that copies the training set scores below the reference), and, with labels,
/// what a k-nearest-neighbour classifier of the training split makes of the samples.
pub fn heldout_metrics(
    samples: &[f32],
    splits: &TableSplits,
    reference: &TabularDataset,
    swd_directions: usize,
    rng: &mut ProjectRng,
) -> Result<Metrics> {
    let dim = reference.dim();
    let data = reference.points();
    let mut m = swd_and_mmd(samples, data, dim, swd_directions, rng);
    let h = heldout_bandwidth(data, dim);
    m.extend(heldout_mmd(samples, data, dim, h));
    let train = splits.train.points();
    let train_subsample = spread_rows(&splits.train, reference.len());
    for (key, value) in heldout_mmd(&train_subsample, data, dim, h) {
        if key.starts_with("mmd2_bw") || key == "mmd2_multiscale" {
            m.insert(format!("{key}_data_vs_data"), value);
        }
    }
    let in_units = |points: &[f32]| splits.stats.in_data_units(points);
    let (train_units, samples_units, reference_units) =
        (in_units(train)?, in_units(samples)?, in_units(data)?);
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    m.insert(
        "nn_train_distance".into(),
        mean(nearest_distances(&train_units, &samples_units, dim)?),
    );
    m.insert(
        "nn_train_distance_reference".into(),
        mean(nearest_distances(&train_units, &reference_units, dim)?),
    );
    if let Some(labels) = splits.train_all.labels() {
        m.extend(classifier_metrics(
            splits.train_all.points(),
            labels,
            samples,
            reference,
            dim,
        )?);
    }
    m.insert("n_samples".into(), (samples.len() / dim) as f64);
    m.insert("n_reference".into(), reference.len() as f64);
    Ok(m)
}

/// Neighbours of the k-nearest-neighbour classifier of generated samples.
pub const CLASSIFIER_K: usize = 10;

/// The share of samples a k-nearest-neighbour classifier ([`CLASSIFIER_K`] neighbours in
/// the training split) gives one class with probability > 0.9 (all ten neighbours agree),
/// beside the same share of the reference points; the number of classes among those
/// confident samples; and the classifier's accuracy on the reference points, for scale.
pub fn classifier_metrics(
    train: &[f32],
    labels: &[u32],
    samples: &[f32],
    reference: &TabularDataset,
    dim: usize,
) -> Result<Metrics> {
    let n_classes = labels.iter().max().map_or(0, |&l| l as usize + 1);
    let votes = |points: &[f32]| -> Result<Vec<(u32, f64)>> {
        Ok(nearest_neighbours(train, points, dim, CLASSIFIER_K)?
            .iter()
            .map(|neighbours| {
                let mut counts = vec![0usize; n_classes];
                for &(i, _) in neighbours {
                    counts[labels[i] as usize] += 1;
                }
                // The most votes, the smaller label on a tie: deterministic.
                let (class, &count) = counts
                    .iter()
                    .enumerate()
                    .rev()
                    .max_by_key(|(_, &c)| c)
                    .unwrap_or((0, &0));
                (class as u32, count as f64 / neighbours.len().max(1) as f64)
            })
            .collect())
    };
    let share_confident = |v: &[(u32, f64)]| {
        v.iter().filter(|(_, p)| *p > 0.9).count() as f64 / v.len().max(1) as f64
    };
    let generated = votes(samples)?;
    let held_out = votes(reference.points())?;
    let mut classes: Vec<u32> = generated
        .iter()
        .filter(|(_, p)| *p > 0.9)
        .map(|(c, _)| *c)
        .collect();
    classes.sort_unstable();
    classes.dedup();
    let mut m = Metrics::new();
    m.insert(
        "classifier_confident_fraction".into(),
        share_confident(&generated),
    );
    m.insert(
        "classifier_confident_fraction_reference".into(),
        share_confident(&held_out),
    );
    m.insert("classes_generated".into(), classes.len() as f64);
    let trained: Vec<u32> = {
        let mut l = labels.to_vec();
        l.sort_unstable();
        l.dedup();
        l
    };
    m.insert("n_classes".into(), trained.len() as f64);
    if let Some(reference_labels) = reference.labels() {
        let correct = held_out
            .iter()
            .zip(reference_labels)
            .filter(|((c, _), l)| c == *l)
            .count();
        m.insert(
            "classifier_accuracy_reference".into(),
            correct as f64 / reference_labels.len().max(1) as f64,
        );
    }
    Ok(m)
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
    let mut rng = Stream::Eval.rng(config.run.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
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

/// The sample evaluation written to `summary.json` (see [`metrics_to_json`] for the keys):
/// against the test split when the data has one ([`heldout_metrics`]), else against
/// fresh data ([`evaluate_sampler`]).
pub fn evaluate<D: Backend>(
    sampler: &dyn Sampler<D>,
    data: &PreparedData,
    config: &TrainConfig,
) -> Result<serde_json::Value> {
    let e = &config.eval;
    let metrics = match data.test_split() {
        Some((splits, test)) => {
            evaluate_heldout(
                sampler,
                splits,
                test,
                e.n_samples,
                e.swd_directions,
                config.run.seed,
            )?
            .0
        }
        None => {
            evaluate_sampler(
                sampler,
                data.train.as_ref(),
                e.n_samples,
                e.swd_directions,
                config.run.seed,
            )?
            .0
        }
    };
    Ok(metrics_to_json(&metrics))
}

/// [`heldout_metrics`] of `n` samples drawn with the evaluation stream of `seed`; also
/// returns the samples.
pub fn evaluate_heldout<D: Backend>(
    sampler: &dyn Sampler<D>,
    splits: &TableSplits,
    reference: &TabularDataset,
    n: usize,
    swd_directions: usize,
    seed: u64,
) -> Result<(Metrics, Vec<f32>)> {
    let mut rng = Stream::Eval.rng(seed);
    let samples = sampler.sample(n, &mut rng).as_vec();
    let mut m = heldout_metrics(&samples, splits, reference, swd_directions, &mut rng)?;
    m.insert("seed".into(), seed as f64);
    Ok((m, samples))
}

/// Logs an evaluation's `swd`, `mmd2` and `mmd2_median` as `eval/...` in phase `eval`.
pub fn log_eval(logger: &mut MultiLogger, step: u64, eval: &serde_json::Value) -> Result<()> {
    let scalars: Vec<(String, f64)> = ["swd", "mmd2", "mmd2_median"]
        .iter()
        .filter_map(|k| eval[*k].as_f64().map(|v| (format!("eval/{k}"), v)))
        .collect();
    logger.log_scalars(step, "eval", &scalars)?;
    Ok(())
}
