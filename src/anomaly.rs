//! Anomaly-detection metrics and classical baseline detectors on host data (row-major
//! `n × dim` f32 point buffers, computed in f64, like [`crate::metrics`]).
//!
//! Convention everywhere: a score is HIGHER for MORE anomalous points and outliers are the
//! positive class, so an energy, a negative log-density or a distance can be passed as is.
//!
//! - Metrics of a score: [`detection_metrics`] (AUROC, average precision, FPR at 95 % TPR)
//!   and [`roc_curve`]. Tied scores always form one threshold group that enters together,
//!   because a detector cannot rank points it scores equally.
//! - Baselines: [`Mahalanobis`] distance under a Ledoit–Wolf shrunk covariance,
//!   k-nearest-neighbour distance ([`knn_scores`], [`nearest_distances`]) and an isotropic
//!   Gaussian KDE with a bandwidth picked on validation data ([`GaussianKde`]).
//!
//! The small linear algebra (a covariance, its Cholesky factor and triangular solves) is
//! written out here: a Cholesky of a `d × d` matrix with `d` at most a few hundred is ~30
//! lines and not worth a linear-algebra crate's compile time.
//!
//! Bad input (empty lists, NaN, buffers that are not whole points, `k` out of range, ...)
//! is reported as [`Error::InvalidArgument`], never a panic.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::metrics::auroc;

fn invalid<T>(message: String) -> Result<T> {
    Err(Error::InvalidArgument(message))
}

// ---------------------------------------------------------------------------------------
// Metrics of a score.

/// Summary of how well a score separates outliers (positive) from inliers.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct DetectionMetrics {
    /// Area under the ROC curve ([`crate::metrics::auroc`]): 1 perfect, 0.5 chance.
    pub auroc: f64,
    /// Average precision with outliers positive (scikit-learn's
    /// `average_precision_score`); its chance level is the outlier fraction, not 0.5.
    pub aupr: f64,
    /// The smallest false-positive rate among thresholds that flag at least 95 % of the
    /// outliers: the inlier cost of a detector tuned to miss few anomalies.
    pub fpr_at_95_tpr: f64,
    /// Number of inlier scores.
    pub n_inliers: usize,
    /// Number of outlier scores.
    pub n_outliers: usize,
}

/// Checks both score lists (non-empty, no NaN) and returns the cumulative
/// `(true positives, false positives)` after each threshold group, thresholds descending.
/// Infinite scores are allowed, as in [`crate::metrics::auroc`].
fn threshold_groups(
    caller: &str,
    inlier_scores: &[f64],
    outlier_scores: &[f64],
) -> Result<Vec<(usize, usize)>> {
    for (what, scores) in [("inlier", inlier_scores), ("outlier", outlier_scores)] {
        if scores.is_empty() {
            return invalid(format!("{caller}: no {what} scores, expected at least one"));
        }
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return invalid(format!(
                "{caller}: {what} score {i} is NaN, expected a number"
            ));
        }
    }
    let mut pooled: Vec<(f64, bool)> = inlier_scores
        .iter()
        .map(|&s| (s, false))
        .chain(outlier_scores.iter().map(|&s| (s, true)))
        .collect();
    // Descending; partial_cmp (no NaN is left) so that -0.0 and 0.0 tie.
    pooled.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut groups = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut start = 0;
    while start < pooled.len() {
        let score = pooled[start].0;
        let len = pooled[start..]
            .iter()
            .take_while(|(s, _)| *s == score)
            .count();
        let outliers = pooled[start..start + len]
            .iter()
            .filter(|(_, o)| *o)
            .count();
        tp += outliers;
        fp += len - outliers;
        groups.push((tp, fp));
        start += len;
    }
    Ok(groups)
}

/// AUROC, average precision and FPR at 95 % TPR of an anomaly score (higher = more
/// anomalous), outliers positive.
///
/// - `aupr` is `AP = Σ_k (R_k − R_{k−1}) P_k` over thresholds at each distinct score,
///   descending, with `R_0 = 0` (scikit-learn's `average_precision_score`, which is a step
///   sum rather than a trapezoid because interpolating precision is optimistic).
/// - `fpr_at_95_tpr` is the smallest FPR over thresholds whose TPR is at least 0.95
///   (predicted positive = score ≥ threshold). TPR ≥ 0.95 is tested in integers
///   (`20·TP ≥ 19·n_outliers`) so that exactly 95 % counts regardless of rounding.
///
/// Tied scores form one threshold group in both, so the result does not depend on the
/// order of the inputs.
///
/// # Errors
/// [`Error::InvalidArgument`] if either list is empty or a score is NaN.
pub fn detection_metrics(
    inlier_scores: &[f64],
    outlier_scores: &[f64],
) -> Result<DetectionMetrics> {
    let groups = threshold_groups("detection_metrics", inlier_scores, outlier_scores)?;
    let (n_in, n_out) = (inlier_scores.len(), outlier_scores.len());
    let mut aupr = 0.0;
    let mut previous_tp = 0usize;
    let mut fpr_at_95_tpr = 1.0;
    let mut found = false;
    for &(tp, fp) in &groups {
        if tp > previous_tp {
            let precision = tp as f64 / (tp + fp) as f64;
            aupr += (tp - previous_tp) as f64 / n_out as f64 * precision;
            previous_tp = tp;
        }
        // FPR only grows as the threshold falls, so the first group reaching 95 % TPR
        // has the smallest FPR among them.
        if !found && 20 * tp as u128 >= 19 * n_out as u128 {
            fpr_at_95_tpr = fp as f64 / n_in as f64;
            found = true;
        }
    }
    Ok(DetectionMetrics {
        auroc: auroc(inlier_scores, outlier_scores)?,
        aupr,
        fpr_at_95_tpr,
        n_inliers: n_in,
        n_outliers: n_out,
    })
}

/// The ROC curve of an anomaly score (higher = more anomalous, outliers positive): the
/// `(fpr, tpr)` points from `(0, 0)` to `(1, 1)`, one per distinct score taken as the
/// threshold, thresholds descending. Tied scores make one (possibly diagonal) step, so the
/// trapezoid area under the curve is exactly [`crate::metrics::auroc`] (ties counting ½).
///
/// # Errors
/// [`Error::InvalidArgument`] if either list is empty or a score is NaN.
pub fn roc_curve(inlier_scores: &[f64], outlier_scores: &[f64]) -> Result<Vec<(f64, f64)>> {
    let groups = threshold_groups("roc_curve", inlier_scores, outlier_scores)?;
    let (n_in, n_out) = (inlier_scores.len() as f64, outlier_scores.len() as f64);
    let mut curve = Vec::with_capacity(groups.len() + 1);
    curve.push((0.0, 0.0));
    curve.extend(
        groups
            .iter()
            .map(|&(tp, fp)| (fp as f64 / n_in, tp as f64 / n_out)),
    );
    Ok(curve)
}

// ---------------------------------------------------------------------------------------
// Point buffers.

/// Checks a row-major point buffer (`dim ≥ 1`, at least one whole point, finite values)
/// and returns its number of points. Non-finite coordinates are refused because every
/// detector here would turn them into NaN scores that poison the metrics downstream.
fn check_points(caller: &str, what: &str, points: &[f32], dim: usize) -> Result<usize> {
    if dim == 0 {
        return invalid(format!("{caller}: dim = 0, expected at least 1"));
    }
    if points.is_empty() {
        return invalid(format!("{caller}: no {what} points, expected at least one"));
    }
    if !points.len().is_multiple_of(dim) {
        return invalid(format!(
            "{caller}: {} {what} values is not a whole number of {dim}-dimensional points, \
             expected a multiple of {dim}",
            points.len()
        ));
    }
    if let Some(i) = points.iter().position(|v| !v.is_finite()) {
        return invalid(format!(
            "{caller}: {what} point {} coordinate {} is {}, expected a finite value",
            i / dim,
            i % dim,
            points[i]
        ));
    }
    Ok(points.len() / dim)
}

fn squared_distance(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum()
}

// ---------------------------------------------------------------------------------------
// Mahalanobis distance.

/// Squared Mahalanobis distance to the training data's mean under a Ledoit–Wolf shrunk
/// covariance: the classical Gaussian baseline detector.
///
/// The covariance is `(1 − s)·S + s·μ·I`, where `S` is the 1/n empirical covariance of the
/// centred training points, `μ = trace(S)/d` and `s` is the Ledoit–Wolf (2004) closed-form
/// shrinkage intensity exactly as `sklearn.covariance.LedoitWolf` computes it, clamped to
/// `[0, 1]`. Shrinkage is what keeps few points in many dimensions (n ≤ d, where `S` is
/// singular) and constant columns usable.
///
/// Two degenerate cases are handled explicitly rather than failing:
/// - if `S` is exactly zero (all training points identical) there is no scale to shrink
///   toward, so the covariance is `ε²·I` with `ε = f32::EPSILON · max(1, max_j |mean_j|)`,
///   the resolution of the f32 input: a point that differs from the training point by one
///   f32 step scores about 1, anything farther scores very high;
/// - if the shrunk covariance is still numerically singular (Ledoit–Wolf's intensity is 0
///   for e.g. two points, whose `S` has rank 1), a ridge `r·μ·I` is added with the
///   smallest `r` in `0, 1e-12, 1e-10, …, 1` for which the Cholesky factorisation
///   succeeds with every pivot above `1e-12` times the largest diagonal entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Mahalanobis {
    dim: usize,
    mean: Vec<f64>,
    shrinkage: f64,
    /// Lower-triangular Cholesky factor `L` of the covariance, row-major `dim × dim`.
    cholesky: Vec<f64>,
}

/// Lower Cholesky factor of the symmetric `d × d` row-major matrix `a`, or `None` when a
/// pivot is not above `min_pivot` (the matrix is not numerically positive definite).
fn cholesky(a: &[f64], d: usize, min_pivot: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; d * d];
    for j in 0..d {
        let pivot = a[j * d + j] - (0..j).map(|k| l[j * d + k].powi(2)).sum::<f64>();
        if !(pivot.is_finite() && pivot > min_pivot) {
            return None;
        }
        let diag = pivot.sqrt();
        l[j * d + j] = diag;
        for i in (j + 1)..d {
            let dot: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            l[i * d + j] = (a[i * d + j] - dot) / diag;
        }
    }
    Some(l)
}

impl Mahalanobis {
    /// Fits the mean and the shrunk covariance to `points` (row-major `n × dim`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `dim` is 0, `points` is not a whole number of points,
    /// has fewer than 2 points (no covariance), or holds a non-finite value.
    pub fn fit(points: &[f32], dim: usize) -> Result<Self> {
        let n = check_points("Mahalanobis::fit", "training", points, dim)?;
        if n < 2 {
            return invalid(format!(
                "Mahalanobis::fit: {n} training point, expected at least 2 to estimate a covariance"
            ));
        }
        let d = dim;
        let nf = n as f64;
        let mut mean = vec![0.0; d];
        for row in points.chunks_exact(d) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= nf);

        // Empirical covariance (1/n) and, for Ledoit–Wolf's β, Σ_k ‖x_k‖⁴ of the centred
        // rows: sklearn's sum of <X², X²> entries, which factorises into row norms.
        let mut cov = vec![0.0; d * d];
        let mut sum_norm4 = 0.0;
        let mut centred = vec![0.0; d];
        for row in points.chunks_exact(d) {
            for ((c, &x), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = f64::from(x) - m;
            }
            sum_norm4 += centred.iter().map(|c| c * c).sum::<f64>().powi(2);
            for i in 0..d {
                let ci = centred[i];
                for j in 0..=i {
                    cov[i * d + j] += ci * centred[j];
                }
            }
        }
        for i in 0..d {
            for j in 0..=i {
                cov[i * d + j] /= nf;
                cov[j * d + i] = cov[i * d + j];
            }
        }

        let trace: f64 = (0..d).map(|i| cov[i * d + i]).sum();
        let mu = trace / d as f64;
        // sklearn.covariance.ledoit_wolf_shrinkage: δ_ = ‖S‖_F², β = (Σ‖x‖⁴/n − δ_)/(d n),
        // δ = ‖S − μI‖_F²/d, s = min(β, δ)/δ (0 when δ = 0).
        let frobenius2: f64 = cov.iter().map(|c| c * c).sum();
        let beta = (sum_norm4 / nf - frobenius2) / (d as f64 * nf);
        let delta = (frobenius2 - 2.0 * mu * trace + d as f64 * mu * mu) / d as f64;
        let shrinkage = if delta > 0.0 {
            (beta.min(delta) / delta).clamp(0.0, 1.0)
        } else {
            0.0
        };

        let mut shrunk: Vec<f64> = cov.iter().map(|c| (1.0 - shrinkage) * c).collect();
        let scale = if mu > 0.0 {
            for i in 0..d {
                shrunk[i * d + i] += shrinkage * mu;
            }
            mu
        } else {
            let largest = mean.iter().fold(1.0f64, |a, m| a.max(m.abs()));
            let epsilon = f64::from(f32::EPSILON) * largest;
            for i in 0..d {
                shrunk[i * d + i] = epsilon * epsilon;
            }
            epsilon * epsilon
        };

        for ridge in [0.0, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0] {
            let mut a = shrunk.clone();
            for i in 0..d {
                a[i * d + i] += ridge * scale;
            }
            let max_diag = (0..d).map(|i| a[i * d + i]).fold(0.0f64, f64::max);
            if let Some(cholesky) = cholesky(&a, d, 1e-12 * max_diag) {
                return Ok(Self {
                    dim: d,
                    mean,
                    shrinkage,
                    cholesky,
                });
            }
        }
        invalid(format!(
            "Mahalanobis::fit: the covariance of {n} points in {d} dimensions is not positive \
             definite even with a ridge of its mean variance; expected points of moderate scale"
        ))
    }

    /// The Ledoit–Wolf shrinkage intensity used, in `[0, 1]`: near 0 when there are many
    /// points per dimension, larger as `S` becomes unreliable.
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// The training mean the distances are measured from.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The dimension the detector was fitted in.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Squared Mahalanobis distance `(x − m)ᵀ Σ⁻¹ (x − m)` of each point: `‖L⁻¹(x − m)‖²`
    /// by forward substitution, which avoids forming `Σ⁻¹`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `points` is empty, not a whole number of
    /// `dim`-dimensional points, or holds a non-finite value.
    pub fn score(&self, points: &[f32]) -> Result<Vec<f64>> {
        check_points("Mahalanobis::score", "query", points, self.dim)?;
        let d = self.dim;
        let l = &self.cholesky;
        Ok(points
            .chunks_exact(d)
            .map(|row| {
                let mut y = vec![0.0; d];
                for i in 0..d {
                    let dot: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
                    y[i] = (f64::from(row[i]) - self.mean[i] - dot) / l[i * d + i];
                }
                y.iter().map(|v| v * v).sum()
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// Nearest neighbours.

/// Euclidean distance from each query point to its `k`-th nearest training point (`k = 1`:
/// the nearest). Brute force over all pairs, parallel over queries; each query's result
/// depends on that query alone, so the output is deterministic whatever the thread count.
///
/// # Errors
/// [`Error::InvalidArgument`] if `dim` or `k` is 0, either buffer is empty, not a whole
/// number of points or holds a non-finite value, or `k` exceeds the number of training
/// points.
pub fn knn_scores(train: &[f32], query: &[f32], dim: usize, k: usize) -> Result<Vec<f64>> {
    Ok(nearest_neighbours(train, query, dim, k)
        .map_err(|e| match e {
            Error::InvalidArgument(m) => {
                Error::InvalidArgument(m.replacen("nearest_neighbours", "knn_scores", 1))
            }
            other => other,
        })?
        .iter()
        .map(|neighbours| neighbours.last().map_or(f64::NAN, |&(_, d)| d))
        .collect())
}

/// The `k` nearest training points of each query point, as `(training row, distance)`
/// nearest first (ties by the smaller row): the neighbours of a k-nearest-neighbour
/// classifier. Brute force, parallel over queries, deterministic.
///
/// # Errors
/// As [`knn_scores`].
pub fn nearest_neighbours(
    train: &[f32],
    query: &[f32],
    dim: usize,
    k: usize,
) -> Result<Vec<Vec<(usize, f64)>>> {
    if k == 0 {
        return invalid("nearest_neighbours: k = 0, expected at least 1".into());
    }
    let n_train = check_points("nearest_neighbours", "training", train, dim)?;
    check_points("nearest_neighbours", "query", query, dim)?;
    if k > n_train {
        return invalid(format!(
            "nearest_neighbours: k = {k} but there are {n_train} training points, expected k ≤ {n_train}"
        ));
    }
    Ok(query
        .par_chunks_exact(dim)
        .map(|q| {
            let mut distances: Vec<(usize, f64)> = train
                .chunks_exact(dim)
                .map(|t| squared_distance(q, t))
                .enumerate()
                .collect();
            let order =
                |a: &(usize, f64), b: &(usize, f64)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
            if k < distances.len() {
                distances.select_nth_unstable_by(k - 1, order);
                distances.truncate(k);
            }
            distances.sort_by(order);
            distances.iter().map(|&(i, d2)| (i, d2.sqrt())).collect()
        })
        .collect())
}

/// Distance from each query point to its nearest training point ([`knn_scores`] with
/// `k = 1`): the memorisation check "how close is each sample to a training image".
///
/// # Errors
/// As [`knn_scores`].
pub fn nearest_distances(train: &[f32], query: &[f32], dim: usize) -> Result<Vec<f64>> {
    knn_scores(train, query, dim, 1)
}

// ---------------------------------------------------------------------------------------
// Kernel density estimate.

/// `log Σ_i exp(v_i)` without overflow; `-∞` for an empty slice or all `-∞` terms.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Log-density of an isotropic Gaussian KDE with bandwidth `h` at a point whose squared
/// distances to the `n` training points are `d2`: `log Σ_i exp(−d2_i / 2h²) − log n −
/// (d/2) log(2πh²)`.
fn kde_log_density(d2: &[f64], dim: usize, h: f64) -> f64 {
    let inv = 1.0 / (2.0 * h * h);
    log_sum_exp(d2.iter().map(|&v| -v * inv))
        - (d2.len() as f64).ln()
        - 0.5 * dim as f64 * (2.0 * std::f64::consts::PI * h * h).ln()
}

/// Isotropic Gaussian kernel density estimate `p(x) = (1/n) Σ_i N(x; x_i, h²I)`, with the
/// bandwidth `h` chosen among candidates by held-out likelihood (the training points
/// themselves would always favour the smallest `h`).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianKde {
    dim: usize,
    /// Training points in f64, row-major.
    train: Vec<f64>,
    bandwidth: f64,
    validation_log_likelihood: f64,
}

impl GaussianKde {
    /// Fits a KDE on `train` and picks the bandwidth among `candidates` that maximises the
    /// mean log-likelihood of `validation` (ties go to the smaller bandwidth, the less
    /// smoothed model). Sums are done in log space (log-sum-exp), so tiny bandwidths give
    /// very negative, not `-∞`, log-likelihoods. [`default_bandwidths`] gives a grid.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `dim` is 0, either buffer is empty, not a whole number
    /// of points or holds a non-finite value, `candidates` is empty or holds a value that
    /// is not finite and positive, or every candidate gives a non-finite validation
    /// log-likelihood.
    pub fn fit(train: &[f32], validation: &[f32], dim: usize, candidates: &[f64]) -> Result<Self> {
        check_points("GaussianKde::fit", "training", train, dim)?;
        check_points("GaussianKde::fit", "validation", validation, dim)?;
        if candidates.is_empty() {
            return invalid(
                "GaussianKde::fit: no candidate bandwidths, expected at least one".into(),
            );
        }
        if let Some(h) = candidates.iter().find(|h| !(h.is_finite() && **h > 0.0)) {
            return invalid(format!(
                "GaussianKde::fit: candidate bandwidth {h}, expected a finite positive value"
            ));
        }
        // One pass over the validation × train distances serves every candidate.
        let per_point: Vec<Vec<f64>> = validation
            .par_chunks_exact(dim)
            .map(|v| {
                let d2: Vec<f64> = train
                    .chunks_exact(dim)
                    .map(|t| squared_distance(v, t))
                    .collect();
                candidates
                    .iter()
                    .map(|&h| kde_log_density(&d2, dim, h))
                    .collect()
            })
            .collect();
        let n_val = per_point.len() as f64;
        // Summed in input order after the parallel part, so the choice is deterministic.
        let mut best: Option<(f64, f64)> = None; // (bandwidth, mean log-likelihood)
        for (c, &h) in candidates.iter().enumerate() {
            let mean = per_point.iter().map(|row| row[c]).sum::<f64>() / n_val;
            if !mean.is_finite() {
                continue;
            }
            let better = match best {
                None => true,
                Some((best_h, best_ll)) => mean > best_ll || (mean == best_ll && h < best_h),
            };
            if better {
                best = Some((h, mean));
            }
        }
        let Some((bandwidth, validation_log_likelihood)) = best else {
            return invalid(format!(
                "GaussianKde::fit: every one of {} candidate bandwidths gives a non-finite \
                 validation log-likelihood, expected at least one usable bandwidth",
                candidates.len()
            ));
        };
        Ok(Self {
            dim,
            train: train.iter().map(|&v| f64::from(v)).collect(),
            bandwidth,
            validation_log_likelihood,
        })
    }

    /// The chosen bandwidth `h` (the kernel's standard deviation per coordinate).
    pub fn bandwidth(&self) -> f64 {
        self.bandwidth
    }

    /// The mean validation log-likelihood at the chosen bandwidth (nats per point).
    pub fn validation_log_likelihood(&self) -> f64 {
        self.validation_log_likelihood
    }

    /// The dimension the KDE was fitted in.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `log p(x)` of each point (row-major `n × dim`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `points` is empty, not a whole number of
    /// `dim`-dimensional points, or holds a non-finite value.
    pub fn log_density(&self, points: &[f32]) -> Result<Vec<f64>> {
        check_points("GaussianKde::log_density", "query", points, self.dim)?;
        let dim = self.dim;
        Ok(points
            .par_chunks_exact(dim)
            .map(|x| {
                let d2: Vec<f64> = self
                    .train
                    .chunks_exact(dim)
                    .map(|t| {
                        t.iter()
                            .zip(x)
                            .map(|(a, &b)| (a - f64::from(b)).powi(2))
                            .sum()
                    })
                    .collect();
                kde_log_density(&d2, dim, self.bandwidth)
            })
            .collect())
    }

    /// Anomaly score `−log p(x)` (higher = more anomalous).
    ///
    /// # Errors
    /// As [`GaussianKde::log_density`].
    pub fn score(&self, points: &[f32]) -> Result<Vec<f64>> {
        Ok(self.log_density(points)?.into_iter().map(|l| -l).collect())
    }
}

/// A bandwidth grid for [`GaussianKde::fit`]: `m · 2^{k/2}` for `k = −10, …, 4` (15 values
/// from `m/32` to `4m`, a factor √2 apart), where `m` is the median pairwise Euclidean
/// distance of the training points (the upper median when the number of pairs is even).
/// The median distance is the scale of the data as a
/// whole; good KDE bandwidths are a fraction of it that shrinks with `n`, hence the grid
/// reaches far below `m` and only a little above.
///
/// `m` is computed on at most 1,000 points (every `⌈n/1000⌉`-th), keeping it `O(10⁶)`
/// distances. It falls back to 1 when it is not finite and positive (fewer than two
/// points, `dim = 0`, a buffer that is not whole points, non-finite values, or more than
/// half the pairs coincident), since this function has no error path and
/// [`GaussianKde::fit`] will report bad data itself.
pub fn default_bandwidths(train: &[f32], dim: usize) -> Vec<f64> {
    let median = median_pairwise_distance(train, dim).unwrap_or(1.0);
    (-10..=4)
        .map(|k| median * 2f64.powf(f64::from(k) / 2.0))
        .collect()
}

fn median_pairwise_distance(train: &[f32], dim: usize) -> Option<f64> {
    if dim == 0 || !train.len().is_multiple_of(dim) {
        return None;
    }
    let n = train.len() / dim;
    let stride = n.div_ceil(1000).max(1);
    let subset: Vec<&[f32]> = train.chunks_exact(dim).step_by(stride).collect();
    let mut distances = Vec::with_capacity(subset.len() * subset.len().saturating_sub(1) / 2);
    for i in 0..subset.len() {
        for j in (i + 1)..subset.len() {
            distances.push(squared_distance(subset[i], subset[j]).sqrt());
        }
    }
    if distances.is_empty() {
        return None;
    }
    let mid = distances.len() / 2;
    let (_, median, _) = distances.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    (median.is_finite() && *median > 0.0).then_some(*median)
}
