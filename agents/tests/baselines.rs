//! The baselines of docs/algorithms.md §4.1 on hand-made batches (exact numbers), and the bias of the
//! REINFORCE estimator each of them gives on a one-step Gaussian problem whose gradient is
//! known in closed form.

use denoise_gym::agent::{returns_to_go, Baseline, ReturnBatch, VelocityScale, VelocityScaleKind};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::nn::{time_embedding, Activation};
use denoise_gym::optim::gradients_of;
use denoise_gym::policy::{GaussianPolicy, PolicySpec};
use denoise_gym::rng::{normal_matrix, seeded};
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::{matrix, vector, Matrix};
use denoise_gym_agents::baselines::{
    BatchMean, EmaBaseline, GroupNormalized, LeaveOneOut, NoBaseline, ValueBaseline,
};
use denoise_gym_agents::{make_baseline, ValueBaselineConfig, BASELINES};
use dfdx::prelude::*;

const T: usize = 2;
const B: usize = 4;

/// Returns of a T = 2, B = 4 batch, step-major (t = 2 first): step means 3 and 2.
const RETURNS: [f32; 8] = [1.0, 2.0, 3.0, 6.0, -1.0, 0.0, 4.0, 5.0];

/// `x_t` rows (d = 1) and the step of every row of a `T × B` batch.
fn states_and_steps(n_steps: usize, batch: usize) -> (Matrix<Cpu>, Vec<usize>) {
    let dev = Cpu::default();
    let rows = n_steps * batch;
    let states = matrix(&dev, (0..rows).map(|k| k as f32 * 0.1).collect(), rows, 1);
    let steps = (0..n_steps)
        .flat_map(|k| std::iter::repeat_n(n_steps - k, batch))
        .collect();
    (states, steps)
}

fn advantages_of(baseline: &mut dyn Baseline<Cpu>, returns: &[f32]) -> Vec<f32> {
    let (states, steps) = states_and_steps(T, B);
    baseline
        .advantages(&ReturnBatch {
            n_steps: T,
            batch_size: B,
            returns,
            states: &states,
            steps: &steps,
        })
        .unwrap()
}

fn assert_close(actual: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len());
    for (k, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a as f64 - e).abs() < tol,
            "entry {k}: {a} vs {e} (all: {actual:?} vs {expected:?})"
        );
    }
}

fn value_spec() -> ValueBaselineConfig {
    ValueBaselineConfig {
        hidden: 16,
        depth: 2,
        time_embed_dim: 16,
        lr: 1e-2,
        steps: 1,
    }
}

#[test]
fn none_returns_the_returns() {
    let mut baseline = NoBaseline;
    assert_eq!(Baseline::<Cpu>::name(&baseline), "none");
    assert_eq!(advantages_of(&mut baseline, &RETURNS), RETURNS.to_vec());
}

#[test]
fn batch_mean_subtracts_each_steps_mean() {
    let mut baseline = BatchMean;
    let a = advantages_of(&mut baseline, &RETURNS);
    assert_close(&a, &[-2.0, -1.0, 0.0, 3.0, -3.0, -2.0, 2.0, 3.0], 1e-6);
}

#[test]
fn leave_one_out_uses_the_mean_of_the_other_samples() {
    let mut baseline = LeaveOneOut;
    let a = advantages_of(&mut baseline, &RETURNS);
    // A_i = n/(n-1) (G_i - mean G) with n = 4.
    let means = [3.0, 2.0];
    let expected: Vec<f64> = RETURNS
        .iter()
        .enumerate()
        .map(|(k, &g)| 4.0 / 3.0 * (g as f64 - means[k / B]))
        .collect();
    assert_close(&a, &expected, 1e-5);
    assert_close(
        &a,
        &[
            -8.0 / 3.0,
            -4.0 / 3.0,
            0.0,
            4.0,
            -4.0,
            -8.0 / 3.0,
            8.0 / 3.0,
            4.0,
        ],
        1e-5,
    );

    // Sample 0's baseline G_0 - A_0 does not depend on G_0 ...
    let mut changed = RETURNS;
    changed[0] = 10.0;
    let b = advantages_of(&mut baseline, &changed);
    let own_before = RETURNS[0] - a[0];
    let own_after = changed[0] - b[0];
    assert!(
        (own_before - 11.0 / 3.0).abs() < 1e-5 && (own_after - own_before).abs() < 1e-5,
        "sample 0's baseline {own_before} → {own_after}"
    );
    // ... while the other samples' baselines move by ΔG_0 / (n - 1) = 3.
    for i in 1..B {
        let before = RETURNS[i] - a[i];
        let after = changed[i] - b[i];
        assert!((after - before - 3.0).abs() < 1e-5, "sample {i}");
    }
    // The other step is untouched.
    assert_eq!(a[B..], b[B..]);
}

#[test]
fn leave_one_out_needs_two_samples() {
    let (states, steps) = states_and_steps(2, 1);
    let err = Baseline::<Cpu>::advantages(
        &mut LeaveOneOut,
        &ReturnBatch {
            n_steps: 2,
            batch_size: 1,
            returns: &[1.0, 2.0],
            states: &states,
            steps: &steps,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least 2"), "{err}");
}

#[test]
fn group_normalized_has_zero_mean_and_unit_std_per_step() {
    let mut baseline = GroupNormalized;
    let a = advantages_of(&mut baseline, &RETURNS);
    for chunk in a.chunks(B) {
        let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / B as f64;
        let var = chunk
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / B as f64;
        assert!(mean.abs() < 1e-6, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-5, "var {var}");
    }
    // Step t = 2: deviations (-2, -1, 0, 3), population std √(14/4).
    let std2 = (14.0f64 / 4.0).sqrt();
    let std1 = (26.0f64 / 4.0).sqrt();
    assert_close(
        &a,
        &[
            -2.0 / std2,
            -1.0 / std2,
            0.0,
            3.0 / std2,
            -3.0 / std1,
            -2.0 / std1,
            2.0 / std1,
            3.0 / std1,
        ],
        1e-5,
    );
    // A step whose returns are all equal gives zeros, not NaN.
    let constant = [7.0, 7.0, 7.0, 7.0, -1.0, 0.0, 4.0, 5.0];
    let c = advantages_of(&mut baseline, &constant);
    assert!(c[..B].iter().all(|&v| v == 0.0), "{c:?}");
    assert!(c.iter().all(|v| v.is_finite()));
}

#[test]
fn ema_starts_at_the_first_batch_mean_then_follows_the_recursion() {
    let mut ema = EmaBaseline::default();
    assert_eq!(ema.decay, 0.9);
    assert!(ema.averages.is_empty());

    // Batch 1, means m1 = (3, 2): no history, so its own mean is the baseline.
    let a1 = advantages_of(&mut ema, &RETURNS);
    assert_close(&a1, &[-2.0, -1.0, 0.0, 3.0, -3.0, -2.0, 2.0, 3.0], 1e-6);
    // The average after batch 1: 0.9·m1 + 0.1·m1 = m1.
    assert_close(
        &ema.averages.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &[3.0, 2.0],
        1e-9,
    );

    // Batch 2, means m2 = (10, 1): the baseline is the average *before* this batch (m1).
    let second = [10.0, 10.0, 10.0, 10.0, 0.0, 0.0, 0.0, 4.0];
    let a2 = advantages_of(&mut ema, &second);
    assert_close(&a2, &[7.0, 7.0, 7.0, 7.0, -2.0, -2.0, -2.0, 2.0], 1e-6);
    // Then 0.9·m1 + 0.1·m2.
    let expected = [0.9 * 3.0 + 0.1 * 10.0, 0.9 * 2.0 + 0.1 * 1.0];
    for (a, e) in ema.averages.iter().zip(expected) {
        assert!((a - e).abs() < 1e-9, "{:?} vs {expected:?}", ema.averages);
    }

    // Batch 3 (all zeros): A = -(0.9·m1 + 0.1·m2) = -(3.7, 1.9).
    let zeros = [0.0f32; 8];
    let mut copy = ema.clone();
    let a3 = advantages_of(&mut copy, &zeros);
    assert_close(&a3, &[-3.7, -3.7, -3.7, -3.7, -1.9, -1.9, -1.9, -1.9], 1e-5);
    assert!((copy.averages[0] - 0.9 * 3.7).abs() < 1e-9);

    // Save / load through a checkpoint.
    let mut checkpoint = Checkpoint::new();
    Baseline::<Cpu>::save(&ema, &mut checkpoint, "agent.baseline").unwrap();
    let path = std::path::Path::new("in-memory.safetensors");
    let mut restored = EmaBaseline::default();
    Baseline::<Cpu>::load(&mut restored, &checkpoint, path, "agent.baseline").unwrap();
    assert_eq!(restored.averages.len(), 2);
    for (a, b) in restored.averages.iter().zip(&ema.averages) {
        assert!(
            (a - b).abs() < 1e-12,
            "{:?} vs {:?}",
            restored.averages,
            ema.averages
        );
    }
    let b3 = advantages_of(&mut restored, &zeros);
    assert_eq!(a3, b3);
    // A checkpoint without the key is an error naming it.
    let err = Baseline::<Cpu>::load(&mut restored, &Checkpoint::new(), path, "other")
        .unwrap_err()
        .to_string();
    assert!(err.contains("other.averages"), "{err}");
}

/// The EMA baseline's state is metadata only: a checkpoint holding just that must survive
/// a file round trip too (as when a baseline is checkpointed on its own).
#[test]
fn ema_state_survives_a_checkpoint_file_on_its_own() {
    let mut ema = EmaBaseline::default();
    advantages_of(&mut ema, &RETURNS);
    let mut checkpoint = Checkpoint::new();
    Baseline::<Cpu>::save(&ema, &mut checkpoint, "baseline").unwrap();
    let path = std::env::temp_dir().join(format!(
        "denoise-gym-ema-baseline-{}.safetensors",
        std::process::id()
    ));
    checkpoint.save(&path).unwrap();
    let loaded = Checkpoint::load(&path);
    std::fs::remove_file(&path).ok();
    let loaded = loaded.expect("a metadata-only checkpoint reads back");
    assert_eq!(loaded, checkpoint);
    let mut restored = EmaBaseline::default();
    Baseline::<Cpu>::load(&mut restored, &loaded, &path, "baseline").unwrap();
    assert_eq!(restored.averages, ema.averages);
}

#[test]
fn the_value_baseline_learns_a_deterministic_return() {
    let dev = Cpu::default();
    let mut rng = seeded(11, 0);
    let (dim, n_steps, batch) = (2, 2, 32);
    let mut value =
        ValueBaseline::new(&dev, dim, n_steps, 32, 2, 16, 1e-2, 5, &mut seeded(4, 0)).unwrap();
    assert_eq!(Baseline::<Cpu>::name(&value), "value");
    let steps: Vec<usize> = (0..n_steps)
        .flat_map(|k| std::iter::repeat_n(n_steps - k, batch))
        .collect();
    let mut mean_squared_advantage = Vec::new();
    let mut mean_squared_return = Vec::new();
    let mut losses = Vec::new();
    for _ in 0..150 {
        let states = normal_matrix(&dev, &mut rng, n_steps * batch, dim);
        let x = states.as_vec();
        // G = 2 x_a - x_b + t: a deterministic function of (x_t, t).
        let returns: Vec<f32> = steps
            .iter()
            .enumerate()
            .map(|(k, &t)| 2.0 * x[2 * k] - x[2 * k + 1] + t as f32)
            .collect();
        let a = value
            .advantages(&ReturnBatch {
                n_steps,
                batch_size: batch,
                returns: &returns,
                states: &states,
                steps: &steps,
            })
            .unwrap();
        // A = G - b_ψ(x_t, t), with the predictor as it is after this batch's fit.
        let embedding = matrix(
            &dev,
            time_embedding(&steps, n_steps, 16),
            n_steps * batch,
            16,
        );
        let input = (states.clone(), embedding).concat_along(Axis::<1>);
        let predicted = value.net.forward(input).as_vec();
        for k in 0..returns.len() {
            assert!((a[k] - (returns[k] - predicted[k])).abs() < 1e-4);
        }
        let n = a.len() as f64;
        mean_squared_advantage.push(a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n);
        mean_squared_return.push(returns.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n);
        let stats = Baseline::<Cpu>::stats(&value);
        assert_eq!(stats[0].0, "baseline/value_loss");
        losses.push(stats[0].1);
    }
    let first_loss = losses[0];
    let late_loss = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    assert!(
        late_loss < 0.05 * first_loss,
        "value loss {first_loss} → {late_loss}"
    );
    let late_a2 = mean_squared_advantage[140..].iter().sum::<f64>() / 10.0;
    let late_g2 = mean_squared_return[140..].iter().sum::<f64>() / 10.0;
    assert!(
        late_a2 < 0.05 * late_g2 && late_a2 < 0.1 * mean_squared_advantage[0],
        "mean A² {} → {late_a2} (mean G² {late_g2})",
        mean_squared_advantage[0]
    );
}

#[test]
fn make_baseline_builds_every_name_and_rejects_unknown_ones() {
    let dev = Cpu::default();
    let mut rng = seeded(0, 0);
    assert_eq!(BASELINES.len(), 6);
    for &(name, _) in BASELINES {
        let baseline = make_baseline::<Cpu>(name, &dev, 2, 3, &value_spec(), &mut rng).unwrap();
        assert_eq!(baseline.name(), name);
    }
    let err = make_baseline::<Cpu>("rloo", &dev, 2, 3, &value_spec(), &mut rng)
        .err()
        .expect("an unknown baseline is an error")
        .to_string();
    assert!(err.contains("rloo"), "{err}");
    for &(name, _) in BASELINES {
        assert!(err.contains(name), "{err} should list {name}");
    }
}

// ---------------------------------------------------------------------------------------
// Bias of the score-function estimator, per baseline.
// ---------------------------------------------------------------------------------------

/// A one-step (T = 1), one-dimensional policy whose `log σ_1` learns.
fn one_step_policy() -> GaussianPolicy<Cpu> {
    let spec = PolicySpec {
        dim: 1,
        hidden: 16,
        depth: 1,
        time_embed_dim: 16,
        activation: Activation::Silu,
        clip_x0: 0.0,
        fix_last_sigma: false,
        last_sigma: 0.0,
    };
    // A gentle vp range so that ᾱ_1 ≈ 0.58 keeps the mean O(1).
    let schedule = Schedule::with_vp_range(ScheduleKind::Vp, 1, 0.1, 1.0).unwrap();
    GaussianPolicy::new(&Cpu::default(), spec, schedule, &mut seeded(5, 0)).unwrap()
}

const X1: f32 = 0.3;

struct Estimate {
    mean: f64,
    standard_error: f64,
    analytic: f64,
}

/// Averages, over `batches` batches of `n`, the REINFORCE estimate of
/// `d/d log σ_1 E[-(x0 - 1)²]` with `x0 ~ N(μ(x_1), σ_1²)` at a fixed `x_1`:
/// `mean_i ∇ log π(x0_i | x_1) A_i`, read from a backward pass through `log_prob`.
/// The first `warmup` batches update the baseline but are not counted.
fn sigma_gradient(
    baseline: &mut dyn Baseline<Cpu>,
    n: usize,
    batches: usize,
    warmup: usize,
    seed: u64,
) -> Estimate {
    let dev = Cpu::default();
    let policy = one_step_policy();
    let sigma = policy.sigmas()[0] as f64;
    let steps = vec![1usize; n];
    let x1 = matrix(&dev, vec![X1; n], n, 1);
    let mu = policy.mean(x1.clone(), &steps).as_vec();
    assert!(mu.iter().all(|&m| m == mu[0]), "one mean for the batch");
    let scale = VelocityScale::new(VelocityScaleKind::Fixed, policy.schedule(), 1.0);
    let mut rng = seeded(seed, 3);
    let mut estimates = Vec::with_capacity(batches);
    for b in 0..warmup + batches {
        let noise = normal_matrix(&dev, &mut rng, n, 1);
        let x0 = policy.sample_step(&x1, 1, &noise);
        let x0_host = x0.as_vec();
        let terminal: Vec<f32> = x0_host.iter().map(|&x| -(x - 1.0).powi(2)).collect();
        let squared: Vec<f32> = x0_host.iter().map(|&x| (x - X1).powi(2)).collect();
        let (returns, _) = returns_to_go(&terminal, &squared, 1, 1, &scale, 0.0).unwrap();
        assert_eq!(
            returns, terminal,
            "τ_v = 0: the return is the terminal reward"
        );
        let advantages = baseline
            .advantages(&ReturnBatch {
                n_steps: 1,
                batch_size: n,
                returns: &returns,
                states: &x1,
                steps: &steps,
            })
            .unwrap();
        let log_prob = policy.log_prob(x1.clone().traced(Gradients::leaky()), &steps, &x0);
        let loss = -((log_prob * vector(&dev, advantages)).sum() / n as f32);
        let mut grads = loss.backward();
        let g = gradients_of(&mut grads, &[&policy.log_sigma]).unwrap();
        if b >= warmup {
            // The loss is the negative objective.
            estimates.push(-(g[0].as_vec()[0] as f64));
        }
    }
    let k = estimates.len() as f64;
    let mean = estimates.iter().sum::<f64>() / k;
    let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (k - 1.0);
    // d/d log σ E[-(μ + σ ε - 1)²] = d/d log σ [-(μ - 1)² - σ²] = -2σ².
    Estimate {
        mean,
        standard_error: (var / k).sqrt(),
        analytic: -2.0 * sigma * sigma,
    }
}

fn assert_matches(name: &str, e: &Estimate, expected: f64) {
    assert!(e.standard_error > 0.0);
    assert!(
        (e.mean - expected).abs() < 4.0 * e.standard_error + 1e-3,
        "{name}: Monte-Carlo gradient {} ± {} vs expected {expected} (analytic {})",
        e.mean,
        e.standard_error,
        e.analytic
    );
}

#[test]
fn no_baseline_gives_an_unbiased_gradient() {
    let e = sigma_gradient(&mut NoBaseline, 8, 4000, 0, 1);
    assert_matches("none", &e, e.analytic);
}

#[test]
fn leave_one_out_gives_an_unbiased_gradient() {
    let e = sigma_gradient(&mut LeaveOneOut, 4, 6000, 0, 2);
    assert_matches("leave_one_out", &e, e.analytic);
}

#[test]
fn batch_mean_shrinks_the_gradient_by_n_minus_one_over_n() {
    let n = 4;
    let e = sigma_gradient(&mut BatchMean, n, 6000, 0, 3);
    let shrunk = e.analytic * (n as f64 - 1.0) / n as f64;
    assert_matches("batch_mean", &e, shrunk);
    // The test can tell the shrunk value from the unbiased one.
    assert!(
        (e.analytic - shrunk).abs() > 6.0 * e.standard_error,
        "too few batches to see the 1/n bias: SE {}",
        e.standard_error
    );
}

#[test]
fn ema_gives_an_unbiased_gradient_after_warm_up() {
    let e = sigma_gradient(&mut EmaBaseline::default(), 8, 4000, 20, 4);
    assert_matches("ema", &e, e.analytic);
}

#[test]
fn the_value_baseline_gives_an_unbiased_gradient() {
    let dev = Cpu::default();
    let mut value = ValueBaseline::new(&dev, 1, 1, 16, 1, 16, 1e-2, 1, &mut seeded(6, 0)).unwrap();
    let e = sigma_gradient(&mut value, 8, 4000, 100, 5);
    assert_matches("value", &e, e.analytic);
}

#[test]
fn group_normalized_keeps_the_sign_of_the_gradient() {
    let e = sigma_gradient(&mut GroupNormalized, 8, 1000, 0, 6);
    assert!(e.analytic < 0.0);
    assert!(
        e.mean + 4.0 * e.standard_error < 0.0,
        "group_normalized: {} ± {} should be negative like {}",
        e.mean,
        e.standard_error,
        e.analytic
    );
}
