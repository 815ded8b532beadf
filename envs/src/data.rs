//! Data sources ("expert demonstrations") for denoise-gym.
//!
//! Every source implements [`Dataset`]: it draws fresh points in `R^d` on each call to
//! [`Dataset::sample`], from a caller-supplied random number generator, so that a seeded
//! generator gives reproducible batches.
//!
//! Provided sources:
//!
//! * [`GaussianMixture`]: isotropic Gaussian mixtures with an exact
//!   [`log_density`](Dataset::log_density): [`GaussianMixture::eight_gaussians`],
//!   [`GaussianMixture::twenty_five_gaussians`] and random `d`-dimensional mixtures
//!   [`GaussianMixture::gmm`].
//! * The 2-D toy sets of FFJORD's `toy_data.py` (Grathwohl et al., 2019), scales included:
//!   [`SwissRoll`], [`Circles`], [`Rings`], [`Moons`], [`Pinwheel`], [`TwoSpirals`],
//!   [`Checkerboard`]; look any of them up by name with [`toy_dataset`].
//! * [`TabularDataset`]: a fixed table of points sampled uniformly with replacement, read
//!   from a CSV file ([`TabularDataset::from_csv`]), built from memory
//!   ([`TabularDataset::from_points`]), or the embedded 8×8 handwritten digits
//!   ([`TabularDataset::digits`]); with a label column chosen by name or index
//!   ([`TabularDataset::from_csv_with_label_column`], [`LabelColumn`]), split into
//!   train/validation/test tables ([`TabularDataset::split`], [`Splits`]) and standardised
//!   per column ([`Standardizer`]).

use std::f64::consts::PI;
use std::io::Read;
use std::path::{Path, PathBuf};

use rand::distributions::Distribution;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Names accepted by [`toy_dataset`], in a fixed order.
pub const TOY_DATASETS: &[&str] = &[
    "8gaussians",
    "25gaussians",
    "swissroll",
    "pinwheel",
    "checkerboard",
    "2spirals",
    "rings",
    "moons",
    "circles",
];

/// The handwritten digits, gzip-compressed CSV (1797 rows: 64 pixels in 0..16, then the label).
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Name used in error messages about the embedded digits table.
const DIGITS_SOURCE: &str = "data/digits.csv.gz (embedded)";

/// Number of rows in the embedded digits table.
const DIGITS_ROWS: usize = 1797;

/// Number of pixels per digit image (8×8).
const DIGITS_DIM: usize = 64;

/// Errors from loading or configuring a data set.
///
/// Line numbers are 1-based and count every line of the file, the header included; column
/// numbers are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    // The cause is part of the message and deliberately not a `source()`, so that error
    // reporters that print the chain do not print it twice.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// The file is not well-formed CSV (for example it is not valid UTF-8).
    #[error("{} line {line}: expected well-formed UTF-8 CSV: {message}", path.display())]
    Malformed {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number (counting the header).
        line: u64,
        /// What the CSV reader reported.
        message: String,
    },
    /// A cell does not parse as a number.
    #[error(
        "{} line {line}, column {column}: expected a finite number, found {found:?}",
        path.display()
    )]
    NotANumber {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number (counting the header).
        line: u64,
        /// 1-based column number.
        column: usize,
        /// The offending cell, as written in the file.
        found: String,
    },
    /// A cell parses as NaN or an infinite value.
    #[error(
        "{} line {line}, column {column}: expected a finite number, found {found:?} (NaN and infinite values are not allowed)",
        path.display()
    )]
    NotFinite {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number (counting the header).
        line: u64,
        /// 1-based column number.
        column: usize,
        /// The offending cell, as written in the file.
        found: String,
    },
    /// A label cell is not a non-negative integer.
    #[error(
        "{} line {line}, column {column}: expected a non-negative integer class label, found {found:?}",
        path.display()
    )]
    BadLabel {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number (counting the header).
        line: u64,
        /// 1-based column number.
        column: usize,
        /// The offending cell, as written in the file.
        found: String,
    },
    /// A row has a different number of columns than the first row.
    #[error(
        "{} line {line}: row has {found} columns, expected {expected} (as on line {first_line})",
        path.display()
    )]
    RaggedRow {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number (counting the header) of the ragged row.
        line: u64,
        /// Number of columns found on this row.
        found: usize,
        /// Number of columns of the first row.
        expected: usize,
        /// 1-based line number of the first row, which fixed the column count.
        first_line: u64,
    },
    /// The file (or point list) holds no data rows.
    #[error("{}: expected at least one row of numbers, found none", path.display())]
    NoRows {
        /// The file (or data set name) that is empty.
        path: PathBuf,
    },
    /// [`toy_dataset`] was given a name it does not know.
    #[error("unknown data set {name:?}; expected one of: {}", known.join(", "))]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The names that are known.
        known: Vec<String>,
    },
    /// A constructor argument is out of range.
    #[error("invalid parameter `{name}`: expected {expected}, found {found}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        found: String,
    },
    /// A label column was given by name, but the header has no column of that name.
    #[error(
        "{} line {line}: expected a label column named {name:?} in the header, found columns: {}",
        path.display(),
        columns.join(", ")
    )]
    UnknownLabelColumn {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number of the header.
        line: u64,
        /// The column name asked for.
        name: String,
        /// The header's column names, in file order.
        columns: Vec<String>,
    },
    /// A label column was given by name, but the file's first line is data, not a header.
    #[error(
        "{} line {line}: expected a header naming the label column {name:?}, found a row of numbers (the file has no header; give the label column by index instead)",
        path.display()
    )]
    NoHeader {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number of the first non-empty line.
        line: u64,
        /// The column name asked for.
        name: String,
    },
    /// A label column index is out of range for the file's column count.
    #[error(
        "{} line {line}: label column index {index} is out of range: expected 0..{columns} or -{columns}..-1, the file has {columns} columns",
        path.display()
    )]
    LabelColumnOutOfRange {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number of the first non-empty line, which fixed the column count.
        line: u64,
        /// The index asked for (0-based; negative counts from the end).
        index: i64,
        /// Number of columns in the file.
        columns: usize,
    },
    /// The file has a single column, the label column, and so no feature to keep.
    #[error(
        "{} line {line}: expected at least one feature column besides the label column {column}, found a single column",
        path.display()
    )]
    OnlyLabelColumn {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number of the first non-empty line.
        line: u64,
        /// 1-based number of the label column.
        column: usize,
    },
    /// A label cell is empty.
    #[error(
        "{} line {line}, column {column}: expected a class label, found an empty cell",
        path.display()
    )]
    EmptyLabel {
        /// The file being read.
        path: PathBuf,
        /// 1-based line number (counting the header).
        line: u64,
        /// 1-based column number.
        column: usize,
    },
    /// A train/validation/test split asked for (or the train split) has no row.
    #[error(
        "splitting {table:?} ({rows} rows): expected at least one row in the {split} split, got train {train}, validation {validation}, test {test} rows"
    )]
    EmptySplit {
        /// Name of the table being split.
        table: String,
        /// The empty split: "train", "validation" or "test".
        split: &'static str,
        /// Number of rows of the table.
        rows: usize,
        /// Rows that went to the train split.
        train: usize,
        /// Rows that went to the validation split.
        validation: usize,
        /// Rows that went to the test split.
        test: usize,
    },
    /// A flat row-major buffer whose length is not a multiple of the row width.
    #[error("expected rows of {dim} values, got a buffer of {len}")]
    RowWidth {
        /// Number of values per row.
        dim: usize,
        /// Length of the buffer given.
        len: usize,
    },
}

impl DataError {
    fn invalid(name: &'static str, expected: impl Into<String>, found: impl ToString) -> Self {
        DataError::InvalidParameter {
            name,
            expected: expected.into(),
            found: found.to_string(),
        }
    }
}

/// A source of data points ("expert demonstrations"), in R^d, drawn fresh on every call.
pub trait Dataset: Send + Sync {
    /// Short name, e.g. "8gaussians".
    fn name(&self) -> &str;
    /// Dimension d of a point.
    fn dim(&self) -> usize;
    /// Draws `n` points, row-major `n × d` as f32.
    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32>;
    /// Exact log-density at `n` row-major points, when the law is known (mixtures). Default None.
    fn log_density(&self, points: &[f32]) -> Option<Vec<f64>> {
        let _ = points;
        None
    }
    /// The mixture behind the data, when it is one (for per-mode statistics). Default None.
    fn as_mixture(&self) -> Option<&GaussianMixture> {
        None
    }
}

/// Looks up one of the 2-D toy data sets by name (see [`TOY_DATASETS`]).
///
/// # Errors
/// [`DataError::UnknownDataset`] (listing the known names) if `name` is not one of
/// [`TOY_DATASETS`].
pub fn toy_dataset(name: &str) -> Result<Box<dyn Dataset>, DataError> {
    let dataset: Box<dyn Dataset> = match name {
        "8gaussians" => Box::new(GaussianMixture::eight_gaussians()),
        "25gaussians" => Box::new(GaussianMixture::twenty_five_gaussians()),
        "swissroll" => Box::new(SwissRoll),
        "pinwheel" => Box::new(Pinwheel),
        "checkerboard" => Box::new(Checkerboard),
        "2spirals" => Box::new(TwoSpirals),
        "rings" => Box::new(Rings),
        "moons" => Box::new(Moons),
        "circles" => Box::new(Circles),
        _ => {
            return Err(DataError::UnknownDataset {
                name: name.to_string(),
                known: TOY_DATASETS.iter().map(|s| s.to_string()).collect(),
            })
        }
    };
    Ok(dataset)
}

fn normal(rng: &mut dyn RngCore) -> f64 {
    StandardNormal.sample(rng)
}

/// `k` evenly spaced values from `start` to `stop`, like `numpy.linspace`.
fn linspace(start: f64, stop: f64, k: usize, endpoint: bool) -> impl Iterator<Item = f64> {
    let step = if endpoint {
        if k > 1 {
            (stop - start) / (k - 1) as f64
        } else {
            0.0
        }
    } else if k > 0 {
        (stop - start) / k as f64
    } else {
        0.0
    };
    (0..k).map(move |i| start + step * i as f64)
}

fn flatten_2d(rows: &[[f64; 2]]) -> Vec<f32> {
    rows.iter()
        .flat_map(|p| [p[0] as f32, p[1] as f32])
        .collect()
}

// ---------------------------------------------------------------------------------------
// Gaussian mixtures
// ---------------------------------------------------------------------------------------

/// A mixture of isotropic Gaussians in `R^d`: component `k` has mean `μ_k`, standard
/// deviation `σ_k` in every coordinate and weight `w_k`.
///
/// The density is known exactly, so [`Dataset::log_density`] returns
/// `log Σ_k w_k N(x; μ_k, σ_k² I)`, computed with log-sum-exp.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    name: String,
    dim: usize,
    means: Vec<Vec<f64>>,
    stds: Vec<f64>,
    weights: Vec<f64>,
    log_weights: Vec<f64>,
    /// Cumulative weights, for picking a component; the last entry is 1 (up to rounding).
    cumulative: Vec<f64>,
}

impl GaussianMixture {
    /// Builds a mixture from its component means, standard deviations and weights.
    ///
    /// Weights need not sum to one: they are normalised. All three lists must have the same
    /// positive length, every mean the same positive dimension.
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] if there are no components, the lists have different
    /// lengths, the means have different (or zero) dimensions, a mean is not finite, a
    /// standard deviation is not finite and positive, or a weight is negative or not finite,
    /// or all weights are zero.
    pub fn new(
        name: impl Into<String>,
        means: Vec<Vec<f64>>,
        stds: Vec<f64>,
        weights: Vec<f64>,
    ) -> Result<Self, DataError> {
        let k = means.len();
        if k == 0 {
            return Err(DataError::invalid(
                "means",
                "at least one component",
                "none",
            ));
        }
        if stds.len() != k {
            return Err(DataError::invalid(
                "stds",
                format!("one standard deviation per component ({k})"),
                format!("{} values", stds.len()),
            ));
        }
        if weights.len() != k {
            return Err(DataError::invalid(
                "weights",
                format!("one weight per component ({k})"),
                format!("{} values", weights.len()),
            ));
        }
        let dim = means[0].len();
        if dim == 0 {
            return Err(DataError::invalid(
                "means",
                "means of dimension at least 1",
                "dimension 0",
            ));
        }
        for (i, m) in means.iter().enumerate() {
            if m.len() != dim {
                return Err(DataError::invalid(
                    "means",
                    format!("every mean of dimension {dim}"),
                    format!("mean {i} of dimension {}", m.len()),
                ));
            }
            if let Some(v) = m.iter().find(|v| !v.is_finite()) {
                return Err(DataError::invalid(
                    "means",
                    "finite coordinates",
                    format!("{v} in mean {i}"),
                ));
            }
        }
        if let Some((i, s)) = stds
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(DataError::invalid(
                "stds",
                "finite positive standard deviations",
                format!("{s} for component {i}"),
            ));
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !(w.is_finite() && **w >= 0.0))
        {
            return Err(DataError::invalid(
                "weights",
                "finite non-negative weights",
                format!("{w} for component {i}"),
            ));
        }
        let total: f64 = weights.iter().sum();
        if !(total.is_finite() && total > 0.0) {
            return Err(DataError::invalid(
                "weights",
                "a finite positive sum",
                format!("sum {total}"),
            ));
        }
        let weights = weights.iter().map(|w| w / total).collect();
        Ok(Self::from_parts(name.into(), dim, means, stds, weights))
    }

    /// FFJORD's "8gaussians": centres `4·(±1, 0)`, `4·(0, ±1)`, `4·(±1/√2, ±1/√2)`, standard
    /// deviation 0.5, everything then divided by 1.414 (centre radius `4/1.414`, standard
    /// deviation `0.5/1.414`); equal weights.
    pub fn eight_gaussians() -> Self {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let unit = [
            (1.0, 0.0),
            (-1.0, 0.0),
            (0.0, 1.0),
            (0.0, -1.0),
            (s, s),
            (s, -s),
            (-s, s),
            (-s, -s),
        ];
        let means = unit
            .iter()
            .map(|&(x, y)| vec![4.0 * x / 1.414, 4.0 * y / 1.414])
            .collect();
        Self::from_parts(
            "8gaussians".into(),
            2,
            means,
            vec![0.5 / 1.414; 8],
            vec![0.125; 8],
        )
    }

    /// "25gaussians": centres `2·(i, j)` for `i, j ∈ {-2, …, 2}`, standard deviation 0.1,
    /// everything then divided by 2.828 (spacing ≈ 0.707, standard deviation ≈ 0.0354);
    /// equal weights.
    pub fn twenty_five_gaussians() -> Self {
        let means = (-2..=2)
            .flat_map(|i| {
                (-2..=2).map(move |j| vec![2.0 * i as f64 / 2.828, 2.0 * j as f64 / 2.828])
            })
            .collect();
        Self::from_parts(
            "25gaussians".into(),
            2,
            means,
            vec![0.1 / 2.828; 25],
            vec![1.0 / 25.0; 25],
        )
    }

    /// A `dim`-dimensional mixture of `n_components` equally weighted Gaussians with
    /// standard deviation `std`, whose centres are drawn uniformly on the sphere of radius
    /// `scale` (normalised Gaussian vectors) by a `ChaCha8Rng` seeded with `seed`.
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] if `dim` or `n_components` is 0, `scale` is negative
    /// or not finite, or `std` is not finite and positive.
    pub fn gmm(
        dim: usize,
        n_components: usize,
        scale: f64,
        std: f64,
        seed: u64,
    ) -> Result<Self, DataError> {
        if dim == 0 {
            return Err(DataError::invalid("dim", "at least 1", dim));
        }
        if n_components == 0 {
            return Err(DataError::invalid(
                "n_components",
                "at least 1",
                n_components,
            ));
        }
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(DataError::invalid(
                "scale",
                "a finite non-negative radius",
                scale,
            ));
        }
        if !(std.is_finite() && std > 0.0) {
            return Err(DataError::invalid(
                "std",
                "a finite positive standard deviation",
                std,
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut means = Vec::with_capacity(n_components);
        while means.len() < n_components {
            let v: Vec<f64> = (0..dim).map(|_| normal(&mut rng)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-12 {
                means.push(v.iter().map(|x| scale * x / norm).collect());
            }
        }
        Self::new(
            format!("gmm{dim}d{n_components}"),
            means,
            vec![std; n_components],
            vec![1.0; n_components],
        )
    }

    /// Assembles a mixture from validated parts (weights already normalised).
    fn from_parts(
        name: String,
        dim: usize,
        means: Vec<Vec<f64>>,
        stds: Vec<f64>,
        weights: Vec<f64>,
    ) -> Self {
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        let cumulative = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        Self {
            name,
            dim,
            means,
            stds,
            weights,
            log_weights,
            cumulative,
        }
    }

    /// Picks a component index with probability equal to its weight.
    fn pick(&self, rng: &mut dyn RngCore) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let u = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.means.len().saturating_sub(1))
    }

    /// The component means (the mode centres), one `Vec` of length [`Dataset::dim`] each.
    pub fn means(&self) -> &[Vec<f64>] {
        &self.means
    }

    /// The mode centres; the same as [`GaussianMixture::means`].
    pub fn mode_centres(&self) -> &[Vec<f64>] {
        &self.means
    }

    /// The per-component isotropic standard deviations.
    pub fn stds(&self) -> &[f64] {
        &self.stds
    }

    /// The component weights, normalised to sum to one.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Number of components.
    pub fn n_components(&self) -> usize {
        self.means.len()
    }

    /// Exact log-density at one point `x` of length [`Dataset::dim`]; `None` if the length
    /// differs.
    pub fn log_density_at(&self, x: &[f64]) -> Option<f64> {
        if x.len() != self.dim {
            return None;
        }
        let d = self.dim as f64;
        let mut terms = Vec::with_capacity(self.means.len());
        for ((mean, &std), &log_w) in self.means.iter().zip(&self.stds).zip(&self.log_weights) {
            let sq: f64 = x.iter().zip(mean).map(|(a, b)| (a - b) * (a - b)).sum();
            let var = std * std;
            terms.push(log_w - 0.5 * d * (2.0 * PI * var).ln() - sq / (2.0 * var));
        }
        Some(log_sum_exp(&terms))
    }
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

impl Dataset for GaussianMixture {
    fn name(&self) -> &str {
        &self.name
    }

    fn as_mixture(&self) -> Option<&GaussianMixture> {
        Some(self)
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * self.dim);
        for _ in 0..n {
            let k = self.pick(rng);
            let std = self.stds[k];
            for &m in &self.means[k] {
                out.push((m + std * normal(rng)) as f32);
            }
        }
        out
    }

    /// Exact log-density; `None` if `points.len()` is not a multiple of the dimension.
    fn log_density(&self, points: &[f32]) -> Option<Vec<f64>> {
        if !points.chunks_exact(self.dim).remainder().is_empty() {
            return None;
        }
        let mut x = vec![0.0f64; self.dim];
        points
            .chunks_exact(self.dim)
            .map(|row| {
                for (xi, &r) in x.iter_mut().zip(row) {
                    *xi = f64::from(r);
                }
                self.log_density_at(&x)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// FFJORD toy sets
// ---------------------------------------------------------------------------------------

/// FFJORD's "swissroll": scikit-learn's `make_swiss_roll(noise=1.0)`, columns 0 and 2,
/// divided by 5.
///
/// `t = 1.5π(1 + 2u)`, `u ~ U(0, 1)`; point `(t cos t + ε₁, t sin t + ε₂) / 5` with
/// `ε ~ N(0, I)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwissRoll;

impl Dataset for SwissRoll {
    fn name(&self) -> &str {
        "swissroll"
    }

    fn dim(&self) -> usize {
        2
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let t = 1.5 * PI * (1.0 + 2.0 * rng.gen::<f64>());
            let x = t * t.cos() + normal(rng);
            let z = t * t.sin() + normal(rng);
            out.push((x / 5.0) as f32);
            out.push((z / 5.0) as f32);
        }
        out
    }
}

/// FFJORD's "circles": scikit-learn's `make_circles(factor=0.5, noise=0.08)`, times 3.
///
/// `n // 2` points evenly spaced on the unit circle and the rest evenly spaced on the circle
/// of radius 0.5, rows shuffled, `N(0, 0.08²)` noise added, then everything times 3.
#[derive(Debug, Clone, Copy, Default)]
pub struct Circles;

impl Dataset for Circles {
    fn name(&self) -> &str {
        "circles"
    }

    fn dim(&self) -> usize {
        2
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let n_out = n / 2;
        let n_in = n - n_out;
        let mut rows: Vec<[f64; 2]> = linspace(0.0, 2.0 * PI, n_out, false)
            .map(|a| [a.cos(), a.sin()])
            .chain(linspace(0.0, 2.0 * PI, n_in, false).map(|a| [0.5 * a.cos(), 0.5 * a.sin()]))
            .collect();
        rows.shuffle(rng);
        for p in &mut rows {
            p[0] = 3.0 * (p[0] + 0.08 * normal(rng));
            p[1] = 3.0 * (p[1] + 0.08 * normal(rng));
        }
        flatten_2d(&rows)
    }
}

/// FFJORD's "rings": four concentric circles of radii 3, 2.25, 1.5 and 0.75.
///
/// `n // 4` points evenly spaced on each of the circles of radii 1, 0.75 and 0.5, the rest on
/// the circle of radius 0.25; everything times 3, rows shuffled, then `N(0, 0.08²)` noise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rings;

impl Dataset for Rings {
    fn name(&self) -> &str {
        "rings"
    }

    fn dim(&self) -> usize {
        2
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let quarter = n / 4;
        let counts = [
            (1.0, quarter),
            (0.75, quarter),
            (0.5, quarter),
            (0.25, n - 3 * quarter),
        ];
        let mut rows: Vec<[f64; 2]> = Vec::with_capacity(n);
        for (radius, k) in counts {
            rows.extend(
                linspace(0.0, 2.0 * PI, k, false)
                    .map(|a| [3.0 * radius * a.cos(), 3.0 * radius * a.sin()]),
            );
        }
        rows.shuffle(rng);
        for p in &mut rows {
            p[0] += 0.08 * normal(rng);
            p[1] += 0.08 * normal(rng);
        }
        flatten_2d(&rows)
    }
}

/// FFJORD's "moons": scikit-learn's `make_moons(noise=0.1)`, times 2, shifted by
/// `(-1, -0.2)`.
///
/// `n // 2` points `(cos θ, sin θ)` and the rest `(1 - cos θ, 0.5 - sin θ)`, `θ` evenly
/// spaced over `[0, π]` (both ends included); rows shuffled; `N(0, 0.1²)` noise; then
/// `2·x + (-1, -0.2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Moons;

impl Dataset for Moons {
    fn name(&self) -> &str {
        "moons"
    }

    fn dim(&self) -> usize {
        2
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let n_out = n / 2;
        let n_in = n - n_out;
        let mut rows: Vec<[f64; 2]> = linspace(0.0, PI, n_out, true)
            .map(|a| [a.cos(), a.sin()])
            .chain(linspace(0.0, PI, n_in, true).map(|a| [1.0 - a.cos(), 1.0 - a.sin() - 0.5]))
            .collect();
        rows.shuffle(rng);
        for p in &mut rows {
            p[0] = 2.0 * (p[0] + 0.1 * normal(rng)) - 1.0;
            p[1] = 2.0 * (p[1] + 0.1 * normal(rng)) - 0.2;
        }
        flatten_2d(&rows)
    }
}

/// FFJORD's "pinwheel": five curved arms.
///
/// Features `f = (1 + 0.3 z₁, 0.1 z₂)`, `z ~ N(0, I)`; arm `i mod 5` for row `i`; angle
/// `a = 2π·arm/5 + 0.25·exp(f₀)`; point `2·(f₀ cos a + f₁ sin a, −f₀ sin a + f₁ cos a)`;
/// rows shuffled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pinwheel;

impl Dataset for Pinwheel {
    fn name(&self) -> &str {
        "pinwheel"
    }

    fn dim(&self) -> usize {
        2
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        const RADIAL_STD: f64 = 0.3;
        const TANGENTIAL_STD: f64 = 0.1;
        const NUM_CLASSES: usize = 5;
        const RATE: f64 = 0.25;
        let mut rows: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let f0 = normal(rng) * RADIAL_STD + 1.0;
                let f1 = normal(rng) * TANGENTIAL_STD;
                let label = (i % NUM_CLASSES) as f64;
                let a = 2.0 * PI * label / NUM_CLASSES as f64 + RATE * f0.exp();
                let (s, c) = a.sin_cos();
                [2.0 * (f0 * c + f1 * s), 2.0 * (-f0 * s + f1 * c)]
            })
            .collect();
        rows.shuffle(rng);
        flatten_2d(&rows)
    }
}

/// FFJORD's "2spirals": two interleaved spirals, one the mirror image of the other.
///
/// `m = √u · 3π` (540°), `d = (−m cos m + 0.5u₂, m sin m + 0.5u₃)`; the first
/// `⌈n/2⌉` rows are `d / 3`, the rest are `−d / 3` for the same draws (mirrored pairs, as in
/// FFJORD); then `N(0, 0.1²)` noise on every row.
#[derive(Debug, Clone, Copy, Default)]
pub struct TwoSpirals;

impl Dataset for TwoSpirals {
    fn name(&self) -> &str {
        "2spirals"
    }

    fn dim(&self) -> usize {
        2
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let half = n.div_ceil(2);
        let first: Vec<[f64; 2]> = (0..half)
            .map(|_| {
                let m = rng.gen::<f64>().sqrt() * 540.0 * (2.0 * PI) / 360.0;
                let x = -m.cos() * m + rng.gen::<f64>() * 0.5;
                let y = m.sin() * m + rng.gen::<f64>() * 0.5;
                [x / 3.0, y / 3.0]
            })
            .collect();
        let mut rows: Vec<[f64; 2]> = first
            .iter()
            .copied()
            .chain(first.iter().take(n - half).map(|p| [-p[0], -p[1]]))
            .collect();
        for p in &mut rows {
            p[0] += 0.1 * normal(rng);
            p[1] += 0.1 * normal(rng);
        }
        flatten_2d(&rows)
    }
}

/// FFJORD's "checkerboard": uniform on the 8 "black" squares of side 2 in `[-4, 4)²`.
///
/// `x₁ = 4u − 2`, `x₂ = u' − 2b + (⌊x₁⌋ mod 2)` with `b ∈ {0, 1}` uniform; point
/// `2·(x₁, x₂)`. Every point `(X₁, X₂)` satisfies `⌊X₁/2⌋ + ⌊X₂/2⌋` even.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checkerboard;

impl Dataset for Checkerboard {
    fn name(&self) -> &str {
        "checkerboard"
    }

    fn dim(&self) -> usize {
        2
    }

    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let x1 = rng.gen::<f64>() * 4.0 - 2.0;
            let b = if rng.gen::<bool>() { 1.0 } else { 0.0 };
            let x2_ = rng.gen::<f64>() - 2.0 * b;
            let x2 = x2_ + x1.floor().rem_euclid(2.0);
            out.push((2.0 * x1) as f32);
            out.push((2.0 * x2) as f32);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------

/// A fixed table of `len() × dim()` points, sampled uniformly with replacement; optionally
/// with one integer class label per row.
#[derive(Debug, Clone)]
pub struct TabularDataset {
    name: String,
    dim: usize,
    points: Vec<f32>,
    labels: Option<Vec<u32>>,
}

/// Which column of a CSV file holds the class labels
/// ([`TabularDataset::from_csv_with_label_column`]).
///
/// Deserialises untagged, so that in TOML `label_column = -1` gives
/// [`Index(-1)`](LabelColumn::Index) and `label_column = "species"` gives
/// [`Name("species")`](LabelColumn::Name).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum LabelColumn {
    /// 0-based column index; a negative index counts from the end (-1 is the last column).
    Index(i64),
    /// Column name, looked up in the file's header (the first non-empty line).
    Name(String),
}

/// The last column, as `from_csv(path, true)` and `from_csv_labelled` take it.
const LAST_COLUMN: LabelColumn = LabelColumn::Index(-1);

/// A parsed CSV table: the numeric feature columns, plus the raw label column if any.
struct ParsedTable {
    dim: usize,
    points: Vec<f32>,
    /// `(line, column, cell)` of the label column, one per data row (empty without one).
    label_cells: Vec<(u64, usize, String)>,
}

/// A table split three ways by [`TabularDataset::split`].
#[derive(Debug, Clone)]
pub struct Splits {
    /// The rows left to train on, named `"<name>/train"`.
    pub train: TabularDataset,
    /// The validation rows (`"<name>/validation"`), `None` when its fraction is 0.
    pub validation: Option<TabularDataset>,
    /// The test rows (`"<name>/test"`), `None` when its fraction is 0.
    pub test: Option<TabularDataset>,
}

impl TabularDataset {
    /// Builds a table from `points`, row-major with `dim` columns.
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] if `dim` is 0, `points.len()` is not a multiple of
    /// `dim`, or a value is NaN or infinite; [`DataError::NoRows`] if `points` is empty.
    pub fn from_points(
        name: impl Into<String>,
        dim: usize,
        points: Vec<f32>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        if dim == 0 {
            return Err(DataError::invalid("dim", "at least 1", dim));
        }
        if points.is_empty() {
            return Err(DataError::NoRows {
                path: PathBuf::from(name),
            });
        }
        if !points.chunks_exact(dim).remainder().is_empty() {
            return Err(DataError::invalid(
                "points",
                format!("a length that is a multiple of dim = {dim}"),
                format!("length {}", points.len()),
            ));
        }
        if let Some(i) = points.iter().position(|v| !v.is_finite()) {
            return Err(DataError::invalid(
                "points",
                "finite values",
                format!(
                    "{} at row {}, column {}",
                    points[i],
                    i / dim + 1,
                    i % dim + 1
                ),
            ));
        }
        Ok(Self {
            name,
            dim,
            points,
            labels: None,
        })
    }

    /// Attaches one class label per row.
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] if `labels.len()` differs from [`len`](Self::len).
    pub fn with_labels(mut self, labels: Vec<u32>) -> Result<Self, DataError> {
        if labels.len() != self.len() {
            return Err(DataError::invalid(
                "labels",
                format!("one label per row ({})", self.len()),
                format!("{} labels", labels.len()),
            ));
        }
        self.labels = Some(labels);
        Ok(self)
    }

    /// Reads a table of numbers from a CSV file.
    ///
    /// Any number of columns is accepted. The header is optional: if the first non-empty
    /// line has a (kept) cell that does not parse as a number, it is taken as a header and
    /// skipped. Cells are trimmed of surrounding whitespace. With `drop_last_column`, the
    /// last column (e.g. a class label, possibly not numeric) is ignored. The data set's name
    /// is the file stem.
    ///
    /// # Errors
    /// [`DataError::Io`] if the file cannot be read; [`DataError::NotANumber`] or
    /// [`DataError::NotFinite`] for a data cell that is not a finite `f32`;
    /// [`DataError::RaggedRow`] for a row whose column count differs from the first line's;
    /// [`DataError::NoRows`] if there is no data row; [`DataError::InvalidParameter`] if
    /// `drop_last_column` is set and the file has a single column. Every message names the
    /// file and the 1-based line (counting the header).
    pub fn from_csv(path: &Path, drop_last_column: bool) -> Result<Self, DataError> {
        let file = open(path)?;
        let label = drop_last_column.then_some(&LAST_COLUMN);
        let table = parse_csv(file, path, label).map_err(drop_last_error)?;
        Self::from_points(file_stem(path), table.dim, table.points)
    }

    /// Reads a CSV file as [`from_csv`](Self::from_csv) does, taking the last column as
    /// integer class labels (for [`labels`](Self::labels) and
    /// [`filter_labels`](Self::filter_labels)).
    ///
    /// # Errors
    /// As [`from_csv`](Self::from_csv) with `drop_last_column = true`, and
    /// [`DataError::BadLabel`] if a label cell is not a non-negative integer.
    pub fn from_csv_labelled(path: &Path) -> Result<Self, DataError> {
        let file = open(path)?;
        let table = parse_csv(file, path, Some(&LAST_COLUMN)).map_err(drop_last_error)?;
        let labels = parse_labels(&table.label_cells, path)?;
        Self::from_points(file_stem(path), table.dim, table.points)?.with_labels(labels)
    }

    /// Reads a CSV file whose column `label` holds class labels, and returns the table (named
    /// after the file stem) with its labels, and the class names.
    ///
    /// The label column is removed from the features; every other column must be numeric
    /// (cells trimmed, as in [`from_csv`](Self::from_csv)). By
    /// [`Index`](LabelColumn::Index), the header is optional and detected as in `from_csv`
    /// (from the feature cells of the first non-empty line); by [`Name`](LabelColumn::Name),
    /// the first non-empty line must be a header holding that name (the first such column
    /// is taken).
    ///
    /// Labels: if every label cell is a non-negative integer that fits a `u32` (`"3"` or
    /// `"3.0"`), the labels are those integers and the class names their decimal strings, in
    /// ascending order of the distinct labels. Otherwise the distinct cells are sorted (as
    /// strings) and numbered `0..k` in that order, and the class names are the sorted
    /// strings, so that `class_names[label]` names each row's class.
    ///
    /// # Errors
    /// Those of [`from_csv`](Self::from_csv), and:
    /// [`DataError::UnknownLabelColumn`] (listing the header's columns) if the name is not
    /// in the header; [`DataError::NoHeader`] if a name is given but the first line is all
    /// numbers; [`DataError::LabelColumnOutOfRange`] (saying how many columns there are)
    /// for an index outside `-n..n`; [`DataError::OnlyLabelColumn`] if the file has no
    /// column besides the label; [`DataError::EmptyLabel`] (naming line and column) for an
    /// empty label cell.
    pub fn from_csv_with_label_column(
        path: &Path,
        label: &LabelColumn,
    ) -> Result<(Self, Vec<String>), DataError> {
        let file = open(path)?;
        let table = parse_csv(file, path, Some(label))?;
        let (labels, class_names) = class_labels(&table.label_cells, path)?;
        let table =
            Self::from_points(file_stem(path), table.dim, table.points)?.with_labels(labels)?;
        Ok((table, class_names))
    }

    /// The UCI "Optical Recognition of Handwritten Digits" test set (as shipped with
    /// scikit-learn; E. Alpaydin & C. Kaynak, 1998; CC BY 4.0), embedded in the binary:
    /// 1797 images of 8×8 pixels, `dim() == 64`, pixels `x ∈ 0..=16` scaled to `[-1, 1]` as
    /// `x / 8 − 1`, with labels 0..=9. Named "digits".
    ///
    /// # Errors
    /// Only if the embedded table is corrupt (never for a correct build):
    /// [`DataError::Io`] on a decompression failure, or a parse error.
    pub fn digits() -> Result<Self, DataError> {
        let path = Path::new(DIGITS_SOURCE);
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
            .read_to_end(&mut text)
            .map_err(|cause| DataError::Io {
                path: path.to_path_buf(),
                cause,
            })?;
        let table = parse_csv(text.as_slice(), path, Some(&LAST_COLUMN))?;
        if table.dim != DIGITS_DIM || table.points.len() != DIGITS_ROWS * DIGITS_DIM {
            return Err(DataError::invalid(
                "digits",
                format!("{DIGITS_ROWS} rows of {DIGITS_DIM} pixels"),
                format!("{} values of dimension {}", table.points.len(), table.dim),
            ));
        }
        let labels = parse_labels(&table.label_cells, path)?;
        let points = table.points.iter().map(|x| x / 8.0 - 1.0).collect();
        Self::from_points("digits", DIGITS_DIM, points)?.with_labels(labels)
    }

    /// The embedded digits ([`digits`](Self::digits)) restricted to the classes in `keep`,
    /// e.g. to train on some digits and score the others as anomalies.
    ///
    /// # Errors
    /// As [`filter_labels`](Self::filter_labels).
    pub fn digits_with_labels(keep: &[u32]) -> Result<Self, DataError> {
        Self::digits()?.filter_labels(keep)
    }

    /// A new table holding only the rows whose label is in `keep` (labels kept along).
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] if this table has no labels; [`DataError::NoRows`] if
    /// no row has a label in `keep`.
    pub fn filter_labels(&self, keep: &[u32]) -> Result<Self, DataError> {
        let labels = self.labels.as_deref().ok_or_else(|| {
            DataError::invalid(
                "keep",
                "a table with labels",
                format!("{:?} has none", self.name),
            )
        })?;
        let mut points = Vec::new();
        let mut kept = Vec::new();
        for (row, &label) in self.points.chunks_exact(self.dim).zip(labels) {
            if keep.contains(&label) {
                points.extend_from_slice(row);
                kept.push(label);
            }
        }
        let name = format!("{}{:?}", self.name, keep);
        if kept.is_empty() {
            return Err(DataError::NoRows {
                path: PathBuf::from(name),
            });
        }
        Ok(Self {
            name,
            dim: self.dim,
            points,
            labels: Some(kept),
        })
    }

    /// A transformed copy: `f` is called on every row (`dim()` values) of a copy of the
    /// points, in order; the name and labels are kept.
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] if `f` leaves a NaN or infinite value.
    pub fn map_points(&self, mut f: impl FnMut(&mut [f32])) -> Result<Self, DataError> {
        let mut points = self.points.clone();
        for row in points.chunks_exact_mut(self.dim) {
            f(row);
        }
        let table = Self::from_points(self.name.clone(), self.dim, points)?;
        Ok(Self {
            labels: self.labels.clone(),
            ..table
        })
    }

    /// Splits the rows into train, validation and test tables, named `"<name>/train"`,
    /// `"<name>/validation"` and `"<name>/test"`.
    ///
    /// With labels the split is stratified: for each class, in ascending label order, that
    /// class's row indices are shuffled (Fisher–Yates, one `ChaCha8Rng` seeded with `seed`
    /// for the whole split); the first `round(n_c · test_fraction)` go to test, the next
    /// `round(n_c · validation_fraction)` to validation, the rest to train. Without labels
    /// the same is done once over all rows. Each split keeps its rows in their original
    /// order, so the result depends only on the table, the fractions and `seed`. A fraction
    /// of 0 gives `None`.
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] naming `data.validation_fraction` or
    /// `data.test_fraction` if a fraction is not finite or negative, or if they sum to 1 or
    /// more; [`DataError::EmptySplit`] (with the sizes) if a split asked for (fraction > 0)
    /// gets no row, or the train split gets none.
    pub fn split(
        &self,
        validation_fraction: f64,
        test_fraction: f64,
        seed: u64,
    ) -> Result<Splits, DataError> {
        for (name, fraction) in [
            ("data.validation_fraction", validation_fraction),
            ("data.test_fraction", test_fraction),
        ] {
            if !(fraction.is_finite() && fraction >= 0.0) {
                return Err(DataError::invalid(
                    name,
                    "a finite fraction in [0, 1)",
                    fraction,
                ));
            }
        }
        let sum = validation_fraction + test_fraction;
        if sum >= 1.0 {
            return Err(DataError::invalid(
                "data.validation_fraction + data.test_fraction",
                "a sum below 1, to leave rows to train on",
                format!("{validation_fraction} + {test_fraction} = {sum}"),
            ));
        }
        let groups: Vec<Vec<usize>> = match &self.labels {
            Some(labels) => {
                let mut classes: std::collections::BTreeMap<u32, Vec<usize>> =
                    std::collections::BTreeMap::new();
                for (i, &label) in labels.iter().enumerate() {
                    classes.entry(label).or_default().push(i);
                }
                classes.into_values().collect()
            }
            None => vec![(0..self.len()).collect()],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut train, mut validation, mut test) = (Vec::new(), Vec::new(), Vec::new());
        for mut rows in groups {
            // Fisher–Yates.
            for i in (1..rows.len()).rev() {
                let j = rng.gen_range(0..=i);
                rows.swap(i, j);
            }
            let n = rows.len();
            let count = |fraction: f64| (n as f64 * fraction).round() as usize;
            let n_test = count(test_fraction).min(n);
            let n_validation = count(validation_fraction).min(n - n_test);
            test.extend_from_slice(&rows[..n_test]);
            validation.extend_from_slice(&rows[n_test..n_test + n_validation]);
            train.extend_from_slice(&rows[n_test + n_validation..]);
        }
        for rows in [&mut train, &mut validation, &mut test] {
            rows.sort_unstable();
        }
        let empty = |split| DataError::EmptySplit {
            table: self.name.clone(),
            split,
            rows: self.len(),
            train: train.len(),
            validation: validation.len(),
            test: test.len(),
        };
        if validation_fraction > 0.0 && validation.is_empty() {
            return Err(empty("validation"));
        }
        if test_fraction > 0.0 && test.is_empty() {
            return Err(empty("test"));
        }
        if train.is_empty() {
            return Err(empty("train"));
        }
        let part = |rows: &[usize], split: &str| {
            (!rows.is_empty()).then(|| self.subset(rows, format!("{}/{split}", self.name)))
        };
        Ok(Splits {
            train: self.subset(&train, format!("{}/train", self.name)),
            validation: part(&validation, "validation"),
            test: part(&test, "test"),
        })
    }

    /// The rows `rows` (valid, non-empty) of this table, in that order, labels included.
    fn subset(&self, rows: &[usize], name: String) -> Self {
        let mut points = Vec::with_capacity(rows.len() * self.dim);
        for &i in rows {
            points.extend_from_slice(&self.points[i * self.dim..(i + 1) * self.dim]);
        }
        Self {
            name,
            dim: self.dim,
            points,
            labels: self
                .labels
                .as_ref()
                .map(|labels| rows.iter().map(|&i| labels[i]).collect()),
        }
    }

    /// All points, row-major `len() × dim()`.
    pub fn points(&self) -> &[f32] {
        &self.points
    }

    /// Row `i`, or `None` if `i >= len()`.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        self.points.chunks_exact(self.dim).nth(i)
    }

    /// The class label of every row, when known.
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.points.len() / self.dim
    }

    /// Whether the table has no rows (never true for a constructed table).
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

impl Dataset for TabularDataset {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// Draws `n` rows uniformly with replacement.
    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let rows = self.len();
        let mut out = Vec::with_capacity(n * self.dim);
        if rows == 0 {
            return out;
        }
        for _ in 0..n {
            let i = rng.gen_range(0..rows);
            out.extend_from_slice(&self.points[i * self.dim..(i + 1) * self.dim]);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Standardisation
// ---------------------------------------------------------------------------------------

/// Per-column standardisation `x ↦ (x − mean) / scale`, fitted on a table (usually the
/// train split) and applied to any other.
///
/// A column is constant on the fitted table when its standard deviation is at most
/// `1e-12 · max(1, |mean|)`: its scale is 1, so it is only centred (exactly 0 on the fitted
/// table; any other value keeps its offset from the mean), and its index is listed in
/// [`constant_columns`](Self::constant_columns). Every other column has scale
/// `max(std, min_std)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer {
    /// Per-column mean of the fitted table.
    pub mean: Vec<f64>,
    /// Per-column divisor: `max(std, min_std)`, or 1 for a constant column.
    pub scale: Vec<f64>,
    /// 0-based indices of the constant columns, ascending.
    pub constant_columns: Vec<usize>,
    /// The floor on the scale of a non-constant column.
    pub min_std: f64,
}

impl Standardizer {
    /// Fits the per-column mean and population standard deviation of `table` (accumulated
    /// in f64).
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] naming `data.min_std` if `min_std` is negative or not
    /// finite.
    pub fn fit(table: &TabularDataset, min_std: f64) -> Result<Self, DataError> {
        if !(min_std.is_finite() && min_std >= 0.0) {
            return Err(DataError::invalid(
                "data.min_std",
                "a finite number ≥ 0",
                min_std,
            ));
        }
        let dim = table.dim;
        let n = table.len() as f64;
        let mut mean = vec![0.0f64; dim];
        for row in table.points.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        for m in &mut mean {
            *m /= n;
        }
        let mut var = vec![0.0f64; dim];
        for row in table.points.chunks_exact(dim) {
            for ((v, &x), m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (f64::from(x) - m).powi(2);
            }
        }
        let mut scale = Vec::with_capacity(dim);
        let mut constant_columns = Vec::new();
        for (j, (v, m)) in var.iter().zip(&mean).enumerate() {
            let std = (v / n).sqrt();
            if std <= 1e-12 * m.abs().max(1.0) {
                constant_columns.push(j);
                scale.push(1.0);
            } else {
                scale.push(std.max(min_std));
            }
        }
        Ok(Self {
            mean,
            scale,
            constant_columns,
            min_std,
        })
    }

    /// Number of columns.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Checks that the fitted parameters are usable (they may come from a file) and that
    /// `len` values are whole rows.
    fn check(&self, len: usize) -> Result<(), DataError> {
        if self.scale.len() != self.mean.len() {
            return Err(DataError::invalid(
                "standardizer.scale",
                format!("one scale per column ({})", self.mean.len()),
                format!("{} scales", self.scale.len()),
            ));
        }
        if let Some((j, s)) = self
            .scale
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(DataError::invalid(
                "standardizer.scale",
                "finite positive scales",
                format!("{s} for column {j}"),
            ));
        }
        if let Some((j, m)) = self.mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
            return Err(DataError::invalid(
                "standardizer.mean",
                "finite means",
                format!("{m} for column {j}"),
            ));
        }
        let dim = self.dim();
        if dim == 0 || !len.is_multiple_of(dim) {
            return Err(DataError::RowWidth { dim, len });
        }
        Ok(())
    }

    /// Standardises row-major `points` in place: `x ↦ (x − mean) / scale` per column.
    ///
    /// # Errors
    /// [`DataError::RowWidth`] if `points.len()` is not a multiple of [`dim`](Self::dim);
    /// [`DataError::InvalidParameter`] if the parameters are unusable (mismatched lengths,
    /// a non-positive or non-finite scale, a non-finite mean).
    pub fn apply(&self, points: &mut [f32]) -> Result<(), DataError> {
        self.check(points.len())?;
        for row in points.chunks_exact_mut(self.dim()) {
            self.standardise_row(row);
        }
        Ok(())
    }

    /// `x ↦ (x − mean) / scale` on one row of parameters already [`check`](Self::check)ed.
    fn standardise_row(&self, row: &mut [f32]) {
        for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
            *x = ((f64::from(*x) - m) / s) as f32;
        }
    }

    /// Undoes [`apply`](Self::apply) in place: `x ↦ x · scale + mean` per column.
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub fn invert(&self, points: &mut [f32]) -> Result<(), DataError> {
        self.check(points.len())?;
        for row in points.chunks_exact_mut(self.dim()) {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *x = (f64::from(*x) * s + m) as f32;
            }
        }
        Ok(())
    }

    /// A standardised copy of `table` (same name, labels kept).
    ///
    /// # Errors
    /// [`DataError::InvalidParameter`] if the table's dimension differs from
    /// [`dim`](Self::dim) or a standardised value overflows `f32`; otherwise as
    /// [`apply`](Self::apply).
    pub fn apply_table(&self, table: &TabularDataset) -> Result<TabularDataset, DataError> {
        if table.dim != self.dim() {
            return Err(DataError::invalid(
                "table",
                format!(
                    "rows of {} values (the standardiser's dimension)",
                    self.dim()
                ),
                format!("{:?} with rows of {}", table.name, table.dim),
            ));
        }
        self.check(table.points.len())?;
        table.map_points(|row| self.standardise_row(row))
    }
}

fn open(path: &Path) -> Result<std::fs::File, DataError> {
    std::fs::File::open(path).map_err(|cause| DataError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn csv_error(err: csv::Error, path: &Path, line: u64) -> DataError {
    let line = err.position().map_or(line, |p| p.line());
    let display = err.to_string();
    match err.into_kind() {
        csv::ErrorKind::Io(cause) => DataError::Io {
            path: path.to_path_buf(),
            cause,
        },
        csv::ErrorKind::Utf8 { err, .. } => DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!(
                "field {} is not UTF-8 text (its first {} bytes are)",
                err.field() + 1,
                err.valid_up_to()
            ),
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: format!("{len} fields, expected {expected_len}"),
        },
        _ => DataError::Malformed {
            path: path.to_path_buf(),
            line,
            message: display,
        },
    }
}

/// Turns the "only the label column" error of the general reader back into the
/// [`DataError::InvalidParameter`] that `from_csv(path, true)` has always reported.
fn drop_last_error(err: DataError) -> DataError {
    match err {
        DataError::OnlyLabelColumn { path, line, .. } => DataError::invalid(
            "drop_last_column",
            format!(
                "at least 2 columns in {} to drop the last one",
                path.display()
            ),
            format!("1 column on line {line}"),
        ),
        other => other,
    }
}

/// The 0-based column that `index` names in a row of `columns` cells (negative counts from
/// the end), or `None` if out of range.
fn resolve_index(index: i64, columns: usize) -> Option<usize> {
    let n = i64::try_from(columns).ok()?;
    let k = if index < 0 {
        n.checked_add(index)?
    } else {
        index
    };
    if (0..n).contains(&k) {
        usize::try_from(k).ok()
    } else {
        None
    }
}

/// Reads a CSV table of numbers. With `label`, that column is set aside (raw, in
/// `label_cells`) and need not be numeric; every other cell must be a finite `f32`.
fn parse_csv<R: Read>(
    reader: R,
    path: &Path,
    label: Option<&LabelColumn>,
) -> Result<ParsedTable, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut record = csv::StringRecord::new();
    // (number of columns, line, label column) of the first non-empty line.
    let mut first: Option<(usize, u64, Option<usize>)> = None;
    let mut points = Vec::new();
    let mut label_cells = Vec::new();
    let mut last_line = 1;
    loop {
        match rdr.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(e, path, last_line)),
        }
        let line = record.position().map_or(last_line, |p| p.line());
        last_line = line;
        // Skip blank lines (a single empty cell).
        if record.is_empty() || (record.len() == 1 && record[0].is_empty()) {
            continue;
        }
        let label_column = match first {
            None => {
                let columns = record.len();
                let (label_column, is_header) = match label {
                    None => (None, record.iter().any(|cell| cell.parse::<f32>().is_err())),
                    Some(LabelColumn::Index(index)) => {
                        let k = resolve_index(*index, columns).ok_or_else(|| {
                            DataError::LabelColumnOutOfRange {
                                path: path.to_path_buf(),
                                line,
                                index: *index,
                                columns,
                            }
                        })?;
                        let is_header = record
                            .iter()
                            .enumerate()
                            .any(|(j, cell)| j != k && cell.parse::<f32>().is_err());
                        (Some(k), is_header)
                    }
                    Some(LabelColumn::Name(name)) => {
                        let name = name.trim();
                        match record.iter().position(|cell| cell == name) {
                            Some(k) => (Some(k), true),
                            None if record.iter().any(|cell| cell.parse::<f32>().is_err()) => {
                                return Err(DataError::UnknownLabelColumn {
                                    path: path.to_path_buf(),
                                    line,
                                    name: name.to_string(),
                                    columns: record.iter().map(str::to_string).collect(),
                                })
                            }
                            None => {
                                return Err(DataError::NoHeader {
                                    path: path.to_path_buf(),
                                    line,
                                    name: name.to_string(),
                                })
                            }
                        }
                    }
                };
                if let Some(k) = label_column {
                    if columns < 2 {
                        return Err(DataError::OnlyLabelColumn {
                            path: path.to_path_buf(),
                            line,
                            column: k + 1,
                        });
                    }
                }
                first = Some((columns, line, label_column));
                if is_header {
                    continue;
                }
                label_column
            }
            Some((expected, first_line, label_column)) => {
                if record.len() != expected {
                    return Err(DataError::RaggedRow {
                        path: path.to_path_buf(),
                        line,
                        found: record.len(),
                        expected,
                        first_line,
                    });
                }
                label_column
            }
        };
        for (i, cell) in record.iter().enumerate() {
            let column = i + 1;
            if Some(i) == label_column {
                label_cells.push((line, column, cell.to_string()));
                continue;
            }
            match cell.parse::<f32>() {
                Ok(v) if v.is_finite() => points.push(v),
                Ok(_) => {
                    return Err(DataError::NotFinite {
                        path: path.to_path_buf(),
                        line,
                        column,
                        found: cell.to_string(),
                    })
                }
                Err(_) => {
                    return Err(DataError::NotANumber {
                        path: path.to_path_buf(),
                        line,
                        column,
                        found: cell.to_string(),
                    })
                }
            }
        }
    }
    let dim = match first {
        Some((columns, _, label_column)) if !points.is_empty() => {
            columns - usize::from(label_column.is_some())
        }
        _ => {
            return Err(DataError::NoRows {
                path: path.to_path_buf(),
            })
        }
    };
    Ok(ParsedTable {
        dim,
        points,
        label_cells,
    })
}

/// A label cell as a non-negative integer that fits a `u32` (`"3"`, or an integral float
/// such as `"3.0"`), or `None`.
fn integer_label(cell: &str) -> Option<u32> {
    if let Ok(v) = cell.parse::<u32>() {
        return Some(v);
    }
    match cell.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) => {
            Some(v as u32)
        }
        _ => None,
    }
}

/// Integer class labels, as [`TabularDataset::from_csv_labelled`] reads them.
fn parse_labels(cells: &[(u64, usize, String)], path: &Path) -> Result<Vec<u32>, DataError> {
    cells
        .iter()
        .map(|(line, column, cell)| {
            integer_label(cell).ok_or_else(|| DataError::BadLabel {
                path: path.to_path_buf(),
                line: *line,
                column: *column,
                found: cell.clone(),
            })
        })
        .collect()
}

/// Class labels and class names, as [`TabularDataset::from_csv_with_label_column`] reads
/// them: integers kept as they are, or else strings numbered in sorted order.
fn class_labels(
    cells: &[(u64, usize, String)],
    path: &Path,
) -> Result<(Vec<u32>, Vec<String>), DataError> {
    if let Some((line, column, _)) = cells.iter().find(|(_, _, cell)| cell.is_empty()) {
        return Err(DataError::EmptyLabel {
            path: path.to_path_buf(),
            line: *line,
            column: *column,
        });
    }
    let integers: Option<Vec<u32>> = cells.iter().map(|(_, _, c)| integer_label(c)).collect();
    if let Some(labels) = integers {
        let mut distinct = labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        return Ok((labels, distinct.iter().map(u32::to_string).collect()));
    }
    let mut names: Vec<String> = cells.iter().map(|(_, _, c)| c.clone()).collect();
    names.sort_unstable();
    names.dedup();
    let labels = cells
        .iter()
        .map(|(line, column, cell)| {
            names
                .binary_search(cell)
                .ok()
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| DataError::BadLabel {
                    path: path.to_path_buf(),
                    line: *line,
                    column: *column,
                    found: cell.clone(),
                })
        })
        .collect::<Result<Vec<u32>, DataError>>()?;
    Ok((labels, names))
}
