//! Anomaly detection with a run's learned energy, beside four baselines fitted on the same
//! training points (docs/anomaly.md): a run trained on the inlier classes of its train split
//! (`data.inlier_classes`) scores every row of the test split; the rows of the other
//! classes are the anomalies. `dgym eval` and `dgym anomaly` write `anomaly.json` and
//! `roc.png`, and `eval.json` gets the flat `<method>_auroc`, `<method>_aupr` and
//! `<method>_fpr95` keys that sweeps aggregate.
//!
//! Scores (higher = more anomalous), all in the model's (standardised) space:
//! - `ebm`: the raw energy `E(x)` of a GCD/DxMI run's EBM, or `-D(x, 0)` of a DDAEBM run
//!   (the temperature `T_E` rescales it and leaves every ranking, hence AUROC, unchanged);
//! - `mahalanobis`: the squared Mahalanobis distance to the training mean under a
//!   Ledoit–Wolf shrinkage covariance;
//! - `knn`: the distance to the `eval.anomaly_knn_k`-th nearest training point;
//! - `kde`: `-log p` of an isotropic Gaussian kernel density whose bandwidth maximises
//!   the validation split's likelihood (needs `data.validation_fraction > 0`);
//! - `dsm`: the denoising error of the DSM-pretrained sampler, `mean_{t, k} ‖ε̂(x_t, t) − ε‖² / d`
//!   over every step `t = 1..T` and `eval.anomaly_dsm_draws` noise draws `ε` per step,
//!   `x_t = √ᾱ_t x + √(1−ᾱ_t) ε` (diffusion runs only).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use denoise_gym::anomaly::{
    default_bandwidths, detection_metrics, knn_scores, roc_curve, DetectionMetrics, GaussianKde,
    Mahalanobis,
};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::rng::{normal_matrix, Stream};
use denoise_gym::tensor::{matrix, Backend};
use denoise_gym::train::RunDir;
use denoise_gym_envs::{Dataset, LabelColumn, TabularDataset};
use serde_json::json;

use crate::build::{load_energy_model, load_run_config, load_sampler, load_sampler_at};
use crate::catalog::Catalog;
use crate::config::TrainConfig;
use crate::data::{check_class_counts, DataStats, TableSplits};
use crate::eval::Metrics;
use crate::plots;

/// The file an anomaly evaluation writes into the run directory.
pub const ANOMALY_FILE: &str = "anomaly.json";

/// The methods, in the order of the tables.
pub const METHODS: [&str; 5] = ["ebm", "mahalanobis", "knn", "kde", "dsm"];

/// The test rows scored: points in the model's space and their labels.
pub struct ScoredSet {
    /// Row-major points, standardised as the run's training data.
    pub points: Vec<f32>,
    /// One label per row.
    pub labels: Vec<u32>,
    /// Where the rows come from, for messages.
    pub source: String,
}

/// Every method's anomaly scores of a set of rows.
pub struct MethodScores {
    /// `(method, scores)`, in [`METHODS`] order, methods that do not apply left out.
    pub scores: Vec<(String, Vec<f64>)>,
    /// What each score is, in words.
    pub notes: BTreeMap<String, String>,
}

/// The DSM-pretrained sampler of a diffusion run: the numbered checkpoint at the end of
/// pretraining (`finetune.init_from`'s sampler when the run started from another run, the
/// run's own sampler when it only pretrained).
pub fn pretrained_sampler<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
    config: &TrainConfig,
) -> Result<Option<GaussianPolicy<D>>> {
    if config.run.method != "diffusion" {
        return Ok(None);
    }
    if !config.finetune.init_from.is_empty() {
        return Ok(Some(load_sampler(
            dev,
            catalog,
            Path::new(&config.finetune.init_from),
        )?));
    }
    let run = RunDir::new(run_dir);
    let path = run.numbered_checkpoint(config.pretrain.iterations);
    if !path.exists() {
        bail!(
            "{}: the DSM baseline needs the checkpoint at the end of pretraining (step {})",
            path.display(),
            config.pretrain.iterations
        );
    }
    let checkpoint = Checkpoint::load(&path)?;
    Ok(Some(load_sampler_at(dev, config, &checkpoint, &path)?))
}

/// The DSM denoising-error score of every row (see the module docs), with noise from
/// the evaluation stream of `seed`.
pub fn dsm_scores<D: Backend>(
    policy: &GaussianPolicy<D>,
    points: &[f32],
    draws: usize,
    seed: u64,
) -> Result<Vec<f64>> {
    let dim = policy.dim();
    if !points.len().is_multiple_of(dim) {
        bail!(
            "dsm score: rows of {dim} values expected, got a buffer of {}",
            points.len()
        );
    }
    let n = points.len() / dim;
    let dev = policy.device();
    let x0 = matrix(dev, points.to_vec(), n, dim);
    let mut rng = Stream::Eval.rng(seed ^ 0xD5A0_0000);
    let mut total = vec![0.0f64; n];
    let steps = policy.n_steps();
    for t in 1..=steps {
        let ts = vec![t; n];
        for _ in 0..draws {
            let noise = normal_matrix(dev, &mut rng, n, dim);
            let x_t = policy.noised(&x0, &ts, &noise);
            let predicted = policy.predict_eps(x_t, &ts).as_vec();
            let noise = noise.as_vec();
            for (i, (p, e)) in predicted
                .chunks_exact(dim)
                .zip(noise.chunks_exact(dim))
                .enumerate()
            {
                let error: f64 = p
                    .iter()
                    .zip(e)
                    .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                    .sum();
                total[i] += error / dim as f64;
            }
        }
    }
    let count = (steps * draws) as f64;
    Ok(total.into_iter().map(|s| s / count).collect())
}

/// Scores `set` with the run's energy and every baseline fitted on the run's train split.
pub fn score_all<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
    config: &TrainConfig,
    splits: &TableSplits,
    set: &ScoredSet,
) -> Result<MethodScores> {
    let dim = splits.train.dim();
    let train = splits.train.points();
    let mut scores = Vec::new();
    let mut notes = BTreeMap::new();
    let energy = load_energy_model(dev, catalog, run_dir)?;
    scores.push((
        "ebm".to_string(),
        energy
            .energy_host(&set.points)
            .iter()
            .map(|&e| e as f64)
            .collect(),
    ));
    notes.insert(
        "ebm".into(),
        if config.run.method == "ddaebm" {
            "-D(x, 0), the DDAEBM energy at t = 0, raw (before T_E)".to_string()
        } else {
            "E(x), the EBM's raw energy (before T_E)".to_string()
        },
    );
    let mahalanobis = Mahalanobis::fit(train, dim)?;
    scores.push(("mahalanobis".into(), mahalanobis.score(&set.points)?));
    notes.insert(
        "mahalanobis".into(),
        format!(
            "squared Mahalanobis distance, Ledoit-Wolf shrinkage {:.4}",
            mahalanobis.shrinkage()
        ),
    );
    let k = config.eval.anomaly_knn_k.min(splits.train.len());
    scores.push(("knn".into(), knn_scores(train, &set.points, dim, k)?));
    notes.insert(
        "knn".into(),
        format!("distance to the {k}-th nearest training point"),
    );
    if let Some(validation) = &splits.validation {
        let kde = GaussianKde::fit(
            train,
            validation.points(),
            dim,
            &default_bandwidths(train, dim),
        )?;
        scores.push(("kde".into(), kde.score(&set.points)?));
        notes.insert(
            "kde".into(),
            format!(
                "-log p of a Gaussian KDE, bandwidth {:.4} by validation likelihood",
                kde.bandwidth()
            ),
        );
    }
    if let Some(policy) = pretrained_sampler(dev, catalog, run_dir, config)? {
        let draws = config.eval.anomaly_dsm_draws;
        scores.push((
            "dsm".into(),
            dsm_scores(&policy, &set.points, draws, config.run.seed)?,
        ));
        notes.insert(
            "dsm".into(),
            format!(
                "DSM sampler's denoising error, mean over t = 1..{} and {draws} draws per step",
                policy.n_steps()
            ),
        );
    }
    Ok(MethodScores { scores, notes })
}

/// Inlier and outlier scores of one method, overall and per outlier class.
fn split_scores<'a>(
    scores: &'a [f64],
    labels: &'a [u32],
    inliers: &'a [u32],
) -> (Vec<f64>, BTreeMap<u32, Vec<f64>>) {
    let mut inlier = Vec::new();
    let mut outliers: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for (&s, &l) in scores.iter().zip(labels) {
        if inliers.contains(&l) {
            inlier.push(s);
        } else {
            outliers.entry(l).or_default().push(s);
        }
    }
    (inlier, outliers)
}

fn metrics_json(m: &DetectionMetrics) -> serde_json::Value {
    json!({
        "auroc": m.auroc,
        "aupr": m.aupr,
        "fpr_at_95_tpr": m.fpr_at_95_tpr,
        "n_inliers": m.n_inliers,
        "n_outliers": m.n_outliers,
    })
}

/// The protocol a set of inlier classes follows, in the literature's words.
pub fn protocol(inliers: &[u32], n_classes: usize) -> &'static str {
    if inliers.len() == 1 {
        "one-class"
    } else if inliers.len() + 1 == n_classes {
        "leave-one-class-out"
    } else {
        "inlier-classes"
    }
}

/// Writes `anomaly.json` and `roc.png` into the run directory for `set`; returns the
/// flat `eval.json` keys (`<method>_auroc`, `<method>_aupr`, `<method>_fpr95`).
pub fn anomaly_report<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
    config: &TrainConfig,
    splits: &TableSplits,
    set: &ScoredSet,
) -> Result<Metrics> {
    let stats = &splits.stats;
    let inliers = &stats.inlier_classes;
    if inliers.is_empty() {
        bail!(
            "run {}: no data.inlier_classes, so no class is an anomaly; train with data.inlier_classes = [k] (one-class) or every class but one (leave-one-class-out)",
            run_dir.display()
        );
    }
    let mut outlier_classes: Vec<u32> = set
        .labels
        .iter()
        .copied()
        .filter(|l| !inliers.contains(l))
        .collect();
    outlier_classes.sort_unstable();
    outlier_classes.dedup();
    // Checked before any scoring: the scores of too few rows are not computed at all.
    check_class_counts(&set.labels, inliers, &outlier_classes, &set.source)?;
    let count_inliers = set.labels.iter().filter(|l| inliers.contains(l)).count();
    let method_scores = score_all(dev, catalog, run_dir, config, splits, set)?;
    let mut flat = Metrics::new();
    let mut methods = serde_json::Map::new();
    let mut curves = Vec::new();
    for (method, scores) in &method_scores.scores {
        let (inlier, outliers) = split_scores(scores, &set.labels, inliers);
        let all_outliers: Vec<f64> = outliers.values().flatten().copied().collect();
        let overall = detection_metrics(&inlier, &all_outliers)?;
        let mut per_class = serde_json::Map::new();
        for (class, scores) in &outliers {
            let m = detection_metrics(&inlier, scores)?;
            per_class.insert(class_name(stats, *class), metrics_json(&m));
        }
        let mut entry = metrics_json(&overall);
        entry["per_outlier_class"] = serde_json::Value::Object(per_class);
        entry["score"] = json!(method_scores.notes.get(method));
        methods.insert(method.clone(), entry);
        flat.insert(format!("{method}_auroc"), overall.auroc);
        flat.insert(format!("{method}_aupr"), overall.aupr);
        flat.insert(format!("{method}_fpr95"), overall.fpr_at_95_tpr);
        curves.push((method.clone(), roc_curve(&inlier, &all_outliers)?));
    }
    let n_classes = stats.class_names.len();
    let report = json!({
        "protocol": protocol(inliers, n_classes),
        "inlier_classes": inliers,
        "inlier_names": inliers.iter().map(|&c| class_name(stats, c)).collect::<Vec<_>>(),
        "scored": set.source,
        "n_rows": set.labels.len(),
        "n_inliers": count_inliers,
        "higher_is_more_anomalous": true,
        "methods": methods,
    });
    let run = RunDir::new(run_dir);
    denoise_gym::io::write_atomic(
        &run.root.join(ANOMALY_FILE),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let title = format!(
        "ROC, inliers {:?} ({}), {} rows",
        inliers,
        protocol(inliers, n_classes),
        set.labels.len()
    );
    plots::roc_curves(&run.root.join("roc.png"), &curves, &title)?;
    Ok(flat)
}

fn class_name(stats: &DataStats, class: u32) -> String {
    stats
        .class_names
        .get(class as usize)
        .cloned()
        .unwrap_or_else(|| class.to_string())
}

/// The test split of the run, as the set to score.
pub fn test_set(splits: &TableSplits) -> Result<ScoredSet> {
    let Some(test) = &splits.test else {
        bail!("the run has no test split (data.test_fraction = 0): nothing to score");
    };
    let Some(labels) = test.labels() else {
        bail!("the run's test split has no labels: anomaly detection needs classes");
    };
    Ok(ScoredSet {
        points: test.points().to_vec(),
        labels: labels.to_vec(),
        source: "the test split".to_string(),
    })
}

/// A labelled CSV file to score instead of the test split: its width must be the run's,
/// and its labels are matched to the run's classes by name (a class the run never saw
/// is an anomaly class of its own).
pub fn csv_set(path: &Path, label: &LabelColumn, stats: &DataStats) -> Result<ScoredSet> {
    let (table, names): (TabularDataset, Vec<String>) =
        TabularDataset::from_csv_with_label_column(path, label)?;
    if table.dim() != stats.dim {
        bail!(
            "{}: rows of {} values besides the label, the run's data has {}",
            path.display(),
            table.dim(),
            stats.dim
        );
    }
    let Some(labels) = table.labels() else {
        bail!("{}: no labels read", path.display());
    };
    let mut known = stats.class_names.clone();
    let labels = labels
        .iter()
        .map(|&l| {
            let name = names
                .get(l as usize)
                .cloned()
                .unwrap_or_else(|| l.to_string());
            match known.iter().position(|k| *k == name) {
                Some(i) => i as u32,
                None => {
                    known.push(name);
                    (known.len() - 1) as u32
                }
            }
        })
        .collect();
    let mut points = table.points().to_vec();
    stats.to_model_space(&mut points)?;
    Ok(ScoredSet {
        points,
        labels,
        source: path.display().to_string(),
    })
}

/// `dgym anomaly RUN_DIR [--data FILE --label-column C]`: (re)writes the run's
/// `anomaly.json` and `roc.png`; returns the flat figures.
pub fn anomaly_command<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
    data: Option<&Path>,
    label_column: Option<LabelColumn>,
) -> Result<Metrics> {
    let run = RunDir::new(run_dir);
    let config = load_run_config(&run, catalog)?;
    crate::build::warn_if_unfinished(&run);
    if config.data.inlier_classes.is_empty() {
        bail!(
            "run {}: trained without data.inlier_classes, so no class is an anomaly (see docs/anomaly.md)",
            run_dir.display()
        );
    }
    let splits = crate::data::split_table(&config)
        .with_context(|| format!("rebuilding the splits of run {}", run_dir.display()))?;
    let set = match data {
        None => test_set(&splits)?,
        Some(path) => {
            let column = label_column
                .or_else(|| config.data.label_column.clone())
                .unwrap_or(LabelColumn::Index(-1));
            csv_set(path, &column, &splits.stats)?
        }
    };
    anomaly_report(dev, catalog, run_dir, &config, &splits, &set)
}
