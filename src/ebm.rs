//! The learned reward of docs/algorithms.md §3: an energy-based model `E_φ: R^d → R` (an MLP), the
//! contrastive update that trains it against the current policy's samples, and the 2-D
//! density tools of docs/algorithms.md §3 and §7 (grid normaliser, temperature fit by held-out
//! likelihood, grid KL, held-out NLL).
//!
//! Low energy means data-like: `p_φ(x) ∝ exp(-E_φ(x))`, and the reward of a finished
//! episode is `r = -E_φ(x_0)`. The `γ` term of the contrastive loss keeps raw energies near
//! 0 (at its optimum they lie in `[-1/(2γ), 1/(2γ)]`), so `exp(-E_φ)` is a flattened density;
//! a scalar temperature `T_E` fitted by maximum likelihood ([`fit_temperature`]) turns it
//! into a density estimate `exp(-E_φ/T_E)/Z`.

use dfdx::prelude::*;
use rand::Rng;

use crate::error::{ensure_finite, Error, Result};
use crate::nn::{Activation, Mlp, Parameterized};
use crate::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig};
use crate::reward::RewardModel;
use crate::tensor::{matrix, vector, Backend, Matrix, Vector};

/// Largest number of rows [`EnergyModel::energy_host`] sends through the network at once.
const HOST_CHUNK_ROWS: usize = 4096;

/// `E_φ: R^d → R`, an MLP (`dim → hidden × depth → 1`). Low energy = data-like.
#[derive(Debug, Clone)]
pub struct EnergyModel<D: Backend> {
    /// The network; its single output is the raw energy.
    pub net: Mlp<D>,
    /// The calibration temperature `T_E` (docs/algorithms.md §3), 1 until fitted. It is not used by
    /// [`EnergyModel::energy`] or the reward, only by density estimates `exp(-E/T_E)`.
    pub temperature: f64,
}

impl<D: Backend> EnergyModel<D> {
    /// A freshly initialised energy network `dim → hidden × depth → 1`, with `T_E = 1`.
    pub fn new(
        dev: &D,
        dim: usize,
        hidden: usize,
        depth: usize,
        activation: Activation,
        rng: &mut impl Rng,
    ) -> Self {
        Self {
            net: Mlp::new(dev, dim, hidden, depth, 1, activation, rng),
            temperature: 1.0,
        }
    }

    /// Raw energies `E_φ(x)`, one per row of the `B × dim` batch `x` (a `B` vector).
    /// Differentiable when `x` carries a tape: the gradient flows into the network's
    /// parameters (and into `x`).
    ///
    /// # Panics
    /// If `x` does not have [`EnergyModel::dim`] columns (a programming error; the checked
    /// entry points are [`RewardModel::reward`] and [`ContrastiveLearner::step`]).
    pub fn energy<T: Tape<f32, D> + Merge<T>>(&self, x: Matrix<D, T>) -> Vector<D, T> {
        let rows = x.shape().0;
        self.net.forward(x).reshape_like(&(rows,))
    }

    /// Host convenience: raw energies of row-major points (`points.len() / dim` rows),
    /// evaluated in chunks of at most 4096 rows.
    ///
    /// # Panics
    /// If `points.len()` is not a multiple of [`EnergyModel::dim`].
    pub fn energy_host(&self, points: &[f32]) -> Vec<f32> {
        let dim = self.dim();
        assert!(
            dim > 0 && points.len().is_multiple_of(dim),
            "energy_host: {} values is not a whole number of {dim}-dimensional points",
            points.len()
        );
        let dev = self.device();
        let mut out = Vec::with_capacity(points.len() / dim);
        for chunk in points.chunks(HOST_CHUNK_ROWS * dim) {
            let rows = chunk.len() / dim;
            let x = matrix(&dev, chunk.to_vec(), rows, dim);
            out.extend(self.energy(x).as_vec());
        }
        out
    }

    /// The data dimension d (inputs of the network).
    pub fn dim(&self) -> usize {
        self.net.inputs()
    }

    /// The device the parameters live on (a default one if the network has no layers).
    fn device(&self) -> D {
        self.net
            .layers
            .first()
            .map(|layer| layer.weight.device().clone())
            .unwrap_or_default()
    }
}

impl<D: Backend> Parameterized<D> for EnergyModel<D> {
    fn parameters(&self) -> Vec<&Matrix<D>> {
        self.net.parameters()
    }
    fn parameters_mut(&mut self) -> Vec<&mut Matrix<D>> {
        self.net.parameters_mut()
    }
    fn parameter_names(&self) -> Vec<String> {
        self.net
            .parameter_names()
            .into_iter()
            .map(|name| format!("net.{name}"))
            .collect()
    }
}

impl<D: Backend> RewardModel<D> for EnergyModel<D> {
    /// `r = -E_φ(x_0)`, the raw (uncalibrated) energy: `T_E` changes neither the rankings
    /// nor, up to a constant factor absorbed by `τ`, the policy's gradients.
    fn reward(&self, x0: &Matrix<D>) -> Result<Vector<D>> {
        let (rows, cols) = *x0.shape();
        if cols != self.dim() {
            return Err(Error::InvalidArgument(format!(
                "ebm reward: samples have {cols} columns, the energy model takes {}",
                self.dim()
            )));
        }
        if rows == 0 {
            return Ok(vector(x0.device(), Vec::new()));
        }
        Ok(self.energy(x0.clone()) * -1.0)
    }

    fn dim(&self) -> usize {
        EnergyModel::dim(self)
    }

    fn name(&self) -> &str {
        "ebm"
    }
}

/// Options of the contrastive reward learner (docs/algorithms.md §3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContrastiveConfig {
    /// Weight `γ` of the energy-magnitude penalty `mean E(x⁺)² + mean E(x⁻)²` (default 1).
    pub gamma: f64,
    /// Adam learning rate of every energy parameter (default 1e-3).
    pub lr: f64,
    /// Adam `(β1, β2)` (default `[0.9, 0.999]`).
    pub betas: [f64; 2],
    /// Global gradient-norm clip; 0 turns clipping off (default 0).
    pub grad_clip: f64,
}

impl Default for ContrastiveConfig {
    fn default() -> Self {
        Self {
            gamma: 1.0,
            lr: 1e-3,
            betas: [0.9, 0.999],
            grad_clip: 0.0,
        }
    }
}

impl ContrastiveConfig {
    /// Checks every option is in range.
    pub fn validate(&self) -> Result<()> {
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return Err(Error::config(
                "gamma",
                format!("must be a finite number ≥ 0, got {}", self.gamma),
            ));
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::config(
                "lr",
                format!("learning rate must be a finite number ≥ 0, got {}", self.lr),
            ));
        }
        if let Some(beta) = self
            .betas
            .iter()
            .find(|b| !(b.is_finite() && (0.0..1.0).contains(*b)))
        {
            return Err(Error::config(
                "betas",
                format!("each beta must lie in [0, 1), got {beta}"),
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(Error::config(
                "grad_clip",
                format!(
                    "must be a finite number ≥ 0 (0 = off), got {}",
                    self.grad_clip
                ),
            ));
        }
        Ok(())
    }
}

/// What one contrastive update saw, for logging (docs/algorithms.md §3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContrastiveStats {
    /// `mean E(x⁺)` over the data batch, before the update.
    pub energy_pos: f64,
    /// `mean E(x⁻)` over the policy batch, before the update.
    pub energy_neg: f64,
    /// `energy_neg − energy_pos` (positive once the model tells data from samples).
    pub energy_gap: f64,
    /// The loss `L_E` that was minimised, before the update.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// The contrastive reward learner of docs/algorithms.md §3:
/// `L_E = mean E(x⁺) − mean E(x⁻) + γ (mean E(x⁺)² + mean E(x⁻)²)`,
/// where the squares are taken per sample, so that the pointwise optimum is
/// `E = (π − p) / (2γ (π + p))` for data density `p` and policy density `π`.
#[derive(Debug, Clone)]
pub struct ContrastiveLearner<D: Backend> {
    /// The options.
    pub config: ContrastiveConfig,
    /// Adam over the energy model's parameters, in [`Parameterized`] order.
    pub optimizer: Adam<D>,
}

impl<D: Backend> ContrastiveLearner<D> {
    /// A learner for `ebm`, with fresh Adam state.
    ///
    /// # Errors
    /// [`Error::Config`] if an option is out of range.
    pub fn new(ebm: &EnergyModel<D>, config: ContrastiveConfig) -> Result<Self> {
        config.validate()?;
        let params = ebm.parameters();
        let optimizer = Adam::new(
            &params,
            vec![config.lr; params.len()],
            AdamConfig {
                betas: config.betas,
                ..AdamConfig::default()
            },
        )?;
        Ok(Self { config, optimizer })
    }

    /// One optimiser step on a data batch `positive` (`x⁺`) and a policy batch `negative`
    /// (`x⁻`), both `B × dim`. The batches carry no tape, so no gradient reaches the policy.
    /// The returned statistics describe the model before the step.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if a batch is empty or has the wrong number of columns;
    /// [`Error::NonFinite`] naming `ebm/loss` (or `ebm/grad_norm`) and `iteration` if `L_E`
    /// (or its gradient) is NaN or infinite, in which case nothing is updated.
    pub fn step(
        &mut self,
        ebm: &mut EnergyModel<D>,
        positive: &Matrix<D>,
        negative: &Matrix<D>,
        iteration: u64,
    ) -> Result<ContrastiveStats> {
        let dim = ebm.dim();
        let (n_pos, n_neg) = (positive.shape().0, negative.shape().0);
        for (which, batch) in [("data (x⁺)", positive), ("policy (x⁻)", negative)] {
            let (rows, cols) = *batch.shape();
            if rows == 0 || cols != dim {
                return Err(Error::InvalidArgument(format!(
                    "ebm step: the {which} batch is {rows} × {cols}, expected at least one \
                     row of {dim} columns"
                )));
            }
        }

        // One forward pass over [x⁺; x⁻]; the loss is Σ_i E_i (a_i + b_i E_i) with
        // a = (1/B⁺, −1/B⁻) and b = (γ/B⁺, γ/B⁻).
        let gamma = self.config.gamma;
        let (inv_pos, inv_neg) = (1.0 / n_pos as f64, 1.0 / n_neg as f64);
        let linear: Vec<f32> = std::iter::repeat_n(inv_pos as f32, n_pos)
            .chain(std::iter::repeat_n(-inv_neg as f32, n_neg))
            .collect();
        let quadratic: Vec<f32> = std::iter::repeat_n((gamma * inv_pos) as f32, n_pos)
            .chain(std::iter::repeat_n((gamma * inv_neg) as f32, n_neg))
            .collect();
        let dev = positive.device().clone();
        let batch = (positive.clone(), negative.clone()).concat_along(Axis::<0>);
        let energies = ebm.energy(batch.traced(Gradients::leaky()));
        let host = energies.as_vec();
        let squares = energies.with_empty_tape().square() * vector(&dev, quadratic);
        let loss = (energies * vector(&dev, linear) + squares).sum::<(), _>();
        let loss_value = loss.as_vec().first().map_or(f64::NAN, |&v| f64::from(v));
        let loss_value = ensure_finite("ebm/loss", loss_value, iteration)?;

        let mean = |values: &[f32]| -> f64 {
            values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64
        };
        let energy_pos = mean(&host[..n_pos]);
        let energy_neg = mean(&host[n_pos..]);

        let mut grads = loss.backward();
        let mut gradients = gradients_of(&mut grads, &ebm.parameters())?;
        let grad_norm = clip_grad_norm(&mut gradients, self.config.grad_clip);
        ensure_finite("ebm/grad_norm", grad_norm, iteration)?;
        self.optimizer.update(ebm.parameters_mut(), &gradients)?;

        Ok(ContrastiveStats {
            energy_pos,
            energy_neg,
            energy_gap: energy_neg - energy_pos,
            loss: loss_value,
            grad_norm,
        })
    }
}

/// An `n × n` grid of cell centres over the box `[lo, hi]` (docs/algorithms.md §7), for normalising 2-D
/// densities by quadrature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid2d {
    /// Lower corner `(x, y)` of the box.
    pub lo: [f64; 2],
    /// Upper corner `(x, y)` of the box.
    pub hi: [f64; 2],
    /// Cells per side.
    pub n: usize,
}

impl Grid2d {
    /// A grid, checked: `lo < hi` on both axes (finite) and `n ≥ 1`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] otherwise.
    pub fn new(lo: [f64; 2], hi: [f64; 2], n: usize) -> Result<Self> {
        let box_ok = (0..2).all(|k| lo[k].is_finite() && hi[k].is_finite() && lo[k] < hi[k]);
        if !box_ok || n == 0 {
            return Err(Error::InvalidArgument(format!(
                "grid: need lo < hi (finite) on both axes and n ≥ 1, got lo {lo:?}, hi {hi:?}, \
                 n {n}"
            )));
        }
        Ok(Self { lo, hi, n })
    }

    /// Number of points, `n²`.
    pub fn len(&self) -> usize {
        self.n * self.n
    }

    /// Whether the grid has no points (`n = 0`).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The cell centres as row-major `n² × 2` data: point `k = iy·n + ix` is
    /// `(lo_x + (ix + ½) h_x, lo_y + (iy + ½) h_y)` with `h = (hi − lo)/n`, so x varies
    /// fastest.
    pub fn points(&self) -> Vec<f32> {
        let n = self.n;
        let centre = |axis: usize, i: usize| -> f32 {
            let h = (self.hi[axis] - self.lo[axis]) / n as f64;
            (self.lo[axis] + (i as f64 + 0.5) * h) as f32
        };
        let mut out = Vec::with_capacity(2 * n * n);
        for iy in 0..n {
            let y = centre(1, iy);
            for ix in 0..n {
                out.push(centre(0, ix));
                out.push(y);
            }
        }
        out
    }

    /// The area of one cell, `(hi_x − lo_x)(hi_y − lo_y)/n²`.
    pub fn cell_area(&self) -> f64 {
        let n = self.n as f64;
        (self.hi[0] - self.lo[0]) * (self.hi[1] - self.lo[1]) / (n * n)
    }
}

/// `log Σ_i exp(v_i)`, stable; `-∞` for no terms (or all `-∞`).
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// The log-normaliser `log ∫ exp(-E/T)` by quadrature over a grid: log-sum-exp of
/// `-E_i/T` over the grid's energies plus `log cell_area`. `temperature` must be positive.
pub fn grid_log_normaliser(energies: &[f64], temperature: f64, cell_area: f64) -> f64 {
    log_sum_exp(energies.iter().map(|e| -e / temperature)) + cell_area.ln()
}

/// Mean held-out NLL under `exp(-E/T)/Z`, `Z` by quadrature on the grid:
/// `mean_i E(x_i)/T + log Z(T)`. NaN when `held_out_energies` is empty.
pub fn held_out_nll(
    grid_energies: &[f64],
    cell_area: f64,
    held_out_energies: &[f64],
    temperature: f64,
) -> f64 {
    let mean = held_out_energies.iter().sum::<f64>() / held_out_energies.len() as f64;
    mean / temperature + grid_log_normaliser(grid_energies, temperature, cell_area)
}

/// Range of `T_E` searched by [`fit_temperature`].
const TEMPERATURE_RANGE: (f64, f64) = (1e-3, 1e3);
/// Points of the coarse search over `log T`.
const COARSE_POINTS: usize = 141;
/// Golden-section iterations after the coarse search.
const GOLDEN_ITERATIONS: usize = 80;

/// Fits `T_E` by maximum likelihood of held-out data (docs/algorithms.md §3): minimises
/// `NLL(T) = mean_i E(x_i)/T + log Z(T)`, `Z(T) = ∫ exp(-E/T)` by quadrature on the grid,
/// over `log T ∈ [log 1e-3, log 1e3]` (a coarse grid, then golden-section refinement; the
/// NLL is convex in `1/T`, hence unimodal in `log T`). A minimum at the end of the range
/// is returned as that end. Returns `(T_E, NLL(T_E))`.
///
/// # Errors
/// [`Error::InvalidArgument`] if either list of energies is empty or holds a non-finite
/// value, or `cell_area` is not finite and positive.
pub fn fit_temperature(
    grid_energies: &[f64],
    cell_area: f64,
    held_out_energies: &[f64],
) -> Result<(f64, f64)> {
    for (what, values) in [("grid", grid_energies), ("held-out", held_out_energies)] {
        if values.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "fit_temperature: no {what} energies"
            )));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "fit_temperature: non-finite {what} energy {bad}"
            )));
        }
    }
    if !(cell_area.is_finite() && cell_area > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "fit_temperature: cell area must be finite and positive, got {cell_area}"
        )));
    }
    let nll = |log_t: f64| held_out_nll(grid_energies, cell_area, held_out_energies, log_t.exp());

    let (lo, hi) = (TEMPERATURE_RANGE.0.ln(), TEMPERATURE_RANGE.1.ln());
    let step = (hi - lo) / (COARSE_POINTS - 1) as f64;
    let coarse: Vec<f64> = (0..COARSE_POINTS)
        .map(|k| nll(lo + k as f64 * step))
        .collect();
    let best = coarse
        .iter()
        .enumerate()
        .fold(0, |best, (k, v)| if *v < coarse[best] { k } else { best });

    // Golden-section search on the bracket around the coarse minimum.
    let (mut a, mut b) = (
        lo + best.saturating_sub(1) as f64 * step,
        lo + (best + 1).min(COARSE_POINTS - 1) as f64 * step,
    );
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - ratio * (b - a);
    let mut d = a + ratio * (b - a);
    let (mut fc, mut fd) = (nll(c), nll(d));
    for _ in 0..GOLDEN_ITERATIONS {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - ratio * (b - a);
            fc = nll(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + ratio * (b - a);
            fd = nll(d);
        }
    }
    let refined = 0.5 * (a + b);
    let (log_t, value) = [
        (refined, nll(refined)),
        (lo + best as f64 * step, coarse[best]),
    ]
    .into_iter()
    .fold((refined, f64::INFINITY), |acc, candidate| {
        if candidate.1 < acc.1 {
            candidate
        } else {
            acc
        }
    });
    if !value.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "fit_temperature: the held-out NLL is {value} at T = {}; energies too large for \
             the grid quadrature",
            log_t.exp()
        )));
    }
    Ok((log_t.exp(), value))
}

/// `KL(p_true ‖ p_model)` on a grid (docs/algorithms.md §7). Both densities are normalised over the grid:
/// `p_true` from its exact log-density at the grid points, `p_model ∝ exp(-E/T)`. Returns
/// `Σ_i p_true,i (log p_true,i − log p_model,i) · cell_area`; cells where `p_true` is 0
/// contribute nothing.
///
/// # Panics
/// If the two slices have different lengths.
pub fn grid_kl(
    true_log_density: &[f64],
    model_energies: &[f64],
    temperature: f64,
    cell_area: f64,
) -> f64 {
    assert_eq!(
        true_log_density.len(),
        model_energies.len(),
        "grid_kl: one true log-density per model energy"
    );
    let log_area = cell_area.ln();
    let log_z_true = log_sum_exp(true_log_density.iter().copied()) + log_area;
    let log_z_model = grid_log_normaliser(model_energies, temperature, cell_area);
    true_log_density
        .iter()
        .zip(model_energies)
        .filter(|(lp, _)| **lp != f64::NEG_INFINITY)
        .map(|(lp, e)| {
            let log_p = lp - log_z_true;
            let log_q = -e / temperature - log_z_model;
            log_p.exp() * (log_p - log_q) * cell_area
        })
        .sum()
}

/// The EBM reward of GCD/DxMI: an [`EnergyModel`] with its [`ContrastiveLearner`].
#[derive(Debug, Clone)]
pub struct EbmReward<D: Backend> {
    /// The energy `E_φ`.
    pub model: EnergyModel<D>,
    /// Its contrastive learner.
    pub learner: ContrastiveLearner<D>,
}

impl<D: Backend> EbmReward<D> {
    /// Pairs a model with a learner of `config`.
    pub fn new(model: EnergyModel<D>, config: ContrastiveConfig) -> Result<Self> {
        let learner = ContrastiveLearner::new(&model, config)?;
        Ok(Self { model, learner })
    }
}

impl<D: Backend> RewardModel<D> for EbmReward<D> {
    fn reward(&self, x0: &Matrix<D>) -> Result<Vector<D>> {
        self.model.reward(x0)
    }
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn name(&self) -> &str {
        "ebm"
    }
}

impl<D: Backend> crate::reward::DifferentiableReward<D> for EnergyModel<D> {
    fn reward_traced(
        &self,
        x0: Matrix<D, OwnedTape<f32, D>>,
    ) -> Result<Vector<D, OwnedTape<f32, D>>> {
        let cols = x0.shape().1;
        if cols != self.dim() {
            return Err(Error::InvalidArgument(format!(
                "ebm reward: samples have {cols} columns, the energy model takes {}",
                self.dim()
            )));
        }
        Ok(self.energy(x0) * -1.0)
    }
}

impl<D: Backend> crate::reward::DifferentiableReward<D> for EbmReward<D> {
    fn reward_traced(
        &self,
        x0: Matrix<D, OwnedTape<f32, D>>,
    ) -> Result<Vector<D, OwnedTape<f32, D>>> {
        self.model.reward_traced(x0)
    }
}

impl<D: Backend> crate::reward::LearnedReward<D> for EbmReward<D> {
    fn learn(
        &mut self,
        positive: &Matrix<D>,
        negative: &Matrix<D>,
        iteration: u64,
    ) -> Result<crate::agent::Stats> {
        let s = self
            .learner
            .step(&mut self.model, positive, negative, iteration)?;
        Ok(vec![
            ("ebm/energy_pos".to_string(), s.energy_pos),
            ("ebm/energy_neg".to_string(), s.energy_neg),
            ("ebm/energy_gap".to_string(), s.energy_gap),
            ("ebm/L_E".to_string(), s.loss),
            ("ebm/grad_norm".to_string(), s.grad_norm),
        ])
    }

    fn save(&self, checkpoint: &mut crate::checkpoint::Checkpoint, prefix: &str) -> Result<()> {
        let names = self.model.parameter_names();
        checkpoint.put_model(&format!("{prefix}.model"), &self.model);
        self.learner
            .optimizer
            .save(checkpoint, &format!("{prefix}.optim"), &names);
        checkpoint.metadata.insert(
            format!("{prefix}.temperature"),
            self.model.temperature.to_string(),
        );
        Ok(())
    }

    fn load(
        &mut self,
        checkpoint: &crate::checkpoint::Checkpoint,
        path: &std::path::Path,
        prefix: &str,
    ) -> Result<()> {
        let names = self.model.parameter_names();
        checkpoint.load_model(path, &format!("{prefix}.model"), &mut self.model)?;
        self.learner
            .optimizer
            .load(checkpoint, path, &format!("{prefix}.optim"), &names)?;
        self.model.temperature = checkpoint.meta_parse(path, &format!("{prefix}.temperature"))?;
        Ok(())
    }
}
