//! # denoise-gym-agents
//!
//! Reinforcement-learning algorithms that improve a diffusion sampler-policy, each behind
//! the core [`denoise_gym::agent::Agent`] trait: REINFORCE with the baselines of docs/algorithms.md §4.1
//! ([`reinforce`], [`baselines`]), PPO's clipped surrogate on the same machinery
//! ([`ppo`]), and DxDP, the value-based pathwise update of docs/algorithms.md §4.2 ([`dxdp`]). A user's
//! own algorithm implements the same trait from outside this crate and trains through the
//! same loop. [`ddaebm`] holds DDAEBM (docs/algorithms.md §5): a per-step energy, a latent generator that
//! acts in the denoising environment, and its adversarial training step.

pub mod baselines;
pub mod ddaebm;
pub mod dxdp;
pub mod ppo;
pub mod reinforce;

pub use baselines::{make_baseline, ValueBaselineConfig, BASELINES};
pub use dxdp::{Dxdp, DxdpConfig, TimeConditionedValue, ValueTarget};
pub use ppo::{Ppo, PpoConfig};
pub use reinforce::{Reinforce, ReinforceConfig, ScoredBatch};
