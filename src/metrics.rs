//! Sample-quality metrics of docs/algorithms.md §7 on host data (row-major `n × d` f32 buffers):
//! sliced Wasserstein distance and MMD² with RBF kernels; grid densities and their total
//! variation (the grid KL and held-out NLL live in [`crate::ebm`]); mode statistics of
//! samples from a Gaussian mixture; and the AUROC of an anomaly score.

use rand::Rng;
use rand_distr::StandardNormal;

use crate::ebm::grid_log_normaliser;
use crate::error::{Error, Result};

/// Mean and population standard deviation of `values` in f64 (`(0, 0)` when empty):
/// the one place batch statistics of returns and advantages are computed.
pub fn mean_std(values: &[f32]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

/// Sliced Wasserstein distance: W2 along `n_directions` random unit directions between
/// two equally sized samples, `SWD = sqrt(mean_k W2_k²)`. Uses the smaller sample size if
/// they differ (the first `n` rows of each).
pub fn sliced_wasserstein(
    a: &[f32],
    b: &[f32],
    dim: usize,
    n_directions: usize,
    rng: &mut impl Rng,
) -> f64 {
    let n = (a.len() / dim).min(b.len() / dim);
    if n == 0 || n_directions == 0 {
        return f64::NAN;
    }
    let mut total = 0.0;
    let mut pa = vec![0.0f64; n];
    let mut pb = vec![0.0f64; n];
    for _ in 0..n_directions {
        let mut direction: Vec<f64> = (0..dim).map(|_| rng.sample(StandardNormal)).collect();
        let norm = direction
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        direction.iter_mut().for_each(|v| *v /= norm);
        let project = |x: &[f32], out: &mut [f64]| {
            for (i, o) in out.iter_mut().enumerate() {
                let row = &x[i * dim..(i + 1) * dim];
                *o = row.iter().zip(&direction).map(|(&x, w)| x as f64 * w).sum();
            }
            out.sort_by(|x, y| x.total_cmp(y));
        };
        project(a, &mut pa);
        project(b, &mut pb);
        total += pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            / n as f64;
    }
    (total / n_directions as f64).sqrt()
}

/// The fixed RBF bandwidths of docs/algorithms.md §7, whose MMD² estimates are summed.
pub const MMD_BANDWIDTHS: [f64; 5] = [0.05, 0.2, 0.5, 1.0, 2.0];

fn squared_distance(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum()
}

/// Unbiased MMD² estimates with RBF kernels `exp(-‖x-y‖²/(2h²))`, one per bandwidth `h`.
/// At most `max_points` rows of each sample are used (docs/algorithms.md: 2,000).
pub fn mmd2_unbiased(
    a: &[f32],
    b: &[f32],
    dim: usize,
    bandwidths: &[f64],
    max_points: usize,
) -> Vec<f64> {
    let n = (a.len() / dim).min(max_points);
    let m = (b.len() / dim).min(max_points);
    if n < 2 || m < 2 {
        return vec![f64::NAN; bandwidths.len()];
    }
    fn row(x: &[f32], i: usize, dim: usize) -> &[f32] {
        &x[i * dim..(i + 1) * dim]
    }
    let gammas: Vec<f64> = bandwidths.iter().map(|h| 1.0 / (2.0 * h * h)).collect();
    let mut kxx = vec![0.0; gammas.len()];
    let mut kyy = vec![0.0; gammas.len()];
    let mut kxy = vec![0.0; gammas.len()];
    let accumulate = |sums: &mut Vec<f64>, d2: f64, weight: f64| {
        for (s, g) in sums.iter_mut().zip(&gammas) {
            *s += weight * (-g * d2).exp();
        }
    };
    for i in 0..n {
        for j in (i + 1)..n {
            accumulate(
                &mut kxx,
                squared_distance(row(a, i, dim), row(a, j, dim)),
                2.0,
            );
        }
    }
    for i in 0..m {
        for j in (i + 1)..m {
            accumulate(
                &mut kyy,
                squared_distance(row(b, i, dim), row(b, j, dim)),
                2.0,
            );
        }
    }
    for i in 0..n {
        for j in 0..m {
            accumulate(
                &mut kxy,
                squared_distance(row(a, i, dim), row(b, j, dim)),
                1.0,
            );
        }
    }
    (0..gammas.len())
        .map(|k| {
            kxx[k] / (n * (n - 1)) as f64 + kyy[k] / (m * (m - 1)) as f64
                - 2.0 * kxy[k] / (n * m) as f64
        })
        .collect()
}

/// The median-heuristic bandwidth: the median pairwise distance of the pooled samples
/// (over at most `max_points` rows of each).
pub fn median_bandwidth(a: &[f32], b: &[f32], dim: usize, max_points: usize) -> f64 {
    let n = (a.len() / dim).min(max_points);
    let m = (b.len() / dim).min(max_points);
    let mut pooled: Vec<&[f32]> = (0..n).map(|i| &a[i * dim..(i + 1) * dim]).collect();
    pooled.extend((0..m).map(|i| &b[i * dim..(i + 1) * dim]));
    // A strided subset keeps the heuristic O(k²) with k ≤ 1000.
    let stride = (pooled.len() / 1000).max(1);
    let subset: Vec<&[f32]> = pooled.into_iter().step_by(stride).collect();
    let mut distances = Vec::with_capacity(subset.len() * subset.len() / 2);
    for i in 0..subset.len() {
        for j in (i + 1)..subset.len() {
            distances.push(squared_distance(subset[i], subset[j]).sqrt());
        }
    }
    if distances.is_empty() {
        return 1.0;
    }
    let mid = distances.len() / 2;
    distances.select_nth_unstable_by(mid, |x, y| x.total_cmp(y));
    distances[mid].max(1e-6)
}

/// The two MMD² figures docs/algorithms.md §7 reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mmd2 {
    /// Sum of the unbiased estimates over [`MMD_BANDWIDTHS`].
    pub fixed_sum: f64,
    /// The unbiased estimate at the median-heuristic bandwidth.
    pub median: f64,
}

/// MMD² between two samples, as docs/algorithms.md §7 defines it (at most 2,000 points a side).
pub fn mmd2(a: &[f32], b: &[f32], dim: usize) -> Mmd2 {
    const MAX_POINTS: usize = 2000;
    let fixed_sum = mmd2_unbiased(a, b, dim, &MMD_BANDWIDTHS, MAX_POINTS)
        .iter()
        .sum();
    let h = median_bandwidth(a, b, dim, MAX_POINTS);
    let median = mmd2_unbiased(a, b, dim, &[h], MAX_POINTS)[0];
    Mmd2 { fixed_sum, median }
}

/// The density `q_i = exp(-E_i/T) / Z` per unit area at each grid point, with
/// `Z = Σ_j exp(-E_j/T) · cell_area` by quadrature ([`grid_log_normaliser`]), so that
/// `Σ_i q_i · cell_area = 1`. Meant for plotting and for comparing densities on a grid
/// ([`crate::ebm::Grid2d`] gives the points and `cell_area`).
///
/// Every entry is NaN when `temperature` or `cell_area` is not finite and positive, when an
/// energy is NaN, or when the normaliser is not finite (e.g. every energy is `+∞`). An
/// empty slice gives an empty vector.
pub fn normalised_grid_density(energies: &[f64], temperature: f64, cell_area: f64) -> Vec<f64> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(temperature) || !positive(cell_area) {
        return vec![f64::NAN; energies.len()];
    }
    let log_z = grid_log_normaliser(energies, temperature, cell_area);
    if !log_z.is_finite() || energies.iter().any(|e| e.is_nan()) {
        return vec![f64::NAN; energies.len()];
    }
    energies
        .iter()
        .map(|e| (-e / temperature - log_z).exp())
        .collect()
}

/// The density `p_i = exp(l_i) / Z` per unit area at each grid point from an (unnormalised)
/// log-density `l`, with `Z = Σ_j exp(l_j) · cell_area`, so that `Σ_i p_i · cell_area = 1`.
/// Entries of `-∞` (points outside the support) give 0. The same as
/// [`normalised_grid_density`] of the energies `-l` at temperature 1, with the same NaN
/// cases (an all `-∞` log-density has no mass to normalise).
pub fn normalised_from_log_density(log_density: &[f64], cell_area: f64) -> Vec<f64> {
    let energies: Vec<f64> = log_density.iter().map(|l| -l).collect();
    normalised_grid_density(&energies, 1.0, cell_area)
}

/// Total variation distance on a grid between the true density and the model's:
/// `TV = ½ Σ_i |p_i − q_i| · cell_area`, where `p` is normalised from its exact
/// log-density at the grid points ([`normalised_from_log_density`]) and `q ∝ exp(-E/T)`
/// ([`normalised_grid_density`]). It lies in `[0, 1]`; 0 means the two agree on the grid.
///
/// NaN when the slices are empty or differ in length, or in any NaN case of the two
/// normalisations.
pub fn grid_total_variation(
    true_log_density: &[f64],
    model_energies: &[f64],
    temperature: f64,
    cell_area: f64,
) -> f64 {
    if true_log_density.is_empty() || true_log_density.len() != model_energies.len() {
        return f64::NAN;
    }
    let p = normalised_from_log_density(true_log_density, cell_area);
    let q = normalised_grid_density(model_energies, temperature, cell_area);
    0.5 * p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum::<f64>() * cell_area
}

/// How a sample spreads over the modes of a Gaussian mixture (see [`mode_stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModeStats {
    /// `weights[k]`: the fraction of samples whose nearest centre (Euclidean; the lowest
    /// index on a tie) is centre `k`. Sums to 1.
    pub weights: Vec<f64>,
    /// `½ Σ_k |weights[k] − true_weights[k]|`, the total variation between the sample's
    /// mode weights and the mixture's.
    pub weight_tv: f64,
    /// The fraction of samples that are off-mode: farther than `3·std_k` from centre `k`
    /// for every centre `k`.
    pub off_mode_fraction: f64,
    /// The number of centres `k` with at least one sample within `3·std_k` of `c_k`.
    pub modes_covered: usize,
}

/// Mode statistics of row-major `samples` (`n × dim`) against a mixture of isotropic
/// Gaussians with means `centres` (each of length `dim`), standard deviations `stds` and
/// mixture weights `true_weights` (compared as given; normally they sum to 1). A sample is
/// on mode `k` when `‖x − c_k‖ ≤ 3·std_k` and off-mode when it is on no mode; it is
/// assigned to its nearest centre for [`ModeStats::weights`] whether on-mode or not.
///
/// # Errors
/// [`Error::InvalidArgument`] if `dim` is 0, there are no samples or `samples.len()` is not
/// a multiple of `dim`, a sample value is not finite, there are no centres, a centre does
/// not have `dim` coordinates or is not finite, `stds` or `true_weights` does not have one
/// entry per centre, a std is not finite and positive, or a true weight is not finite and
/// non-negative.
pub fn mode_stats(
    samples: &[f32],
    dim: usize,
    centres: &[Vec<f64>],
    stds: &[f64],
    true_weights: &[f64],
) -> Result<ModeStats> {
    let invalid = |message: String| Err(Error::InvalidArgument(format!("mode_stats: {message}")));
    if dim == 0 {
        return invalid("dim must be at least 1".into());
    }
    if samples.is_empty() || !samples.len().is_multiple_of(dim) {
        return invalid(format!(
            "{} sample values is not a positive whole number of {dim}-dimensional points",
            samples.len()
        ));
    }
    if let Some(bad) = samples.iter().find(|v| !v.is_finite()) {
        return invalid(format!("non-finite sample value {bad}"));
    }
    if centres.is_empty() {
        return invalid("no centres".into());
    }
    if let Some((k, c)) = centres.iter().enumerate().find(|(_, c)| c.len() != dim) {
        return invalid(format!(
            "centre {k} has {} coordinates, the samples have {dim}",
            c.len()
        ));
    }
    if let Some(k) = centres
        .iter()
        .position(|c| c.iter().any(|v| !v.is_finite()))
    {
        return invalid(format!("centre {k} is not finite"));
    }
    for (what, len) in [("stds", stds.len()), ("true_weights", true_weights.len())] {
        if len != centres.len() {
            return invalid(format!(
                "{len} {what} for {} centres; need one per centre",
                centres.len()
            ));
        }
    }
    if let Some(bad) = stds.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return invalid(format!("a std must be finite and positive, got {bad}"));
    }
    if let Some(bad) = true_weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return invalid(format!(
            "a true weight must be finite and non-negative, got {bad}"
        ));
    }

    let n = samples.len() / dim;
    let mut counts = vec![0usize; centres.len()];
    let mut covered = vec![false; centres.len()];
    let mut off_mode = 0usize;
    for x in samples.chunks_exact(dim) {
        let mut nearest = (0, f64::INFINITY);
        let mut on_mode = false;
        for (k, (c, std)) in centres.iter().zip(stds).enumerate() {
            let distance = x
                .iter()
                .zip(c)
                .map(|(&x, c)| (f64::from(x) - c).powi(2))
                .sum::<f64>()
                .sqrt();
            if distance < nearest.1 {
                nearest = (k, distance);
            }
            if distance <= 3.0 * std {
                on_mode = true;
                covered[k] = true;
            }
        }
        counts[nearest.0] += 1;
        if !on_mode {
            off_mode += 1;
        }
    }
    let weights: Vec<f64> = counts.iter().map(|&c| c as f64 / n as f64).collect();
    let weight_tv = 0.5
        * weights
            .iter()
            .zip(true_weights)
            .map(|(w, t)| (w - t).abs())
            .sum::<f64>();
    Ok(ModeStats {
        weights,
        weight_tv,
        off_mode_fraction: off_mode as f64 / n as f64,
        modes_covered: covered.iter().filter(|&&c| c).count(),
    })
}

/// The area under the ROC curve of an anomaly score for which HIGHER means MORE anomalous
/// (e.g. an energy): the probability that a random outlier scores above a random inlier,
/// ties counting ½, i.e. `(#{o > i} + ½ #{o = i}) / (n_in · n_out)` over all pairs. 1 means
/// every outlier scores above every inlier, 0.5 is chance, 0 is perfectly reversed.
/// Infinite scores are allowed (`+∞` ties with `+∞`). Computed by sorting the pooled
/// scores and walking groups of equal scores, in `O((n+m) log(n+m))`, with exact integer
/// pair counts up to the final division.
///
/// # Errors
/// [`Error::InvalidArgument`] if either list is empty or a score is NaN.
pub fn auroc(inlier_scores: &[f64], outlier_scores: &[f64]) -> Result<f64> {
    for (what, scores) in [("inlier", inlier_scores), ("outlier", outlier_scores)] {
        if scores.is_empty() {
            return Err(Error::InvalidArgument(format!("auroc: no {what} scores")));
        }
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return Err(Error::InvalidArgument(format!(
                "auroc: {what} score {i} is NaN"
            )));
        }
    }
    // (score, is_outlier), sorted by score; -0.0 and 0.0 must tie, so compare with
    // partial_cmp (no NaN is left) rather than total_cmp.
    let mut pooled: Vec<(f64, bool)> = inlier_scores
        .iter()
        .map(|&s| (s, false))
        .chain(outlier_scores.iter().map(|&s| (s, true)))
        .collect();
    pooled.sort_unstable_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));

    // Twice the Mann–Whitney U of the outliers: each outlier in a group of equal scores
    // beats every inlier below the group (2 per pair) and ties the group's inliers (1).
    let mut twice_u: u128 = 0;
    let mut inliers_below: u128 = 0;
    let mut start = 0;
    while start < pooled.len() {
        let score = pooled[start].0;
        let end = start
            + pooled[start..]
                .iter()
                .take_while(|(s, _)| *s == score)
                .count();
        let outliers = pooled[start..end].iter().filter(|(_, o)| *o).count() as u128;
        let inliers = (end - start) as u128 - outliers;
        twice_u += outliers * (2 * inliers_below + inliers);
        inliers_below += inliers;
        start = end;
    }
    let pairs = inlier_scores.len() as u128 * outlier_scores.len() as u128;
    Ok(twice_u as f64 / (2 * pairs) as f64)
}
