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
