//! # denoise-gym-agents
//!
//! Reinforcement-learning algorithms that improve a diffusion sampler-policy (REINFORCE
//! with baselines, PPO, the value-based pathwise DxDP update). Each agent implements the
//! core crate's agent interface; a user's own algorithm can do the same from outside this
//! crate without forking it.
//!
//! The foundation release ships the environment, policy and reward interfaces the agents
//! build on; the agents themselves arrive with the GCD issue.
