//! Anomaly metrics (AUROC, AP, FPR@95, ROC curve) on hand-computed and brute-force cases;
//! Mahalanobis, k-NN and KDE baselines against closed forms; bad input as errors.

use denoise_gym::anomaly::{
    default_bandwidths, detection_metrics, knn_scores, nearest_distances, roc_curve, GaussianKde,
    Mahalanobis,
};
use denoise_gym::metrics::auroc;
use denoise_gym::rng::{normal_vec, seeded};
use denoise_gym::Error;
use rand::Rng;

fn trapezoid_area(curve: &[(f64, f64)]) -> f64 {
    curve
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

/// Average precision transcribed from its definition in O(n²): for each distinct score
/// `t` (descending), P(t) = #{outliers ≥ t} / #{all ≥ t}, R(t) = #{outliers ≥ t} / n_out,
/// AP = Σ (R_k − R_{k−1}) P_k with R_0 = 0.
fn brute_force_ap(inliers: &[f64], outliers: &[f64]) -> f64 {
    let mut thresholds: Vec<f64> = inliers.iter().chain(outliers).copied().collect();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let mut ap = 0.0;
    let mut previous_recall = 0.0;
    for t in thresholds {
        let tp = outliers.iter().filter(|&&s| s >= t).count() as f64;
        let fp = inliers.iter().filter(|&&s| s >= t).count() as f64;
        let recall = tp / outliers.len() as f64;
        ap += (recall - previous_recall) * tp / (tp + fp);
        previous_recall = recall;
    }
    ap
}

fn random_tied_scores(rng: &mut impl Rng, n: usize, low: i32, high: i32) -> Vec<f64> {
    (0..n)
        .map(|_| f64::from(rng.gen_range(low..high)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Metrics.

#[test]
fn separable_reversed_and_identical_scores_give_the_extreme_metrics() {
    let inliers = [0.1, 0.2, 0.3, 0.4];
    let outliers = [0.5, 0.6, 0.7];
    let separable = detection_metrics(&inliers, &outliers).unwrap();
    assert_eq!(separable.auroc, 1.0);
    assert_eq!(separable.aupr, 1.0);
    assert_eq!(separable.fpr_at_95_tpr, 0.0);
    assert_eq!((separable.n_inliers, separable.n_outliers), (4, 3));

    // Outliers scored as the least anomalous: every outlier needs every inlier flagged.
    let reversed = detection_metrics(&outliers, &inliers).unwrap();
    assert_eq!(reversed.auroc, 0.0);
    assert_eq!(reversed.fpr_at_95_tpr, 1.0);

    // All scores tied: one threshold group, precision = outlier fraction 3 / 10.
    let same = detection_metrics(&[2.0; 7], &[2.0; 3]).unwrap();
    assert_eq!(same.auroc, 0.5);
    assert!((same.aupr - 0.3).abs() < 1e-15, "{}", same.aupr);
    assert_eq!(same.fpr_at_95_tpr, 1.0);
}

#[test]
fn hand_computed_ap_fpr95_and_roc_curve() {
    let inliers = [0.7, 0.5, 0.3, 0.1];
    let outliers = [0.9, 0.8, 0.5, 0.2];
    // Threshold groups, descending (cumulative TP, FP):
    //   0.9: O     -> (1, 0)  P = 1,   R = 1/4
    //   0.8: O     -> (2, 0)  P = 1,   R = 2/4
    //   0.7: I     -> (2, 1)           R unchanged
    //   0.5: O + I -> (3, 2)  P = 3/5, R = 3/4   (the tie enters as one group)
    //   0.3: I     -> (3, 3)
    //   0.2: O     -> (4, 3)  P = 4/7, R = 1
    //   0.1: I     -> (4, 4)
    // AP = ¼·1 + ¼·1 + ¼·3/5 + ¼·4/7 = ¼·(70 + 21 + 20)/35 = 111/140.
    // TPR ≥ 0.95 needs all 4 outliers; first reached at 0.2 with FP = 3: FPR@95 = 3/4.
    // AUROC: 0.9 and 0.8 beat 4 inliers each, 0.5 beats 2 and ties 1 (2.5), 0.2 beats 1:
    //   (4 + 4 + 2.5 + 1) / 16 = 11.5/16 = 0.71875.
    let m = detection_metrics(&inliers, &outliers).unwrap();
    assert!((m.aupr - 111.0 / 140.0).abs() < 1e-15, "{}", m.aupr);
    assert_eq!(m.fpr_at_95_tpr, 0.75);
    assert_eq!(m.auroc, 0.71875);

    let curve = roc_curve(&inliers, &outliers).unwrap();
    let expected = [
        (0.0, 0.0),
        (0.0, 0.25),
        (0.0, 0.5),
        (0.25, 0.5),
        (0.5, 0.75),
        (0.75, 0.75),
        (0.75, 1.0),
        (1.0, 1.0),
    ];
    assert_eq!(curve, expected);
    assert_eq!(trapezoid_area(&curve), 0.71875);
}

#[test]
fn fpr95_counts_exactly_95_percent_as_enough() {
    // 20 outliers at 1..=20, inliers at 1.5 and 0.5. Flagging down to 2 catches 19/20 =
    // 95 % exactly, with the inlier at 1.5 below: FPR 0. Needing 100 % would give 1/2.
    let outliers: Vec<f64> = (1..=20).map(f64::from).collect();
    let m = detection_metrics(&[1.5, 0.5], &outliers).unwrap();
    assert_eq!(m.fpr_at_95_tpr, 0.0);
    // One more outlier (21 of them at 0..=20) makes 95 % need 20 outliers: down to 1.0,
    // below the inlier at 1.5: FPR 1/2.
    let outliers: Vec<f64> = (0..=20).map(f64::from).collect();
    let m = detection_metrics(&[1.5, -0.5], &outliers).unwrap();
    assert_eq!(m.fpr_at_95_tpr, 0.5);
}

#[test]
fn average_precision_matches_its_brute_force_definition_with_ties() {
    let mut rng = seeded(11, 0);
    for trial in 0..5 {
        let inliers = random_tied_scores(&mut rng, 200 + trial * 37, 0, 20);
        let outliers = random_tied_scores(&mut rng, 50 + trial * 11, 5, 25);
        let m = detection_metrics(&inliers, &outliers).unwrap();
        let brute = brute_force_ap(&inliers, &outliers);
        assert!((m.aupr - brute).abs() < 1e-12, "{} vs {brute}", m.aupr);
        // The scores overlap but lean outward: AP must sit between chance and 1.
        let chance = outliers.len() as f64 / (inliers.len() + outliers.len()) as f64;
        assert!(
            m.aupr > chance && m.aupr < 1.0,
            "{} (chance {chance})",
            m.aupr
        );
    }
}

#[test]
fn roc_curve_is_monotone_from_origin_to_one_and_its_area_is_the_auroc() {
    let mut rng = seeded(12, 0);
    let inliers = random_tied_scores(&mut rng, 300, 0, 30);
    let outliers = random_tied_scores(&mut rng, 120, 10, 40);
    let curve = roc_curve(&inliers, &outliers).unwrap();
    assert_eq!(curve.first(), Some(&(0.0, 0.0)));
    assert_eq!(curve.last(), Some(&(1.0, 1.0)));
    assert!(curve
        .windows(2)
        .all(|w| w[1].0 >= w[0].0 && w[1].1 >= w[0].1 && w[1] != w[0]));
    // One point per distinct score plus the origin.
    let mut distinct: Vec<f64> = inliers.iter().chain(&outliers).copied().collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    assert_eq!(curve.len(), distinct.len() + 1);
    let area = trapezoid_area(&curve);
    let expected = auroc(&inliers, &outliers).unwrap();
    assert!((area - expected).abs() < 1e-12, "{area} vs {expected}");
    assert_eq!(
        detection_metrics(&inliers, &outliers).unwrap().auroc,
        expected
    );
}

// ---------------------------------------------------------------------------------------
// Mahalanobis.

/// `n` points of N(mean, [[1, ρ], [ρ, 1]]): x₁ = z₁, x₂ = ρ z₁ + √(1 − ρ²) z₂.
fn correlated_2d(rng: &mut impl Rng, n: usize, rho: f32, mean: [f32; 2]) -> Vec<f32> {
    let z = normal_vec(rng, 2 * n);
    let s = (1.0 - rho * rho).sqrt();
    z.chunks(2)
        .flat_map(|p| [p[0] + mean[0], rho * p[0] + s * p[1] + mean[1]])
        .collect()
}

#[test]
fn mahalanobis_recovers_a_known_2d_gaussian() {
    let mut rng = seeded(13, 0);
    let mean = [1.0f32, -2.0];
    let train = correlated_2d(&mut rng, 20_000, 0.8, mean);
    let detector = Mahalanobis::fit(&train, 2).unwrap();
    assert!(detector.shrinkage() < 0.01, "{}", detector.shrinkage());
    assert!(detector.shrinkage() >= 0.0);

    // Fresh points from the same law: the squared distance is χ²₂, mean 2.
    let fresh = correlated_2d(&mut rng, 20_000, 0.8, mean);
    let scores = detector.score(&fresh).unwrap();
    let mean_score = scores.iter().sum::<f64>() / scores.len() as f64;
    assert!((mean_score - 2.0).abs() < 0.05, "{mean_score}");

    // Σ⁻¹ = [[1, −0.8], [−0.8, 1]] / 0.36, so for u = x − μ:
    //   u = (1, −1): (1 + 1.6 + 1)/0.36 = 10 (against the correlation: anomalous)
    //   u = (1, 1):  (1 − 1.6 + 1)/0.36 = 10/9
    //   u = (2, 0):  4/0.36 = 100/9
    let offsets = [
        ([1.0f32, -1.0], 10.0),
        ([1.0, 1.0], 10.0 / 9.0),
        ([2.0, 0.0], 100.0 / 9.0),
    ];
    let points: Vec<f32> = offsets
        .iter()
        .flat_map(|(u, _)| [mean[0] + u[0], mean[1] + u[1]])
        .collect();
    let scores = detector.score(&points).unwrap();
    // With n = 20,000 the estimated mean and the variance along each eigenvector are off
    // by ~1 % (sd) each, so the squared distance is off by ~1.7 % (sd): 5 % is ~3 sd.
    for ((_, expected), got) in offsets.iter().zip(&scores) {
        assert!(
            (got - expected).abs() < 0.05 * expected,
            "{got} vs {expected}"
        );
    }

    // Exactly (up to rounding): the closed form under the sample mean and the shrunk
    // 1/n sample covariance (1 − s)·S + s·(tr S / 2)·I, inverted as a 2 × 2 matrix.
    let n = train.len() as f64 / 2.0;
    let m: Vec<f64> = (0..2)
        .map(|j| {
            train
                .iter()
                .skip(j)
                .step_by(2)
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / n
        })
        .collect();
    let mut s = [[0.0f64; 2]; 2];
    for p in train.chunks(2) {
        let c = [f64::from(p[0]) - m[0], f64::from(p[1]) - m[1]];
        for i in 0..2 {
            for j in 0..2 {
                s[i][j] += c[i] * c[j] / n;
            }
        }
    }
    let shrink = detector.shrinkage();
    let target = (s[0][0] + s[1][1]) / 2.0;
    let a = (1.0 - shrink) * s[0][0] + shrink * target;
    let b = (1.0 - shrink) * s[0][1];
    let d = (1.0 - shrink) * s[1][1] + shrink * target;
    let det = a * d - b * b;
    for (p, got) in points.chunks(2).zip(&scores) {
        let u = [f64::from(p[0]) - m[0], f64::from(p[1]) - m[1]];
        let expected = (d * u[0] * u[0] - 2.0 * b * u[0] * u[1] + a * u[1] * u[1]) / det;
        assert!(
            (got - expected).abs() < 1e-9 * expected,
            "{got} vs {expected}"
        );
    }
}

#[test]
fn ledoit_wolf_intensity_matches_a_hand_computation() {
    // Centred points (±1, 0), (0, ±2), shifted by (3, −1). With the 1/n covariance:
    //   S = diag(2/4, 8/4) = diag(0.5, 2), μ = tr S / 2 = 1.25, ‖S‖²_F = 4.25,
    //   Σ‖x‖⁴ / n = (1 + 1 + 16 + 16) / 4 = 8.5,
    //   β = (8.5 − 4.25) / (d·n) = 4.25 / 8 = 17/32,
    //   δ = (‖S‖²_F − 2μ·tr S + d·μ²) / d = (4.25 − 6.25 + 3.125) / 2 = 9/16 = 18/32,
    //   s = min(β, δ) / δ = 17/18.
    // Shrunk Σ = S/18 + (17/18)·1.25·I = diag(21.75, 23.25) / 18, so the offsets (1, 0)
    // and (0, 1) from the mean score 18/21.75 and 18/23.25.
    let points = [4.0f32, -1.0, 2.0, -1.0, 3.0, 1.0, 3.0, -3.0];
    let detector = Mahalanobis::fit(&points, 2).unwrap();
    assert!(
        (detector.shrinkage() - 17.0 / 18.0).abs() < 1e-12,
        "{}",
        detector.shrinkage()
    );
    assert_eq!(detector.mean(), &[3.0, -1.0]);
    let scores = detector.score(&[4.0, -1.0, 3.0, 0.0]).unwrap();
    assert!((scores[0] - 18.0 / 21.75).abs() < 1e-12, "{scores:?}");
    assert!((scores[1] - 18.0 / 23.25).abs() < 1e-12, "{scores:?}");
}

#[test]
fn mahalanobis_shrinks_with_few_points_and_survives_degenerate_data() {
    // n = 5 points in 10-D: the empirical covariance has rank 4.
    let mut rng = seeded(14, 0);
    let few = normal_vec(&mut rng, 5 * 10);
    let detector = Mahalanobis::fit(&few, 10).unwrap();
    assert!(detector.shrinkage() > 0.0, "{}", detector.shrinkage());
    assert!(detector.shrinkage() <= 1.0);
    let queries = normal_vec(&mut rng, 20 * 10);
    let scores = detector.score(&queries).unwrap();
    assert!(
        scores.iter().all(|s| s.is_finite() && *s > 0.0),
        "{scores:?}"
    );

    // A constant column: no variance there, yet the fit works and a departure along that
    // column is (very) anomalous.
    let with_constant: Vec<f32> = normal_vec(&mut rng, 200 * 2)
        .chunks(2)
        .flat_map(|p| [p[0], p[1], 7.0])
        .collect();
    let detector = Mahalanobis::fit(&with_constant, 3).unwrap();
    let scores = detector.score(&[0.0, 0.0, 7.0, 0.0, 0.0, 8.0]).unwrap();
    assert!(scores.iter().all(|s| s.is_finite()), "{scores:?}");
    assert!(scores[1] > 10.0 * scores[0].max(1.0), "{scores:?}");

    // Two points: the covariance has rank 1 and Ledoit–Wolf's intensity is 0.
    let detector = Mahalanobis::fit(&[0.0, 0.0, 1.0, 1.0], 2).unwrap();
    assert_eq!(detector.shrinkage(), 0.0);
    let scores = detector.score(&[0.5, 0.5, 0.0, 1.0]).unwrap();
    assert!(scores.iter().all(|s| s.is_finite()), "{scores:?}");
    assert!(scores[0] < 1e-6 && scores[1] > 1.0, "{scores:?}");

    // All points identical: the covariance is zero; the training point scores 0 and any
    // other point scores very high.
    let detector = Mahalanobis::fit(&[3.0, -1.0, 3.0, -1.0, 3.0, -1.0], 2).unwrap();
    let scores = detector.score(&[3.0, -1.0, 3.5, -1.0]).unwrap();
    assert_eq!(scores[0], 0.0);
    assert!(scores[1].is_finite() && scores[1] > 1e6, "{scores:?}");
}

// ---------------------------------------------------------------------------------------
// k nearest neighbours.

#[test]
fn knn_distances_on_a_line_are_exact() {
    // Train points on the x axis at 0, 1, 3, 7.
    let train = [0.0f32, 0.0, 1.0, 0.0, 3.0, 0.0, 7.0, 0.0];
    // (2, 0): distances 2, 1, 1, 5 -> sorted 1, 1, 2, 5.
    // (0, 4): distances 4, √17, 5, √65.
    let query = [2.0f32, 0.0, 0.0, 4.0];
    let expected = [[1.0, 1.0, 2.0, 5.0], [4.0, 17f64.sqrt(), 5.0, 65f64.sqrt()]];
    for k in 1..=4 {
        let got = knn_scores(&train, &query, 2, k).unwrap();
        assert_eq!(got, vec![expected[0][k - 1], expected[1][k - 1]], "k = {k}");
    }
    assert_eq!(
        nearest_distances(&train, &query, 2).unwrap(),
        vec![1.0, 4.0]
    );
    assert!(knn_scores(&train, &query, 2, 5).is_err());
}

#[test]
fn knn_is_deterministic_on_larger_sets() {
    let mut rng = seeded(15, 0);
    let train = normal_vec(&mut rng, 500 * 8);
    let query = normal_vec(&mut rng, 300 * 8);
    let a = knn_scores(&train, &query, 8, 5).unwrap();
    let b = knn_scores(&train, &query, 8, 5).unwrap();
    assert_eq!(a, b);
    // A training point is its own nearest neighbour.
    let own = nearest_distances(&train, &train[..8 * 10], 8).unwrap();
    assert!(own.iter().all(|&d| d == 0.0), "{own:?}");
}

// ---------------------------------------------------------------------------------------
// Gaussian KDE.

#[test]
fn default_bandwidths_are_a_sqrt2_grid_around_the_median_distance() {
    // 1-D points 0, 1, 2, 3: distances 1, 1, 1, 2, 2, 3; the (upper) median is 2.
    let grid = default_bandwidths(&[0.0, 1.0, 2.0, 3.0], 1);
    assert_eq!(grid.len(), 15);
    assert!((grid[10] - 2.0).abs() < 1e-15, "{grid:?}");
    assert!((grid[0] - 2.0 / 32.0).abs() < 1e-15 && (grid[14] - 8.0).abs() < 1e-14);
    assert!(grid
        .windows(2)
        .all(|w| (w[1] / w[0] - std::f64::consts::SQRT_2).abs() < 1e-12));
    // No pairs: falls back to a median of 1 rather than panicking.
    assert!((default_bandwidths(&[5.0], 1)[10] - 1.0).abs() < 1e-15);
    assert_eq!(default_bandwidths(&[1.0, 2.0], 0).len(), 15);
}

#[test]
fn kde_on_a_standard_normal_picks_a_silverman_like_bandwidth() {
    let mut rng = seeded(16, 0);
    let n = 2000;
    let train = normal_vec(&mut rng, n);
    let validation = normal_vec(&mut rng, n);
    let candidates = default_bandwidths(&train, 1);
    let kde = GaussianKde::fit(&train, &validation, 1, &candidates).unwrap();
    let h = kde.bandwidth();
    let silverman = 1.06 * (n as f64).powf(-0.2);
    assert!(
        h > silverman / 2.0 && h < silverman * 2.0,
        "{h} vs {silverman}"
    );

    // E[p̂(0)] = N(0; 0, 1 + h²). The KDE's own noise at 0 is sd ≈ √(R(K)/(n·h·p(0))) ≈ 4 %
    // relative (R(K) = 1/(2√π)), so 0.05 in log is about one sd: a fixed-seed check that the
    // normalisation and bandwidth are right, not a tight one.
    let log_p0 = kde.log_density(&[0.0]).unwrap()[0];
    let expected = -0.5 * (2.0 * std::f64::consts::PI * (1.0 + h * h)).ln();
    assert!((log_p0 - expected).abs() < 0.05, "{log_p0} vs {expected}");
    assert_eq!(kde.score(&[0.0]).unwrap()[0], -log_p0);

    // The chosen bandwidth beats each candidate fitted alone, and the candidates' order
    // does not matter.
    for &c in &candidates {
        let alone = GaussianKde::fit(&train, &validation, 1, &[c]).unwrap();
        assert!(alone.validation_log_likelihood() <= kde.validation_log_likelihood());
    }
    let reversed: Vec<f64> = candidates.iter().rev().copied().collect();
    let again = GaussianKde::fit(&train, &validation, 1, &reversed).unwrap();
    assert_eq!(again.bandwidth(), h);
    // The validation log-likelihood is the mean of log_density over the validation set.
    let mean: f64 = kde.log_density(&validation).unwrap().iter().sum::<f64>() / n as f64;
    assert!((mean - kde.validation_log_likelihood()).abs() < 1e-9);
}

#[test]
fn kde_log_density_of_one_point_is_a_gaussian_and_survives_tiny_bandwidths() {
    // A single training point at 0 in 2-D: p(x) = N(x; 0, h²I), exactly.
    let h = 0.5;
    let kde = GaussianKde::fit(&[0.0, 0.0], &[1.0, 0.0], 2, &[h]).unwrap();
    let got = kde.log_density(&[1.0, 1.0]).unwrap()[0];
    let expected = -(2.0f64) / (2.0 * h * h) - (2.0 * std::f64::consts::PI * h * h).ln();
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    // A bandwidth so small that every kernel underflows in linear space stays finite.
    let tiny = GaussianKde::fit(&[0.0, 0.0, 1.0, 0.0], &[0.5, 0.0], 2, &[1e-3, 1.0]).unwrap();
    assert_eq!(tiny.bandwidth(), 1.0);
    let one = GaussianKde::fit(&[0.0, 0.0], &[0.5, 0.0], 2, &[1e-3]).unwrap();
    assert!(one.validation_log_likelihood().is_finite());
    assert!(one.validation_log_likelihood() < -1e4);
}

// ---------------------------------------------------------------------------------------
// Errors.

fn message(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    // Metrics.
    assert!(message(detection_metrics(&[], &[1.0])).contains("no inlier scores"));
    assert!(message(detection_metrics(&[1.0], &[])).contains("no outlier scores"));
    assert!(message(detection_metrics(&[1.0, f64::NAN], &[1.0])).contains("NaN"));
    assert!(message(roc_curve(&[1.0], &[f64::NAN])).contains("roc_curve"));
    assert!(detection_metrics(&[f64::INFINITY], &[f64::NEG_INFINITY]).is_ok());

    // k-NN.
    let train = [0.0f32, 1.0, 2.0, 3.0];
    let m = message(knn_scores(&train, &[0.0, 0.0], 2, 0));
    assert!(m.contains("k = 0") && m.contains("at least 1"), "{m}");
    let m = message(knn_scores(&train, &[0.0, 0.0], 2, 3));
    assert!(
        m.contains("k = 3") && m.contains("2 training points"),
        "{m}"
    );
    assert!(message(knn_scores(&train, &[0.0, 0.0, 0.0], 2, 1)).contains("multiple of 2"));
    assert!(message(knn_scores(&[], &[0.0], 1, 1)).contains("no training points"));
    assert!(message(knn_scores(&train, &[], 2, 1)).contains("no query points"));
    assert!(message(knn_scores(&train, &[0.0, f32::NAN], 2, 1)).contains("coordinate 1"));
    assert!(message(nearest_distances(&train, &[0.0], 0)).contains("dim = 0"));

    // Mahalanobis.
    assert!(message(Mahalanobis::fit(&[1.0, 2.0], 2)).contains("at least 2"));
    assert!(message(Mahalanobis::fit(&[1.0, 2.0, 3.0], 2)).contains("multiple of 2"));
    assert!(message(Mahalanobis::fit(&[1.0, f32::NAN, 3.0, 4.0], 2)).contains("NaN"));
    assert!(message(Mahalanobis::fit(&[], 2)).contains("no training points"));
    let detector = Mahalanobis::fit(&[0.0, 0.0, 1.0, 2.0, 3.0, 1.0], 2).unwrap();
    assert!(message(detector.score(&[0.0, 0.0, 0.0])).contains("multiple of 2"));
    assert!(message(detector.score(&[0.0, f32::INFINITY])).contains("finite"));
    assert!(message(detector.score(&[])).contains("no query points"));

    // KDE.
    let m = message(GaussianKde::fit(&train, &[0.0, 0.0], 2, &[]));
    assert!(m.contains("no candidate bandwidths"), "{m}");
    assert!(
        message(GaussianKde::fit(&train, &[0.0, 0.0], 2, &[1.0, 0.0]))
            .contains("candidate bandwidth 0,")
    );
    assert!(message(GaussianKde::fit(&train, &[0.0, 0.0], 2, &[f64::NAN])).contains("NaN"));
    assert!(message(GaussianKde::fit(&train, &[], 2, &[1.0])).contains("no validation"));
    assert!(message(GaussianKde::fit(&train, &[0.0], 2, &[1.0])).contains("multiple of 2"));
    let kde = GaussianKde::fit(&train, &[0.0, 0.0], 2, &[1.0]).unwrap();
    assert!(message(kde.log_density(&[0.0])).contains("multiple of 2"));
    assert!(message(kde.score(&[f32::NAN, 0.0])).contains("finite"));
}
