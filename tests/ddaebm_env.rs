//! DDAEBM in the environment's terms: the latent generator acts in the denoising
//! environment, the `t = 0` energy `-D(x, 0)` scores the finished episode as a core
//! `RewardModel`, and the per-step reward `D(x_{t-1}, t-1) + log q(x_t | x_{t-1})` is
//! defined at every transition.

use denoise_gym::env::Env;
use denoise_gym::nn::Activation;
use denoise_gym::reward::shared;
use denoise_gym::rng::seeded;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym_agents::ddaebm::{forward_log_density, Ddaebm, DdaebmConfig, DdaebmSpec};
use denoise_gym_envs::DenoisingEnv;
use dfdx::prelude::*;

#[test]
fn the_generator_acts_in_the_denoising_env_and_the_energy_scores_it() {
    let dev = Cpu::default();
    let spec = DdaebmSpec {
        dim: 2,
        n_z: 2,
        hidden: 16,
        depth: 2,
        time_embed_dim: 8,
        activation: Activation::Relu,
    };
    let schedule = Schedule::new(ScheduleKind::Vp, 3).unwrap();
    let model = Ddaebm::<Cpu>::new(
        &dev,
        &spec,
        schedule.clone(),
        DdaebmConfig::default(),
        &mut seeded(0, 0),
    )
    .unwrap();
    let reward = shared(model.energy.energy_at_zero());
    let mut env = DenoisingEnv::new(dev.clone(), 2, 3, 8, reward, 5).unwrap();

    let mut rng = seeded(1, 0);
    let mut observation = env.reset(Some(11)).unwrap();
    let mut states = vec![observation.x.clone()];
    let final_step = loop {
        let t = observation.t;
        let action = model.generator.act(&observation, &mut rng);
        assert!(action.log_prob.is_none());
        let step = env.step(action.next).unwrap();
        // The per-step reward is the conditional log-density up to log Z.
        let per_step = model
            .step_reward(&step.observation.x, &observation.x, t)
            .as_vec();
        let steps = vec![t - 1; 8];
        let d = model
            .energy
            .forward(step.observation.x.clone(), &steps)
            .as_vec();
        let log_q = forward_log_density(
            &schedule,
            step.observation.x.clone(),
            &observation.x,
            &[t; 8],
        )
        .as_vec();
        for i in 0..8 {
            assert!((per_step[i] - (d[i] + log_q[i])).abs() < 1e-4);
        }
        states.push(step.observation.x.clone());
        if step.terminated {
            break step;
        }
        observation = step.observation;
    };
    assert_eq!(states.len(), 4);
    // The environment's terminal reward is D(x_0, 0).
    let d0 = model
        .energy
        .forward(final_step.observation.x.clone(), &[0; 8])
        .as_vec();
    for (r, d) in final_step.reward.as_vec().iter().zip(&d0) {
        assert!((r - d).abs() < 1e-4, "reward {r} vs D(x_0, 0) {d}");
    }
}
