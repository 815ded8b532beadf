//! # denoise-gym-agents
//!
//! Reinforcement-learning algorithms that improve a diffusion sampler-policy, each behind
//! the core [`denoise_gym::agent::Agent`] trait: REINFORCE with the baselines of SPEC §4.1
//! ([`reinforce`], [`baselines`]). A user's own algorithm implements the same trait from
//! outside this crate and trains through the same loop. [`ddaebm`] holds DDAEBM (SPEC §5):
//! a per-step energy, a latent generator that acts in the denoising environment, and its
//! adversarial training step.

pub mod baselines;
pub mod ddaebm;
pub mod reinforce;

pub use baselines::{make_baseline, ValueBaselineSpec, BASELINES};
pub use reinforce::{Reinforce, ReinforceConfig};

/// The agent names a config may use.
pub const AGENTS: &[&str] = &["reinforce"];
