//! DDAEBM (docs/algorithms.md §5): the explicit input gradient and the R1 penalty against finite
//! differences (value and φ-gradient), the encoder's KL and NLL against closed forms, the
//! posterior step against docs/algorithms.md §1, the t = 0 energy, and one training iteration.

use denoise_gym::env::DenoisingState;
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::optim::gradients_of;
use denoise_gym::rng::{normal_matrix, seeded};
use denoise_gym::sampler::Sampler;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::{matrix, Matrix};
use denoise_gym_agents::ddaebm::{
    diagonal_normal_nll, forward_log_density, kl_to_standard_normal, r1_penalty, Ddaebm,
    DdaebmConfig, DdaebmSpec, LatentGenerator, StepEnergy,
};
use dfdx::prelude::*;

type Dev = Cpu;

fn spec(activation: Activation) -> DdaebmSpec {
    DdaebmSpec {
        dim: 2,
        n_z: 2,
        hidden: 8,
        depth: 2,
        time_embed_dim: 4,
        activation,
    }
}

fn schedule() -> Schedule {
    Schedule::new(ScheduleKind::Vp, 4).unwrap()
}

fn host(values: Vec<f32>, rows: usize, cols: usize) -> Matrix<Dev> {
    matrix(&Dev::default(), values, rows, cols)
}

/// A small batch of points and steps, with an `x_t` drawn from `q(x_t | x_{t-1})`.
fn batch() -> (Matrix<Dev>, Matrix<Dev>, Vec<usize>) {
    let dev = Dev::default();
    let mut rng = seeded(3, 0);
    let x_prev = normal_matrix(&dev, &mut rng, 5, 2);
    let x_t = normal_matrix(&dev, &mut rng, 5, 2);
    (x_prev, x_t, vec![1, 2, 3, 4, 2])
}

/// Central differences of `D(·, s)` in each input coordinate, in f64 from f32 values.
fn finite_difference_input_gradient(
    energy: &StepEnergy<Dev>,
    x: &[f32],
    steps: &[usize],
    h: f32,
) -> Vec<f64> {
    let rows = steps.len();
    let mut out = vec![0.0; x.len()];
    for k in 0..x.len() {
        let mut plus = x.to_vec();
        let mut minus = x.to_vec();
        plus[k] += h;
        minus[k] -= h;
        let fp = energy.forward(host(plus, rows, 2), steps).as_vec();
        let fm = energy.forward(host(minus, rows, 2), steps).as_vec();
        let row = k / 2;
        out[k] = (fp[row] as f64 - fm[row] as f64) / (2.0 * h as f64);
    }
    out
}

#[test]
fn explicit_input_gradient_matches_finite_differences() {
    for activation in [Activation::Silu, Activation::Relu] {
        let mut rng = seeded(1, 0);
        let energy = StepEnergy::<Dev>::new(&Dev::default(), &spec(activation), 4, &mut rng);
        let (x, _, ts) = batch();
        let steps: Vec<usize> = ts.iter().map(|t| t - 1).collect();
        let (value, gradient) = energy.value_and_input_gradient(x.clone(), &steps);
        let forward = energy.forward(x.clone(), &steps).as_vec();
        for (a, b) in value.as_vec().iter().zip(&forward) {
            assert!((a - b).abs() < 1e-6, "value {a} vs forward {b}");
        }
        let expected = finite_difference_input_gradient(&energy, &x.as_vec(), &steps, 1e-3);
        for (g, e) in gradient.as_vec().iter().zip(&expected) {
            assert!(
                (*g as f64 - e).abs() < 2e-3 * (1.0 + e.abs()),
                "{activation:?}: explicit ∇_x D {g} vs finite difference {e}"
            );
        }
    }
}

/// `(r1/2) mean ‖∇_x D + √α_t (x_t - √α_t x)/β_t‖²` from finite-difference gradients.
fn r1_by_finite_differences(
    energy: &StepEnergy<Dev>,
    schedule: &Schedule,
    x: &[f32],
    x_t: &[f32],
    ts: &[usize],
    r1: f64,
) -> f64 {
    let steps: Vec<usize> = ts.iter().map(|t| t - 1).collect();
    let grad_d = finite_difference_input_gradient(energy, x, &steps, 1e-3);
    let mut total = 0.0;
    for (row, &t) in ts.iter().enumerate() {
        let (a, b) = (schedule.alpha(t), schedule.beta(t));
        for j in 0..2 {
            let k = 2 * row + j;
            let g = grad_d[k] + a.sqrt() * (x_t[k] as f64 - a.sqrt() * x[k] as f64) / b;
            total += g * g;
        }
    }
    0.5 * r1 * total / ts.len() as f64
}

#[test]
fn r1_value_and_its_phi_gradient_match_finite_differences() {
    let schedule = schedule();
    let r1 = 0.02;
    for activation in [Activation::Silu, Activation::Relu] {
        let mut rng = seeded(2, 0);
        let mut energy = StepEnergy::<Dev>::new(&Dev::default(), &spec(activation), 4, &mut rng);
        let (x, x_t, ts) = batch();
        let (x_host, x_t_host) = (x.as_vec(), x_t.as_vec());

        let penalty_of = |energy: &StepEnergy<Dev>| -> f64 {
            let penalty = r1_penalty(energy, &schedule, x.clone(), &x_t, &ts, r1).penalty;
            penalty.as_vec()[0] as f64
        };
        let value = penalty_of(&energy);
        let expected = r1_by_finite_differences(&energy, &schedule, &x_host, &x_t_host, &ts, r1);
        assert!(
            (value - expected).abs() < 1e-3 * expected.abs().max(1e-3),
            "{activation:?}: R1 {value} vs finite differences {expected}"
        );

        // φ-gradient of the penalty alone (the value is not in the loss).
        let penalty = r1_penalty(
            &energy,
            &schedule,
            x.clone().traced(Gradients::leaky()),
            &x_t,
            &ts,
            r1,
        )
        .penalty;
        let mut grads = penalty.backward();
        let analytic: Vec<Vec<f32>> = gradients_of(&mut grads, &energy.parameters())
            .unwrap()
            .iter()
            .map(|g| g.as_vec())
            .collect();
        let names = energy.parameter_names();
        // Every layer's weights get a non-zero gradient: the penalty is not silently
        // constant in any group (the first-order path through W exists for ReLU too).
        for (name, g) in names.iter().zip(&analytic) {
            if name.ends_with("weight") {
                let norm: f32 = g.iter().map(|v| v * v).sum();
                assert!(norm > 1e-12, "{activation:?}: ∂R1/∂{name} is zero");
            }
        }
        // Central differences in a few entries of every parameter. A ReLU network's R1 is
        // only piecewise smooth in φ (a shift can flip a unit's mask): entries whose
        // differences at h and h/4 disagree straddle such a kink and are skipped.
        let mut checked = 0;
        let central = |energy: &mut StepEnergy<Dev>, p: usize, k: usize, h: f32| -> f64 {
            let original = energy.parameters()[p].as_vec();
            let mut shifted = original.clone();
            shifted[k] = original[k] + h;
            energy.parameters_mut()[p].copy_from(&shifted);
            let plus = penalty_of(energy);
            shifted[k] = original[k] - h;
            energy.parameters_mut()[p].copy_from(&shifted);
            let minus = penalty_of(energy);
            energy.parameters_mut()[p].copy_from(&original);
            (plus - minus) / (2.0 * h as f64)
        };
        for p in 0..names.len() {
            let len = analytic[p].len();
            for &k in &[0, len / 2, len - 1] {
                let coarse = central(&mut energy, p, k, 1e-2);
                let fine = central(&mut energy, p, k, 2.5e-3);
                if (coarse - fine).abs() > 2e-2 * coarse.abs().max(fine.abs()) + 1e-5 {
                    continue;
                }
                checked += 1;
                let a = analytic[p][k] as f64;
                assert!(
                    (a - coarse).abs() < 2e-2 * a.abs().max(coarse.abs()) + 1e-5,
                    "{activation:?}: ∂R1/∂{}[{k}] = {a}, finite difference {coarse}",
                    names[p]
                );
            }
        }
        assert!(
            checked >= 2 * names.len(),
            "{activation:?}: only {checked} entries away from kinks"
        );
    }
}

#[test]
fn encoder_kl_and_nll_match_closed_forms() {
    let mean = [0.3f32, -1.2, 0.0, 2.0];
    let log_var = [0.5f32, -0.7, 0.0, 1.3];
    let z = [0.1f32, 0.4, -0.5, 1.0];
    let kl =
        kl_to_standard_normal(host(mean.to_vec(), 2, 2), host(log_var.to_vec(), 2, 2)).as_vec();
    let nll = diagonal_normal_nll(
        host(z.to_vec(), 2, 2),
        host(mean.to_vec(), 2, 2),
        host(log_var.to_vec(), 2, 2),
    )
    .as_vec();
    for row in 0..2 {
        let mut kl_expected = 0.0f64;
        let mut nll_expected = 0.0f64;
        for j in 0..2 {
            let (m, v, zz) = (
                mean[2 * row + j] as f64,
                log_var[2 * row + j] as f64,
                z[2 * row + j] as f64,
            );
            let s2 = v.exp();
            // KL(N(m, s²) ‖ N(0, 1)) = ½ (s² + m² − 1 − ln s²).
            kl_expected += 0.5 * (s2 + m * m - 1.0 - v);
            nll_expected +=
                0.5 * (2.0 * std::f64::consts::PI * s2).ln() + (zz - m).powi(2) / (2.0 * s2);
        }
        assert!(
            (kl[row] as f64 - kl_expected).abs() < 1e-5,
            "KL {} vs {kl_expected}",
            kl[row]
        );
        assert!(
            (nll[row] as f64 - nll_expected).abs() < 1e-5,
            "NLL {} vs {nll_expected}",
            nll[row]
        );
    }
    // At the prior itself the KL vanishes.
    let zero = kl_to_standard_normal(host(vec![0.0; 4], 2, 2), host(vec![0.0; 4], 2, 2)).as_vec();
    assert!(zero.iter().all(|v| v.abs() < 1e-7));
}

#[test]
fn forward_log_density_is_the_gaussian_transition() {
    let schedule = schedule();
    let x_prev = [0.5f32, -0.25];
    let x_t = [0.1f32, 0.3];
    for t in 1..=4 {
        let value = forward_log_density(
            &schedule,
            host(x_prev.to_vec(), 1, 2),
            &host(x_t.to_vec(), 1, 2),
            &[t],
        )
        .as_vec()[0] as f64;
        let (a, b) = (schedule.alpha(t), schedule.beta(t));
        let expected: f64 = (0..2)
            .map(|j| {
                let r = x_t[j] as f64 - a.sqrt() * x_prev[j] as f64;
                -r * r / (2.0 * b) - 0.5 * (2.0 * std::f64::consts::PI * b).ln()
            })
            .sum();
        assert!(
            (value - expected).abs() < 1e-4 * expected.abs().max(1.0),
            "t={t}: {value} vs {expected}"
        );
    }
}

#[test]
fn generator_step_is_the_posterior_of_spec_1() {
    let schedule = schedule();
    let dev = Dev::default();
    let mut rng = seeded(4, 0);
    let generator =
        LatentGenerator::<Dev>::new(&dev, &spec(Activation::Silu), schedule.clone(), &mut rng);
    let x_t = normal_matrix(&dev, &mut rng, 3, 2);
    let z = normal_matrix(&dev, &mut rng, 3, 2);
    let noise = normal_matrix(&dev, &mut rng, 3, 2);
    for t in 1..=4 {
        let ts = vec![t; 3];
        let x0_hat = generator.predict_x0(&x_t, z.clone(), &ts).as_vec();
        let step = generator.step(&x_t, z.clone(), &noise, &ts).as_vec();
        let (xt, eps) = (x_t.as_vec(), noise.as_vec());
        for row in 0..3 {
            let range = 2 * row..2 * row + 2;
            let x0: Vec<f64> = x0_hat[range.clone()].iter().map(|&v| v as f64).collect();
            let xtr: Vec<f64> = xt[range.clone()].iter().map(|&v| v as f64).collect();
            let mean = schedule.posterior_mean(t, &x0, &xtr);
            for j in 0..2 {
                let expected = mean[j] + schedule.beta_tilde(t).sqrt() * eps[2 * row + j] as f64;
                assert!(
                    (step[2 * row + j] as f64 - expected).abs() < 1e-5,
                    "t={t}: step {} vs posterior sample {expected}",
                    step[2 * row + j]
                );
            }
        }
        if t == 1 {
            // No noise at the last step: β̃_1 = 0, the step is the posterior mean c1 x̂_0.
            let other = generator
                .step(&x_t, z.clone(), &(noise.clone() * 3.0), &ts)
                .as_vec();
            assert_eq!(step, other);
        }
    }
    // Acting in the environment and sampling are seeded: the same seed, the same samples.
    let a = generator.sample(16, &mut seeded(9, 1)).as_vec();
    let b = generator.sample(16, &mut seeded(9, 1)).as_vec();
    assert_eq!(a, b);
    // A sample does not depend on the rest of its batch (no batch statistics).
    let one = generator
        .act(
            &DenoisingState {
                x: x_t.clone(),
                t: 3,
            },
            &mut seeded(5, 0),
        )
        .next
        .as_vec();
    assert_eq!(one.len(), 6);
}

#[test]
fn energy_at_zero_is_minus_d_at_step_zero() {
    let mut rng = seeded(6, 0);
    let energy = StepEnergy::<Dev>::new(&Dev::default(), &spec(Activation::Relu), 4, &mut rng);
    let (x, _, _) = batch();
    let d = energy.forward(x.clone(), &[0; 5]).as_vec();
    let e = energy.energy_at_zero().energy_host(&x.as_vec());
    for (a, b) in d.iter().zip(&e) {
        assert!((a + b).abs() < 1e-5, "D {a}, E {b}");
    }
}

#[test]
fn one_training_iteration_moves_every_parameter_group() {
    let dev = Dev::default();
    let mut rng = seeded(7, 0);
    let mut model = Ddaebm::<Dev>::new(
        &dev,
        &spec(Activation::Silu),
        schedule(),
        DdaebmConfig::default(),
        &mut rng,
    )
    .unwrap();
    let before = model.clone();
    let x0 = normal_matrix(&dev, &mut rng, 16, 2);
    let stats = model.train_step(&x0, &mut rng, 1).unwrap();
    for key in ["ddaebm/loss_D", "ddaebm/loss_G", "ddaebm/r1", "ddaebm/kl_z"] {
        let value = stats.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        assert!(
            value.is_some_and(f64::is_finite),
            "{key} missing or not finite"
        );
    }
    let moved = |a: Vec<&Matrix<Dev>>, b: Vec<&Matrix<Dev>>, names: Vec<String>| {
        for ((p, q), name) in a.into_iter().zip(b).zip(names) {
            if name.ends_with("weight") {
                assert_ne!(p.as_vec(), q.as_vec(), "{name} did not move");
            }
        }
    };
    moved(
        model.energy.parameters(),
        before.energy.parameters(),
        model.energy.parameter_names(),
    );
    moved(
        model.generator.parameters(),
        before.generator.parameters(),
        model.generator.parameter_names(),
    );
    moved(
        model.encoder.parameters(),
        before.encoder.parameters(),
        model.encoder.parameter_names(),
    );
    assert_eq!(model.energy_optimizer.step, 1);
    assert_eq!(model.generator_optimizer.step, 1);
    // A batch of the wrong width is an error, not a panic.
    assert!(model
        .train_step(&normal_matrix(&dev, &mut rng, 4, 3), &mut rng, 2)
        .is_err());
}

/// The CPU's fused kernel against the dfdx-op version, on a loss that uses both outputs
/// (as L_D with R1 does): the same values and the same gradient of every weight.
fn check_fused_value_and_input_gradient(energy: &StepEnergy<Dev>, rows: usize) {
    let dev = Dev::default();
    let x = normal_matrix(&dev, &mut seeded(7, 0), rows, 2);
    let steps: Vec<usize> = (0..rows).map(|i| i % 4).collect();
    let weights_value = normal_matrix(&dev, &mut seeded(8, 0), rows, 1).reshape_like(&(rows,));
    let weights_gradient = normal_matrix(&dev, &mut seeded(6, 0), rows, 2);
    let run = |fused: bool| {
        let traced = x.clone().traced(Gradients::leaky());
        let (value, gradient) = if fused {
            energy.value_and_input_gradient(traced, &steps)
        } else {
            energy.value_and_input_gradient_composed(traced, &steps)
        };
        let outputs = (value.as_vec(), gradient.as_vec());
        let loss = (value * weights_value.clone()).sum()
            + (gradient.square() * weights_gradient.clone()).sum();
        let mut grads = loss.backward();
        let parameter_grads = gradients_of(&mut grads, &energy.parameters()).unwrap();
        (
            outputs,
            parameter_grads
                .iter()
                .map(|g| g.as_vec())
                .collect::<Vec<_>>(),
        )
    };
    let ((fused_value, fused_gradient), fused_grads) = run(true);
    let ((value, gradient), grads) = run(false);
    let close = |a: &[f32], b: &[f32], what: &str| {
        let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * scale,
                "{what} ({rows} rows): fused {x} vs composed {y}"
            );
        }
    };
    close(&fused_value, &value, "D");
    close(&fused_gradient, &gradient, "∇_x D");
    let names = energy.parameter_names();
    for ((f, c), name) in fused_grads.iter().zip(&grads).zip(&names) {
        assert!(
            c.iter().any(|v| *v != 0.0),
            "{name}: zero gradient compares nothing"
        );
        close(f, c, name);
    }
}

#[test]
fn fused_relu_value_and_input_gradient_equals_the_composed_ops() {
    let mut rng = seeded(5, 0);
    let energy = StepEnergy::<Dev>::new(&Dev::default(), &spec(Activation::Relu), 4, &mut rng);
    check_fused_value_and_input_gradient(&energy, 5);
}

#[test]
fn fused_value_and_input_gradient_splits_large_calls_into_two_row_blocks_exactly() {
    // 301 rows (uneven halves) of a 64-wide network: above the work at which the fused op
    // runs its rows as two blocks on two threads.
    let wide = DdaebmSpec {
        hidden: 64,
        ..spec(Activation::Relu)
    };
    let energy = StepEnergy::<Dev>::new(&Dev::default(), &wide, 4, &mut seeded(9, 0));
    check_fused_value_and_input_gradient(&energy, 301);
}

/// The equilibrium of L_D (docs/algorithms.md §5): with fakes drawn from the data's own forward marginal
/// (a perfect generator), `mean(-D(real) + D(fake))` has zero expected gradient and R1,
/// whose expectation is `(r1/2) E‖∇_x D‖²` plus a constant, flattens `D` on the data; with
/// the (here untrained) generator's fakes, `D` keeps the slope that separates them.
#[test]
fn a_perfect_generator_leaves_the_energy_flat_on_the_data() {
    let dev = Dev::default();
    let config = DdaebmConfig {
        r1: 1.0,
        lr_energy: 1e-3,
        lr_generator: 1e-3,
        ..DdaebmConfig::default()
    };
    let mut rng = seeded(11, 0);
    let initial =
        Ddaebm::<Dev>::new(&dev, &spec(Activation::Relu), schedule(), config, &mut rng).unwrap();
    let slope = |stats: &[(String, f64)]| {
        stats
            .iter()
            .find(|(k, _)| k == "ddaebm/grad_x_D0_sq")
            .map(|(_, v)| *v)
    };
    let train = |perfect: bool| {
        let mut model = initial.clone();
        let mut rng = seeded(12, 0);
        let (mut early, mut late) = (Vec::new(), Vec::new());
        for iteration in 1..=400 {
            let x0 = normal_matrix(&dev, &mut rng, 64, 2) * 0.1 + 1.0;
            let stats = if perfect {
                let x0_fake = normal_matrix(&dev, &mut rng, 64, 2) * 0.1 + 1.0;
                model
                    .train_step_with_perfect_fakes(&x0, &x0_fake, &mut rng, iteration)
                    .unwrap()
            } else {
                model.train_step(&x0, &mut rng, iteration).unwrap()
            };
            match iteration {
                1..=20 => early.extend(slope(&stats)),
                301.. => late.extend(slope(&stats)),
                _ => {}
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        (mean(&early), mean(&late))
    };
    let (start, perfect) = train(true);
    let (_, generator) = train(false);
    eprintln!("start {start} perfect {perfect} generator {generator}");
    assert!(
        perfect < start / 10.0 && perfect < generator / 10.0,
        "E‖∇_x D(x, 0)‖² on the data: {start} at the start, {perfect} after 400 steps \
         against perfect fakes, {generator} against the generator's"
    );
    // Mismatched batches are an error.
    let mut model = initial.clone();
    let x0 = normal_matrix(&dev, &mut rng, 8, 2);
    let wrong = normal_matrix(&dev, &mut rng, 4, 2);
    assert!(model
        .train_step_with_perfect_fakes(&x0, &wrong, &mut rng, 1)
        .is_err());
}
