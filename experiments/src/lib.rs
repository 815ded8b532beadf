//! # denoise-gym-experiments
//!
//! The `dgym` command-line tool's library: the run configuration ([`config`]), the
//! mapping from a config to the library's components ([`build`]), evaluation metrics
//! ([`eval`]) and figures ([`plots`]), and one module per subcommand ([`commands`]). The
//! run loop itself is the core crate's `denoise_gym::train::Trainer`.

pub mod anomaly;
pub mod build;
pub mod builtin;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod compat;
pub mod config;
pub mod data;
pub mod eval;
pub mod plots;
pub mod registry;
