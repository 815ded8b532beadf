//! The project-owned optimiser: Adam with configurable betas and per-parameter learning
//! rates (parameter groups), global gradient-norm clipping, and a weight EMA.
//!
//! dfdx 0.13 keeps its Adam's step count and moments private, so a checkpoint could not
//! hold them and a resumed run would drift; here every piece of optimiser state is a
//! public tensor or number that [`crate::checkpoint`] saves.

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::tensor::{Backend, Matrix};

/// Adam's hyper-parameters (the learning rate lives with each parameter group).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// `(β1, β2)`; DDAEBM uses `(0, 0.9)`.
    pub betas: [f64; 2],
    /// Denominator epsilon.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            betas: [0.9, 0.999],
            eps: 1e-8,
        }
    }
}

/// Adam over a fixed list of parameters, each with its own learning rate.
#[derive(Debug, Clone)]
pub struct Adam<D: Backend> {
    /// Hyper-parameters.
    pub config: AdamConfig,
    /// Learning rate of each parameter, in the model's parameter order.
    pub learning_rates: Vec<f64>,
    /// Number of updates taken so far (Adam's `t`, used for bias correction).
    pub step: u64,
    /// First moments, one per parameter.
    pub moment1: Vec<Matrix<D>>,
    /// Second moments, one per parameter.
    pub moment2: Vec<Matrix<D>>,
}

impl<D: Backend> Adam<D> {
    /// Zero-initialised state for `params`, with one learning rate per parameter.
    pub fn new(
        params: &[&Matrix<D>],
        learning_rates: Vec<f64>,
        config: AdamConfig,
    ) -> Result<Self> {
        if learning_rates.len() != params.len() {
            return Err(Error::InvalidArgument(format!(
                "Adam: {} learning rates for {} parameters",
                learning_rates.len(),
                params.len()
            )));
        }
        if let Some(bad) = learning_rates
            .iter()
            .find(|lr| !(lr.is_finite() && **lr >= 0.0))
        {
            return Err(Error::config(
                "lr",
                format!("learning rate must be ≥ 0, got {bad}"),
            ));
        }
        let zeros = |p: &&Matrix<D>| p.device().zeros_like(p.shape());
        Ok(Self {
            config,
            moment1: params.iter().map(zeros).collect(),
            moment2: params.iter().map(zeros).collect(),
            learning_rates,
            step: 0,
        })
    }

    /// One Adam update of `params` with `grads` (same order as at construction).
    pub fn update(&mut self, params: Vec<&mut Matrix<D>>, grads: &[Matrix<D>]) -> Result<()> {
        if params.len() != self.moment1.len() || grads.len() != params.len() {
            return Err(Error::InvalidArgument(format!(
                "Adam: state for {} parameters, got {} parameters and {} gradients",
                self.moment1.len(),
                params.len(),
                grads.len()
            )));
        }
        self.step += 1;
        let [beta1, beta2] = self.config.betas;
        let t = self.step as i32;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2 = 1.0 - beta2.powi(t);
        // Folding both bias corrections into the step size and epsilon saves two
        // element-wise passes per parameter: lr·m̂/(√v̂+ε) = lr_t·m/(√v+ε_t).
        let eps_t = (self.config.eps * bias2.sqrt()) as f32;
        for (i, (param, grad)) in params.into_iter().zip(grads).enumerate() {
            let lr_t = self.learning_rates[i] * bias2.sqrt() / bias1;
            if lr_t == 0.0 {
                continue;
            }
            D::adam_step(
                param,
                grad,
                (&mut self.moment1[i], &mut self.moment2[i]),
                [beta1, beta2],
                lr_t as f32,
                eps_t,
            );
        }
        Ok(())
    }
}

impl<D: Backend> Adam<D> {
    /// Writes the step count and both moments under `prefix` (one tensor per parameter
    /// name), so that a resumed run continues with the very same updates.
    pub fn save(&self, checkpoint: &mut Checkpoint, prefix: &str, names: &[String]) {
        checkpoint.put_matrices(
            &format!("{prefix}.moment1"),
            names,
            &self.moment1.iter().collect::<Vec<_>>(),
        );
        checkpoint.put_matrices(
            &format!("{prefix}.moment2"),
            names,
            &self.moment2.iter().collect::<Vec<_>>(),
        );
        checkpoint
            .metadata
            .insert(format!("{prefix}.step"), self.step.to_string());
    }

    /// Restores what [`Adam::save`] wrote.
    pub fn load(
        &mut self,
        checkpoint: &Checkpoint,
        path: &std::path::Path,
        prefix: &str,
        names: &[String],
    ) -> Result<()> {
        checkpoint.load_matrices(
            path,
            &format!("{prefix}.moment1"),
            names,
            self.moment1.iter_mut().collect(),
        )?;
        checkpoint.load_matrices(
            path,
            &format!("{prefix}.moment2"),
            names,
            self.moment2.iter_mut().collect(),
        )?;
        self.step = checkpoint.meta_parse(path, &format!("{prefix}.step"))?;
        Ok(())
    }
}

/// Reads the gradient of each parameter from a backward pass; a parameter the loss did
/// not touch gets zeros (so an optimiser never fails on an unused parameter).
pub fn gradients_of<D: Backend>(
    grads: &mut Gradients<f32, D>,
    params: &[&Matrix<D>],
) -> Result<Vec<Matrix<D>>> {
    params
        .iter()
        .map(|p| {
            grads
                .try_alloc_for(*p)
                .map_err(|e| Error::Device(format!("{e:?}")))?;
            Ok(grads.get(*p))
        })
        .collect()
}

/// The global L2 norm of a list of gradients.
pub fn global_norm<D: Backend>(grads: &[Matrix<D>]) -> f64 {
    grads.iter().map(|g| D::squared_norm(g)).sum::<f64>().sqrt()
}

/// Global gradient-norm clipping (dfdx 0.13 has none): scales all gradients by
/// `min(1, max_norm / norm)`. `max_norm ≤ 0` disables clipping. Returns the norm before
/// clipping, which is what training logs report.
pub fn clip_grad_norm<D: Backend>(grads: &mut [Matrix<D>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 && norm > max_norm {
        let scale = (max_norm / (norm + 1e-6)) as f32;
        for g in grads.iter_mut() {
            *g = g.clone() * scale;
        }
    }
    norm
}

/// An exponential moving average of a model's weights: `ema ← decay·ema + (1-decay)·θ`.
#[derive(Debug, Clone)]
pub struct WeightEma<D: Backend> {
    /// The decay; 0 makes the average equal the current weights.
    pub decay: f64,
    /// The averaged weights, in the model's parameter order.
    pub shadow: Vec<Matrix<D>>,
}

impl<D: Backend> WeightEma<D> {
    /// Starts the average at the current weights.
    pub fn new(params: &[&Matrix<D>], decay: f64) -> Self {
        Self {
            decay,
            // A deep copy: the shadow must not share storage with the live weights.
            shadow: params
                .iter()
                .map(|p| p.device().tensor_from_vec(p.as_vec(), *p.shape()))
                .collect(),
        }
    }

    /// Moves the average toward `params`.
    pub fn update(&mut self, params: &[&Matrix<D>]) {
        for (s, p) in self.shadow.iter_mut().zip(params) {
            s.axpy(self.decay, *p, 1.0 - self.decay);
        }
    }

    /// Copies the averaged weights into `params`.
    pub fn copy_to(&self, params: Vec<&mut Matrix<D>>) {
        for (p, s) in params.into_iter().zip(&self.shadow) {
            *p = s.clone();
        }
    }
}
