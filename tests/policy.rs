//! The Gaussian diffusion policy against closed forms (docs/algorithms.md §2).

use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::policy::{GaussianPolicy, PolicySpec, HALF_LOG_TWO_PI};
use denoise_gym::rng::{normal_matrix, seeded};
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::matrix;
use dfdx::prelude::*;

fn policy(dim: usize, n_steps: usize, fix_last_sigma: bool) -> GaussianPolicy<Cpu> {
    let spec = PolicySpec {
        dim,
        hidden: 32,
        depth: 2,
        time_embed_dim: 16,
        activation: Activation::Silu,
        clip_x0: 0.0,
        fix_last_sigma,
        last_sigma: 0.0,
    };
    let schedule = Schedule::new(ScheduleKind::Vp, n_steps).unwrap();
    GaussianPolicy::new(&Cpu::default(), spec, schedule, &mut seeded(3, 0)).unwrap()
}

#[test]
fn log_sigma_starts_at_half_log_posterior_variance() {
    let p = policy(2, 4, false);
    let s = p.schedule().clone();
    let sigmas = p.sigmas();
    assert!((sigmas[0] as f64 - s.beta(1).sqrt()).abs() < 1e-6);
    for t in 2..=4 {
        assert!(
            (sigmas[t - 1] as f64 - s.beta_tilde(t).sqrt()).abs() < 1e-6,
            "t={t}"
        );
    }
}

#[test]
fn mean_is_the_posterior_mean_at_the_predicted_x0() {
    let dev = Cpu::default();
    let p = policy(3, 4, true);
    let mut rng = seeded(1, 0);
    let x = normal_matrix(&dev, &mut rng, 5, 3);
    let ts = vec![1, 2, 3, 4, 2];
    let eps = p.predict_eps(x.clone(), &ts).as_vec();
    let mean = p.mean(x.clone(), &ts).as_vec();
    let xs = x.as_vec();
    let s = p.schedule();
    for (i, &t) in ts.iter().enumerate() {
        for j in 0..3 {
            let k = i * 3 + j;
            let x0 = (xs[k] as f64 - (1.0 - s.alpha_bar(t)).sqrt() * eps[k] as f64)
                / s.alpha_bar(t).sqrt();
            let expected = s.posterior_c1(t) * x0 + s.posterior_c2(t) * xs[k] as f64;
            assert!(
                (mean[k] as f64 - expected).abs() < 1e-3 * (1.0 + expected.abs()),
                "{} vs {expected}",
                mean[k]
            );
        }
    }
}

#[test]
fn log_prob_matches_the_gaussian_formula() {
    let dev = Cpu::default();
    let p = policy(2, 4, false);
    let mut rng = seeded(2, 0);
    let x = normal_matrix(&dev, &mut rng, 6, 2);
    let action = normal_matrix(&dev, &mut rng, 6, 2);
    let ts = vec![1, 2, 3, 4, 4, 1];
    let log_prob = p.log_prob(x.clone(), &ts, &action).as_vec();
    let mean = p.mean(x, &ts).as_vec();
    let a = action.as_vec();
    let sigmas = p.sigmas();
    for (i, &t) in ts.iter().enumerate() {
        let sigma = sigmas[t - 1] as f64;
        let sq: f64 = (0..2)
            .map(|j| (a[i * 2 + j] as f64 - mean[i * 2 + j] as f64).powi(2))
            .sum();
        let expected =
            -sq / (2.0 * sigma * sigma) - 2.0 * sigma.ln() - (2.0f64 * std::f64::consts::PI).ln();
        assert!(
            (log_prob[i] as f64 - expected).abs() < 1e-3 * (1.0 + expected.abs()),
            "{} vs {expected}",
            log_prob[i]
        );
    }
}

#[test]
fn log_prob_gradient_in_log_sigma_is_analytic() {
    let dev = Cpu::default();
    let p = policy(2, 3, false);
    let mut rng = seeded(4, 0);
    let x = normal_matrix(&dev, &mut rng, 4, 2);
    let action = normal_matrix(&dev, &mut rng, 4, 2);
    let ts = vec![2; 4];
    let total = p
        .log_prob(x.clone().traced(Gradients::leaky()), &ts, &action)
        .sum();
    let grads = total.backward();
    let g = grads.get(&p.log_sigma).as_vec();
    // d/d log σ of Σ_i log π = Σ_i (‖a_i - μ_i‖²/σ² - d).
    let mean = p.mean(x, &ts).as_vec();
    let a = action.as_vec();
    let sigma = p.sigmas()[1] as f64;
    let sq: f64 = a
        .iter()
        .zip(&mean)
        .map(|(a, m)| (*a as f64 - *m as f64).powi(2))
        .sum();
    let expected = sq / sigma.powi(2) - 4.0 * 2.0;
    assert!(
        (g[1] as f64 - expected).abs() < 1e-3 * (1.0 + expected.abs()),
        "{} vs {expected}",
        g[1]
    );
    assert_eq!(g[0], 0.0);
    assert_eq!(g[2], 0.0);
}

#[test]
fn entropy_matches_a_monte_carlo_estimate() {
    let dev = Cpu::default();
    let p = policy(2, 4, true);
    let mut rng = seeded(5, 0);
    let n = 20_000;
    for t in [1, 3] {
        let x = normal_matrix(&dev, &mut rng, n, 2);
        let noise = normal_matrix(&dev, &mut rng, n, 2);
        let action = p.sample_step(&x, t, &noise);
        let log_prob = p.log_prob(x, &vec![t; n], &action).as_vec();
        let monte_carlo = -log_prob.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let analytic = p.entropy(t) as f64;
        let expected = 2.0 * ((p.sigmas()[t - 1] as f64).ln() + HALF_LOG_TWO_PI as f64 + 0.5);
        assert!((analytic - expected).abs() < 1e-5);
        // Std of -log π is √(d/2) ≈ 1; 20k samples give a standard error of ~0.007.
        assert!(
            (monte_carlo - analytic).abs() < 0.04,
            "t={t}: MC {monte_carlo} vs {analytic}"
        );
    }
}

#[test]
fn frozen_last_sigma_stays_at_sqrt_beta_1_and_gets_no_gradient() {
    let p = policy(2, 4, true);
    let expected = p.schedule().beta(1).sqrt().max(1e-3) as f32;
    assert!((p.sigmas()[0] - expected).abs() < 1e-6);
    let entropy = p.entropy_sum::<OwnedTape<f32, Cpu>>();
    let grads = entropy.backward();
    let g = grads.get(&p.log_sigma).as_vec();
    assert_eq!(g[0], 0.0);
    assert!((g[1] - 2.0).abs() < 1e-6, "dΣH/dlogσ_t = d: {g:?}");
}

#[test]
fn sample_trajectory_has_t_plus_one_states_of_the_right_shape() {
    let p = policy(3, 5, true);
    let states = p.sample_trajectory(7, &mut seeded(0, 0));
    assert_eq!(states.len(), 6);
    for s in states {
        assert_eq!(*s.shape(), (7, 3));
    }
    assert_eq!(p.parameters().len(), p.parameter_names().len());
    let _ = matrix(&Cpu::default(), vec![0.0; 4], 2, 2);
}

#[test]
fn last_sigma_overrides_the_frozen_sqrt_beta_1() {
    let spec = PolicySpec {
        dim: 2,
        hidden: 8,
        depth: 1,
        time_embed_dim: 16,
        activation: Activation::Relu,
        clip_x0: 0.0,
        fix_last_sigma: true,
        last_sigma: 0.02,
    };
    let schedule = Schedule::new(ScheduleKind::Vp, 4).unwrap();
    let p = GaussianPolicy::new(
        &Cpu::default(),
        spec.clone(),
        schedule.clone(),
        &mut seeded(0, 0),
    )
    .unwrap();
    assert!((p.sigmas()[0] - 0.02).abs() < 1e-7);
    let bad = PolicySpec {
        last_sigma: -1.0,
        ..spec
    };
    let err =
        GaussianPolicy::<Cpu>::new(&Cpu::default(), bad, schedule, &mut seeded(0, 0)).unwrap_err();
    assert!(err.to_string().contains("last_sigma"), "{err}");
}
