//! # denoise-gym
//!
//! A diffusion model's sampler treated as a reinforcement-learning policy, and an
//! energy-based model (EBM) treated as a reward learned from data (inverse RL), on
//! [`dfdx`] 0.13.
//!
//! This core crate holds the vocabulary every other crate speaks: the [`env::Env`] trait,
//! noise [`schedule`]s, the Gaussian diffusion [`policy`], runtime-shaped [`nn`] layers,
//! the project-owned optimiser ([`optim`]), [`checkpoint`] I/O, [`log`] sinks, [`config`]
//! machinery and evaluation [`metrics`]. The algorithms follow `docs/algorithms.md`.
//!
//! Every model is generic over a dfdx device `D: `[`Backend`] (`Cpu` by default, `Cuda`
//! with the `cuda` feature). Parameters are runtime-shaped matrices ([`Matrix`]) because
//! widths and input dimensions come from configuration files.

pub mod agent;
pub mod anomaly;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod dsm;
pub mod ebm;
pub mod env;
pub mod error;
pub mod io;
pub mod irl;
pub mod log;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod policy;
pub mod reward;
pub mod rng;
pub mod rollout;
pub mod sampler;
pub mod schedule;
pub mod tensor;
pub mod train;

pub use backend::cpu as kernels;
pub use backend::fork;
pub use error::{Error, Result};
pub use tensor::{Backend, Matrix, Vector};
