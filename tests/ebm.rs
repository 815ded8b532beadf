//! The energy-based reward (docs/algorithms.md §3) and the 2-D density tools (docs/algorithms.md §7).

use denoise_gym::ebm::{
    fit_temperature, grid_kl, grid_log_normaliser, held_out_nll, ContrastiveConfig,
    ContrastiveLearner, EnergyModel, Grid2d,
};
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::reward::RewardModel;
use denoise_gym::rng::{normal_vec, seeded, ProjectRng};
use denoise_gym::tensor::matrix;
use denoise_gym::Error;
use denoise_gym_envs::{Dataset, GaussianMixture};
use dfdx::prelude::*;

/// `n` points of `N(centre, std² I)` in 2-D, row-major.
fn blob(rng: &mut ProjectRng, n: usize, centre: [f32; 2], std: f32) -> Vec<f32> {
    normal_vec(rng, 2 * n)
        .chunks(2)
        .flat_map(|z| [centre[0] + std * z[0], centre[1] + std * z[1]])
        .collect()
}

fn mean(values: &[f32]) -> f64 {
    values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64
}

fn snapshot(ebm: &EnergyModel<Cpu>) -> Vec<Vec<f32>> {
    ebm.parameters().iter().map(|p| p.as_vec()).collect()
}

/// `log N(x; 0, I)` in 2-D.
fn standard_normal_log_density(x: f64, y: f64) -> f64 {
    -(x * x + y * y) / 2.0 - (2.0 * std::f64::consts::PI).ln()
}

#[test]
fn the_learner_separates_two_gaussians_at_the_gamma_optimum() {
    let dev = Cpu::default();
    let mut rng = seeded(0, 0);
    let mut ebm = EnergyModel::new(&dev, 2, 32, 2, Activation::Silu, &mut rng);
    let config = ContrastiveConfig {
        lr: 5e-3,
        ..ContrastiveConfig::default()
    };
    assert_eq!(config.gamma, 1.0);
    let mut learner = ContrastiveLearner::new(&ebm, config).unwrap();
    let batch = 128;
    let mut last = None;
    for iteration in 0..300 {
        let positive = matrix(&dev, blob(&mut rng, batch, [-2.0, 0.0], 0.5), batch, 2);
        let negative = matrix(&dev, blob(&mut rng, batch, [2.0, 0.0], 0.5), batch, 2);
        last = Some(
            learner
                .step(&mut ebm, &positive, &negative, iteration)
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert!(last.energy_gap > 0.8, "{last:?}");
    assert_eq!(learner.optimizer.step, 300);

    // With disjoint supports the γ-optimum is E = ∓1/(2γ) = ∓0.5.
    let n = 2000;
    let e_pos = ebm.energy_host(&blob(&mut rng, n, [-2.0, 0.0], 0.5));
    let e_neg = ebm.energy_host(&blob(&mut rng, n, [2.0, 0.0], 0.5));
    let (mean_pos, mean_neg) = (mean(&e_pos), mean(&e_neg));
    assert!(mean_neg - mean_pos > 0.8, "{mean_pos} vs {mean_neg}");
    assert!((mean_pos + 0.5).abs() < 0.1, "mean E(x⁺) = {mean_pos}");
    assert!((mean_neg - 0.5).abs() < 0.1, "mean E(x⁻) = {mean_neg}");
    let largest = e_pos.iter().chain(&e_neg).fold(0f32, |m, e| m.max(e.abs()));
    assert!(largest < 1.0, "energies unbounded: max |E| = {largest}");
}

#[test]
fn the_step_loss_is_the_contrastive_formula_and_the_step_descends_it() {
    let dev = Cpu::default();
    let mut rng = seeded(1, 0);
    let mut ebm = EnergyModel::new(&dev, 3, 16, 2, Activation::Silu, &mut rng);
    let gamma = 0.7;
    let lr = 1e-4;
    let config = ContrastiveConfig {
        gamma,
        lr,
        ..ContrastiveConfig::default()
    };
    let mut learner = ContrastiveLearner::new(&ebm, config).unwrap();
    let (n_pos, n_neg) = (16, 24);
    let positive_host: Vec<f32> = normal_vec(&mut rng, n_pos * 3);
    let negative_host: Vec<f32> = normal_vec(&mut rng, n_neg * 3)
        .into_iter()
        .map(|v| 2.0 * v + 1.0)
        .collect();
    let loss_on_host = |ebm: &EnergyModel<Cpu>| -> (f64, f64, f64) {
        let ep = ebm.energy_host(&positive_host);
        let en = ebm.energy_host(&negative_host);
        let squares =
            |e: &[f32]| e.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / e.len() as f64;
        let loss = mean(&ep) - mean(&en) + gamma * (squares(&ep) + squares(&en));
        (loss, mean(&ep), mean(&en))
    };
    let (expected, mean_pos, mean_neg) = loss_on_host(&ebm);
    let last_bias_before = ebm.parameters().last().unwrap().as_vec()[0];

    let positive = matrix(&dev, positive_host.clone(), n_pos, 3);
    let negative = matrix(&dev, negative_host.clone(), n_neg, 3);
    let stats = learner.step(&mut ebm, &positive, &negative, 0).unwrap();
    assert!(
        (stats.loss - expected).abs() < 1e-5,
        "{} vs {expected}",
        stats.loss
    );
    assert!((stats.energy_pos - mean_pos).abs() < 1e-6);
    assert!((stats.energy_neg - mean_neg).abs() < 1e-6);
    assert!((stats.energy_gap - (mean_neg - mean_pos)).abs() < 1e-6);
    assert!(stats.grad_norm > 0.0 && stats.grad_norm.is_finite());

    // The output bias shifts every energy, so ∂L/∂b = 2γ (mean E⁺ + mean E⁻); Adam's first
    // step moves it by lr against that sign.
    let last_bias_after = ebm.parameters().last().unwrap().as_vec()[0];
    let expected_move = -lr * (2.0 * gamma * (mean_pos + mean_neg)).signum();
    let moved = f64::from(last_bias_after - last_bias_before);
    assert!(
        (moved - expected_move).abs() < 0.05 * lr,
        "bias moved {moved}, expected {expected_move}"
    );
    let (after, _, _) = loss_on_host(&ebm);
    assert!(after < expected, "L_E {expected} → {after}");
}

/// Runs one step with a NaN in the data batch; returns the error's quantity and iteration.
fn step_with_a_nan(activation: Activation) -> (String, u64) {
    let dev = Cpu::default();
    let mut rng = seeded(2, 0);
    let mut ebm = EnergyModel::new(&dev, 2, 8, 1, activation, &mut rng);
    let mut learner = ContrastiveLearner::new(&ebm, ContrastiveConfig::default()).unwrap();
    let before = snapshot(&ebm);
    let mut data = blob(&mut rng, 8, [0.0, 0.0], 1.0);
    data[5] = f32::NAN;
    let positive = matrix(&dev, data, 8, 2);
    let negative = matrix(&dev, blob(&mut rng, 8, [1.0, 0.0], 1.0), 8, 2);
    let err = learner
        .step(&mut ebm, &positive, &negative, 17)
        .unwrap_err();
    assert_eq!(snapshot(&ebm), before, "parameters changed");
    assert_eq!(learner.optimizer.step, 0);
    match err {
        Error::NonFinite {
            ref quantity,
            iteration,
            ..
        } => {
            assert!(err.to_string().contains(quantity.as_str()), "{err}");
            (quantity.clone(), iteration)
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn a_non_finite_loss_is_an_error_and_updates_nothing() {
    assert_eq!(
        step_with_a_nan(Activation::Silu),
        ("ebm/loss".to_string(), 17)
    );
    // ReLU maps NaN to 0, so the loss stays finite, but the first layer's gradient does
    // not: that is caught before the update too.
    assert_eq!(
        step_with_a_nan(Activation::Relu),
        ("ebm/grad_norm".to_string(), 17)
    );
}

#[test]
fn bad_batches_and_configs_are_rejected() {
    let dev = Cpu::default();
    let mut rng = seeded(3, 0);
    let mut ebm = EnergyModel::new(&dev, 2, 8, 1, Activation::Silu, &mut rng);
    for bad in [
        ContrastiveConfig {
            gamma: -1.0,
            ..Default::default()
        },
        ContrastiveConfig {
            lr: f64::NAN,
            ..Default::default()
        },
        ContrastiveConfig {
            betas: [1.0, 0.999],
            ..Default::default()
        },
        ContrastiveConfig {
            grad_clip: -0.5,
            ..Default::default()
        },
    ] {
        assert!(
            matches!(
                ContrastiveLearner::new(&ebm, bad),
                Err(Error::Config { .. })
            ),
            "{bad:?} accepted"
        );
    }
    let mut learner = ContrastiveLearner::new(&ebm, ContrastiveConfig::default()).unwrap();
    let good = matrix(&dev, vec![0.0; 4], 2, 2);
    let wide = matrix(&dev, vec![0.0; 6], 2, 3);
    let empty = matrix(&dev, vec![], 0, 2);
    for (pos, neg) in [
        (&wide, &good),
        (&good, &wide),
        (&empty, &good),
        (&good, &empty),
    ] {
        assert!(matches!(
            learner.step(&mut ebm, pos, neg, 0),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert_eq!(learner.optimizer.step, 0);
}

#[test]
fn gradient_clipping_reports_the_raw_norm_and_bounds_the_update_input() {
    let dev = Cpu::default();
    let mut rng = seeded(4, 0);
    let ebm0 = EnergyModel::new(&dev, 2, 16, 2, Activation::Silu, &mut rng);
    let positive = matrix(&dev, blob(&mut rng, 32, [-1.0, 0.0], 0.3), 32, 2);
    let negative = matrix(&dev, blob(&mut rng, 32, [1.0, 0.0], 0.3), 32, 2);
    let run = |clip: f64| {
        let mut ebm = ebm0.clone();
        let config = ContrastiveConfig {
            grad_clip: clip,
            ..ContrastiveConfig::default()
        };
        let mut learner = ContrastiveLearner::new(&ebm, config).unwrap();
        let stats = learner.step(&mut ebm, &positive, &negative, 0).unwrap();
        (stats, learner.optimizer.moment1[0].as_vec())
    };
    let (free, m_free) = run(0.0);
    let clip = free.grad_norm / 10.0;
    let (clipped, m_clipped) = run(clip);
    assert!((free.grad_norm - clipped.grad_norm).abs() < 1e-9 * free.grad_norm.max(1.0));
    // Adam's first moment after one step is (1 − β1)·g: clipping scales g by clip/norm.
    for (a, b) in m_free.iter().zip(&m_clipped) {
        assert!((f64::from(*a) / 10.0 - f64::from(*b)).abs() < 1e-6 + 1e-3 * f64::from(a.abs()));
    }
}

#[test]
fn reward_is_minus_energy_and_parameters_are_named() {
    let dev = Cpu::default();
    let mut rng = seeded(5, 0);
    let ebm = EnergyModel::new(&dev, 2, 8, 2, Activation::Silu, &mut rng);
    assert_eq!(ebm.temperature, 1.0);
    assert_eq!(EnergyModel::dim(&ebm), 2);
    assert_eq!(
        ebm.parameter_names(),
        [
            "net.layers.0.weight",
            "net.layers.0.bias",
            "net.layers.1.weight",
            "net.layers.1.bias",
            "net.layers.2.weight",
            "net.layers.2.bias",
        ]
    );

    // More rows than one host chunk (4096): the chunked evaluation matches one pass.
    let n = 5000;
    let points = blob(&mut rng, n, [0.0, 0.0], 2.0);
    let host = ebm.energy_host(&points);
    let x = matrix(&dev, points, n, 2);
    let direct = ebm.energy(x.clone()).as_vec();
    assert_eq!(host.len(), n);
    for (a, b) in host.iter().zip(&direct) {
        assert!((a - b).abs() < 1e-6);
    }
    let reward = RewardModel::reward(&ebm, &x).unwrap().as_vec();
    for (r, e) in reward.iter().zip(&direct) {
        assert_eq!(*r, -*e);
    }
    assert_eq!(RewardModel::<Cpu>::name(&ebm), "ebm");
    assert_eq!(RewardModel::<Cpu>::dim(&ebm), 2);
    let wrong = matrix(&dev, vec![0.0; 3], 1, 3);
    assert!(RewardModel::reward(&ebm, &wrong).is_err());
    assert!(ebm.energy_host(&[]).is_empty());
}

#[test]
fn grid_points_are_cell_centres_with_x_fastest() {
    let grid = Grid2d::new([0.0, 0.0], [2.0, 4.0], 2).unwrap();
    assert_eq!(grid.points(), vec![0.5, 1.0, 1.5, 1.0, 0.5, 3.0, 1.5, 3.0]);
    assert_eq!(grid.cell_area(), 2.0);
    assert_eq!(grid.len(), 4);
    assert!(Grid2d::new([0.0, 0.0], [0.0, 1.0], 4).is_err());
    assert!(Grid2d::new([0.0, 0.0], [1.0, 1.0], 0).is_err());
    assert!(Grid2d::new([f64::NAN, 0.0], [1.0, 1.0], 3).is_err());
}

#[test]
fn normaliser_kl_and_nll_match_the_standard_normal() {
    let grid = Grid2d::new([-8.0, -8.0], [8.0, 8.0], 256).unwrap();
    let area = grid.cell_area();
    let log_p: Vec<f64> = grid
        .points()
        .chunks(2)
        .map(|p| standard_normal_log_density(f64::from(p[0]), f64::from(p[1])))
        .collect();
    let energies: Vec<f64> = log_p.iter().map(|lp| -lp).collect();

    // ∫ p = 1, and ∫ p^{1/2} = 4π / √(2π) = 2√(2π).
    assert!(grid_log_normaliser(&energies, 1.0, area).abs() < 1e-8);
    let expected = 2f64.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln();
    // (Truncation at 8 = 5.7 standard deviations of N(0, 2I) costs about 1e-7.)
    assert!((grid_log_normaliser(&energies, 2.0, area) - expected).abs() < 1e-6);

    // KL of a density against itself, also through a flattened energy and its temperature.
    assert!(grid_kl(&log_p, &energies, 1.0, area).abs() < 1e-9);
    let flattened: Vec<f64> = energies.iter().map(|e| 0.25 * e).collect();
    assert!(grid_kl(&log_p, &flattened, 0.25, area).abs() < 1e-9);
    // KL(N(0, I) ‖ N(m, I)) = |m|²/2, m = (1, 0).
    let shifted: Vec<f64> = grid
        .points()
        .chunks(2)
        .map(|p| {
            let (x, y) = (f64::from(p[0]) - 1.0, f64::from(p[1]));
            (x * x + y * y) / 2.0
        })
        .collect();
    let kl = grid_kl(&log_p, &shifted, 1.0, area);
    assert!((kl - 0.5).abs() < 1e-6, "KL {kl}");
    // KL(N(0, I) ‖ N(0, 2I)) = d/2 (1/2 − 1 + ln 2) for d = 2: exp(-E/2) is N(0, 2I).
    let kl = grid_kl(&log_p, &energies, 2.0, area);
    assert!((kl - (2f64.ln() - 0.5)).abs() < 1e-6, "KL {kl}");

    // The held-out NLL under the exact density is the mean of −log p.
    let mut rng = seeded(6, 0);
    let held_out: Vec<f64> = blob(&mut rng, 500, [0.0, 0.0], 1.0)
        .chunks(2)
        .map(|p| -standard_normal_log_density(f64::from(p[0]), f64::from(p[1])))
        .collect();
    let exact = held_out.iter().sum::<f64>() / held_out.len() as f64;
    assert!((held_out_nll(&energies, area, &held_out, 1.0) - exact).abs() < 1e-8);
}

#[test]
fn the_temperature_fit_recovers_a_known_flattening_of_eight_gaussians() {
    let data = GaussianMixture::eight_gaussians();
    let grid = Grid2d::new([-4.0, -4.0], [4.0, 4.0], 256).unwrap();
    let area = grid.cell_area();
    let c = 0.25;
    let log_p = data.log_density(&grid.points()).unwrap();
    let grid_energies: Vec<f64> = log_p.iter().map(|lp| -c * lp).collect();
    let mut rng = seeded(7, 0);
    let held_out_points = data.sample(5000, &mut rng);
    let held_out: Vec<f64> = data
        .log_density(&held_out_points)
        .unwrap()
        .into_iter()
        .map(|lp| -c * lp)
        .collect();

    let (t, nll) = fit_temperature(&grid_energies, area, &held_out).unwrap();
    assert!((t - c).abs() / c < 0.05, "T_E = {t}, expected {c}");
    assert!((nll - held_out_nll(&grid_energies, area, &held_out, t)).abs() < 1e-12);
    for other in [0.8 * t, 1.25 * t, 1.0, 1.01 * t, t / 1.01] {
        assert!(nll < held_out_nll(&grid_energies, area, &held_out, other));
    }
    // Calibrated, the model is (nearly) the truth; raw, it is far too flat (docs/algorithms.md §3).
    let kl_fitted = grid_kl(&log_p, &grid_energies, t, area);
    let kl_raw = grid_kl(&log_p, &grid_energies, 1.0, area);
    assert!(kl_fitted < 0.01, "KL at T_E {kl_fitted}");
    assert!(kl_raw > 0.3, "KL at T = 1 {kl_raw}");

    assert!(fit_temperature(&[], area, &held_out).is_err());
    assert!(fit_temperature(&grid_energies, area, &[]).is_err());
    assert!(fit_temperature(&grid_energies, 0.0, &held_out).is_err());
    assert!(fit_temperature(&grid_energies, area, &[f64::NAN]).is_err());
}
