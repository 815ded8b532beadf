//! Baselines for score-function agents (docs/algorithms.md §4.1), each an implementation of the core
//! [`Baseline`] trait: `none`, `batch_mean`, `ema`, `leave_one_out`, `value`, and the
//! group-normalised advantage `group_normalized` (GRPO-style).

use std::path::Path;

use denoise_gym::agent::{Baseline, ReturnBatch, Stats};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::error::{Error, Result};
use denoise_gym::metrics::mean_std;
use denoise_gym::nn::{with_time_embedding, Activation, Mlp, Parameterized};
use denoise_gym::optim::{gradients_of, Adam, AdamConfig};
use denoise_gym::tensor::{matrix, Backend, Matrix};
use dfdx::prelude::*;
use rand::Rng;

/// The baselines [`make_baseline`] builds: `(name, one-line doc)`.
pub const BASELINES: &[(&str, &str)] = &[
    ("none", "A = G"),
    ("batch_mean", "the batch mean of G_t"),
    ("ema", "an exponential moving average of G_t"),
    ("leave_one_out", "the mean of the other samples' G_t (RLOO)"),
    ("value", "a learned V(x_t, t) ([value_baseline])"),
    (
        "group_normalized",
        "(G_t - mean) / std over the batch (GRPO-style)",
    ),
];

/// Per-step mean of the returns (`n_steps` values, step-major like the returns).
fn step_means(batch: &ReturnBatch<'_, impl Backend>) -> Vec<f64> {
    batch
        .returns
        .chunks(batch.batch_size)
        .map(|c| c.iter().map(|&g| g as f64).sum::<f64>() / c.len() as f64)
        .collect()
}

/// `A = G`: no baseline.
#[derive(Debug, Clone, Default)]
pub struct NoBaseline;

impl<D: Backend> Baseline<D> for NoBaseline {
    fn name(&self) -> &str {
        "none"
    }
    fn advantages(&mut self, batch: &ReturnBatch<'_, D>) -> Result<Vec<f32>> {
        Ok(batch.returns.to_vec())
    }
}

/// `b_t` = the batch mean of `G_t`. It includes sample i's own return, which shrinks the
/// expected gradient by the factor `(n-1)/n` (a bias of `1/n`, measured in the tests).
#[derive(Debug, Clone, Default)]
pub struct BatchMean;

impl<D: Backend> Baseline<D> for BatchMean {
    fn name(&self) -> &str {
        "batch_mean"
    }
    fn advantages(&mut self, batch: &ReturnBatch<'_, D>) -> Result<Vec<f32>> {
        let means = step_means(batch);
        Ok(batch
            .returns
            .iter()
            .enumerate()
            .map(|(k, &g)| (g as f64 - means[k / batch.batch_size]) as f32)
            .collect())
    }
}

/// `b_t` = an exponential moving average (decay 0.9) of earlier batches' means of `G_t`.
/// The current batch enters the average only after its advantages are computed, so the
/// baseline does not depend on the sample it is subtracted from (no bias); the very first
/// batch, with no history, uses its own mean.
#[derive(Debug, Clone)]
pub struct EmaBaseline {
    /// Decay of the average.
    pub decay: f64,
    /// Per-step averages (step-major), empty before the first batch.
    pub averages: Vec<f64>,
}

impl Default for EmaBaseline {
    fn default() -> Self {
        Self {
            decay: 0.9,
            averages: Vec::new(),
        }
    }
}

impl<D: Backend> Baseline<D> for EmaBaseline {
    fn name(&self) -> &str {
        "ema"
    }
    fn advantages(&mut self, batch: &ReturnBatch<'_, D>) -> Result<Vec<f32>> {
        let means = step_means(batch);
        if self.averages.len() != means.len() {
            self.averages = means.clone();
        }
        let advantages = batch
            .returns
            .iter()
            .enumerate()
            .map(|(k, &g)| (g as f64 - self.averages[k / batch.batch_size]) as f32)
            .collect();
        for (average, mean) in self.averages.iter_mut().zip(&means) {
            *average = self.decay * *average + (1.0 - self.decay) * mean;
        }
        Ok(advantages)
    }
    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        let json = serde_json::to_string(&self.averages)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        checkpoint
            .metadata
            .insert(format!("{prefix}.averages"), json);
        Ok(())
    }
    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        let raw = checkpoint.meta(path, &format!("{prefix}.averages"))?;
        self.averages = serde_json::from_str(raw)
            .map_err(|e| Error::checkpoint(path, format!("{prefix}.averages: {e}")))?;
        Ok(())
    }
}

/// RLOO: for sample i, the mean of `G_t` over the other samples,
/// so `A_i = n/(n-1) (G_i - mean G)`. Needs at least two samples.
#[derive(Debug, Clone, Default)]
pub struct LeaveOneOut;

impl<D: Backend> Baseline<D> for LeaveOneOut {
    fn name(&self) -> &str {
        "leave_one_out"
    }
    fn advantages(&mut self, batch: &ReturnBatch<'_, D>) -> Result<Vec<f32>> {
        let n = batch.batch_size;
        if n < 2 {
            return Err(Error::config(
                "finetune.baseline",
                format!("leave_one_out needs a batch of at least 2 samples, got {n}"),
            ));
        }
        let sums: Vec<f64> = batch
            .returns
            .chunks(n)
            .map(|c| c.iter().map(|&g| g as f64).sum())
            .collect();
        Ok(batch
            .returns
            .iter()
            .enumerate()
            .map(|(k, &g)| {
                let others = (sums[k / n] - g as f64) / (n - 1) as f64;
                (g as f64 - others) as f32
            })
            .collect())
    }
}

/// `(G - mean G) / (std G + 1e-8)` per step over the batch, as GRPO-style fine-tuning does.
/// Not of the form `G - b`: the division rescales each batch's gradient.
#[derive(Debug, Clone, Default)]
pub struct GroupNormalized;

impl<D: Backend> Baseline<D> for GroupNormalized {
    fn name(&self) -> &str {
        "group_normalized"
    }
    fn advantages(&mut self, batch: &ReturnBatch<'_, D>) -> Result<Vec<f32>> {
        let n = batch.batch_size;
        let mut out = Vec::with_capacity(batch.returns.len());
        for chunk in batch.returns.chunks(n) {
            let (mean, std) = mean_std(chunk);
            out.extend(
                chunk
                    .iter()
                    .map(|&g| ((g as f64 - mean) / (std + 1e-8)) as f32),
            );
        }
        Ok(out)
    }
}

/// A learned return predictor `b_ψ(x_t, t)` (MLP on `[x_t, emb(t)]`), fit by MSE to `G_t`
/// on each batch before the policy step and then used with no gradient. It predicts the
/// return (a reward), not DxDP's cost-to-go.
#[derive(Debug, Clone)]
pub struct ValueBaseline<D: Backend> {
    /// The return predictor.
    pub net: Mlp<D>,
    /// Its optimiser.
    pub optimizer: Adam<D>,
    /// Optimiser steps per batch.
    pub steps_per_batch: usize,
    n_steps: usize,
    time_embed_dim: usize,
    last_loss: f64,
}

impl<D: Backend> ValueBaseline<D> {
    /// A fresh predictor for data of dimension `dim` over `n_steps` steps.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dev: &D,
        dim: usize,
        n_steps: usize,
        hidden: usize,
        depth: usize,
        time_embed_dim: usize,
        lr: f64,
        steps_per_batch: usize,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        for (key, size) in [
            ("value_hidden", hidden),
            ("value_depth", depth),
            ("value_time_embed_dim", time_embed_dim),
        ] {
            if size == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        let net = Mlp::new(
            dev,
            dim + time_embed_dim,
            hidden,
            depth,
            1,
            Activation::Silu,
            rng,
        );
        let params = net.parameters();
        let optimizer = Adam::new(&params, vec![lr; params.len()], AdamConfig::default())?;
        Ok(Self {
            net,
            optimizer,
            steps_per_batch,
            n_steps,
            time_embed_dim,
            last_loss: f64::NAN,
        })
    }

    fn input(&self, states: &Matrix<D>, steps: &[usize]) -> Matrix<D> {
        with_time_embedding(states.clone(), steps, self.n_steps, self.time_embed_dim)
    }
}

impl<D: Backend> Baseline<D> for ValueBaseline<D> {
    fn name(&self) -> &str {
        "value"
    }
    fn advantages(&mut self, batch: &ReturnBatch<'_, D>) -> Result<Vec<f32>> {
        let input = self.input(batch.states, batch.steps);
        let rows = input.shape().0;
        let targets = matrix(input.device(), batch.returns.to_vec(), rows, 1);
        for _ in 0..self.steps_per_batch {
            let predicted = self.net.forward(input.clone().traced(Gradients::leaky()));
            let loss = (predicted - targets.clone()).square().mean();
            self.last_loss = loss.as_vec()[0] as f64;
            let mut grads = loss.backward();
            let g = gradients_of(&mut grads, &self.net.parameters())?;
            self.optimizer.update(self.net.parameters_mut(), &g)?;
        }
        let predicted = self.net.forward(input).as_vec();
        Ok(batch
            .returns
            .iter()
            .zip(predicted)
            .map(|(&g, b)| g - b)
            .collect())
    }
    fn stats(&self) -> Stats {
        vec![("baseline/value_loss".to_string(), self.last_loss)]
    }
    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        let names = self.net.parameter_names();
        checkpoint.put_model(&format!("{prefix}.net"), &self.net);
        self.optimizer
            .save(checkpoint, &format!("{prefix}.optim"), &names);
        Ok(())
    }
    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        let names = self.net.parameter_names();
        checkpoint.load_model(path, &format!("{prefix}.net"), &mut self.net)?;
        self.optimizer
            .load(checkpoint, path, &format!("{prefix}.optim"), &names)
    }
}

denoise_gym::config_section! {
    /// The `[value_baseline]` section: the network of the `value` baseline (docs/algorithms.md §4.1).
    pub struct ValueBaselineConfig {
        /// Hidden width of the value baseline's network.
        pub hidden: usize = 128,
        /// Hidden layers of the value baseline's network.
        pub depth: usize = 2,
        /// Dimension of the sinusoidal embedding of t in the value baseline's input.
        pub time_embed_dim: usize = 16,
        /// Adam learning rate of the value baseline.
        pub lr: f64 = 1e-3,
        /// Value-baseline optimiser steps per batch.
        pub steps: usize = 1,
    }
}

/// Builds a baseline by its config name.
pub fn make_baseline<D: Backend>(
    name: &str,
    dev: &D,
    dim: usize,
    n_steps: usize,
    value: &ValueBaselineConfig,
    rng: &mut impl Rng,
) -> Result<Box<dyn Baseline<D>>> {
    Ok(match name {
        "none" => Box::new(NoBaseline),
        "batch_mean" => Box::new(BatchMean),
        "ema" => Box::new(EmaBaseline::default()),
        "leave_one_out" => Box::new(LeaveOneOut),
        "group_normalized" => Box::new(GroupNormalized),
        "value" => Box::new(ValueBaseline::new(
            dev,
            dim,
            n_steps,
            value.hidden,
            value.depth,
            value.time_embed_dim,
            value.lr,
            value.steps,
            rng,
        )?),
        other => {
            return Err(Error::config(
                "finetune.baseline",
                format!(
                    "unknown baseline {other:?}; expected one of {}",
                    BASELINES
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    })
}
