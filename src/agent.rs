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
use crate::tensor::{row_sums, Backend, Matrix, Vector};

/// A scalar loss carrying its gradient tape.
pub type TracedScalar<D> = Tensor<(), f32, D, OwnedTape<f32, D>>;

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

/// The closed-form KL divergence `KL(N(μ, σ² I) ‖ N(μ_ref, σ_ref² I))` of two isotropic
/// Gaussians in `d` dimensions, one value per row:
/// `d (log σ_ref - log σ) + d σ²/(2 σ_ref²) - d/2 + ‖μ - μ_ref‖²/(2 σ_ref²)`.
///
/// `mean`/`log_sigma` carry the tape the gradient flows back through; the reference side is
/// constant. Panics (a programming error inside the library) if the shapes disagree.
pub fn gaussian_kl_rows<D: Backend, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
    mean: Matrix<D, T>,
    log_sigma: Vector<D, T>,
    mean_ref: Matrix<D>,
    log_sigma_ref: Vector<D>,
) -> Vector<D, T> {
    let (rows, d) = *mean.shape();
    assert_eq!(
        (
            mean_ref.shape().0,
            mean_ref.shape().1,
            log_sigma.shape().0,
            log_sigma_ref.shape().0
        ),
        (rows, d, rows, rows),
        "gaussian_kl_rows: means {rows}×{d} and {:?}, log σ {} and {}",
        mean_ref.shape(),
        log_sigma.shape().0,
        log_sigma_ref.shape().0
    );
    let d = d as f32;
    let inverse_variance_ref = (log_sigma_ref.clone() * -2.0).exp();
    let squared = row_sums((mean - mean_ref).square());
    let variance_ratio = ((log_sigma.with_empty_tape() - log_sigma_ref.clone()) * 2.0).exp();
    squared * inverse_variance_ref * 0.5 + variance_ratio * (0.5 * d) - log_sigma * d
        + log_sigma_ref * d
        - 0.5 * d
}

/// A KL anchor to a frozen reference sampler: the policy fine-tuning started from, kept
/// as it was. An agent adds `weight · mean_batch Σ_t KL_t / d` to its loss, with
/// `KL_t = KL(π_θ(· | x_t) ‖ π_ref(· | x_t))` in closed form at the rollout's states
/// ([`gaussian_kl_rows`]); `mean_batch Σ_t KL_t` is the KL of the whole denoising chains
/// (the chain rule of KL, with the states drawn from π_θ), logged as
/// `policy/kl_reference`. The states are held fixed: the gradient is that of the per-step
/// KLs, not of where π_θ sends the chain (as in DPOK and DPPO's fine-tuning with a
/// KL penalty).
#[derive(Debug, Clone)]
pub struct KlAnchor<D: Backend> {
    /// The reference sampler (never trained).
    pub reference: GaussianPolicy<D>,
    /// `kl_reference`, the weight of the per-dimension KL (> 0).
    pub weight: f64,
}

impl<D: Backend> KlAnchor<D> {
    /// An anchor to a copy of `policy` as it is now, or `None` when `weight` is 0 (then
    /// nothing is computed or stored, and the agent's numbers are those without one).
    /// A weight that is negative or not finite is an error naming `kl_reference`.
    pub fn new(policy: &GaussianPolicy<D>, weight: f64) -> Result<Option<Self>> {
        check_kl_reference(weight)?;
        Ok((weight > 0.0).then(|| Self {
            reference: policy.clone(),
            weight,
        }))
    }

    /// `μ_ref(x_t, t)` of every row, with no tape: computed once per update and reused by
    /// every minibatch that scores those rows.
    pub fn reference_mean(&self, states: &Matrix<D>, ts: &[usize]) -> Matrix<D> {
        self.reference.mean(states.clone(), ts)
    }

    /// `KL_t` of every row, given the policy's mean at those rows (traced) and the
    /// reference's ([`KlAnchor::reference_mean`]).
    pub fn kl_rows<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        policy: &GaussianPolicy<D>,
        mean: Matrix<D, T>,
        mean_ref: Matrix<D>,
        ts: &[usize],
    ) -> Vector<D, T> {
        gaussian_kl_rows(
            mean,
            policy.log_sigma_at::<T>(ts),
            mean_ref,
            self.reference.log_sigma_at::<NoneTape>(ts),
        )
    }

    /// The loss term `weight · Σ_rows KL_t / (d · episodes)` of rows that are `episodes`
    /// chains' (sample, step) pairs, and its host value `Σ_rows KL_t / episodes` (nats).
    pub fn penalty(
        &self,
        policy: &GaussianPolicy<D>,
        kl_rows: Vector<D, OwnedTape<f32, D>>,
        episodes: f64,
    ) -> (TracedScalar<D>, f64) {
        let sum = kl_rows.sum();
        let kl_per_chain = sum.as_vec()[0] as f64 / episodes;
        let scale = self.weight / (policy.dim() as f64 * episodes);
        (sum * scale as f32, kl_per_chain)
    }

    /// Writes the reference sampler under `{prefix}` (parameters and step options).
    pub fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) {
        checkpoint.put_model(prefix, &self.reference);
        self.reference.save_step_options(checkpoint, prefix);
    }

    /// Restores what [`KlAnchor::save`] wrote; a checkpoint without it (written with
    /// `kl_reference = 0`) is an error naming the key.
    pub fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        checkpoint
            .load_model(path, prefix, &mut self.reference)
            .map_err(|e| {
                Error::checkpoint(
                    path,
                    format!(
                        "has no KL reference sampler ({e}); was it written with \
                         agent.kl_reference = 0?"
                    ),
                )
            })?;
        self.reference.load_step_options(checkpoint, path, prefix)
    }
}

/// Checks an `agent.kl_reference` weight: finite and ≥ 0.
pub fn check_kl_reference(weight: f64) -> Result<()> {
    if weight.is_finite() && weight >= 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            "kl_reference",
            format!("must be a number ≥ 0 (0 = no KL anchor), got {weight}"),
        ))
    }
}
