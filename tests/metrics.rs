//! SWD and MMD² against closed forms.

use denoise_gym::metrics::{mmd2, sliced_wasserstein};
use denoise_gym::rng::{normal_vec, seeded};

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
