//! REINFORCE on the maximum-entropy return (docs/algorithms.md §4, §4.1): returns-to-go and the adaptive
//! velocity scale by hand, the entropy term alone when the advantages vanish, and a
//! checkpoint round trip.

use denoise_gym::agent::{returns_to_go, Agent, Stats, VelocityScale, VelocityScaleKind};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::policy::{GaussianPolicy, PolicySpec};
use denoise_gym::rng::seeded;
use denoise_gym::rollout::Rollout;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::{matrix, vector, Matrix};
use denoise_gym_agents::baselines::{EmaBaseline, LeaveOneOut};
use denoise_gym_agents::{Reinforce, ReinforceConfig};
use dfdx::prelude::*;

fn policy(dim: usize, n_steps: usize, fix_last_sigma: bool, seed: u64) -> GaussianPolicy<Cpu> {
    let spec = PolicySpec {
        dim,
        hidden: 16,
        depth: 2,
        time_embed_dim: 16,
        activation: Activation::Silu,
        clip_x0: 0.0,
        fix_last_sigma,
        last_sigma: 0.0,
    };
    let schedule = Schedule::new(ScheduleKind::Vp, n_steps).unwrap();
    GaussianPolicy::new(&Cpu::default(), spec, schedule, &mut seeded(seed, 0)).unwrap()
}

fn m(rows: &[[f32; 2]]) -> Matrix<Cpu> {
    let data = rows.iter().flatten().copied().collect();
    matrix(&Cpu::default(), data, rows.len(), 2)
}

/// T = 3, B = 2, d = 2. Squared step lengths: t = 3: (1, 4), t = 2: (4, 9), t = 1: (1, 4).
fn hand_rollout() -> Rollout<Cpu> {
    Rollout {
        states: vec![
            m(&[[0.0, 0.0], [1.0, 1.0]]), // x_3
            m(&[[1.0, 0.0], [1.0, 3.0]]), // x_2
            m(&[[1.0, 2.0], [4.0, 3.0]]), // x_1
            m(&[[0.0, 2.0], [4.0, 1.0]]), // x_0
        ],
        log_probs: Vec::new(),
        terminal_reward: vector(&Cpu::default(), vec![-1.0, 0.5]),
    }
}

fn assert_close(actual: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len());
    for (k, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a as f64 - e).abs() < tol,
            "entry {k}: {a} vs {e} ({actual:?} vs {expected:?})"
        );
    }
}

#[test]
fn returns_to_go_on_a_hand_made_rollout() {
    let rollout = hand_rollout();
    assert_eq!(
        (rollout.n_steps(), rollout.batch_size(), rollout.dim()),
        (3, 2, 2)
    );
    let lengths = rollout.squared_step_lengths();
    assert_eq!(lengths, vec![1.0, 4.0, 4.0, 9.0, 1.0, 4.0]);
    let terminal = rollout.terminal_reward.as_vec();
    let schedule = Schedule::new(ScheduleKind::Vp, 3).unwrap();

    // s_t² = 1, τ_v = 0.01, d = 2: r_t = -0.01 L / (2·1·2) = -0.0025 L.
    let fixed = VelocityScale::new(VelocityScaleKind::Fixed, &schedule, 1.0);
    assert_eq!(fixed.s2, vec![1.0; 3]);
    let (returns, cost) = returns_to_go(&terminal, &lengths, 3, 2, &fixed, 0.01).unwrap();
    // Sample 0: r_1 = -0.0025, r_2 = -0.01, r_3 = -0.0025 on R = -1.
    // Sample 1: r_1 = -0.01, r_2 = -0.0225, r_3 = -0.01 on R = 0.5.
    // Order: t = 3 (G_3 = R + r_1 + r_2 + r_3), t = 2 (R + r_1 + r_2), t = 1 (R + r_1).
    assert_close(
        &returns,
        &[-1.015, 0.4575, -1.0125, 0.4675, -1.0025, 0.49],
        1e-6,
    );
    // Mean velocity cost per episode: (0.015 + 0.0425) / 2.
    assert!((cost - 0.02875).abs() < 1e-9, "{cost}");

    // A different s_t² per step (index t - 1): s_1² = 0.5, s_2² = 1, s_3² = 2.
    let uneven = VelocityScale {
        kind: VelocityScaleKind::Fixed,
        decay: 0.99,
        s2: vec![0.5, 1.0, 2.0],
    };
    let (returns, _) = returns_to_go(&terminal, &lengths, 3, 2, &uneven, 0.01).unwrap();
    // Sample 0: r_1 = -0.005, r_2 = -0.01, r_3 = -0.00125.
    // Sample 1: r_1 = -0.02, r_2 = -0.0225, r_3 = -0.005.
    assert_close(
        &returns,
        &[-1.01625, 0.4525, -1.015, 0.4575, -1.005, 0.48],
        1e-6,
    );

    // τ_v = 0: every return is the terminal reward.
    let (returns, cost) = returns_to_go(&terminal, &lengths, 3, 2, &fixed, 0.0).unwrap();
    assert_eq!(returns, vec![-1.0, 0.5, -1.0, 0.5, -1.0, 0.5]);
    assert_eq!(cost, 0.0);

    // Lengths that do not match T × B are an error.
    assert!(returns_to_go(&terminal, &lengths[..5], 3, 2, &fixed, 0.01).is_err());
}

#[test]
fn the_adaptive_velocity_scale_starts_at_beta_and_tracks_step_lengths() {
    let schedule = Schedule::new(ScheduleKind::Vp, 3).unwrap();
    let mut scale = VelocityScale::new(VelocityScaleKind::Adaptive, &schedule, 1.0);
    let betas: Vec<f64> = (1..=3).map(|t| schedule.beta(t)).collect();
    assert_eq!(scale.s2, betas);
    assert_eq!(scale.decay, 0.99);
    for t in 1..=3 {
        assert_eq!(scale.get(t), betas[t - 1]);
    }
    let lengths = hand_rollout().squared_step_lengths();
    // mean_d over the batch: t = 3: (1 + 4)/4, t = 2: (4 + 9)/4, t = 1: (1 + 4)/4.
    let observed = [1.25, 3.25, 1.25]; // at index t - 1
    scale.observe(&lengths, 2, 2);
    let once: Vec<f64> = (0..3)
        .map(|i| 0.99 * betas[i] + 0.01 * observed[i])
        .collect();
    for i in 0..3 {
        assert!(
            (scale.s2[i] - once[i]).abs() < 1e-12,
            "{:?} vs {once:?}",
            scale.s2
        );
    }
    scale.observe(&lengths, 2, 2);
    for i in 0..3 {
        let twice = 0.99 * once[i] + 0.01 * observed[i];
        assert!((scale.s2[i] - twice).abs() < 1e-12, "{:?}", scale.s2);
    }

    // A fixed scale ignores what it observes.
    let mut fixed = VelocityScale::new(VelocityScaleKind::Fixed, &schedule, 0.7);
    fixed.observe(&lengths, 2, 2);
    assert_eq!(fixed.s2, vec![0.7; 3]);
}

fn config(tau_entropy: f64) -> ReinforceConfig {
    let mut config = ReinforceConfig {
        lr: 1e-3,
        lr_log_sigma: 1e-2,
        ..ReinforceConfig::default()
    };
    config.tau_entropy = tau_entropy;
    config.tau_velocity = 0.0;
    config
}

/// Runs one update on a rollout of the agent's own policy whose terminal reward is the
/// same for every sample; returns (log σ before, log σ after, max |Δ| of the ε-network,
/// the update's stats).
fn update_with_constant_reward(
    tau_entropy: f64,
    fix_last_sigma: bool,
) -> (Vec<f32>, Vec<f32>, f32, Stats) {
    let (n_steps, batch) = (4, 8);
    let mut agent = Reinforce::new(
        policy(2, n_steps, fix_last_sigma, 1),
        Box::new(LeaveOneOut),
        config(tau_entropy),
    )
    .unwrap();
    let mut rng = seeded(2, 0);
    let rollout = Rollout {
        states: agent.policy.sample_trajectory(batch, &mut rng),
        log_probs: Vec::new(),
        terminal_reward: vector(&Cpu::default(), vec![-2.5; batch]),
    };
    let before_sigma = agent.policy.log_sigma_row::<NoneTape>().as_vec();
    let before_net: Vec<Vec<f32>> = agent
        .policy
        .eps_net
        .parameters()
        .iter()
        .map(|p| p.as_vec())
        .collect();
    let stats = agent.update(&rollout, &mut rng, 0).unwrap();
    let after_sigma = agent.policy.log_sigma_row::<NoneTape>().as_vec();
    let net_change = agent
        .policy
        .eps_net
        .parameters()
        .iter()
        .zip(&before_net)
        .flat_map(|(p, b)| {
            p.as_vec()
                .into_iter()
                .zip(b.clone())
                .map(|(x, y)| (x - y).abs())
        })
        .fold(0.0f32, f32::max);
    (before_sigma, after_sigma, net_change, stats)
}

fn stat(stats: &[(String, f64)], name: &str) -> f64 {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no stat {name} in {stats:?}"))
        .1
}

#[test]
fn with_equal_returns_only_the_entropy_term_moves_log_sigma() {
    let lr_log_sigma = 1e-2f32;
    let (before, after, net_change, stats) = update_with_constant_reward(0.1, true);
    // Leave-one-out advantages of equal returns are 0: no policy-gradient term.
    assert_eq!(stat(&stats, "policy/advantage_mean"), 0.0);
    assert_eq!(stat(&stats, "policy/advantage_std"), 0.0);
    assert_eq!(net_change, 0.0, "the ε-network gets no gradient");
    // σ_1 is frozen.
    assert_eq!(after[0], before[0]);
    // The entropy term (τ_H/d)·d·Σ log σ_t pushes every learnable log σ_t up; Adam's first
    // step has size lr exactly (|m̂|/√v̂ = 1).
    for t in 2..=4 {
        let delta = after[t - 1] - before[t - 1];
        assert!(
            (delta - lr_log_sigma).abs() < 1e-5,
            "log σ_{t}: {} → {} (Δ {delta})",
            before[t - 1],
            after[t - 1]
        );
    }

    // With a learnable σ_1, it moves up as well.
    let (before, after, _, _) = update_with_constant_reward(0.1, false);
    for t in 1..=4 {
        let delta = after[t - 1] - before[t - 1];
        assert!((delta - lr_log_sigma).abs() < 1e-5, "t = {t}: Δ {delta}");
    }

    // Without the entropy term nothing moves at all.
    let (before, after, net_change, _) = update_with_constant_reward(0.0, false);
    assert_eq!(before, after);
    assert_eq!(net_change, 0.0);
}

fn reward_rollout(agent: &Reinforce<Cpu>, seed: u64) -> Rollout<Cpu> {
    let mut rng = seeded(seed, 0);
    let states = agent.policy.sample_trajectory(16, &mut rng);
    let x0 = states.last().unwrap().as_vec();
    let reward = x0
        .chunks(2)
        .map(|r| -((r[0] - 1.0).powi(2) + r[1].powi(2)))
        .collect();
    Rollout {
        states,
        log_probs: Vec::new(),
        terminal_reward: vector(&Cpu::default(), reward),
    }
}

fn parameters(agent: &Reinforce<Cpu>) -> Vec<Vec<f32>> {
    agent
        .policy
        .parameters()
        .iter()
        .map(|p| p.as_vec())
        .collect()
}

#[test]
fn a_checkpoint_round_trip_restores_policy_optimizer_baseline_and_velocity_scale() {
    let make = |seed: u64| {
        let config = ReinforceConfig {
            lr: 1e-3,
            lr_log_sigma: 1e-2,
            ..ReinforceConfig::default()
        };
        assert_eq!(config.velocity_scale, VelocityScaleKind::Adaptive);
        Reinforce::new(
            policy(2, 3, true, seed),
            Box::new(EmaBaseline::default()),
            config,
        )
        .unwrap()
    };
    let mut original = make(1);
    let mut rng = seeded(3, 0);
    for k in 0..3 {
        let rollout = reward_rollout(&original, 10 + k);
        original.update(&rollout, &mut rng, k).unwrap();
    }
    assert_eq!(original.optimizer.step, 3);
    let initial_scale =
        VelocityScale::new(VelocityScaleKind::Adaptive, original.policy.schedule(), 1.0);
    assert_ne!(original.velocity.s2, initial_scale.s2, "the scale adapted");

    let mut checkpoint = Checkpoint::new();
    original.save(&mut checkpoint, "agent").unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let path = std::env::temp_dir().join(format!(
        "denoise-gym-reinforce-{}-{nanos}.safetensors",
        std::process::id()
    ));
    checkpoint.save(&path).unwrap();
    let loaded = Checkpoint::load(&path);
    std::fs::remove_file(&path).ok();
    let loaded = loaded.unwrap();

    let mut restored = make(2);
    assert_ne!(parameters(&restored), parameters(&original));
    restored.load(&loaded, &path, "agent").unwrap();
    assert_eq!(parameters(&restored), parameters(&original));
    assert_eq!(restored.optimizer.step, 3);
    for (a, b) in restored
        .optimizer
        .moment1
        .iter()
        .zip(&original.optimizer.moment1)
    {
        assert_eq!(a.as_vec(), b.as_vec());
    }
    for (a, b) in restored
        .optimizer
        .moment2
        .iter()
        .zip(&original.optimizer.moment2)
    {
        assert_eq!(a.as_vec(), b.as_vec());
    }
    assert_eq!(restored.velocity.s2.len(), 3);
    for (a, b) in restored.velocity.s2.iter().zip(&original.velocity.s2) {
        assert!((a - b).abs() <= 1e-15 * b.abs(), "{a} vs {b}");
    }

    // The next update is the same for both (policy, Adam state, EMA baseline, scale).
    let rollout = reward_rollout(&original, 20);
    let a = original.update(&rollout, &mut seeded(4, 0), 3).unwrap();
    let b = restored.update(&rollout, &mut seeded(4, 0), 3).unwrap();
    for (pa, pb) in parameters(&original).iter().zip(parameters(&restored)) {
        for (x, y) in pa.iter().zip(pb) {
            assert!((x - y).abs() < 1e-6, "{x} vs {y}");
        }
    }
    assert!((stat(&a, "policy/loss") - stat(&b, "policy/loss")).abs() < 1e-6);
    assert!((stat(&a, "policy/advantage_mean") - stat(&b, "policy/advantage_mean")).abs() < 1e-6);

    // A checkpoint that lacks the agent is an error naming what is missing.
    let err = make(3)
        .load(&loaded, &path, "other")
        .unwrap_err()
        .to_string();
    assert!(err.contains("other.policy"), "{err}");
}

#[test]
fn log_probs_recorded_while_acting_give_the_update_of_recomputing_them() {
    // Two identical agents update on the same rollout: one acted in it (its update uses
    // the log π it recorded, tapes and all), the other did not (it runs the ε-network
    // again). Their updated parameters agree to float rounding.
    let make = || {
        let config = ReinforceConfig {
            lr: 1e-2,
            lr_log_sigma: 1e-2,
            ..ReinforceConfig::default()
        };
        Reinforce::new(policy(2, 4, true, 7), Box::new(LeaveOneOut), config).unwrap()
    };
    let (mut acting, mut replaying) = (make(), make());
    let mut rng = seeded(4, 0);
    let mut states = vec![denoise_gym::rng::normal_matrix(
        &Cpu::default(),
        &mut rng,
        32,
        2,
    )];
    for t in (1..=4).rev() {
        let observation = denoise_gym::env::DenoisingState {
            x: states[states.len() - 1].clone(),
            t,
        };
        states.push(acting.act(&observation, &mut rng).unwrap().next);
    }
    let reward = states[4]
        .as_vec()
        .chunks(2)
        .map(|r| -((r[0] - 1.0).powi(2) + r[1].powi(2)))
        .collect();
    let rollout = Rollout {
        states,
        log_probs: Vec::new(),
        terminal_reward: vector(&Cpu::default(), reward),
    };
    let before = parameters(&acting);
    let stats_acting = acting.update(&rollout, &mut seeded(5, 0), 0).unwrap();
    let stats_replaying = replaying.update(&rollout, &mut seeded(5, 0), 0).unwrap();
    assert_eq!(stat(&stats_acting, "policy/log_prob_recorded"), 1.0);
    assert_eq!(stat(&stats_replaying, "policy/log_prob_recorded"), 0.0);
    let loss = stat(&stats_acting, "policy/loss");
    assert!((loss - stat(&stats_replaying, "policy/loss")).abs() <= 1e-5 * loss.abs().max(1.0));
    let mut moved = 0.0f32;
    for ((a, r), b) in parameters(&acting)
        .iter()
        .zip(parameters(&replaying))
        .zip(&before)
    {
        for ((x, y), z) in a.iter().zip(&r).zip(b) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
            moved = moved.max((x - z).abs());
        }
    }
    assert!(moved > 1e-4, "the update moved the policy ({moved})");
    // A second update without acting again has nothing recorded: it recomputes.
    let again = acting.update(&rollout, &mut seeded(5, 0), 1).unwrap();
    assert_eq!(stat(&again, "policy/log_prob_recorded"), 0.0);
}
