//! DSM pretraining as a [`Phase`]: denoising score matching of the sampler's ε-network
//! on data batches (docs/algorithms.md §2), with Adam, gradient clipping and an optional
//! weight EMA that becomes the sampler.

use std::path::Path;

use dfdx::prelude::*;
use rand::Rng;

use crate::agent::Stats;
use crate::checkpoint::Checkpoint;
use crate::error::{ensure_finite, Error, Result};
use crate::irl::ExpertSampler;
use crate::nn::Parameterized;
use crate::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig, WeightEma};
use crate::policy::GaussianPolicy;
use crate::rng::{normal_matrix, rng_from_json, rng_to_json, ProjectRng};
use crate::sampler::Sampler;
use crate::tensor::Backend;
use crate::train::Phase;

/// The name of the DSM phase (its `phase` in checkpoints and `metrics.csv`).
pub const PHASE: &str = "pretrain";

/// DSM pretraining's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DsmConfig {
    /// Data points per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Adam's β1, β2.
    pub betas: [f64; 2],
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Decay of the weight EMA that becomes the sampler (0 = no EMA: the current weights).
    pub ema_decay: f64,
}

impl DsmConfig {
    /// Checks the ranges: a batch of at least 1, a positive finite learning rate, betas
    /// and the EMA decay in [0, 1).
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::config("lr", "must be a positive number"));
        }
        if self.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(Error::config("betas", "each beta must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(Error::config("ema_decay", "must be in [0, 1)"));
        }
        Ok(())
    }
}

/// Everything DSM pretraining carries from one iteration to the next.
pub struct DsmPhase<D: Backend> {
    /// The sampler being trained.
    pub policy: GaussianPolicy<D>,
    /// Adam over the ε-network's parameters.
    pub optimizer: Adam<D>,
    /// EMA of the ε-network's weights, when `ema_decay > 0`.
    pub ema: Option<WeightEma<D>>,
    /// The training RNG (data, time steps, noise).
    pub rng: ProjectRng,
    /// Iterations done.
    pub iteration: u64,
    config: DsmConfig,
    data: Box<ExpertSampler<'static, D>>,
}

impl<D: Backend> DsmPhase<D> {
    /// A fresh phase training `policy` on batches drawn by `data` (a `n × d` matrix of
    /// data points from the phase's generator), every random number from `rng`.
    pub fn new(
        policy: GaussianPolicy<D>,
        config: DsmConfig,
        data: Box<ExpertSampler<'static, D>>,
        rng: ProjectRng,
    ) -> Result<Self> {
        config.validate()?;
        let params = policy.eps_net.parameters();
        let optimizer = Adam::new(
            &params,
            vec![config.lr; params.len()],
            AdamConfig {
                betas: config.betas,
                ..AdamConfig::default()
            },
        )?;
        let ema = (config.ema_decay > 0.0).then(|| WeightEma::new(&params, config.ema_decay));
        Ok(Self {
            policy,
            optimizer,
            ema,
            rng,
            iteration: 0,
            config,
            data,
        })
    }

    /// One DSM step on a fresh batch; returns `(loss, gradient norm before clipping)`.
    /// Both are checked before any update, so a failed step leaves the phase as it was.
    pub fn train_step(&mut self) -> Result<(f64, f64)> {
        let batch = self.config.batch_size;
        let n_steps = self.policy.n_steps();
        let x0 = (self.data)(batch, &mut self.rng);
        let ts: Vec<usize> = (0..batch)
            .map(|_| self.rng.gen_range(1..=n_steps))
            .collect();
        let dev = self.policy.device().clone();
        let noise = normal_matrix(&dev, &mut self.rng, batch, self.policy.dim());
        let x_t = self.policy.noised(&x0, &ts, &noise);
        let loss = self
            .policy
            .dsm_loss(x_t.traced(Gradients::leaky()), &ts, &noise);
        let loss_value = loss.as_vec()[0] as f64;
        ensure_finite("dsm/loss", loss_value, self.iteration + 1)?;
        let mut grads = loss.backward();
        let mut gradients = gradients_of(&mut grads, &self.policy.eps_net.parameters())?;
        let grad_norm = clip_grad_norm(&mut gradients, self.config.grad_clip);
        ensure_finite("dsm/grad_norm", grad_norm, self.iteration + 1)?;
        self.optimizer
            .update(self.policy.eps_net.parameters_mut(), &gradients)?;
        if let Some(ema) = self.ema.as_mut() {
            ema.update(&self.policy.eps_net.parameters());
        }
        self.iteration += 1;
        Ok((loss_value, grad_norm))
    }

    /// The sampler used for evaluation and sampling: EMA weights when kept.
    pub fn sampler(&self) -> GaussianPolicy<D> {
        let mut sampler = self.policy.clone();
        if let Some(ema) = &self.ema {
            ema.copy_to(sampler.eps_net.parameters_mut());
        }
        sampler
    }
}

impl<D: Backend> Phase<D> for DsmPhase<D> {
    fn name(&self) -> &str {
        PHASE
    }
    fn iterations_done(&self) -> u64 {
        self.iteration
    }
    fn global_step(&self) -> u64 {
        self.iteration
    }
    fn step(&mut self) -> Result<Stats> {
        let (loss, grad_norm) = self.train_step()?;
        let mut scalars = vec![
            ("dsm/loss".to_string(), loss),
            ("dsm/grad_norm".to_string(), grad_norm),
        ];
        for (t, sigma) in self.policy.sigmas().iter().enumerate() {
            scalars.push((format!("policy/sigma_{}", t + 1), *sigma as f64));
        }
        Ok(scalars)
    }
    fn unchanged_on_error(&self) -> bool {
        // `train_step` checks the loss and the gradient before any update.
        true
    }
    fn save(&self) -> Result<Checkpoint> {
        let mut c = Checkpoint::new();
        c.put_model("policy", &self.policy);
        let names = self.policy.eps_net.parameter_names();
        if let Some(ema) = &self.ema {
            c.put_matrices("ema", &names, &ema.shadow.iter().collect::<Vec<_>>());
        }
        c.put_matrices(
            "pretrain_optim.moment1",
            &names,
            &self.optimizer.moment1.iter().collect::<Vec<_>>(),
        );
        c.put_matrices(
            "pretrain_optim.moment2",
            &names,
            &self.optimizer.moment2.iter().collect::<Vec<_>>(),
        );
        let meta = &mut c.metadata;
        meta.insert(
            "pretrain_optim.step".into(),
            self.optimizer.step.to_string(),
        );
        meta.insert("rng".into(), rng_to_json(&self.rng)?);
        meta.insert("dim".into(), self.policy.dim().to_string());
        meta.insert("n_steps".into(), self.policy.n_steps().to_string());
        meta.insert(
            "sampler_weights".into(),
            if self.ema.is_some() { "ema" } else { "current" }.into(),
        );
        Ok(c)
    }
    fn load(&mut self, c: &Checkpoint, path: &Path) -> Result<()> {
        c.load_model(path, "policy", &mut self.policy)?;
        let names = self.policy.eps_net.parameter_names();
        if let Some(ema) = self.ema.as_mut() {
            c.load_matrices(path, "ema", &names, ema.shadow.iter_mut().collect())?;
        }
        c.load_matrices(
            path,
            "pretrain_optim.moment1",
            &names,
            self.optimizer.moment1.iter_mut().collect(),
        )?;
        c.load_matrices(
            path,
            "pretrain_optim.moment2",
            &names,
            self.optimizer.moment2.iter_mut().collect(),
        )?;
        self.optimizer.step = c.meta_parse(path, "pretrain_optim.step")?;
        self.iteration = c.meta_parse(path, "iteration")?;
        self.rng = rng_from_json(c.meta(path, "rng")?)?;
        Ok(())
    }
    fn sampler(&self) -> Box<dyn Sampler<D> + '_> {
        Box::new(DsmPhase::sampler(self))
    }
}
