//! DxDP (docs/algorithms.md §4.2): the TD target on a hand-made trajectory, the pathwise gradient of the
//! policy loss against finite differences, the pull of `τ_H` and `τ_v` on `σ_t`, and a
//! checkpoint round trip.

use std::cell::RefCell;
use std::rc::Rc;

use denoise_gym::agent::{Agent, VelocityScaleKind};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::ebm::EnergyModel;
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::reward::DifferentiableReward;
use denoise_gym::rng::{normal_matrix, seeded};
use denoise_gym::rollout::Rollout;
use denoise_gym::tensor::{matrix, vector, Matrix};
use denoise_gym_agents::{Dxdp, DxdpConfig, ReinforceConfig, ValueTarget};
use dfdx::prelude::*;

mod common;
use common::small_policy;

const HALF_LOG_TWO_PI_E: f64 = 1.418_938_533_204_672_7;

fn policy(n_steps: usize, seed: u64) -> GaussianPolicy<Cpu> {
    small_policy(n_steps, seed, 0.0, true)
}

fn energy(seed: u64) -> Rc<RefCell<EnergyModel<Cpu>>> {
    Rc::new(RefCell::new(EnergyModel::new(
        &Cpu::default(),
        2,
        16,
        2,
        Activation::Silu,
        &mut seeded(seed, 1),
    )))
}

fn agent(n_steps: usize, config: DxdpConfig) -> (Dxdp<Cpu>, Rc<RefCell<EnergyModel<Cpu>>>) {
    agent_with(n_steps, ReinforceConfig::default(), config)
}

/// DxDP with the `[agent]` settings `shared` (learning rates, τ_H, τ_v, velocity scale).
fn agent_with(
    n_steps: usize,
    shared: ReinforceConfig,
    config: DxdpConfig,
) -> (Dxdp<Cpu>, Rc<RefCell<EnergyModel<Cpu>>>) {
    let model = energy(7);
    let reward: Rc<RefCell<dyn DifferentiableReward<Cpu>>> = model.clone();
    let agent = Dxdp::new(
        policy(n_steps, 3),
        reward,
        shared,
        config,
        &mut seeded(5, 2),
    )
    .unwrap();
    (agent, model)
}

fn coefficients(tau_entropy: f64, tau_velocity: f64) -> ReinforceConfig {
    ReinforceConfig {
        tau_entropy,
        tau_velocity,
        ..ReinforceConfig::default()
    }
}

fn small_config() -> DxdpConfig {
    DxdpConfig {
        value_hidden: 16,
        value_depth: 2,
        ..DxdpConfig::default()
    }
}

fn m(rows: &[[f32; 2]]) -> Matrix<Cpu> {
    let data = rows.iter().flatten().copied().collect();
    matrix(&Cpu::default(), data, rows.len(), 2)
}

/// T = 2, B = 2, d = 2. Squared step lengths: t = 2: (1, 4), t = 1: (4, 9).
fn two_step_rollout() -> Rollout<Cpu> {
    Rollout {
        states: vec![
            m(&[[0.0, 0.0], [1.0, 1.0]]),  // x_2
            m(&[[1.0, 0.0], [1.0, 3.0]]),  // x_1
            m(&[[1.0, 2.0], [-2.0, 3.0]]), // x_0
        ],
        log_probs: Vec::new(),
        terminal_reward: vector(&Cpu::default(), vec![0.0, 0.0]),
    }
}

#[test]
fn td_target_on_a_hand_made_two_step_trajectory() {
    let (agent, model) = agent_with(2, coefficients(0.3, 0.2), small_config());
    let rollout = two_step_rollout();
    let sigmas = agent.policy.sigmas();
    let schedule = agent.policy.schedule().clone();
    let d = 2.0;
    // t = 1 ends on the energy: E(x_0) + τ_v ‖x_0 - x_1‖²/(2 β_1 d) - τ_H (log σ_1 + ½ log 2πe).
    let energies = model.borrow().energy_host(&[1.0, 2.0, -2.0, 3.0]);
    let expected_1: Vec<f64> = [4.0, 9.0]
        .iter()
        .zip(&energies)
        .map(|(&squared, &e)| {
            e as f64 + 0.2 * squared / (2.0 * schedule.beta(1) * d)
                - 0.3 * ((sigmas[0] as f64).ln() + HALF_LOG_TWO_PI_E)
        })
        .collect();
    // t = 2 ends on V_ψ(x_1, 1).
    let values = agent
        .value
        .cost_to_go(m(&[[1.0, 0.0], [1.0, 3.0]]), &[1, 1])
        .as_vec();
    let expected_2: Vec<f64> = [1.0, 4.0]
        .iter()
        .zip(&values)
        .map(|(&squared, &v)| {
            v as f64 + 0.2 * squared / (2.0 * schedule.beta(2) * d)
                - 0.3 * ((sigmas[1] as f64).ln() + HALF_LOG_TWO_PI_E)
        })
        .collect();
    for (t, expected) in [(1, expected_1), (2, expected_2)] {
        let targets = agent.td_targets(&rollout, t).unwrap();
        for (a, e) in targets.iter().zip(&expected) {
            assert!(
                (*a as f64 - e).abs() < 1e-5,
                "t = {t}: {targets:?} vs {expected:?}"
            );
        }
    }

    // DxMI's trainer regresses on the next value alone.
    let (dxmi, model) = agent_with_target(ValueTarget::TerminalEnergy);
    let targets = dxmi.td_targets(&rollout, 1).unwrap();
    let energies = model.borrow().energy_host(&[1.0, 2.0, -2.0, 3.0]);
    assert_eq!(targets, energies);
}

fn agent_with_target(target: ValueTarget) -> (Dxdp<Cpu>, Rc<RefCell<EnergyModel<Cpu>>>) {
    agent(
        2,
        DxdpConfig {
            value_target: target,
            ..small_config()
        },
    )
}

#[test]
fn value_steps_move_the_value_toward_its_targets() {
    let (mut agent, _) = agent(
        2,
        DxdpConfig {
            value_lr: 1e-2,
            ..small_config()
        },
    );
    let rollout = two_step_rollout();
    let error = |agent: &Dxdp<Cpu>| -> f64 {
        let targets = agent.td_targets(&rollout, 1).unwrap();
        let values = agent.cost_to_go(rollout.state(1), 1).unwrap();
        targets
            .iter()
            .zip(values)
            .map(|(&a, b)| ((a - b) as f64).powi(2))
            .sum()
    };
    let before = error(&agent);
    let mut rng = seeded(0, 9);
    for iteration in 0..50 {
        agent.update(&rollout, &mut rng, iteration).unwrap();
    }
    let after = error(&agent);
    assert!(after < 0.1 * before, "TD error {before} -> {after}");
}

/// The loss at the current parameters with fixed states and noise, as a host number.
fn loss_value(agent: &Dxdp<Cpu>, x: &Matrix<Cpu>, ts: &[usize], noise: &Matrix<Cpu>) -> f64 {
    agent.policy_loss(x, ts, noise).unwrap().0.as_vec()[0] as f64
}

#[test]
fn pathwise_gradient_matches_finite_differences() {
    let (mut agent, _) = agent_with(3, coefficients(0.1, 0.05), small_config());
    let dev = Cpu::default();
    let mut rng = seeded(11, 0);
    // Rows at every step, so the gradient flows through V_ψ (t = 2, 3) and E_φ (t = 1).
    let x = normal_matrix(&dev, &mut rng, 6, 2);
    let ts = [3, 3, 2, 2, 1, 1];
    let noise = normal_matrix(&dev, &mut rng, 6, 2);
    let (loss, _, _) = agent.policy_loss(&x, &ts, &noise).unwrap();
    let mut grads = loss.backward();
    let params = agent.policy.parameters();
    let analytic: Vec<Vec<f32>> = denoise_gym::optim::gradients_of(&mut grads, &params)
        .unwrap()
        .iter()
        .map(|g| g.as_vec())
        .collect();
    let names = agent.policy.parameter_names();
    let sigma_index = names.iter().position(|n| n == "log_sigma").unwrap();
    // log σ_1 is frozen: no gradient; log σ_2, log σ_3 and a few weights of every layer.
    assert_eq!(analytic[sigma_index][0], 0.0);
    let mut checked = 0;
    for (p, grad) in analytic.iter().enumerate() {
        let entries: Vec<usize> = if p == sigma_index {
            vec![1, 2]
        } else {
            vec![0, grad.len() / 2, grad.len() - 1]
        };
        for entry in entries {
            let h = 1e-2f32;
            let mut shifted = |delta: f32| -> f64 {
                let mut values = agent.policy.parameters()[p].as_vec();
                values[entry] += delta;
                agent.policy.parameters_mut()[p].copy_from(&values);
                let l = loss_value(&agent, &x, &ts, &noise);
                values[entry] -= delta;
                agent.policy.parameters_mut()[p].copy_from(&values);
                l
            };
            let numeric = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
            let a = grad[entry] as f64;
            assert!(
                (a - numeric).abs() < 2e-3 + 2e-2 * numeric.abs(),
                "{} [{entry}]: analytic {a}, finite difference {numeric}",
                names[p]
            );
            checked += 1;
        }
    }
    assert!(checked > 6);
    assert!(
        analytic[sigma_index][1].abs() > 1e-4,
        "log σ_2 gets a gradient"
    );
}

/// Per step the loss pulls σ² toward `(τ_H/τ_v) s_t²` (docs/algorithms.md §8); with a fixed `s_t²` on
/// either side of the current σ_t, one update moves `log σ_t` toward it.
#[test]
fn sigma_moves_toward_the_balance_of_entropy_and_velocity_pulls() {
    let mut moved = Vec::new();
    for s2_over_sigma2 in [9.0, 1.0 / 9.0] {
        let p = policy(3, 3);
        let sigma_2 = p.sigmas()[1] as f64;
        let shared = ReinforceConfig {
            velocity_scale: VelocityScaleKind::Fixed,
            velocity_scale_value: s2_over_sigma2 * sigma_2 * sigma_2,
            lr: 1e-12,
            lr_log_sigma: 1e-2,
            ..coefficients(1.0, 1.0)
        };
        let config = DxdpConfig {
            grad_clip: 0.0,
            ..small_config()
        };
        let model = energy(7);
        let reward: Rc<RefCell<dyn DifferentiableReward<Cpu>>> = model;
        let mut agent = Dxdp::new(p, reward, shared, config, &mut seeded(5, 2)).unwrap();
        let dev = Cpu::default();
        let mut rng = seeded(1, 1);
        let states: Vec<Matrix<Cpu>> = (0..4)
            .map(|_| normal_matrix(&dev, &mut rng, 512, 2))
            .collect();
        let rollout = Rollout {
            states,
            log_probs: Vec::new(),
            terminal_reward: vector(&dev, vec![0.0; 512]),
        };
        let before = agent.policy.sigmas();
        agent.update(&rollout, &mut rng, 1).unwrap();
        let after = agent.policy.sigmas();
        moved.push(((after[1] / before[1]) as f64).ln());
    }
    assert!(
        moved[0] > 5e-3,
        "s² = 9σ²: σ_2 should grow, log ratio {}",
        moved[0]
    );
    assert!(
        moved[1] < -5e-3,
        "s² = σ²/9: σ_2 should shrink, log ratio {}",
        moved[1]
    );
}

#[test]
fn checkpoint_round_trip_restores_value_policy_and_velocity_scale() {
    let (mut trained, _) = agent(2, small_config());
    let rollout = two_step_rollout();
    let mut rng = seeded(0, 3);
    for iteration in 0..3 {
        trained.update(&rollout, &mut rng, iteration).unwrap();
    }
    let mut checkpoint = Checkpoint::new();
    trained.save(&mut checkpoint, "agent").unwrap();
    let dir = std::env::temp_dir().join(format!("dxdp-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.safetensors");
    checkpoint.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    let (mut restored, _) = agent(2, small_config());
    restored.load(&loaded, &path, "agent").unwrap();
    assert_eq!(restored.velocity.s2, trained.velocity.s2);
    assert_eq!(
        restored.cost_to_go(rollout.state(1), 1).unwrap(),
        trained.cost_to_go(rollout.state(1), 1).unwrap()
    );
    assert_eq!(restored.policy.sigmas(), trained.policy.sigmas());
    // Same optimiser state: one more identical update keeps them equal.
    let mut rng_a = seeded(4, 4);
    let mut rng_b = seeded(4, 4);
    trained.update(&rollout, &mut rng_a, 3).unwrap();
    restored.update(&rollout, &mut rng_b, 3).unwrap();
    assert_eq!(restored.policy.sigmas(), trained.policy.sigmas());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_settings_are_refused() {
    let model = energy(7);
    let reward: Rc<RefCell<dyn DifferentiableReward<Cpu>>> = model;
    let bad = DxdpConfig {
        value_lr: 0.0,
        ..small_config()
    };
    let err = Dxdp::new(
        policy(2, 3),
        reward.clone(),
        ReinforceConfig::default(),
        bad,
        &mut seeded(0, 0),
    )
    .err()
    .expect("value_lr = 0 must fail")
    .to_string();
    assert!(err.contains("value_lr"), "{err}");
    let wide = Rc::new(RefCell::new(EnergyModel::<Cpu>::new(
        &Cpu::default(),
        3,
        8,
        1,
        Activation::Relu,
        &mut seeded(0, 0),
    )));
    let wide: Rc<RefCell<dyn DifferentiableReward<Cpu>>> = wide;
    let err = Dxdp::new(
        policy(2, 3),
        wide,
        ReinforceConfig::default(),
        small_config(),
        &mut seeded(0, 0),
    )
    .err()
    .expect("dimension mismatch must fail")
    .to_string();
    assert!(err.contains("3-dimensional"), "{err}");
}
