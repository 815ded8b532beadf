//! Tables prepared for training and held-out evaluation: the `[data]` keys `label_column`,
//! `validation_fraction`, `test_fraction`, `split_seed`, `standardize`, `min_std` and
//! `inlier_classes` (docs/configuration.md, "Real data").
//!
//! The order is fixed so that no statistic sees a held-out row: read the table (labels
//! split off), split it (stratified by label, seeded by `split_seed` only, so every method
//! and seed sees the same rows), keep the inlier classes of the train and validation
//! splits, fit the standardiser on the train split alone and apply it to every split.
//! The statistics go into the run as `data_stats.json`, which `dgym sample` and
//! `dgym energy` read to work in the data's own units.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use denoise_gym::train::RunDir;
use denoise_gym_envs::{Dataset, Standardizer, TabularDataset};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;

/// The file in a run directory that holds [`DataStats`].
pub const DATA_STATS_FILE: &str = "data_stats.json";

/// The fewest test points of a class (and of the inliers) an anomaly evaluation takes:
/// with fewer, FPR at 95% TPR and a per-class AUROC are decided by one or two points.
pub const MIN_TEST_POINTS_PER_CLASS: usize = 5;

/// What a run records of its data: the split sizes, the classes and the standardisation,
/// so that its outputs can be put back into the data's units without the data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataStats {
    /// The data set's name (`data.dataset`).
    pub dataset: String,
    /// Columns of a point.
    pub dim: usize,
    /// Rows of the train split the sampler learns from (inliers only when
    /// `inlier_classes` is set).
    pub train_rows: usize,
    /// Rows of the validation split (inliers only).
    pub validation_rows: usize,
    /// Rows of the test split (every class).
    pub test_rows: usize,
    /// The class names, by label (empty without labels).
    pub class_names: Vec<String>,
    /// The classes trained on (empty = all).
    pub inlier_classes: Vec<u32>,
    /// The standardisation fitted on the train split, when `standardize` is set.
    pub standardizer: Option<Standardizer>,
}

impl DataStats {
    /// Maps model-space points (row-major) back to the data's units.
    pub fn to_data_units(&self, points: &mut [f32]) -> Result<()> {
        if let Some(s) = &self.standardizer {
            s.invert(points)?;
        }
        Ok(())
    }

    /// A copy of model-space points (row-major) in the data's units.
    pub fn in_data_units(&self, points: &[f32]) -> Result<Vec<f32>> {
        let mut points = points.to_vec();
        self.to_data_units(&mut points)?;
        Ok(points)
    }

    /// Maps points in the data's units (row-major) into the model's space.
    pub fn to_model_space(&self, points: &mut [f32]) -> Result<()> {
        if let Some(s) = &self.standardizer {
            s.apply(points)?;
        }
        Ok(())
    }
}

/// A table split into train, validation and test, in the model's space.
#[derive(Debug, Clone)]
pub struct TableSplits {
    /// The train split (inliers only when `inlier_classes` is set).
    pub train: TabularDataset,
    /// The train split with every class (the classifier of generated samples).
    pub train_all: TabularDataset,
    /// The validation split (inliers only).
    pub validation: Option<TabularDataset>,
    /// The test split (every class).
    pub test: Option<TabularDataset>,
    /// What the run records.
    pub stats: DataStats,
}

/// The data of a run: what training draws from, and the splits when the config has them.
pub struct PreparedData {
    /// What training samples from: the train split when there are splits, else the data
    /// set itself.
    pub train: Arc<dyn Dataset>,
    /// The splits, when the config asks for any of splitting, standardisation or inlier
    /// classes.
    pub splits: Option<TableSplits>,
}

/// `n` rows of `table` spread evenly over it (rows `⌊i · len / n⌋`, all rows when `n` is not
/// smaller), row-major: a subsample that does not depend on how the file is sorted.
pub fn spread_rows(table: &TabularDataset, n: usize) -> Vec<f32> {
    let (len, dim) = (table.len(), table.dim());
    let n = n.min(len);
    let points = table.points();
    (0..n)
        .flat_map(|i| {
            let row = i * len / n.max(1);
            points[row * dim..(row + 1) * dim].iter().copied()
        })
        .collect()
}

impl PreparedData {
    /// The splits and their test split, when there is one.
    pub fn test_split(&self) -> Option<(&TableSplits, &TabularDataset)> {
        let splits = self.splits.as_ref()?;
        Some((splits, splits.test.as_ref()?))
    }
}

/// Whether the config needs the data as a table (split, standardised or filtered).
pub fn needs_table(config: &TrainConfig) -> bool {
    let d = &config.data;
    d.validation_fraction > 0.0
        || d.test_fraction > 0.0
        || d.standardize
        || !d.inlier_classes.is_empty()
}

/// The table of `data.dataset` with its class names (`csv` with or without a label
/// column, `digits`).
pub fn read_table(config: &TrainConfig) -> Result<(TabularDataset, Vec<String>)> {
    let d = &config.data;
    match d.dataset.as_str() {
        "csv" => {
            if d.path.is_empty() {
                bail!("key data.path: the csv data set needs a file path");
            }
            let path = Path::new(&d.path);
            match &d.label_column {
                Some(column) => Ok(TabularDataset::from_csv_with_label_column(path, column)?),
                None => Ok((TabularDataset::from_csv(path, d.drop_last_column)?, vec![])),
            }
        }
        "digits" => Ok((
            TabularDataset::digits()?,
            (0..10).map(|k| k.to_string()).collect(),
        )),
        other => bail!(
            "keys data.validation_fraction / test_fraction / standardize / inlier_classes: splits and standardisation need a table (data set csv or digits), and {other:?} draws fresh points"
        ),
    }
}

/// Splits, filters and standardises the table as the config asks (see the module docs).
pub fn split_table(config: &TrainConfig) -> Result<TableSplits> {
    let d = &config.data;
    let (table, class_names) = read_table(config)?;
    let splits = table.split(d.validation_fraction, d.test_fraction, d.split_seed)?;
    let inliers = &d.inlier_classes;
    let keep = |t: &TabularDataset| -> Result<TabularDataset> {
        Ok(if inliers.is_empty() {
            t.clone()
        } else {
            t.filter_labels(inliers)?
        })
    };
    if !inliers.is_empty() {
        check_inliers(&table, inliers, splits.test.as_ref())?;
    }
    let train_inliers = keep(&splits.train)?;
    let validation = splits.validation.as_ref().map(keep).transpose()?;
    let standardizer = if d.standardize {
        Some(Standardizer::fit(&train_inliers, d.min_std)?)
    } else {
        None
    };
    let to_model = |t: &TabularDataset| -> Result<TabularDataset> {
        Ok(match &standardizer {
            Some(s) => s.apply_table(t)?,
            None => t.clone(),
        })
    };
    let stats = DataStats {
        dataset: d.dataset.clone(),
        dim: table.dim(),
        train_rows: train_inliers.len(),
        validation_rows: validation.as_ref().map_or(0, TabularDataset::len),
        test_rows: splits.test.as_ref().map_or(0, TabularDataset::len),
        class_names,
        inlier_classes: inliers.clone(),
        standardizer: standardizer.clone(),
    };
    Ok(TableSplits {
        train: to_model(&train_inliers)?,
        train_all: to_model(&splits.train)?,
        validation: validation.as_ref().map(to_model).transpose()?,
        test: splits.test.as_ref().map(to_model).transpose()?,
        stats,
    })
}

/// The inlier classes must be labels of the table, leave at least one class out, and the
/// test split must hold enough points of every class to score.
fn check_inliers(
    table: &TabularDataset,
    inliers: &[u32],
    test: Option<&TabularDataset>,
) -> Result<()> {
    let Some(labels) = table.labels() else {
        bail!(
            "key data.inlier_classes: data set {:?} has no labels (set data.label_column for a csv file)",
            table.name()
        );
    };
    let mut classes: Vec<u32> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    if let Some(missing) = inliers.iter().find(|c| !classes.contains(c)) {
        bail!("key data.inlier_classes: class {missing} is not a label of {:?} (its labels: {classes:?})", table.name());
    }
    if classes.iter().all(|c| inliers.contains(c)) {
        bail!(
            "key data.inlier_classes: {inliers:?} covers every class of {:?}, which leaves no anomaly to detect",
            table.name()
        );
    }
    let test_labels = test.and_then(TabularDataset::labels).unwrap_or(&[]);
    let outlier_classes: Vec<u32> = classes
        .iter()
        .copied()
        .filter(|c| !inliers.contains(c))
        .collect();
    check_class_counts(
        test_labels,
        inliers,
        &outlier_classes,
        "key data.test_fraction: the test split",
    )
}

/// The rows an anomaly evaluation scores (`labels`) must hold at least
/// [`MIN_TEST_POINTS_PER_CLASS`] inlier rows and as many of every class in
/// `outlier_classes`, of which there must be one; `source` names the rows in the message.
pub fn check_class_counts(
    labels: &[u32],
    inliers: &[u32],
    outlier_classes: &[u32],
    source: &str,
) -> Result<()> {
    let count = |c: u32| labels.iter().filter(|&&l| l == c).count();
    let n_inliers: usize = inliers.iter().map(|&c| count(c)).sum();
    if n_inliers < MIN_TEST_POINTS_PER_CLASS {
        bail!(
            "{source} holds {n_inliers} inlier rows (classes {inliers:?}), an anomaly evaluation needs at least {MIN_TEST_POINTS_PER_CLASS}"
        );
    }
    if outlier_classes.is_empty() {
        bail!("{source} holds no row of a class outside {inliers:?}: nothing to detect");
    }
    for &c in outlier_classes {
        if count(c) < MIN_TEST_POINTS_PER_CLASS {
            bail!(
                "{source} holds {} rows of class {c}, an anomaly evaluation needs at least {MIN_TEST_POINTS_PER_CLASS} per class",
                count(c)
            );
        }
    }
    Ok(())
}

/// Writes the run's `data_stats.json` (atomically).
pub fn write_data_stats(run: &RunDir, stats: &DataStats) -> Result<()> {
    let path = run.root.join(DATA_STATS_FILE);
    denoise_gym::io::write_atomic(&path, serde_json::to_string_pretty(stats)?.as_bytes())?;
    Ok(())
}

/// The run's data statistics: `data_stats.json`, or `None` for a run without a table
/// (its outputs are in the data's units already).
pub fn read_data_stats(run: &RunDir) -> Result<Option<DataStats>> {
    let path = run.root.join(DATA_STATS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let stats = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected the data statistics a run writes",
            path.display()
        )
    })?;
    Ok(Some(stats))
}

/// The statistics a run's outputs are mapped with: its `data_stats.json`, or, for a run
/// whose config needs a table but which lost the file, the same statistics computed
/// again from the config and the data (the split and the fit are deterministic).
pub fn run_data_stats(run: &RunDir, config: &TrainConfig) -> Result<Option<DataStats>> {
    if let Some(stats) = read_data_stats(run)? {
        return Ok(Some(stats));
    }
    if !needs_table(config) {
        return Ok(None);
    }
    Ok(Some(split_table(config)?.stats))
}
