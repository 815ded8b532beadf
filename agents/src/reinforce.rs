//! REINFORCE with baselines on the maximum-entropy return (SPEC §4, §4.1), readable top
//! to bottom in one file.
//!
//! `∇J ≈ mean_batch Σ_t ∇ log π(x_{t-1}|x_t) (G_t - b_t) + (τ_H/d) ∇ Σ_t H_t`, with
//! `G_t = -E(x_0) - τ_v Σ_{t'≤t} ‖x_{t'-1} - x_{t'}‖² / (2 s_{t'}² d)`.

use std::path::Path;

use denoise_gym::agent::{
    returns_to_go, Agent, Baseline, MaxEntCoefficients, ReturnBatch, Stats, VelocityScale,
    VelocityScaleKind,
};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::error::{ensure_finite, Error, Result};
use denoise_gym::metrics::mean_std;
use denoise_gym::nn::Parameterized;
use denoise_gym::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::rng::ProjectRng;
use denoise_gym::rollout::Rollout;
use denoise_gym::tensor::{vector, Backend};
use dfdx::prelude::*;
use serde::{Deserialize, Serialize};

/// REINFORCE's hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReinforceConfig {
    /// Adam learning rate of the ε-network.
    pub lr: f64,
    /// Adam learning rate of the `log σ_t` (their own parameter group).
    pub lr_log_sigma: f64,
    /// Adam betas.
    pub betas: [f64; 2],
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Normalise advantages to zero mean and unit std over the whole batch.
    pub normalize_advantages: bool,
    /// Clip advantages to `|A| ≤ clip_advantages` (0 = off; SPEC suggests 5).
    pub clip_advantages: f64,
    /// `τ_H` and `τ_v`.
    pub coefficients: MaxEntCoefficients,
    /// Adaptive or fixed `s_t²`.
    pub velocity_scale: VelocityScaleKind,
    /// `s_t²` of the fixed scale.
    pub velocity_scale_value: f64,
}

impl Default for ReinforceConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            lr_log_sigma: 1e-3,
            betas: [0.9, 0.999],
            grad_clip: 1.0,
            normalize_advantages: false,
            clip_advantages: 0.0,
            coefficients: MaxEntCoefficients {
                tau_entropy: 0.1,
                tau_velocity: 0.01,
            },
            velocity_scale: VelocityScaleKind::Adaptive,
            velocity_scale_value: 1.0,
        }
    }
}

/// Learning rate of each policy parameter: the ε-network's, then `log σ`'s.
pub fn policy_learning_rates<D: Backend>(
    policy: &GaussianPolicy<D>,
    lr: f64,
    lr_log_sigma: f64,
) -> Vec<f64> {
    policy
        .parameter_names()
        .iter()
        .map(|name| {
            if name == "log_sigma" {
                lr_log_sigma
            } else {
                lr
            }
        })
        .collect()
}

/// Post-processing shared by score-function agents: optional normalisation and clipping.
pub fn shape_advantages(advantages: &mut [f32], normalize: bool, clip: f64) {
    if normalize && !advantages.is_empty() {
        let (mean, std) = mean_std(advantages);
        for a in advantages.iter_mut() {
            *a = ((*a as f64 - mean) / (std + 1e-8)) as f32;
        }
    }
    if clip > 0.0 {
        let c = clip as f32;
        for a in advantages.iter_mut() {
            *a = a.clamp(-c, c);
        }
    }
}

/// The REINFORCE agent.
pub struct Reinforce<D: Backend> {
    /// The sampler-policy.
    pub policy: GaussianPolicy<D>,
    /// Adam over every policy parameter (ε-network and `log σ`).
    pub optimizer: Adam<D>,
    /// The baseline.
    pub baseline: Box<dyn Baseline<D>>,
    /// The velocity cost's `s_t²`.
    pub velocity: VelocityScale,
    /// Hyper-parameters.
    pub config: ReinforceConfig,
}

impl<D: Backend> Reinforce<D> {
    /// An agent that fine-tunes `policy`.
    pub fn new(
        policy: GaussianPolicy<D>,
        baseline: Box<dyn Baseline<D>>,
        config: ReinforceConfig,
    ) -> Result<Self> {
        let learning_rates = policy_learning_rates(&policy, config.lr, config.lr_log_sigma);
        let optimizer = Adam::new(
            &policy.parameters(),
            learning_rates,
            AdamConfig {
                betas: config.betas,
                ..AdamConfig::default()
            },
        )?;
        let velocity = VelocityScale::new(
            config.velocity_scale,
            policy.schedule(),
            config.velocity_scale_value,
        );
        Ok(Self {
            policy,
            optimizer,
            baseline,
            velocity,
            config,
        })
    }
}

impl<D: Backend> Agent<D> for Reinforce<D> {
    fn name(&self) -> &str {
        "reinforce"
    }

    fn policy(&self) -> &GaussianPolicy<D> {
        &self.policy
    }

    fn update(
        &mut self,
        rollout: &Rollout<D>,
        _rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats> {
        let (n_steps, batch, dim) = (rollout.n_steps(), rollout.batch_size(), rollout.dim());
        let MaxEntCoefficients {
            tau_entropy,
            tau_velocity,
        } = self.config.coefficients;
        let (states, actions, steps) = rollout.stacked_transitions();
        let squared_lengths = rollout.squared_step_lengths();
        let terminal = rollout.terminal_reward.as_vec();
        let (returns, velocity_cost) = returns_to_go(
            &terminal,
            &squared_lengths,
            n_steps,
            dim,
            &self.velocity,
            tau_velocity,
        )?;
        let mut advantages = self.baseline.advantages(&ReturnBatch {
            n_steps,
            batch_size: batch,
            returns: &returns,
            states: &states,
            steps: &steps,
        })?;
        shape_advantages(
            &mut advantages,
            self.config.normalize_advantages,
            self.config.clip_advantages,
        );
        let (advantage_mean, advantage_std) = mean_std(&advantages);

        let dev = self.policy.device().clone();
        let advantage = vector(&dev, advantages);
        let log_prob = self
            .policy
            .log_prob(states.traced(Gradients::leaky()), &steps, &actions);
        let policy_gradient_term = (log_prob * advantage).sum() / batch as f32;
        let entropy_term =
            self.policy.entropy_sum::<OwnedTape<f32, D>>() * (tau_entropy / dim as f64) as f32;
        let objective = policy_gradient_term + entropy_term;
        let loss = -objective;
        let loss_value = ensure_finite("policy/loss", loss.as_vec()[0] as f64, iteration)?;
        let mut grads = loss.backward();
        let mut gradients = gradients_of(&mut grads, &self.policy.parameters())?;
        let grad_norm = clip_grad_norm(&mut gradients, self.config.grad_clip);
        ensure_finite("policy/grad_norm", grad_norm, iteration)?;
        self.optimizer
            .update(self.policy.parameters_mut(), &gradients)?;
        self.velocity.observe(&squared_lengths, batch, dim);

        let entropy: f64 = (1..=n_steps).map(|t| self.policy.entropy(t) as f64).sum();
        let mut stats = vec![
            ("policy/loss".to_string(), loss_value),
            ("policy/grad_norm".to_string(), grad_norm),
            ("policy/entropy".to_string(), entropy),
            ("policy/velocity_cost".to_string(), velocity_cost),
            ("policy/advantage_mean".to_string(), advantage_mean),
            ("policy/advantage_std".to_string(), advantage_std),
        ];
        for t in 1..=n_steps {
            stats.push((format!("policy/velocity_scale_{t}"), self.velocity.get(t)));
        }
        stats.extend(self.baseline.stats());
        Ok(stats)
    }

    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        let names = self.policy.parameter_names();
        checkpoint.put_model(&format!("{prefix}.policy"), &self.policy);
        self.optimizer
            .save(checkpoint, &format!("{prefix}.optim"), &names);
        self.baseline
            .save(checkpoint, &format!("{prefix}.baseline"))?;
        let s2 = serde_json::to_string(&self.velocity.s2)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        checkpoint
            .metadata
            .insert(format!("{prefix}.velocity_s2"), s2);
        Ok(())
    }

    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        let names = self.policy.parameter_names();
        checkpoint.load_model(path, &format!("{prefix}.policy"), &mut self.policy)?;
        self.optimizer
            .load(checkpoint, path, &format!("{prefix}.optim"), &names)?;
        self.baseline
            .load(checkpoint, path, &format!("{prefix}.baseline"))?;
        let raw = checkpoint.meta(path, &format!("{prefix}.velocity_s2"))?;
        self.velocity.s2 = serde_json::from_str(raw)
            .map_err(|e| Error::checkpoint(path, format!("{prefix}.velocity_s2: {e}")))?;
        Ok(())
    }
}
