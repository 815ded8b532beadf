//! What several agent test files share: a small 2-D sampler-policy and a rollout acted by
//! an agent against a quadratic reward.

#![allow(dead_code)]

use denoise_gym::agent::Agent;
use denoise_gym::env::DenoisingState;
use denoise_gym::nn::Activation;
use denoise_gym::policy::{GaussianPolicy, PolicySpec};
use denoise_gym::rng::{normal_matrix, seeded, ProjectRng};
use denoise_gym::rollout::Rollout;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::vector;
use dfdx::prelude::*;

/// A 2-D policy (16 wide, 2 deep, SiLU) on a VP schedule of `n_steps`, its `x̂_0` clipped
/// to `±clip_x0` (0 = no clip), `σ_1` frozen or not.
pub fn small_policy(
    n_steps: usize,
    seed: u64,
    clip_x0: f32,
    fix_last_sigma: bool,
) -> GaussianPolicy<Cpu> {
    let spec = PolicySpec {
        dim: 2,
        hidden: 16,
        depth: 2,
        time_embed_dim: 16,
        activation: Activation::Silu,
        clip_x0,
        fix_last_sigma,
        last_sigma: 0.0,
    };
    let schedule = Schedule::new(ScheduleKind::Vp, n_steps).unwrap();
    GaussianPolicy::new(&Cpu::default(), spec, schedule, &mut seeded(seed, 0)).unwrap()
}

/// One batch of episodes acted by `agent` (so that PPO records `log π_old`), rewarded by
/// `-‖x_0 - target‖²`.
pub fn quadratic_rollout(
    agent: &mut dyn Agent<Cpu>,
    batch: usize,
    rng: &mut ProjectRng,
    target: [f32; 2],
) -> Rollout<Cpu> {
    let dev = Cpu::default();
    let n_steps = agent.policy().n_steps();
    let mut states = vec![normal_matrix(&dev, rng, batch, 2)];
    let mut log_probs = Vec::new();
    for t in (1..=n_steps).rev() {
        let x = states.last().unwrap().clone();
        let action = agent.act(&DenoisingState { x, t }, rng).unwrap();
        log_probs.extend(action.log_prob);
        states.push(action.next);
    }
    let reward = states
        .last()
        .unwrap()
        .as_vec()
        .chunks(2)
        .map(|r| -((r[0] - target[0]).powi(2) + (r[1] - target[1]).powi(2)))
        .collect();
    Rollout {
        states,
        log_probs,
        terminal_reward: vector(&dev, reward),
    }
}
