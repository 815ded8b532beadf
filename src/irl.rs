//! The inverse-RL loop (SPEC §3-4), generic over the environment, the agent and the
//! reward: rollout → reward update(s) on data versus the policy's samples → policy update
//! against the updated reward. It owns the alternation and nothing else.

use std::cell::RefCell;

use crate::agent::{Agent, Stats};
use crate::env::DenoisingEnvironment;
use crate::error::{ensure_finite, Result};
use crate::reward::LearnedReward;
use crate::rng::ProjectRng;
use crate::rollout::collect_rollout;
use crate::tensor::{Backend, Matrix};

/// A source of expert batches: `n` data points as a `n × d` matrix.
pub type ExpertSampler<'a, D> = dyn FnMut(usize, &mut ProjectRng) -> Matrix<D> + 'a;

/// One IRL iteration. `env` must score episodes with the same reward model as `reward`
/// (share it with [`crate::reward::shared`]). `env_seed` re-seeds the environment's
/// `x_T` draw, so the iteration is reproducible from the checkpointed `rng` and the
/// iteration number alone.
///
/// The `n_critic` reward updates use a fresh expert batch each; the first uses the
/// rollout's samples as negatives, later ones fresh samples of the current policy. The
/// rollout's terminal rewards are then recomputed under the updated reward before the
/// agent's update, as DxMI does.
#[allow(clippy::too_many_arguments)]
pub fn irl_iteration<D, E, A, R>(
    env: &mut E,
    agent: &mut A,
    reward: &RefCell<R>,
    expert: &mut ExpertSampler<'_, D>,
    n_critic: usize,
    env_seed: u64,
    rng: &mut ProjectRng,
    iteration: u64,
) -> Result<Stats>
where
    D: Backend,
    E: DenoisingEnvironment<D> + ?Sized,
    A: Agent<D> + ?Sized,
    R: LearnedReward<D> + ?Sized,
{
    let mut rollout = collect_rollout(env, agent, Some(env_seed), rng)?;
    let batch = rollout.batch_size();
    let mut stats = Stats::new();
    for k in 0..n_critic {
        let positive = expert(batch, rng);
        let negative = if k == 0 {
            rollout.samples().clone()
        } else {
            agent.policy().sample(batch, rng)
        };
        stats = reward.borrow_mut().learn(&positive, &negative, iteration)?;
    }
    rollout.terminal_reward = reward.borrow().reward(rollout.samples())?;
    let terminal = rollout.terminal_reward.as_vec();
    let (mean, std) = crate::metrics::mean_std(&terminal);
    ensure_finite("reward/return_mean", mean, iteration)?;
    stats.push(("reward/return_mean".to_string(), mean));
    stats.push(("reward/return_std".to_string(), std));
    stats.extend(agent.update(&rollout, rng, iteration)?);
    for (t, sigma) in agent.policy().sigmas().iter().enumerate() {
        stats.push((format!("policy/sigma_{}", t + 1), *sigma as f64));
    }
    Ok(stats)
}
