//! The `Env` trait: a batched, Gymnasium-shaped environment.
//!
//! `reset` returns the first observation; `step(action)` returns the next observation, a
//! reward per sample, and whether the episode terminated or was truncated. A denoising
//! episode has exactly T steps, from `x_T ~ N(0, I)` to a sample `x_0`.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::tensor::{Backend, Matrix, Vector};

/// The observation of a denoising episode: the batch `x_t` and the step `t` (T at reset,
/// 0 at the end; the next action produces `x_{t-1}`).
#[derive(Debug, Clone)]
pub struct DenoisingState<D: Backend> {
    /// The current batch, `B × d`.
    pub x: Matrix<D>,
    /// The current step.
    pub t: usize,
}

/// An environment over denoising trajectories: observes `(x_t, t)`, acts with `x_{t-1}`.
pub trait DenoisingEnvironment<D: Backend>:
    Env<D, Observation = DenoisingState<D>, Action = Matrix<D>>
{
}
impl<D: Backend, E: Env<D, Observation = DenoisingState<D>, Action = Matrix<D>>>
    DenoisingEnvironment<D> for E
{
}

/// What one environment step returns (Gymnasium's `(obs, reward, terminated, truncated, info)`).
#[derive(Debug, Clone)]
pub struct Step<O, D: Backend> {
    /// The observation after the step.
    pub observation: O,
    /// The reward of each sample in the batch.
    pub reward: Vector<D>,
    /// The episode reached a terminal state (for denoising: `t = 0`).
    pub terminated: bool,
    /// The episode was cut short by a time limit (never, for denoising).
    pub truncated: bool,
    /// Extra scalars for logging, by name.
    pub info: BTreeMap<String, f64>,
}

/// A batched environment: every call acts on the whole batch at once, and all samples of
/// a batch share the episode clock (as the T-step denoising chain does).
pub trait Env<D: Backend> {
    /// What the agent observes.
    type Observation;
    /// What the agent does.
    type Action;

    /// Starts a new batch of episodes; `seed` re-seeds the environment's generator
    /// (Gymnasium's `reset(seed=...)`), `None` continues its stream.
    fn reset(&mut self, seed: Option<u64>) -> Result<Self::Observation>;

    /// Applies one action to the batch.
    fn step(&mut self, action: Self::Action) -> Result<Step<Self::Observation, D>>;

    /// Number of parallel episodes (samples) per batch.
    fn batch_size(&self) -> usize;

    /// Number of steps in an episode, when fixed (T for denoising).
    fn horizon(&self) -> Option<usize>;
}
