//! Trajectory storage: the states of a batch of denoising episodes, their per-step
//! log-probabilities at sampling time (`log π_old`, for PPO-style re-scoring), and the
//! terminal reward.

use dfdx::prelude::*;

use crate::agent::Agent;
use crate::env::{DenoisingEnvironment, DenoisingState};
use crate::error::{Error, Result};
use crate::rng::ProjectRng;
use crate::tensor::{Backend, Matrix, Vector};

/// One batch of finished episodes.
#[derive(Debug, Clone)]
pub struct Rollout<D: Backend> {
    /// `x_T, x_{T-1}, …, x_0`: `states[k]` is `x_{T-k}`, each `B × d`.
    pub states: Vec<Matrix<D>>,
    /// `log π_old(x_{t-1} | x_t)` recorded while acting, `log_probs[k]` for the step from
    /// `states[k]` to `states[k+1]`; empty when the agent does not record them.
    pub log_probs: Vec<Vector<D>>,
    /// The environment's terminal reward of each episode (`-E(x_0)` for an EBM).
    pub terminal_reward: Vector<D>,
}

impl<D: Backend> Rollout<D> {
    /// Number of steps T.
    pub fn n_steps(&self) -> usize {
        self.states.len().saturating_sub(1)
    }
    /// Number of episodes B.
    pub fn batch_size(&self) -> usize {
        self.states.first().map_or(0, |s| s.shape().0)
    }
    /// Data dimension d.
    pub fn dim(&self) -> usize {
        self.states.first().map_or(0, |s| s.shape().1)
    }
    /// `x_t` for `t ∈ 0..=T`.
    pub fn state(&self, t: usize) -> &Matrix<D> {
        &self.states[self.n_steps() - t]
    }
    /// The final samples `x_0`.
    pub fn samples(&self) -> &Matrix<D> {
        self.state(0)
    }

    /// All T transitions stacked into single `T·B × d` batches, so that an agent scores
    /// every step in one network call: `(x_t rows, x_{t-1} rows, t of each row)`, ordered
    /// by step from t = T down to 1, samples in order within a step.
    pub fn stacked_transitions(&self) -> (Matrix<D>, Matrix<D>, Vec<usize>) {
        let n_steps = self.n_steps();
        let (b, d) = (self.batch_size(), self.dim());
        let mut current = Vec::with_capacity(n_steps * b * d);
        let mut next = Vec::with_capacity(n_steps * b * d);
        let mut ts = Vec::with_capacity(n_steps * b);
        for k in 0..n_steps {
            current.extend(self.states[k].as_vec());
            next.extend(self.states[k + 1].as_vec());
            ts.extend(std::iter::repeat_n(n_steps - k, b));
        }
        let dev = self.states[0].device();
        (
            dev.tensor_from_vec(current, (n_steps * b, d)),
            dev.tensor_from_vec(next, (n_steps * b, d)),
            ts,
        )
    }

    /// `‖x_{t-1} - x_t‖²` of every transition, in the order of [`Rollout::stacked_transitions`].
    pub fn squared_step_lengths(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n_steps() * self.batch_size());
        for k in 0..self.n_steps() {
            let diff = (self.states[k + 1].clone() - self.states[k].clone()).square();
            out.extend(diff.sum::<(usize,), Axis<1>>().as_vec());
        }
        out
    }
}

/// Runs one batch of episodes of `env` with `agent`'s actions: reset (re-seeded with
/// `seed`, so that `x_T` is reproducible from the iteration alone), then T steps.
pub fn collect_rollout<D, E, A>(
    env: &mut E,
    agent: &mut A,
    seed: Option<u64>,
    rng: &mut ProjectRng,
) -> Result<Rollout<D>>
where
    D: Backend,
    E: DenoisingEnvironment<D> + ?Sized,
    A: Agent<D> + ?Sized,
{
    let mut observation: DenoisingState<D> = env.reset(seed)?;
    let mut states = vec![observation.x.clone()];
    let mut log_probs = Vec::new();
    loop {
        let action = agent.act(&observation, rng)?;
        if let Some(log_prob) = action.log_prob {
            log_probs.push(log_prob);
        }
        let step = env.step(action.next)?;
        states.push(step.observation.x.clone());
        if step.terminated || step.truncated {
            return Ok(Rollout {
                states,
                log_probs,
                terminal_reward: step.reward,
            });
        }
        if states.len() > 100_000 {
            return Err(Error::InvalidArgument("episode did not terminate".into()));
        }
        observation = step.observation;
    }
}
