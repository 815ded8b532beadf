//! # denoise-gym-experiments
//!
//! The `dgym` command-line tool's library: the run configuration ([`config`]) and the
//! runners that write a run directory ([`run`]).

pub mod aggregate;
pub mod bench;
pub mod config;
pub mod ddaebm;
pub mod energy;
pub mod eval;
pub mod finetune;
pub mod grad_variance;
pub mod plots;
pub mod run;
pub mod sweep;
