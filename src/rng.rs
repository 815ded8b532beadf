//! The project-owned random number generator.
//!
//! dfdx's `Cpu` device keeps its RNG private, so anything drawn from it cannot be
//! checkpointed. Every random number in this project (noise, time steps, data, minibatch
//! order) is drawn on the host from a serialisable [`ProjectRng`] and copied into tensors,
//! which is what makes a resumed run reproduce an uninterrupted one bit for bit.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::tensor::{matrix, Backend, Matrix};

/// The serialisable generator used everywhere in the project.
pub type ProjectRng = rand_chacha::ChaCha8Rng;

/// A generator seeded from `seed` on an independent `stream` (e.g. one for training, one
/// for evaluation), so that adding a consumer of randomness in one place does not shift
/// the numbers drawn in another.
pub fn seeded(seed: u64, stream: u64) -> ProjectRng {
    let mut rng = ProjectRng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The named random streams of a run: each consumer of randomness draws from its own
/// stream of the run's seed ([`Stream::rng`]), so that adding draws in one place never
/// shifts the numbers drawn in another. The values are part of the run format: a run
/// written by an earlier build resumes to the same numbers only while they stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Stream {
    /// The denoising environment's `x_T` draws (re-seeded every IRL iteration).
    Environment = 0,
    /// The sampler-policy's initial weights and `σ_t`.
    PolicyInit = 1,
    /// DSM pretraining: data batches, time steps, noise.
    Pretrain = 2,
    /// Evaluation: samples, fresh data, projection directions (and in-training
    /// snapshots, on a seed mixed with the step).
    Eval = 3,
    /// The trajectories drawn for `dgym eval`'s figures.
    EvalTrajectory = 4,
    /// The EBM reward's initial weights.
    RewardInit = 11,
    /// The IRL phase: expert batches, extra policy samples, the agents' own draws.
    Finetune = 12,
    /// The held-out data that fits the EBM's temperature `T_E`.
    HeldOut = 13,
    /// DDAEBM's initial weights.
    DdaebmInit = 21,
    /// DDAEBM training: data, time steps, every noise.
    Ddaebm = 22,
    /// `dgym grad-variance`: the measured batches.
    GradVarianceMeasured = 41,
    /// `dgym grad-variance`: the warm-up batches.
    GradVarianceWarmup = 42,
    /// The agent's own networks at initialisation: the value baseline of REINFORCE and
    /// PPO, or DxDP's value function (an agent has one or the other).
    AgentInit = 111,
    /// `dgym bench`'s inputs.
    Bench = 999,
}

impl Stream {
    /// A generator on this stream of `seed`.
    pub fn rng(self, seed: u64) -> ProjectRng {
        seeded(seed, self as u64)
    }
}

/// `n` standard-normal draws.
pub fn normal_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// A `rows × cols` matrix of standard-normal draws from the project RNG.
pub fn normal_matrix<D: Backend>(
    dev: &D,
    rng: &mut impl Rng,
    rows: usize,
    cols: usize,
) -> Matrix<D> {
    matrix(dev, normal_vec(rng, rows * cols), rows, cols)
}

/// Serialises a generator's full state (seed, stream and position) to JSON.
pub fn rng_to_json(rng: &ProjectRng) -> Result<String> {
    serde_json::to_string(rng).map_err(|e| Error::InvalidArgument(format!("rng state: {e}")))
}

/// Restores a generator from [`rng_to_json`]'s output.
pub fn rng_from_json(json: &str) -> Result<ProjectRng> {
    serde_json::from_str(json).map_err(|e| Error::InvalidArgument(format!("rng state: {e}")))
}
