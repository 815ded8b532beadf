//! SWD and MMD² against closed forms; grid densities, KL and TV against closed forms;
//! mode statistics and AUROC on hand-computed cases.

use denoise_gym::ebm::{grid_kl, Grid2d};
use denoise_gym::metrics::{
    auroc, grid_total_variation, mmd2, mode_stats, normalised_from_log_density,
    normalised_grid_density, sliced_wasserstein,
};
use denoise_gym::rng::{normal_vec, seeded};
use rand::Rng;

#[test]
fn swd_between_shifted_gaussians_matches_its_closed_form() {
    let mut rng = seeded(0, 0);
    let (n, d) = (4000, 2);
    let a = normal_vec(&mut rng, n * d);
    let shift = [1.0f32, 0.5];
    let b: Vec<f32> = normal_vec(&mut rng, n * d)
        .chunks(d)
        .flat_map(|r| [r[0] + shift[0], r[1] + shift[1]])
        .collect();
    // Along unit u, the two projections differ by the shift u·m: SWD² = E(u·m)² = ‖m‖²/d.
    let expected = ((1.0f64 + 0.25) / d as f64).sqrt();
    let swd = sliced_wasserstein(&a, &b, d, 1000, &mut rng);
    assert!((swd - expected).abs() < 0.05, "{swd} vs {expected}");
    let same = sliced_wasserstein(&a, &normal_vec(&mut rng, n * d), d, 200, &mut rng);
    assert!(same < 0.06, "{same}");
}

#[test]
fn mmd2_is_near_zero_for_one_law_and_positive_for_two() {
    let mut rng = seeded(1, 0);
    let (n, d) = (800, 2);
    let a = normal_vec(&mut rng, n * d);
    let b = normal_vec(&mut rng, n * d);
    let c: Vec<f32> = normal_vec(&mut rng, n * d)
        .iter()
        .map(|v| v * 2.0)
        .collect();
    let same = mmd2(&a, &b, d);
    let different = mmd2(&a, &c, d);
    assert!(
        same.fixed_sum.abs() < 0.01 && same.median.abs() < 0.01,
        "{same:?}"
    );
    assert!(
        different.fixed_sum > 0.1 && different.median > 0.02,
        "{different:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Grid densities, KL and TV.

/// `erf(x)` by its Maclaurin series (converges quickly for the |x| ≤ 2 used here).
fn erf(x: f64) -> f64 {
    let mut term = x; // (-1)^n x^(2n+1) / n!
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

/// Standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// The unnormalised log-density `-‖x − μ‖²/2` of `N(μ, I)` at each point of the grid.
fn gaussian_log_density(grid: &Grid2d, mean: [f64; 2]) -> Vec<f64> {
    grid.points()
        .chunks(2)
        .map(|p| {
            let (dx, dy) = (p[0] as f64 - mean[0], p[1] as f64 - mean[1]);
            -0.5 * (dx * dx + dy * dy)
        })
        .collect()
}

#[test]
fn the_series_erf_matches_known_values() {
    // The 68–95 rule: P(|Z| ≤ 1) = erf(1/√2) = 0.682689492137086…, P(|Z| ≤ 2) = 0.9544997…
    assert!((2.0 * phi(1.0) - 1.0 - 0.682_689_492_137_086).abs() < 1e-12);
    assert!((2.0 * phi(2.0) - 1.0 - 0.954_499_736_103_642).abs() < 1e-12);
}

#[test]
fn normalised_grid_densities_integrate_to_one_and_match_the_gaussian() {
    let grid = Grid2d::new([-6.0, -6.0], [6.0, 6.0], 120).unwrap();
    let area = grid.cell_area();
    let log_density = gaussian_log_density(&grid, [0.5, -0.25]);
    let p = normalised_from_log_density(&log_density, area);
    assert!((p.iter().sum::<f64>() * area - 1.0).abs() < 1e-12);
    // On a box this wide the normaliser is 2π up to the mass outside it (≈ 2·P(Z > 5.5)
    // ≈ 4e-8 relative): p matches exp(-r²/2)/(2π) pointwise to that precision.
    for (pi, l) in p.iter().zip(&log_density) {
        let exact = l.exp() / (2.0 * std::f64::consts::PI);
        assert!((pi - exact).abs() <= 1e-6 * exact, "{pi} vs {exact}");
    }
    // q ∝ exp(-E/T) with E = -2 l and T = 2 is the same density, whatever the offset of E.
    let energies: Vec<f64> = log_density.iter().map(|l| -2.0 * l + 7.0).collect();
    let q = normalised_grid_density(&energies, 2.0, area);
    assert!((q.iter().sum::<f64>() * area - 1.0).abs() < 1e-12);
    let max_gap = p
        .iter()
        .zip(&q)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(max_gap < 1e-12, "{max_gap}");
    // At T = 1 the same energies are a narrower Gaussian, still normalised.
    let narrow = normalised_grid_density(&energies, 1.0, area);
    assert!((narrow.iter().sum::<f64>() * area - 1.0).abs() < 1e-12);
    assert!(
        narrow.iter().fold(0.0f64, |m, v| m.max(*v))
            > 1.5 * p.iter().fold(0.0f64, |m, v| m.max(*v))
    );
}

#[test]
fn normalised_densities_are_nan_on_bad_input() {
    assert!(normalised_grid_density(&[1.0, 2.0], 0.0, 1.0)
        .iter()
        .all(|v| v.is_nan()));
    assert!(normalised_grid_density(&[1.0, 2.0], 1.0, -1.0)
        .iter()
        .all(|v| v.is_nan()));
    assert!(normalised_grid_density(&[1.0, f64::NAN], 1.0, 1.0)
        .iter()
        .all(|v| v.is_nan()));
    assert!(normalised_from_log_density(&[f64::NEG_INFINITY; 3], 1.0)
        .iter()
        .all(|v| v.is_nan()));
    assert!(normalised_grid_density(&[], 1.0, 1.0).is_empty());
    // A -∞ log-density is a point outside the support: density 0, the rest renormalised.
    let p = normalised_from_log_density(&[f64::NEG_INFINITY, 0.0, 0.0], 0.5);
    assert_eq!(p, vec![0.0, 1.0, 1.0]);
}

#[test]
fn grid_kl_and_tv_are_zero_for_the_truth_and_positive_for_a_shift() {
    let grid = Grid2d::new([-5.0, -5.0], [5.0, 5.0], 100).unwrap();
    let area = grid.cell_area();
    let truth = gaussian_log_density(&grid, [0.0, 0.0]);
    // Model energies E = -log p (up to a constant) at T = 1 reproduce the truth.
    let same: Vec<f64> = truth.iter().map(|l| -l + 3.0).collect();
    let shifted: Vec<f64> = gaussian_log_density(&grid, [1.0, 0.0])
        .iter()
        .map(|l| -l)
        .collect();
    let kl_same = grid_kl(&truth, &same, 1.0, area);
    let tv_same = grid_total_variation(&truth, &same, 1.0, area);
    assert!(kl_same.abs() < 1e-12, "{kl_same}");
    assert!(tv_same.abs() < 1e-12, "{tv_same}");
    // KL(N(0,I) ‖ N(δ,I)) = δ²/2 = 0.5 for δ = 1.
    let kl_shift = grid_kl(&truth, &shifted, 1.0, area);
    assert!((kl_shift - 0.5).abs() < 1e-3, "{kl_shift}");
    let tv_shift = grid_total_variation(&truth, &shifted, 1.0, area);
    assert!(tv_shift > 0.3 && tv_shift <= 1.0, "{tv_shift}");
}

#[test]
fn grid_tv_of_shifted_gaussians_matches_its_closed_form() {
    // TV(N(0, I), N(δ e_x, I)) = 2Φ(δ/2) − 1: the y direction integrates out.
    let grid = Grid2d::new([-8.0, -8.0], [10.0, 8.0], 360).unwrap();
    let area = grid.cell_area();
    let truth = gaussian_log_density(&grid, [0.0, 0.0]);
    for delta in [0.5, 1.0, 2.0, 3.0] {
        let energies: Vec<f64> = gaussian_log_density(&grid, [delta, 0.0])
            .iter()
            .map(|l| -l)
            .collect();
        let tv = grid_total_variation(&truth, &energies, 1.0, area);
        let expected = 2.0 * phi(delta / 2.0) - 1.0;
        assert!(
            (tv - expected).abs() < 1e-3,
            "δ {delta}: {tv} vs {expected}"
        );
        // Temperature 2 on doubled energies is the same model.
        let doubled: Vec<f64> = energies.iter().map(|e| 2.0 * e).collect();
        let tv2 = grid_total_variation(&truth, &doubled, 2.0, area);
        assert!((tv2 - tv).abs() < 1e-12);
    }
}

#[test]
fn grid_tv_is_nan_on_mismatched_or_empty_input() {
    assert!(grid_total_variation(&[0.0, 0.0], &[0.0], 1.0, 1.0).is_nan());
    assert!(grid_total_variation(&[], &[], 1.0, 1.0).is_nan());
    assert!(grid_total_variation(&[0.0], &[0.0], -1.0, 1.0).is_nan());
}

// ---------------------------------------------------------------------------------------
// Mode statistics.

#[test]
fn mode_stats_on_hand_made_samples() {
    let centres = vec![vec![0.0, 0.0], vec![4.0, 0.0], vec![0.0, 4.0]];
    let stds = [1.0, 1.0, 0.5];
    let true_weights = [0.5, 0.25, 0.25];
    #[rustfmt::skip]
    let samples: Vec<f32> = vec![
        0.5, 0.0,  // nearest c0 (0.5), on c0
        -1.0, 1.0, // nearest c0 (√2), on c0
        4.0, 1.0,  // nearest c1 (1), on c1
        10.0, 9.0, // nearest c1 (√117 < √125 to c2), on no mode: off-mode
        0.0, 2.2,  // nearest c2 (1.8 > 3·0.5), but within 3 of c0: on c0, not on c2
    ];
    let stats = mode_stats(&samples, 2, &centres, &stds, &true_weights).unwrap();
    let expected_weights = [2.0 / 5.0, 2.0 / 5.0, 1.0 / 5.0];
    for (w, e) in stats.weights.iter().zip(expected_weights) {
        assert!((w - e).abs() < 1e-12, "{:?}", stats.weights);
    }
    assert_eq!(stats.weights.len(), 3);
    // ½ (|0.4 − 0.5| + |0.4 − 0.25| + |0.2 − 0.25|) = ½ (0.1 + 0.15 + 0.05) = 0.15.
    assert!(
        (stats.weight_tv - 0.15).abs() < 1e-12,
        "{}",
        stats.weight_tv
    );
    assert!((stats.off_mode_fraction - 0.2).abs() < 1e-12);
    // c2 has no sample within 1.5 of it.
    assert_eq!(stats.modes_covered, 2);

    // One more sample within 1.5 of c2 covers it.
    let mut more = samples.clone();
    more.extend([0.3, 3.0]);
    let stats = mode_stats(&more, 2, &centres, &stds, &true_weights).unwrap();
    assert_eq!(stats.modes_covered, 3);
    assert!((stats.off_mode_fraction - 1.0 / 6.0).abs() < 1e-12);
    assert!((stats.weights[2] - 2.0 / 6.0).abs() < 1e-12);
}

#[test]
fn mode_stats_of_samples_drawn_from_the_mixture_have_the_mixture_weights() {
    // 2,000 draws from a 4-mode mixture with weights (0.4, 0.3, 0.2, 0.1) and std 0.1:
    // the weight TV is a few hundredths at most, every mode is covered, and about 1% of
    // points (P(χ²₂ > 9) = e^{-4.5} ≈ 0.011) fall outside the 3-std balls.
    let mut rng = seeded(2, 0);
    let centres = vec![
        vec![1.0, 0.0],
        vec![0.0, 1.0],
        vec![-1.0, 0.0],
        vec![0.0, -1.0],
    ];
    let stds = [0.1; 4];
    let weights = [0.4, 0.3, 0.2, 0.1];
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let u: f64 = rng.gen();
        let k = if u < 0.4 {
            0
        } else if u < 0.7 {
            1
        } else if u < 0.9 {
            2
        } else {
            3
        };
        let noise = normal_vec(&mut rng, 2);
        samples.push((centres[k][0] + 0.1 * noise[0] as f64) as f32);
        samples.push((centres[k][1] + 0.1 * noise[1] as f64) as f32);
    }
    let stats = mode_stats(&samples, 2, &centres, &stds, &weights).unwrap();
    assert!(stats.weight_tv < 0.04, "{stats:?}");
    assert_eq!(stats.modes_covered, 4);
    assert!(stats.off_mode_fraction < 0.03, "{stats:?}");
    assert!((stats.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn mode_stats_rejects_inconsistent_input() {
    let centres = vec![vec![0.0, 0.0], vec![1.0, 1.0]];
    let stds = [1.0, 1.0];
    let w = [0.5, 0.5];
    let samples = [0.0f32, 0.0, 1.0, 1.0];
    assert!(mode_stats(&samples, 2, &centres, &stds, &w).is_ok());
    // Centres of dimension 2, samples read as dimension 1 or 4.
    assert!(mode_stats(&samples, 1, &centres, &stds, &w).is_err());
    assert!(mode_stats(&samples, 4, &centres, &stds, &w).is_err());
    // A centre of the wrong dimension.
    let bad_centres = vec![vec![0.0, 0.0], vec![1.0, 1.0, 1.0]];
    assert!(mode_stats(&samples, 2, &bad_centres, &stds, &w).is_err());
    // Samples that are not a whole number of rows, none, or dim 0.
    assert!(mode_stats(&samples[..3], 2, &centres, &stds, &w).is_err());
    assert!(mode_stats(&[], 2, &centres, &stds, &w).is_err());
    assert!(mode_stats(&samples, 0, &centres, &stds, &w).is_err());
    // Per-centre lists of the wrong length, a bad std, a NaN sample, no centres.
    assert!(mode_stats(&samples, 2, &centres, &[1.0], &w).is_err());
    assert!(mode_stats(&samples, 2, &centres, &stds, &[1.0]).is_err());
    assert!(mode_stats(&samples, 2, &centres, &[1.0, 0.0], &w).is_err());
    assert!(mode_stats(&[0.0, f32::NAN], 2, &centres, &stds, &w).is_err());
    assert!(mode_stats(&samples, 2, &[], &[], &[]).is_err());
}

// ---------------------------------------------------------------------------------------
// AUROC.

/// The O(n m) definition: P(outlier > inlier) + ½ P(tie).
fn auroc_by_pairs(inliers: &[f64], outliers: &[f64]) -> f64 {
    let mut total = 0.0;
    for o in outliers {
        for i in inliers {
            total += if o > i {
                1.0
            } else if o == i {
                0.5
            } else {
                0.0
            };
        }
    }
    total / (inliers.len() * outliers.len()) as f64
}

#[test]
fn auroc_of_separated_reversed_and_identical_scores() {
    let low = [0.1, 0.5, -3.0, 0.9];
    let high = [1.0, 2.5, 7.0];
    assert_eq!(auroc(&low, &high).unwrap(), 1.0);
    assert_eq!(auroc(&high, &low).unwrap(), 0.0);
    assert_eq!(auroc(&[2.0; 5], &[2.0; 3]).unwrap(), 0.5);
    // +0.0 and -0.0 are the same score.
    assert_eq!(auroc(&[0.0], &[-0.0]).unwrap(), 0.5);
    // Infinite scores are ordered and tie with themselves.
    assert_eq!(
        auroc(&[f64::NEG_INFINITY, 0.0], &[f64::INFINITY, f64::INFINITY]).unwrap(),
        1.0
    );
    assert_eq!(auroc(&[f64::INFINITY], &[f64::INFINITY]).unwrap(), 0.5);
}

#[test]
fn auroc_of_a_small_case_with_ties() {
    // Outlier 2 beats inlier 1, ties inlier 2, loses to 3: 1 + ½ + 0 = 1.5.
    // Outlier 4 beats all three inliers: 3. AUROC = 4.5 / 6 = 0.75.
    let a = auroc(&[1.0, 2.0, 3.0], &[2.0, 4.0]).unwrap();
    assert_eq!(a, 0.75);
    // Swapping the roles gives the complement: 1.5 / 6 = 0.25.
    assert_eq!(auroc(&[2.0, 4.0], &[1.0, 2.0, 3.0]).unwrap(), 0.25);
    // Order of the inputs does not matter.
    assert_eq!(auroc(&[3.0, 1.0, 2.0], &[4.0, 2.0]).unwrap(), 0.75);
}

#[test]
fn auroc_matches_the_pairwise_definition_on_random_tied_scores() {
    let mut rng = seeded(3, 0);
    for _ in 0..20 {
        let n = rng.gen_range(1..40);
        let m = rng.gen_range(1..40);
        // Integer scores in a small range force many ties across and within the groups.
        let inliers: Vec<f64> = (0..n).map(|_| rng.gen_range(0..6) as f64).collect();
        let outliers: Vec<f64> = (0..m).map(|_| rng.gen_range(2..9) as f64).collect();
        let fast = auroc(&inliers, &outliers).unwrap();
        let slow = auroc_by_pairs(&inliers, &outliers);
        assert!((fast - slow).abs() < 1e-12, "{fast} vs {slow}");
        let swapped = auroc(&outliers, &inliers).unwrap();
        assert!((fast + swapped - 1.0).abs() < 1e-12);
    }
}

#[test]
fn auroc_rejects_empty_and_nan_input() {
    assert!(auroc(&[], &[1.0]).is_err());
    assert!(auroc(&[1.0], &[]).is_err());
    assert!(auroc(&[1.0, f64::NAN], &[2.0]).is_err());
    assert!(auroc(&[1.0], &[f64::NAN]).is_err());
}
