//! PPO and the diffusion-RL options (docs/algorithms.md §4.1): PPO's gradient against REINFORCE's at
//! ratio 1, the clipped surrogate's zero gradient outside the clip range, `ft_steps`
//! leaving the frozen steps exactly as they were (also across a checkpoint), the
//! discount `gamma_denoising`, the σ floors, and the errors on bad options.

use denoise_gym::agent::{
    discounted_returns_to_go, returns_to_go, Agent, VelocityScale, VelocityScaleKind,
};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::nn::Parameterized;
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::rng::{normal_matrix, seeded, ProjectRng};
use denoise_gym::rollout::Rollout;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::{matrix, vector, Matrix};
use denoise_gym_agents::baselines::{BatchMean, NoBaseline};
use denoise_gym_agents::{Ppo, PpoConfig, Reinforce, ReinforceConfig, ScoredBatch};
use dfdx::prelude::*;

mod common;
use common::{quadratic_rollout, small_policy};

fn policy(n_steps: usize, seed: u64) -> GaussianPolicy<Cpu> {
    clipped_policy(n_steps, seed, 0.0)
}

fn clipped_policy(n_steps: usize, seed: u64, clip_x0: f32) -> GaussianPolicy<Cpu> {
    small_policy(n_steps, seed, clip_x0, false)
}

fn shared(tau_entropy: f64) -> ReinforceConfig {
    let mut config = ReinforceConfig {
        lr: 1e-2,
        lr_log_sigma: 1e-2,
        grad_clip: 0.0,
        velocity_scale: VelocityScaleKind::Fixed,
        ..ReinforceConfig::default()
    };
    config.tau_entropy = tau_entropy;
    config.tau_velocity = 0.05;
    config
}

/// One batch of episodes acted by `agent`, rewarded by `-(x0 - (1, 0))²`.
fn rollout(agent: &mut dyn Agent<Cpu>, batch: usize, rng: &mut ProjectRng) -> Rollout<Cpu> {
    quadratic_rollout(agent, batch, rng, [1.0, 0.0])
}

fn host(gradients: &[Matrix<Cpu>]) -> Vec<Vec<f32>> {
    gradients.iter().map(|g| g.as_vec()).collect()
}

#[test]
fn at_ratio_one_ppo_gradient_is_reinforce_gradient_over_the_fine_tuned_steps() {
    for ft_steps in [None, Some(2)] {
        let config = ReinforceConfig {
            ft_steps,
            normalize_advantages: true,
            ..shared(0.3)
        };
        let mut reinforce =
            Reinforce::new(policy(3, 1), Box::new(BatchMean), config.clone()).unwrap();
        let mut ppo = Ppo::new(
            policy(3, 1),
            Box::new(BatchMean),
            config,
            PpoConfig::default(),
        )
        .unwrap();
        let k = ft_steps.unwrap_or(3);
        let data = rollout(&mut ppo, 8, &mut seeded(5, 0));
        assert_eq!(
            data.log_probs.len(),
            3,
            "PPO records log π_old at every step"
        );

        let batch = reinforce.score(&data).unwrap();
        let expected = host(&reinforce.gradients(reinforce.loss(&batch)).unwrap());

        let batch = ppo.reinforce.score(&data).unwrap();
        assert_eq!(batch.len(), 8 * k);
        let old: Vec<f32> = data
            .log_probs
            .iter()
            .flat_map(|v| v.as_vec())
            .skip(batch.first_row)
            .collect();
        let all: Vec<usize> = (0..batch.len()).collect();
        let (loss, stats) = ppo.minibatch_loss(&batch, &all, &old);
        assert!(stats.approx_kl < 1e-10, "ratio 1: {stats:?}");
        assert_eq!(stats.clip_fraction, 0.0);
        let actual = host(&ppo.reinforce.gradients(loss).unwrap());

        let mut largest = 0.0f32;
        for (name, (e, a)) in ppo
            .reinforce
            .policy
            .parameter_names()
            .iter()
            .zip(expected.iter().zip(&actual))
        {
            for (x, y) in e.iter().zip(a) {
                let scaled = y * k as f32;
                assert!(
                    (x - scaled).abs() <= 1e-5 + 1e-4 * x.abs(),
                    "{name} (ft_steps {ft_steps:?}): REINFORCE {x} vs K·PPO {scaled}"
                );
                largest = largest.max(x.abs());
            }
        }
        assert!(largest > 1e-3, "the gradients are not trivially zero");
    }
}

/// A hand-made batch of one (sample, step) pair of `agent`'s policy at t = 1.
fn one_pair(agent: &Ppo<Cpu>, advantage: f32) -> (ScoredBatch<Cpu>, f32) {
    let dev = Cpu::default();
    let states = matrix(&dev, vec![0.3, -0.2], 1, 2);
    let actions = matrix(&dev, vec![0.5, 0.1], 1, 2);
    let log_prob = agent
        .reinforce
        .policy
        .log_prob(states.clone(), &[1], &actions)
        .as_vec()[0];
    let batch = ScoredBatch {
        states,
        actions,
        steps: vec![1],
        advantages: vec![advantage],
        first_row: 0,
        batch_size: 1,
        squared_lengths: vec![0.0],
        velocity_cost: 0.0,
        reference_means: None,
    };
    (batch, log_prob)
}

#[test]
fn the_clipped_surrogate_has_no_gradient_outside_the_clip_range_in_the_direction_it_pushes() {
    let agent = Ppo::new(
        policy(2, 3),
        Box::new(NoBaseline),
        shared(0.0),
        PpoConfig::default(),
    )
    .unwrap();
    // (log ρ, A, gradient expected): ρ = e^{±0.5} lies outside [0.8, 1.2].
    for (log_ratio, advantage, moves) in [
        (0.5f32, 1.0f32, false), // ρ > 1+ε and A > 0: already pushed up far enough
        (-0.5, -1.0, false),     // ρ < 1-ε and A < 0: already pushed down far enough
        (0.5, -1.0, true),       // ρ > 1+ε but A < 0: the unclipped term pulls back
        (-0.5, 1.0, true),       // ρ < 1-ε but A > 0: likewise
        (0.1, 1.0, true),        // inside the range
    ] {
        let (batch, log_prob) = one_pair(&agent, advantage);
        let old = [log_prob - log_ratio];
        let (loss, stats) = agent.minibatch_loss(&batch, &[0], &old);
        assert!(
            (stats.approx_kl - 0.5 * (log_ratio as f64).powi(2)).abs() < 1e-5,
            "{stats:?}"
        );
        let outside = log_ratio.abs() > 0.2;
        assert_eq!(stats.clip_fraction, if outside { 1.0 } else { 0.0 });
        let gradients = host(&agent.reinforce.gradients(loss).unwrap());
        let largest = gradients
            .iter()
            .flatten()
            .fold(0.0f32, |m, g| m.max(g.abs()));
        if moves {
            assert!(
                largest > 1e-3,
                "log ρ {log_ratio}, A {advantage}: {largest}"
            );
        } else {
            assert_eq!(largest, 0.0, "log ρ {log_ratio}, A {advantage}");
        }
    }
}

/// Means at every step of a fixed batch of states, and the σ_t.
fn outputs(policy: &GaussianPolicy<Cpu>) -> (Vec<Vec<f32>>, Vec<f32>) {
    let x = normal_matrix(&Cpu::default(), &mut seeded(9, 0), 16, 2);
    let means = (1..=policy.n_steps())
        .map(|t| policy.mean(x.clone(), &[t; 16]).as_vec())
        .collect();
    (means, policy.sigmas())
}

fn train(agent: &mut dyn Agent<Cpu>, iterations: u64) {
    let mut rng = seeded(4, 0);
    for i in 0..iterations {
        let data = rollout(agent, 16, &mut rng);
        agent.update(&data, &mut rng, i).unwrap();
    }
}

#[test]
fn with_ft_steps_an_update_leaves_the_frozen_steps_exactly_as_they_were() {
    let (n_steps, k) = (4, 2);
    let config = ReinforceConfig {
        ft_steps: Some(k),
        ..shared(0.1)
    };
    let ppo = PpoConfig {
        minibatch_size: Some(8),
        epochs: 2,
        ..PpoConfig::default()
    };
    let agents: Vec<Box<dyn Agent<Cpu>>> = vec![
        Box::new(Reinforce::new(policy(n_steps, 1), Box::new(BatchMean), config.clone()).unwrap()),
        Box::new(Ppo::new(policy(n_steps, 1), Box::new(BatchMean), config.clone(), ppo).unwrap()),
    ];
    for mut agent in agents {
        let (means, sigmas) = outputs(agent.policy());
        train(agent.as_mut(), 5);
        let (after_means, after_sigmas) = outputs(agent.policy());
        for t in 1..=n_steps {
            if t > k {
                assert_eq!(after_means[t - 1], means[t - 1], "{} t = {t}", agent.name());
                assert_eq!(
                    after_sigmas[t - 1],
                    sigmas[t - 1],
                    "{} t = {t}",
                    agent.name()
                );
            } else {
                assert_ne!(after_means[t - 1], means[t - 1], "{} t = {t}", agent.name());
                assert_ne!(
                    after_sigmas[t - 1],
                    sigmas[t - 1],
                    "{} t = {t}",
                    agent.name()
                );
            }
        }

        // A checkpoint restores the frozen network and σ_t into an agent built on
        // another initialisation (as a resumed run is).
        let mut checkpoint = Checkpoint::new();
        agent.save(&mut checkpoint, "agent").unwrap();
        let path = std::path::Path::new("memory");
        let mut restored: Box<dyn Agent<Cpu>> = if agent.name() == "ppo" {
            Box::new(
                Ppo::new(
                    policy(n_steps, 7),
                    Box::new(BatchMean),
                    config.clone(),
                    ppo_default(),
                )
                .unwrap(),
            )
        } else {
            Box::new(
                Reinforce::new(policy(n_steps, 7), Box::new(BatchMean), config.clone()).unwrap(),
            )
        };
        assert_ne!(outputs(restored.policy()), outputs(agent.policy()));
        restored.load(&checkpoint, path, "agent").unwrap();
        assert_eq!(outputs(restored.policy()), outputs(agent.policy()));

        // So does a bare policy (as `dgym sample` loads a finished run's sampler).
        let mut sampler = policy(n_steps, 8);
        checkpoint
            .load_model(path, "agent.policy", &mut sampler)
            .unwrap();
        sampler
            .load_step_options(&checkpoint, path, "agent.policy")
            .unwrap();
        assert_eq!(sampler.ft_steps(), k);
        assert_eq!(outputs(&sampler), outputs(agent.policy()));
        // Without the frozen part, that policy differs at the frozen steps.
        let mut bare = policy(n_steps, 8);
        checkpoint
            .load_model(path, "agent.policy", &mut bare)
            .unwrap();
        let (bare_means, _) = outputs(&bare);
        assert_ne!(
            bare_means[n_steps - 1],
            outputs(agent.policy()).0[n_steps - 1]
        );
    }
}

fn ppo_default() -> PpoConfig {
    PpoConfig::default()
}

fn assert_close(actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!((*a as f64 - e).abs() < 1e-6, "{actual:?} vs {expected:?}");
    }
}

#[test]
fn gamma_denoising_discounts_the_return_to_go() {
    // T = 3, B = 2, d = 2, squared step lengths t = 3: (1, 4), t = 2: (4, 9), t = 1: (1, 4)
    // (step-major from t = T), fixed s_t² = 1, τ_v = 0.01: r_t = -0.0025 L.
    let lengths = [1.0, 4.0, 4.0, 9.0, 1.0, 4.0];
    let terminal = [-1.0, 0.5];
    let schedule = Schedule::new(ScheduleKind::Vp, 3).unwrap();
    let scale = VelocityScale::new(VelocityScaleKind::Fixed, &schedule, 1.0);
    let (returns, cost) =
        discounted_returns_to_go(&terminal, &lengths, 3, 2, &scale, 0.01, 0.5).unwrap();
    // Sample 0: G_1 = -1 - 0.0025 = -1.0025, G_2 = -0.01 + 0.5 G_1 = -0.51125,
    // G_3 = -0.0025 + 0.5 G_2 = -0.258125. Sample 1: G_1 = 0.5 - 0.01 = 0.49,
    // G_2 = -0.0225 + 0.245 = 0.2225, G_3 = -0.01 + 0.11125 = 0.10125.
    assert_close(
        &returns,
        &[-0.258125, 0.10125, -0.51125, 0.2225, -1.0025, 0.49],
    );
    // The velocity cost is reported undiscounted, as with γ = 1.
    let (undiscounted, same_cost) = returns_to_go(&terminal, &lengths, 3, 2, &scale, 0.01).unwrap();
    assert_eq!(cost, same_cost);
    let (one, _) = discounted_returns_to_go(&terminal, &lengths, 3, 2, &scale, 0.01, 1.0).unwrap();
    assert_eq!(one, undiscounted);
    for gamma in [0.0, -0.5, 1.5, f64::NAN] {
        let err = discounted_returns_to_go(&terminal, &lengths, 3, 2, &scale, 0.01, gamma)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gamma_denoising") && err.contains("(0, 1]"),
            "{err}"
        );
    }

    // REINFORCE's advantages (no baseline) are these discounted returns.
    let dev = Cpu::default();
    let m = |rows: &[[f32; 2]]| matrix(&dev, rows.iter().flatten().copied().collect(), 2, 2);
    let data = Rollout {
        states: vec![
            m(&[[0.0, 0.0], [1.0, 1.0]]),
            m(&[[1.0, 0.0], [1.0, 3.0]]),
            m(&[[1.0, 2.0], [4.0, 3.0]]),
            m(&[[0.0, 2.0], [4.0, 1.0]]),
        ],
        log_probs: Vec::new(),
        terminal_reward: vector(&dev, terminal.to_vec()),
    };
    let config = ReinforceConfig {
        gamma_denoising: 0.5,
        tau_entropy: 0.0,
        tau_velocity: 0.01,
        velocity_scale: VelocityScaleKind::Fixed,
        ..ReinforceConfig::default()
    };
    let mut agent = Reinforce::new(policy(3, 1), Box::new(NoBaseline), config).unwrap();
    assert_eq!(agent.score(&data).unwrap().advantages, returns);
}

#[test]
fn sigma_floors_apply_when_sampling_and_when_scoring() {
    let dev = Cpu::default();
    let mut p = policy(3, 1);
    let sigmas = p.sigmas();
    // A floor between σ_1 and σ_3: it raises σ_1 and leaves σ_3 alone.
    let floor = 0.5 * (sigmas[0] + sigmas[2]) as f64;
    assert!(
        (sigmas[0] as f64) < floor && floor < sigmas[2] as f64,
        "{sigmas:?}"
    );
    p.set_sigma_floors(Some(floor), Some(floor)).unwrap();
    let x = matrix(&dev, vec![0.2, -0.1], 1, 2);
    let noise = matrix(&dev, vec![1.0, 0.0], 1, 2);
    for (t, expected) in [(1, floor as f32), (3, sigmas[2])] {
        let mean = p.mean(x.clone(), &[t]).as_vec();
        let step = p.sample_step(&x, t, &noise).as_vec();
        assert!((step[0] - mean[0] - expected).abs() < 1e-5, "t = {t}");
        // log π at the mean is -d log σ - (d/2) log 2π with the floored σ.
        let at_mean = matrix(&dev, mean, 1, 2);
        let log_prob = p.log_prob(x.clone(), &[t], &at_mean).as_vec()[0];
        let expected_log_prob = -2.0 * expected.ln() - 2.0 * denoise_gym::policy::HALF_LOG_TWO_PI;
        assert!((log_prob - expected_log_prob).abs() < 1e-5, "t = {t}");
    }
    // Below the floor, log π does not depend on log σ_1.
    let action = matrix(&dev, vec![0.4, 0.0], 1, 2);
    let loss = p
        .log_prob(x.clone().traced(Gradients::leaky()), &[1], &action)
        .sum();
    let mut grads = loss.backward();
    let g = denoise_gym::optim::gradients_of(&mut grads, &[&p.log_sigma]).unwrap();
    assert_eq!(g[0].as_vec()[0], 0.0);

    for bad in [0.0, -0.1, f64::NAN] {
        let err = p.set_sigma_floors(Some(bad), None).unwrap_err().to_string();
        assert!(
            err.contains("min_sigma_sample") && err.contains("> 0"),
            "{err}"
        );
        let err = p.set_sigma_floors(None, Some(bad)).unwrap_err().to_string();
        assert!(err.contains("min_sigma_logprob"), "{err}");
    }
}

#[test]
fn bad_options_are_errors_naming_the_key() {
    let make = |config: ReinforceConfig, ppo: PpoConfig| {
        Ppo::new(policy(3, 1), Box::new(NoBaseline), config, ppo)
            .err()
            .map(|e| e.to_string())
    };
    let cases: Vec<(ReinforceConfig, PpoConfig, &str)> = vec![
        (
            ReinforceConfig {
                ft_steps: Some(4),
                ..shared(0.1)
            },
            PpoConfig::default(),
            "ft_steps",
        ),
        (
            ReinforceConfig {
                ft_steps: Some(0),
                ..shared(0.1)
            },
            PpoConfig::default(),
            "ft_steps",
        ),
        (
            ReinforceConfig {
                gamma_denoising: 0.0,
                ..shared(0.1)
            },
            PpoConfig::default(),
            "gamma_denoising",
        ),
        (
            ReinforceConfig {
                gamma_denoising: 1.01,
                ..shared(0.1)
            },
            PpoConfig::default(),
            "gamma_denoising",
        ),
        (
            ReinforceConfig {
                min_sigma_sample: Some(0.0),
                ..shared(0.1)
            },
            PpoConfig::default(),
            "min_sigma_sample",
        ),
        (
            ReinforceConfig {
                min_sigma_logprob: Some(-1.0),
                ..shared(0.1)
            },
            PpoConfig::default(),
            "min_sigma_logprob",
        ),
        (
            shared(0.1),
            PpoConfig {
                clip: 0.0,
                ..PpoConfig::default()
            },
            "clip",
        ),
        (
            shared(0.1),
            PpoConfig {
                epochs: 0,
                ..PpoConfig::default()
            },
            "epochs",
        ),
        (
            shared(0.1),
            PpoConfig {
                minibatch_size: Some(0),
                ..PpoConfig::default()
            },
            "minibatch_size",
        ),
        (
            shared(0.1),
            PpoConfig {
                target_kl: Some(0.0),
                ..PpoConfig::default()
            },
            "target_kl",
        ),
    ];
    for (config, ppo, key) in cases {
        let err = make(config, ppo).unwrap_or_else(|| panic!("{key}: accepted"));
        assert!(err.contains(key), "{key}: {err}");
    }
    assert!(make(
        ReinforceConfig {
            ft_steps: Some(3),
            ..shared(0.1)
        },
        PpoConfig::default()
    )
    .is_none());

    // A minibatch larger than the batch's (sample, step) pairs fails at the update.
    let ppo = PpoConfig {
        minibatch_size: Some(2 * 8 + 1),
        ..PpoConfig::default()
    };
    let config = ReinforceConfig {
        ft_steps: Some(2),
        ..shared(0.1)
    };
    let mut agent = Ppo::new(policy(3, 1), Box::new(NoBaseline), config, ppo).unwrap();
    let mut rng = seeded(1, 0);
    let data = rollout(&mut agent, 8, &mut rng);
    let err = agent.update(&data, &mut rng, 0).unwrap_err().to_string();
    assert!(
        err.contains("minibatch_size") && err.contains("16"),
        "{err}"
    );

    // PPO refuses a rollout without log π_old.
    let mut agent = Ppo::new(
        policy(3, 1),
        Box::new(NoBaseline),
        shared(0.1),
        PpoConfig::default(),
    )
    .unwrap();
    let mut data = rollout(&mut agent, 8, &mut rng);
    data.log_probs.clear();
    let err = agent.update(&data, &mut rng, 0).unwrap_err().to_string();
    assert!(err.contains("log π_old"), "{err}");
}

#[test]
fn ppo_improves_the_reward_on_a_tiny_problem_and_logs_its_statistics() {
    let ppo = PpoConfig {
        minibatch_size: Some(16),
        target_kl: Some(0.05),
        ..PpoConfig::default()
    };
    let config = ReinforceConfig {
        normalize_advantages: true,
        ..shared(0.0)
    };
    // An untrained network's x̂_0 is far off; clipping it keeps the rewards O(1).
    let mut agent = Ppo::new(clipped_policy(2, 2, 3.0), Box::new(BatchMean), config, ppo).unwrap();
    let mut rng = seeded(6, 0);
    let mean_reward = |agent: &mut Ppo<Cpu>, rng: &mut ProjectRng| {
        let data = rollout(agent, 256, rng);
        let r = data.terminal_reward.as_vec();
        r.iter().sum::<f32>() / r.len() as f32
    };
    let before = mean_reward(&mut agent, &mut rng);
    let mut last = Vec::new();
    for i in 0..40 {
        let data = rollout(&mut agent, 32, &mut rng);
        last = agent.update(&data, &mut rng, i).unwrap();
    }
    let after = mean_reward(&mut agent, &mut rng);
    println!("mean reward {before} → {after}");
    assert!(after > before + 0.3, "mean reward {before} → {after}");
    let stat = |name: &str| {
        last.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap()
    };
    assert!(stat("policy/approx_kl") >= 0.0);
    assert!((0.0..=1.0).contains(&stat("policy/clip_fraction")));
    // 4 epochs × 4 minibatches of 16 pairs, unless the KL target stopped them early.
    let updates = stat("policy/ppo_updates");
    let stopped = stat("policy/ppo_early_stop");
    assert!(
        updates == 16.0 && stopped == 0.0 || updates < 16.0 && stopped == 1.0,
        "{last:?}"
    );
}
