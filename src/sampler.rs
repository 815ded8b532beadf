//! The [`Sampler`] trait: anything that draws `x_0` by running a T-step denoising chain
//! from `x_T ~ N(0, I)`. Evaluation, `dgym sample` and in-training snapshots only need
//! this, so that samplers other than the [`GaussianPolicy`] (e.g. DDAEBM's latent
//! generator) are evaluated by the same code.

use crate::policy::GaussianPolicy;
use crate::rng::ProjectRng;
use crate::tensor::{Backend, Matrix};

/// A denoising sampler: `x_T ~ N(0, I)`, then T steps to `x_0`, every random number from
/// the caller's generator (so a seed fixes the samples, and no sample depends on the
/// rest of its batch).
pub trait Sampler<D: Backend> {
    /// The data dimension d.
    fn dim(&self) -> usize;

    /// The whole chain `x_T, x_{T-1}, …, x_0` for `n` samples, each `n × d`.
    fn sample_trajectory(&self, n: usize, rng: &mut ProjectRng) -> Vec<Matrix<D>>;

    /// `n` samples `x_0`, `n × d` (the last state of [`Sampler::sample_trajectory`]).
    fn sample(&self, n: usize, rng: &mut ProjectRng) -> Matrix<D> {
        let mut states = self.sample_trajectory(n, rng);
        let last = states.len().saturating_sub(1);
        states.swap_remove(last)
    }

    /// The per-step noise levels `σ_1..σ_T`, for samplers that have them (for plots).
    fn sigmas(&self) -> Option<Vec<f32>> {
        None
    }
}

impl<D: Backend> Sampler<D> for GaussianPolicy<D> {
    fn dim(&self) -> usize {
        GaussianPolicy::dim(self)
    }
    fn sample_trajectory(&self, n: usize, rng: &mut ProjectRng) -> Vec<Matrix<D>> {
        GaussianPolicy::sample_trajectory(self, n, rng)
    }
    fn sample(&self, n: usize, rng: &mut ProjectRng) -> Matrix<D> {
        GaussianPolicy::sample(self, n, rng)
    }
    fn sigmas(&self) -> Option<Vec<f32>> {
        Some(GaussianPolicy::sigmas(self))
    }
}
