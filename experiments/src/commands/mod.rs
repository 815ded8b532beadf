//! One module per `dgym` subcommand.

pub mod aggregate;
pub mod bench;
pub mod compare;
pub mod config;
pub mod energy;
pub mod eval;
pub mod grad_variance;
pub mod sample;
pub mod sweep;
pub mod train;
