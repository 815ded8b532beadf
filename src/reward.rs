//! The `RewardModel` trait: the reward of a finished episode, computed from its final
//! sample `x_0`. A learned EBM gives `r = -E_φ(x_0)`; an oracle gives the exact
//! log-density of a known law.

use crate::error::Result;
use crate::tensor::{Backend, Matrix, Vector};

/// Scores finished samples. Implemented by learned energies and by oracles.
pub trait RewardModel<D: Backend> {
    /// The reward of each row of the `B × d` batch `x0` (larger is more data-like).
    fn reward(&self, x0: &Matrix<D>) -> Result<Vector<D>>;

    /// The data dimension d the model accepts.
    fn dim(&self) -> usize;

    /// A short name for logs, e.g. `ebm` or `oracle`.
    fn name(&self) -> &str {
        "reward"
    }
}
