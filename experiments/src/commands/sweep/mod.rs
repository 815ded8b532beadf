//! `dgym sweep`: ablations over a grid of configs and seeds.
//!
//! A sweep file (TOML) names a base config, axes of config values and seeds; every grid
//! point × seed is one ordinary run directory under the sweep directory, named by its
//! axis values (`T=4,method=gcd/seed=1`). The runs are child processes of the same `dgym`
//! binary (`train`, then `eval`), at most `--jobs` at once. The sweep directory keeps the
//! expanded plan (`sweep.json`), so that
//!
//! - running the sweep again skips finished runs and resumes unfinished ones (the sweep
//!   may be killed at any point, SIGKILL included: children die with it);
//! - a different sweep file pointed at the same directory is refused;
//! - `--shard I/N` takes a deterministic slice, a run always in the same shard as the
//!   run it starts from (`finetune.init_from = "@axis=label"`), so that N machines cover
//!   the grid exactly once (`--emit-slurm` writes a Slurm job array doing that);
//! - `dgym aggregate` ([`crate::commands::aggregate`]) knows which runs to expect.
//!
//! The format is documented in docs/configuration.md ("Ablation sweeps").

//!
//! Files: [`plan`] (the sweep file and its expansion into runs), [`dir`] (the sweep
//! directory's format and the state of its runs), [`scheduler`] (running the runs as
//! child processes), [`slurm`] (a job array instead).

pub mod dir;
pub mod plan;
pub mod scheduler;
pub mod slurm;

pub use dir::*;
pub use plan::*;
pub use scheduler::*;
pub use slurm::*;
