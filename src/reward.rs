//! The `RewardModel` trait: the reward of a finished episode, computed from its final
//! sample `x_0`. A learned EBM gives `r = -E_φ(x_0)`; an oracle gives the exact
//! log-density of a known law.

use std::cell::RefCell;
use std::rc::Rc;

use std::path::Path;

use crate::agent::Stats;
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::tensor::{Backend, Matrix, Vector};
use dfdx::prelude::OwnedTape;

/// A reward model shared between an environment (which scores episodes with it) and a
/// learner (which updates it between rollouts).
pub type SharedReward<D> = Rc<RefCell<dyn RewardModel<D>>>;

/// Wraps a reward model for sharing.
pub fn shared<D: Backend, R: RewardModel<D> + 'static>(reward: R) -> Rc<RefCell<R>> {
    Rc::new(RefCell::new(reward))
}

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

/// A reward model that learns from data (`positive`) versus the policy's samples
/// (`negative`) between rollouts; a fixed reward (an oracle) learns nothing.
pub trait LearnedReward<D: Backend>: RewardModel<D> {
    /// One reward update; returns scalars to log (e.g. `ebm/energy_pos`).
    fn learn(
        &mut self,
        positive: &Matrix<D>,
        negative: &Matrix<D>,
        iteration: u64,
    ) -> Result<Stats>;
    /// Writes the reward's state (weights, optimiser) for resuming.
    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()>;
    /// Restores what [`LearnedReward::save`] wrote.
    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()>;
}

/// A reward whose value is a differentiable function of the sample, for pathwise agents
/// (DxDP) that back-propagate through it into the policy.
pub trait DifferentiableReward<D: Backend>: RewardModel<D> {
    /// `r(x_0)` per row as a traced function of `x_0`. Gradients also reach the reward's
    /// own parameters; a policy update reads only the policy's.
    fn reward_traced(
        &self,
        x0: Matrix<D, OwnedTape<f32, D>>,
    ) -> Result<Vector<D, OwnedTape<f32, D>>>;
}
