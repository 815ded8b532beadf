//! PPO on the maximum-entropy return (docs/algorithms.md §4.1): REINFORCE's returns, baselines,
//! advantage shaping, entropy bonus, optimiser and checkpoint ([`Reinforce`]), with the
//! clipped surrogate in place of `log π · A`.
//!
//! Per (sample, step) pair, `ρ = exp(log π_new - log π_old)` with `log π_old` recorded while
//! acting; the loss of a minibatch of pairs is
//! `-(mean min(ρ A, clip(ρ, 1-ε, 1+ε) A) + (τ_H/d) Σ_t H_t / K)`, over `K` fine-tuned steps.
//! PPO averages over pairs where REINFORCE sums over steps and averages over samples, so
//! dividing the entropy bonus by `K` keeps the two objectives proportional: at `ρ = 1` with
//! one minibatch of all pairs, PPO's gradient is REINFORCE's divided by `K`.
//! The KL anchor (`agent.kl_reference`) enters the same way: `β mean KL_t / d` over the
//! minibatch's pairs, REINFORCE's term divided by `K`.

use std::path::Path;

use denoise_gym::agent::{Action, Agent, Baseline, Stats, TracedScalar};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::env::DenoisingState;
use denoise_gym::error::{ensure_finite, Error, Result};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::rng::{normal_matrix, ProjectRng};
use denoise_gym::rollout::Rollout;
use denoise_gym::tensor::{vector, Backend};
use dfdx::prelude::*;
use rand::seq::SliceRandom;

use crate::reinforce::{gather_rows, Reinforce, ReinforceConfig, ScoredBatch};

denoise_gym::config_section! {
    /// The `[ppo]` section: PPO's own settings (the rest are `[agent]`'s, [`ReinforceConfig`]).
    pub struct PpoConfig {
        /// Clip range epsilon of the ratio, in (0, 1).
        pub clip: f64 = 0.2,
        /// Epochs (passes) over each rollout.
        pub epochs: usize = 4,
        /// (sample, step) pairs per minibatch, at most finetune.batch_size x ft_steps; absent = all pairs in one minibatch.
        pub minibatch_size: Option<usize> = None,
        /// Stop an update's epochs once a minibatch's approx_kl exceeds this (> 0; absent = never).
        pub target_kl: Option<f64> = None,
    }
}

impl PpoConfig {
    /// Checks the values; errors name the config key.
    pub fn validate(&self) -> Result<()> {
        if !(self.clip.is_finite() && self.clip > 0.0 && self.clip < 1.0) {
            return Err(Error::config(
                "clip",
                format!("must be in (0, 1), got {}", self.clip),
            ));
        }
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1"));
        }
        if self.minibatch_size == Some(0) {
            return Err(Error::config(
                "minibatch_size",
                "must be at least 1 (leave the key out for one minibatch of all pairs)",
            ));
        }
        if let Some(kl) = self.target_kl {
            if !(kl.is_finite() && kl > 0.0) {
                return Err(Error::config(
                    "target_kl",
                    format!("must be a number > 0 (leave the key out for no early stop), got {kl}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks the minibatch against a batch of `pairs` fine-tuned (sample, step) pairs.
    pub fn check_minibatch(&self, pairs: usize) -> Result<()> {
        match self.minibatch_size {
            Some(size) if size > pairs => Err(Error::config(
                "minibatch_size",
                format!(
                    "{size} is larger than the batch: it must be at most the number of \
                     (sample, step) pairs per rollout, batch_size × ft_steps = {pairs}"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// What one minibatch's surrogate gives besides the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurrogateStats {
    /// `½ mean (log π_new - log π_old)²`.
    pub approx_kl: f64,
    /// Fraction of pairs with `|ρ - 1| > ε`.
    pub clip_fraction: f64,
    /// The KL anchor's `Σ_t KL_t` per chain, estimated from this minibatch's pairs
    /// (`None` without an anchor).
    pub kl_reference: Option<f64>,
}

/// The PPO agent: REINFORCE's state, a different update.
pub struct Ppo<D: Backend> {
    /// Policy, Adam, baseline, velocity scale and the shared options.
    pub reinforce: Reinforce<D>,
    /// PPO's own options.
    pub config: PpoConfig,
}

impl<D: Backend> Ppo<D> {
    /// An agent that fine-tunes `policy` (see [`Reinforce::new`] for the options it applies).
    pub fn new(
        policy: GaussianPolicy<D>,
        baseline: Box<dyn Baseline<D>>,
        shared: ReinforceConfig,
        config: PpoConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            reinforce: Reinforce::new(policy, baseline, shared)?,
            config,
        })
    }

    /// The clipped-surrogate loss of the pairs `rows` of `batch` (indices into its rows),
    /// with `old_log_probs[r]` the recorded `log π_old` of row `r`, plus the KL anchor's
    /// term where the agent has one.
    pub fn minibatch_loss(
        &self,
        batch: &ScoredBatch<D>,
        rows: &[usize],
        old_log_probs: &[f32],
    ) -> (TracedScalar<D>, SurrogateStats) {
        let policy = &self.reinforce.policy;
        let dev = policy.device();
        let states = gather_rows(&batch.states, rows);
        let actions = gather_rows(&batch.actions, rows);
        let steps: Vec<usize> = rows.iter().map(|&r| batch.steps[r]).collect();
        let advantage = vector(dev, rows.iter().map(|&r| batch.advantages[r]).collect());
        let old = vector(dev, rows.iter().map(|&r| old_log_probs[r]).collect());
        let mean = policy.mean(states.traced(Gradients::leaky()), &steps);
        // Per pair, K·B pairs making B chains: a minibatch of m pairs stands for m/K chains,
        // so the anchor's term is REINFORCE's divided by K, as the surrogate is.
        let ft_steps = policy.ft_steps() as f64;
        let penalty = self.reinforce.kl_penalty(
            mean.with_empty_tape(),
            batch,
            &steps,
            Some(rows),
            rows.len().max(1) as f64,
        );
        let log_prob = policy.log_prob_of_mean(mean, &steps, &actions);
        let log_ratio = log_prob - old;
        let eps = self.config.clip as f32;
        let deltas = log_ratio.as_vec();
        let n = rows.len().max(1) as f64;
        let stats = SurrogateStats {
            approx_kl: deltas
                .iter()
                .map(|&v| 0.5 * (v as f64).powi(2))
                .sum::<f64>()
                / n,
            clip_fraction: deltas
                .iter()
                .filter(|&&v| (v.exp() - 1.0).abs() > eps)
                .count() as f64
                / n,
            kl_reference: penalty.as_ref().map(|(_, kl)| kl * ft_steps),
        };
        let ratio = log_ratio.exp();
        let unclipped = ratio.with_empty_tape() * advantage.clone();
        let clipped = ratio.clamp(1.0 - eps, 1.0 + eps) * advantage;
        let surrogate = unclipped.minimum(clipped).mean();
        let entropy = self.reinforce.entropy_objective() / policy.ft_steps() as f32;
        let loss = -(surrogate + entropy);
        match penalty {
            Some((term, _)) => (loss + term, stats),
            None => (loss, stats),
        }
    }
}

impl<D: Backend> Agent<D> for Ppo<D> {
    fn name(&self) -> &str {
        "ppo"
    }

    fn policy(&self) -> &GaussianPolicy<D> {
        &self.reinforce.policy
    }

    /// Samples like the default and records `log π_old` of the action (with the
    /// `min_sigma_logprob` floor, as the update scores it), from the mean it sampled from:
    /// one ε-network call per step.
    fn act(&mut self, observation: &DenoisingState<D>, rng: &mut ProjectRng) -> Result<Action<D>> {
        let policy = &self.reinforce.policy;
        let (rows, cols) = *observation.x.shape();
        let noise = normal_matrix(policy.device(), rng, rows, cols);
        let ts = vec![observation.t; rows];
        let mean = policy.mean(observation.x.clone(), &ts);
        let next = policy.sample_from_mean(&mean, observation.t, &noise);
        let log_prob = policy.log_prob_of_mean(mean, &ts, &next);
        Ok(Action {
            next,
            log_prob: Some(log_prob),
        })
    }

    fn update(
        &mut self,
        rollout: &Rollout<D>,
        rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats> {
        let (n_steps, batch_size) = (rollout.n_steps(), rollout.batch_size());
        if rollout.log_probs.len() != n_steps
            || rollout.log_probs.iter().any(|v| v.shape().0 != batch_size)
        {
            return Err(Error::InvalidArgument(format!(
                "PPO needs log π_old of all {n_steps} steps × {batch_size} samples recorded \
                 while acting (collect the rollout with this agent's act); the rollout has {} steps",
                rollout.log_probs.len()
            )));
        }
        let batch = self.reinforce.score(rollout)?;
        let old_log_probs: Vec<f32> = rollout
            .log_probs
            .iter()
            .flat_map(|v| v.as_vec())
            .skip(batch.first_row)
            .collect();
        let pairs = batch.len();
        self.config.check_minibatch(pairs)?;
        let minibatch = self.config.minibatch_size.unwrap_or(pairs).max(1);
        let mut order: Vec<usize> = (0..pairs).collect();
        let (mut losses, mut norms, mut kls, mut clip_fractions, mut kl_references) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut early_stopped = false;
        'epochs: for _ in 0..self.config.epochs {
            order.shuffle(rng);
            for rows in order.chunks(minibatch) {
                let (loss, stats) = self.minibatch_loss(&batch, rows, &old_log_probs);
                kls.push(stats.approx_kl);
                clip_fractions.push(stats.clip_fraction);
                kl_references.extend(stats.kl_reference);
                if self
                    .config
                    .target_kl
                    .is_some_and(|target| stats.approx_kl > target)
                {
                    early_stopped = true;
                    break 'epochs;
                }
                losses.push(ensure_finite(
                    "policy/loss",
                    loss.as_vec()[0] as f64,
                    iteration,
                )?);
                let gradients = self.reinforce.gradients(loss)?;
                norms.push(self.reinforce.apply_gradients(gradients, iteration)?);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let mut stats = vec![
            ("policy/loss".to_string(), mean(&losses)),
            ("policy/grad_norm".to_string(), mean(&norms)),
            ("policy/approx_kl".to_string(), mean(&kls)),
            ("policy/clip_fraction".to_string(), mean(&clip_fractions)),
            ("policy/ppo_updates".to_string(), losses.len() as f64),
            (
                "policy/ppo_early_stop".to_string(),
                if early_stopped { 1.0 } else { 0.0 },
            ),
        ];
        if !kl_references.is_empty() {
            stats.push(("policy/kl_reference".to_string(), mean(&kl_references)));
        }
        stats.extend(self.reinforce.finish_update(&batch));
        Ok(stats)
    }

    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        self.reinforce.save(checkpoint, prefix)
    }

    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        self.reinforce.load(checkpoint, path, prefix)
    }
}
