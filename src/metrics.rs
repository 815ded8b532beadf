//! Sample-quality metrics of SPEC §7 on host data (row-major `n × d` f32 buffers):
//! sliced Wasserstein distance and MMD² with RBF kernels.

use rand::Rng;
use rand_distr::StandardNormal;

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

/// The fixed RBF bandwidths of SPEC §7, whose MMD² estimates are summed.
pub const MMD_BANDWIDTHS: [f64; 5] = [0.05, 0.2, 0.5, 1.0, 2.0];

fn squared_distance(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum()
}

/// Unbiased MMD² estimates with RBF kernels `exp(-‖x-y‖²/(2h²))`, one per bandwidth `h`.
/// At most `max_points` rows of each sample are used (SPEC: 2,000).
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

/// The two MMD² figures SPEC §7 reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mmd2 {
    /// Sum of the unbiased estimates over [`MMD_BANDWIDTHS`].
    pub fixed_sum: f64,
    /// The unbiased estimate at the median-heuristic bandwidth.
    pub median: f64,
}

/// MMD² between two samples, as SPEC §7 defines it (at most 2,000 points a side).
pub fn mmd2(a: &[f32], b: &[f32], dim: usize) -> Mmd2 {
    const MAX_POINTS: usize = 2000;
    let fixed_sum = mmd2_unbiased(a, b, dim, &MMD_BANDWIDTHS, MAX_POINTS)
        .iter()
        .sum();
    let h = median_bandwidth(a, b, dim, MAX_POINTS);
    let median = mmd2_unbiased(a, b, dim, &[h], MAX_POINTS)[0];
    Mmd2 { fixed_sum, median }
}
