//! The denoising environment and the oracle reward.

use std::collections::BTreeMap;
use std::sync::Arc;

use denoise_gym::agent::Stats;
use denoise_gym::checkpoint::Checkpoint;
pub use denoise_gym::env::DenoisingState;
use denoise_gym::env::{Env, Step};
use denoise_gym::error::{Error, Result};
use denoise_gym::reward::{LearnedReward, RewardModel, SharedReward};
use denoise_gym::rng::{normal_matrix, normal_vec, seeded, ProjectRng};
use denoise_gym::tensor::{matrix, vector, Backend, Matrix, Vector};
use dfdx::prelude::*;

use crate::data::Dataset;

/// A batch of T-step denoising episodes. `reset` draws `x_T ~ N(0, I)`; `step(x_{t-1})`
/// advances the clock; the episode terminates at `t = 0`, where the reward model scores
/// the samples. Intermediate rewards are 0: running costs (entropy, velocity) belong to
/// the agent's objective, not to the environment.
pub struct DenoisingEnv<D: Backend> {
    device: D,
    dim: usize,
    n_steps: usize,
    batch_size: usize,
    reward_model: SharedReward<D>,
    noise: NoiseStreams,
    state: Option<DenoisingState<D>>,
}

/// Where the starting noise `x_T` of a reset comes from.
enum NoiseStreams {
    /// One generator for the whole batch (the training environment's draws).
    Batch(Box<ProjectRng>),
    /// One generator per row, row i seeded with `seed + i` (Gymnasium's vector
    /// environments: row i of a batch seeded with s is a single episode seeded with s + i).
    PerRow(Vec<ProjectRng>),
}

impl NoiseStreams {
    fn per_row(seed: u64, rows: usize) -> Vec<ProjectRng> {
        (0..rows as u64)
            .map(|i| seeded(seed.wrapping_add(i), 0))
            .collect()
    }

    fn reseed(&mut self, seed: u64) {
        match self {
            NoiseStreams::Batch(rng) => **rng = seeded(seed, 0),
            NoiseStreams::PerRow(rows) => *rows = Self::per_row(seed, rows.len()),
        }
    }

    fn draw<D: Backend>(&mut self, device: &D, rows: usize, dim: usize) -> Matrix<D> {
        match self {
            NoiseStreams::Batch(rng) => normal_matrix(device, rng.as_mut(), rows, dim),
            NoiseStreams::PerRow(rngs) => {
                let values = rngs
                    .iter_mut()
                    .flat_map(|rng| normal_vec(rng, dim))
                    .collect();
                matrix(device, values, rows, dim)
            }
        }
    }
}

impl<D: Backend> DenoisingEnv<D> {
    /// An environment of `batch_size` episodes of `n_steps` steps in `dim` dimensions.
    pub fn new(
        device: D,
        dim: usize,
        n_steps: usize,
        batch_size: usize,
        reward_model: SharedReward<D>,
        seed: u64,
    ) -> Result<Self> {
        if n_steps == 0 || batch_size == 0 || dim == 0 {
            return Err(Error::InvalidArgument(format!(
                "DenoisingEnv needs n_steps, batch_size and dim ≥ 1 (got {n_steps}, {batch_size}, {dim})"
            )));
        }
        {
            let reward = reward_model.borrow();
            if reward.dim() != dim {
                return Err(Error::InvalidArgument(format!(
                    "reward model `{}` takes dimension {}, the environment has {dim}",
                    reward.name(),
                    reward.dim()
                )));
            }
        }
        Ok(Self {
            device,
            dim,
            n_steps,
            batch_size,
            reward_model,
            noise: NoiseStreams::Batch(Box::new(seeded(seed, 0))),
            state: None,
        })
    }

    /// The same environment with one noise generator per row: a reset with seed `s` draws
    /// row i's `x_T` from its own generator seeded with `s + i` (and `seed + i` before any
    /// seeded reset), so that row i is the episode a batch-1 environment seeded with
    /// `s + i` would start. Gymnasium's vector environments promise this; the training
    /// environment keeps its one generator (and its numbers).
    pub fn with_row_seeds(mut self, seed: u64) -> Self {
        self.noise = NoiseStreams::PerRow(NoiseStreams::per_row(seed, self.batch_size));
        self
    }

    /// The data dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The reward model (shared with whoever learns it). The environment itself never clones
    /// this `Rc`: the Python binding relies on that to move an environment between threads
    /// (python/src/env.rs).
    pub fn reward_model(&self) -> &SharedReward<D> {
        &self.reward_model
    }
}

impl<D: Backend> Env<D> for DenoisingEnv<D> {
    type Observation = DenoisingState<D>;
    type Action = Matrix<D>;

    fn reset(&mut self, seed: Option<u64>) -> Result<DenoisingState<D>> {
        if let Some(seed) = seed {
            self.noise.reseed(seed);
        }
        let x = self.noise.draw(&self.device, self.batch_size, self.dim);
        let state = DenoisingState { x, t: self.n_steps };
        self.state = Some(state.clone());
        Ok(state)
    }

    fn step(&mut self, action: Matrix<D>) -> Result<Step<DenoisingState<D>, D>> {
        let t = match &self.state {
            None => return Err(Error::InvalidArgument("step() before reset()".into())),
            Some(state) if state.t == 0 => {
                return Err(Error::InvalidArgument(
                    "step() after the episode terminated at t = 0; call reset()".into(),
                ))
            }
            Some(state) => state.t,
        };
        let shape = *action.shape();
        if shape != (self.batch_size, self.dim) {
            return Err(Error::InvalidArgument(format!(
                "action has shape {shape:?}, expected ({}, {})",
                self.batch_size, self.dim
            )));
        }
        let next_t = t - 1;
        let terminated = next_t == 0;
        let reward = if terminated {
            self.reward_model.borrow().reward(&action)?
        } else {
            self.device.zeros_like(&(self.batch_size,))
        };
        let state = DenoisingState {
            x: action,
            t: next_t,
        };
        self.state = Some(state.clone());
        let mut info = BTreeMap::new();
        info.insert("t".to_string(), next_t as f64);
        Ok(Step {
            observation: state,
            reward,
            terminated,
            truncated: false,
            info,
        })
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn horizon(&self) -> Option<usize> {
        Some(self.n_steps)
    }
}

/// The exact log-density of a known law (e.g. a Gaussian mixture) as the reward: lets an
/// agent be tested before any reward is learned.
pub struct OracleReward {
    law: Arc<dyn Dataset>,
}

impl OracleReward {
    /// Errors when the data set has no exact density.
    pub fn new(law: Arc<dyn Dataset>) -> Result<Self> {
        let probe = vec![0.0f32; law.dim()];
        if law.log_density(&probe).is_none() {
            return Err(Error::InvalidArgument(format!(
                "data set `{}` has no exact log-density; the oracle reward needs a mixture",
                law.name()
            )));
        }
        Ok(Self { law })
    }
}

impl<D: Backend> RewardModel<D> for OracleReward {
    fn reward(&self, x0: &Matrix<D>) -> Result<Vector<D>> {
        let points = x0.as_vec();
        let log_density = self.law.log_density(&points).ok_or_else(|| {
            Error::InvalidArgument(format!("`{}` lost its density", self.law.name()))
        })?;
        Ok(vector(
            x0.device(),
            log_density.into_iter().map(|v| v as f32).collect(),
        ))
    }

    fn dim(&self) -> usize {
        self.law.dim()
    }

    fn name(&self) -> &str {
        "oracle"
    }
}

impl<D: Backend> LearnedReward<D> for OracleReward {
    /// The exact density needs no learning.
    fn learn(
        &mut self,
        _positive: &Matrix<D>,
        _negative: &Matrix<D>,
        _iteration: u64,
    ) -> Result<Stats> {
        Ok(Vec::new())
    }
    fn save(&self, _checkpoint: &mut Checkpoint, _prefix: &str) -> Result<()> {
        Ok(())
    }
    fn load(
        &mut self,
        _checkpoint: &Checkpoint,
        _path: &std::path::Path,
        _prefix: &str,
    ) -> Result<()> {
        Ok(())
    }
}
