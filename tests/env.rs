//! The denoising environment (episode length, shapes, termination, oracle reward).

use std::sync::Arc;

use denoise_gym::env::Env;
use denoise_gym::error::Result;
use denoise_gym::reward::{shared, RewardModel};
use denoise_gym::tensor::{vector, Matrix, Vector};
use denoise_gym_envs::{DenoisingEnv, GaussianMixture, OracleReward};
use dfdx::prelude::*;

/// A reward that is the negative squared norm, to check what the env hands it.
struct NegativeNorm;
impl RewardModel<Cpu> for NegativeNorm {
    fn reward(&self, x0: &Matrix<Cpu>) -> Result<Vector<Cpu>> {
        let v = x0.as_vec();
        Ok(vector(
            x0.device(),
            v.chunks(2).map(|r| -(r[0] * r[0] + r[1] * r[1])).collect(),
        ))
    }
    fn dim(&self) -> usize {
        2
    }
}

#[test]
fn an_episode_has_t_steps_and_rewards_only_at_the_end() {
    let dev = Cpu::default();
    let mut env = DenoisingEnv::new(dev.clone(), 2, 4, 8, shared(NegativeNorm), 0).unwrap();
    assert_eq!(env.horizon(), Some(4));
    let mut obs = env.reset(Some(1)).unwrap();
    assert_eq!(obs.t, 4);
    assert_eq!(*obs.x.shape(), (8, 2));
    let mut steps = 0;
    loop {
        let action = obs.x.clone() * 0.5;
        let step = env.step(action.clone()).unwrap();
        steps += 1;
        assert_eq!(step.observation.t, 4 - steps);
        assert!(!step.truncated);
        let reward = step.reward.as_vec();
        assert_eq!(reward.len(), 8);
        if step.terminated {
            let a = action.as_vec();
            for i in 0..8 {
                let expected = -(a[2 * i].powi(2) + a[2 * i + 1].powi(2));
                assert!((reward[i] - expected).abs() < 1e-6);
            }
            break;
        }
        assert!(reward.iter().all(|&r| r == 0.0));
        obs = step.observation;
    }
    assert_eq!(steps, 4);
    let err = env.step(obs.x).unwrap_err().to_string();
    assert!(err.contains("terminated"), "{err}");
}

#[test]
fn reset_with_a_seed_is_reproducible_and_x_t_is_standard_normal() {
    let mut env = DenoisingEnv::new(Cpu::default(), 2, 3, 4000, shared(NegativeNorm), 0).unwrap();
    let a = env.reset(Some(5)).unwrap().x.as_vec();
    let b = env.reset(Some(5)).unwrap().x.as_vec();
    assert_eq!(a, b);
    let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
    let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
    assert!(
        mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
        "mean {mean} var {var}"
    );
}

#[test]
fn bad_actions_and_mismatched_rewards_are_errors() {
    let dev = Cpu::default();
    let mut env = DenoisingEnv::new(dev.clone(), 2, 3, 4, shared(NegativeNorm), 0).unwrap();
    let before = env.step(dev.zeros_like(&(4, 2)));
    assert!(before.unwrap_err().to_string().contains("reset"));
    env.reset(None).unwrap();
    let err = env.step(dev.zeros_like(&(3, 2))).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
    assert!(DenoisingEnv::new(dev.clone(), 3, 3, 4, shared(NegativeNorm), 0).is_err());
    assert!(DenoisingEnv::new(dev, 2, 0, 4, shared(NegativeNorm), 0).is_err());
}

#[test]
fn the_oracle_reward_is_the_exact_mixture_log_density() {
    let dev = Cpu::default();
    let law = GaussianMixture::eight_gaussians();
    let oracle = OracleReward::new(Arc::new(law.clone())).unwrap();
    let centre = law.means()[0].clone();
    let x = dev.tensor_from_vec(vec![centre[0] as f32, centre[1] as f32, 0.0, 0.0], (2, 2));
    let r = RewardModel::<Cpu>::reward(&oracle, &x).unwrap().as_vec();
    // At a centre: log(1/8 · N(0; 0, σ²I)) (other modes are > 5σ away).
    let sigma = law.stds()[0];
    let expected = (1.0f64 / 8.0).ln() - (2.0 * std::f64::consts::PI * sigma * sigma).ln();
    assert!(
        (r[0] as f64 - expected).abs() < 1e-3,
        "{} vs {expected}",
        r[0]
    );
    assert!(r[1] < r[0] - 10.0, "the origin is far from every mode");
    assert!(OracleReward::new(Arc::new(denoise_gym_envs::data::Moons)).is_err());
}
