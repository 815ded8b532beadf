//! The `Agent` and `Baseline` traits, and the maximum-entropy running costs every
//! score-function agent shares (docs/algorithms.md §4). Concrete agents live in `denoise-gym-agents`;
//! a user's own algorithm implements [`Agent`] from outside the library.

use std::path::Path;

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::env::DenoisingState;
use crate::error::{Error, Result};
use crate::policy::GaussianPolicy;
use crate::rng::{normal_matrix, ProjectRng};
use crate::rollout::Rollout;
use crate::schedule::Schedule;
use crate::tensor::{Backend, Matrix, Vector};

/// Named scalars an update reports (logged as `group/name`).
pub type Stats = Vec<(String, f64)>;

/// What [`Agent::act`] returns: the action `x_{t-1}` and, optionally, its log-probability
/// under the acting policy (recorded as `log π_old`).
#[derive(Debug, Clone)]
pub struct Action<D: Backend> {
    /// The next state `x_{t-1}`, `B × d`.
    pub next: Matrix<D>,
    /// `log π(x_{t-1} | x_t)` per sample, if the agent records it.
    pub log_prob: Option<Vector<D>>,
}

/// An algorithm that improves a sampler-policy from rollouts.
///
/// Acting is kept apart from learning: [`Agent::act`] is called once per environment step
/// (the default samples with no gradient tape; an agent may keep what its update needs,
/// as REINFORCE keeps the log-probabilities of its actions with their tapes);
/// [`Agent::update`] receives the whole finished batch.
pub trait Agent<D: Backend> {
    /// A short name (`reinforce`, `ppo`, ...).
    fn name(&self) -> &str;

    /// The sampler-policy being trained.
    fn policy(&self) -> &GaussianPolicy<D>;

    /// Chooses `x_{t-1}` for the batch at `(x_t, t)`; the default samples the policy.
    fn act(&mut self, observation: &DenoisingState<D>, rng: &mut ProjectRng) -> Result<Action<D>> {
        let policy = self.policy();
        let (rows, cols) = *observation.x.shape();
        let noise = normal_matrix(policy.device(), rng, rows, cols);
        Ok(Action {
            next: policy.sample_step(&observation.x, observation.t, &noise),
            log_prob: None,
        })
    }

    /// Improves the policy from a finished rollout; returns scalars to log.
    fn update(
        &mut self,
        rollout: &Rollout<D>,
        rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats>;

    /// Writes every piece of state a resumed run needs (policy, optimiser, baselines).
    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()>;

    /// Restores what [`Agent::save`] wrote.
    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()>;
}

/// The returns of one rollout, as a baseline sees them.
#[derive(Debug, Clone)]
pub struct ReturnBatch<'a, D: Backend> {
    /// Number of steps T.
    pub n_steps: usize,
    /// Number of episodes B.
    pub batch_size: usize,
    /// Return-to-go `G_t` of every (step, sample), step-major from t = T down to 1
    /// (index `(T - t)·B + i`), as in [`Rollout::stacked_transitions`].
    pub returns: &'a [f32],
    /// `x_t` of every (step, sample), `T·B × d`, same order.
    pub states: &'a Matrix<D>,
    /// `t` of every row.
    pub steps: &'a [usize],
}

/// Turns returns into advantages `A = G - b` (or a normalised variant).
pub trait Baseline<D: Backend> {
    /// The config name (`none`, `batch_mean`, `ema`, `leave_one_out`, `value`, `group_normalized`).
    fn name(&self) -> &str;
    /// Advantages of every (step, sample), in the order of `batch.returns`.
    fn advantages(&mut self, batch: &ReturnBatch<'_, D>) -> Result<Vec<f32>>;
    /// Extra scalars to log (e.g. the value loss).
    fn stats(&self) -> Stats {
        Vec::new()
    }
    /// Writes the baseline's state.
    fn save(&self, _checkpoint: &mut Checkpoint, _prefix: &str) -> Result<()> {
        Ok(())
    }
    /// Restores the baseline's state.
    fn load(&mut self, _checkpoint: &Checkpoint, _path: &Path, _prefix: &str) -> Result<()> {
        Ok(())
    }
}

/// How `s_t²` in the velocity cost is chosen (docs/algorithms.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VelocityScaleKind {
    /// A running average (decay 0.99) of `mean_d (x_{t-1} - x_t)²` per step, from `β_t`.
    Adaptive,
    /// A constant per step.
    Fixed,
}

/// The per-step scale `s_t²` of the velocity cost `‖x_{t-1} - x_t‖² / (2 s_t²)`.
#[derive(Debug, Clone, PartialEq)]
pub struct VelocityScale {
    /// Adaptive or fixed.
    pub kind: VelocityScaleKind,
    /// Running-average decay (adaptive).
    pub decay: f64,
    /// `s_t²` at index `t - 1`.
    pub s2: Vec<f64>,
}

impl VelocityScale {
    /// Adaptive scales start at the schedule's `β_t`; fixed ones at `fixed_value`.
    pub fn new(kind: VelocityScaleKind, schedule: &Schedule, fixed_value: f64) -> Self {
        let s2 = match kind {
            VelocityScaleKind::Adaptive => {
                (1..=schedule.n_steps()).map(|t| schedule.beta(t)).collect()
            }
            VelocityScaleKind::Fixed => vec![fixed_value; schedule.n_steps()],
        };
        Self {
            kind,
            decay: 0.99,
            s2,
        }
    }

    /// `s_t²`.
    pub fn get(&self, t: usize) -> f64 {
        self.s2[t - 1]
    }

    /// Moves the adaptive averages toward this rollout's `mean_d (x_{t-1} - x_t)²`.
    /// `squared_lengths` are per (step, sample) as [`Rollout::squared_step_lengths`] gives.
    pub fn observe(&mut self, squared_lengths: &[f32], batch_size: usize, dim: usize) {
        if self.kind != VelocityScaleKind::Adaptive || batch_size == 0 {
            return;
        }
        let n_steps = self.s2.len();
        for (k, chunk) in squared_lengths.chunks(batch_size).enumerate().take(n_steps) {
            let t = n_steps - k;
            let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / (batch_size * dim) as f64;
            self.s2[t - 1] = self.decay * self.s2[t - 1] + (1.0 - self.decay) * mean;
        }
    }

    /// Writes the running `s_t²` under metadata `key` (they are training state: a resumed
    /// run must continue the same averages).
    pub fn save(&self, checkpoint: &mut Checkpoint, key: &str) -> Result<()> {
        let s2 =
            serde_json::to_string(&self.s2).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        checkpoint.metadata.insert(key.to_string(), s2);
        Ok(())
    }

    /// Restores what [`VelocityScale::save`] wrote.
    pub fn load(&mut self, checkpoint: &Checkpoint, path: &Path, key: &str) -> Result<()> {
        let raw = checkpoint.meta(path, key)?;
        self.s2 = serde_json::from_str(raw)
            .map_err(|e| Error::checkpoint(path, format!("{key}: {e}")))?;
        Ok(())
    }
}

/// The entropy-regularised objective's coefficients (docs/algorithms.md §4), both already divided by d
/// where they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MaxEntCoefficients {
    /// `τ_H`, the entropy weight (0 with `τ_v = 0` gives the IPM baseline).
    pub tau_entropy: f64,
    /// `τ_v`, the velocity-cost weight.
    pub tau_velocity: f64,
}

/// Per-step running rewards `r_t = -τ_v ‖x_{t-1} - x_t‖² / (2 s_t² d)` and the
/// return-to-go `G_t = -E(x_0) + Σ_{t' ≤ t} r_{t'}` of every (step, sample), step-major
/// from t = T down to 1. Returns `(returns, mean velocity cost per episode)`.
pub fn returns_to_go(
    terminal_reward: &[f32],
    squared_lengths: &[f32],
    n_steps: usize,
    dim: usize,
    scale: &VelocityScale,
    tau_velocity: f64,
) -> Result<(Vec<f32>, f64)> {
    discounted_returns_to_go(
        terminal_reward,
        squared_lengths,
        n_steps,
        dim,
        scale,
        tau_velocity,
        1.0,
    )
}

/// [`returns_to_go`] with a discount `γ` across denoising steps (DPPO's
/// `gamma_denoising`): `G_t = Σ_{t' ≤ t} γ^{t-t'} r_{t'}`, where the last step's reward
/// `r_1` includes the terminal `-E(x_0)`. `γ = 1` is the undiscounted return; `γ` outside
/// `(0, 1]` is an error. The reported velocity cost is undiscounted.
pub fn discounted_returns_to_go(
    terminal_reward: &[f32],
    squared_lengths: &[f32],
    n_steps: usize,
    dim: usize,
    scale: &VelocityScale,
    tau_velocity: f64,
    gamma: f64,
) -> Result<(Vec<f32>, f64)> {
    let b = terminal_reward.len();
    if squared_lengths.len() != n_steps * b {
        return Err(Error::InvalidArgument(format!(
            "{} step lengths for {n_steps} steps × {b} samples",
            squared_lengths.len()
        )));
    }
    if !(gamma > 0.0 && gamma <= 1.0) {
        return Err(Error::config(
            "gamma_denoising",
            format!("must be in (0, 1], got {gamma}"),
        ));
    }
    let running = |k: usize, i: usize| -> f64 {
        let t = n_steps - k;
        -tau_velocity * squared_lengths[k * b + i] as f64 / (2.0 * scale.get(t) * dim as f64)
    };
    let mut returns = vec![0.0f32; n_steps * b];
    let mut velocity_cost = 0.0;
    for i in 0..b {
        // G_1 = r_1 + R; G_t = r_t + γ G_{t-1}: accumulate from the last step (k = T-1) up.
        let mut g = terminal_reward[i] as f64;
        for k in (0..n_steps).rev() {
            let r = running(k, i);
            velocity_cost -= r;
            g = if k + 1 == n_steps {
                g + r
            } else {
                gamma * g + r
            };
            returns[k * b + i] = g as f32;
        }
    }
    Ok((returns, velocity_cost / b.max(1) as f64))
}
