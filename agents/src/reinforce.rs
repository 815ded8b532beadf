//! REINFORCE with baselines on the maximum-entropy return (docs/algorithms.md §4, §4.1), readable top
//! to bottom in one file.
//!
//! `∇J ≈ mean_batch Σ_t ∇ log π(x_{t-1}|x_t) (G_t - b_t) + (τ_H/d) ∇ Σ_t H_t`, with
//! `G_t = -E(x_0) - τ_v Σ_{t'≤t} ‖x_{t'-1} - x_{t'}‖² / (2 s_{t'}² d)`.
//!
//! The diffusion-RL options of DPPO apply here and to every agent built on [`Reinforce`]
//! (PPO): `ft_steps` restricts the sum to the last K steps (the earlier ones are frozen in
//! the policy), `gamma_denoising` discounts `G_t`, and the policy's σ floors change how it
//! samples and scores. The pieces of an update ([`Reinforce::score`], [`Reinforce::loss`],
//! [`Reinforce::gradients`], [`Reinforce::apply_gradients`],
//! [`Reinforce::finish_update`]) are public so that other score-function agents share them.

use std::path::Path;

use denoise_gym::agent::{
    check_kl_reference, discounted_returns_to_go, Action, Agent, Baseline, KlAnchor,
    MaxEntCoefficients, ReturnBatch, Stats, TracedScalar, VelocityScale, VelocityScaleKind,
};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::env::DenoisingState;
use denoise_gym::error::{ensure_finite, Error, Result};
use denoise_gym::metrics::mean_std;
use denoise_gym::nn::Parameterized;
use denoise_gym::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::rng::{normal_matrix, ProjectRng};
use denoise_gym::rollout::Rollout;
use denoise_gym::tensor::{matrix, vector, Backend, Matrix, Vector};
use dfdx::prelude::*;

denoise_gym::config_section! {
    /// The `[agent]` section: the settings every score-function agent shares (REINFORCE's
    /// whole config; PPO and DxDP read it beside their own `[ppo]` and `[dxdp]` sections).
    pub struct ReinforceConfig {
        /// Adam learning rate of the eps-network.
        pub lr: f64 = 1e-4,
        /// Adam learning rate of log sigma_t (its own parameter group).
        pub lr_log_sigma: f64 = 1e-3,
        /// Adam betas.
        pub betas: [f64; 2] = [0.9, 0.999],
        /// Global gradient-norm clip (0 = off).
        pub grad_clip: f64 = 1.0,
        /// Normalise advantages to zero mean, unit std.
        pub normalize_advantages: bool = false,
        /// Clip advantages to |A| <= clip_advantages (0 = off).
        pub clip_advantages: f64 = 0.0,
        /// tau_entropy (tau_H): weight of the per-step entropy, divided by d.
        pub tau_entropy: f64 = 0.1,
        /// tau_velocity (tau_v): weight of the velocity cost, divided by d. tau_entropy = tau_velocity = 0 is the IPM baseline.
        pub tau_velocity: f64 = 0.01,
        /// Scale s_t^2 of the velocity cost: adaptive (running average of the step size) or fixed.
        pub velocity_scale: VelocityScaleKind = VelocityScaleKind::Adaptive,
        /// s_t^2 of the fixed velocity scale.
        pub velocity_scale_value: f64 = 1.0,
        /// Fine-tune only the last ft_steps denoising steps t = ft_steps..1 (DPPO); the earlier steps keep the pretrained network and sigma_t. In 1..=T; absent = all T steps.
        pub ft_steps: Option<usize> = None,
        /// Discount across denoising steps in the return-to-go, G_t = sum_{t' <= t} gamma^(t - t') r_t', in (0, 1].
        pub gamma_denoising: f64 = 1.0,
        /// Floor on sigma_t when sampling (> 0; absent = no floor).
        pub min_sigma_sample: Option<f64> = None,
        /// Floor on sigma_t when scoring log pi (> 0; absent = no floor).
        pub min_sigma_logprob: Option<f64> = None,
        /// Weight of the KL anchor to the sampler fine-tuning started from (frozen): adds kl_reference x mean_batch sum_t KL_t / d to the loss, KL_t in closed form; >= 0, 0 = off.
        pub kl_reference: f64 = 0.0,
    }
}

impl ReinforceConfig {
    /// `tau_entropy` and `tau_velocity` as the objective's coefficients.
    pub fn coefficients(&self) -> MaxEntCoefficients {
        MaxEntCoefficients {
            tau_entropy: self.tau_entropy,
            tau_velocity: self.tau_velocity,
        }
    }

    /// Checks the diffusion-RL options against a sampler of `n_steps` steps; errors name
    /// the config key.
    pub fn validate(&self, n_steps: usize) -> Result<()> {
        if let Some(k) = self.ft_steps {
            if k == 0 || k > n_steps {
                return Err(Error::config(
                    "ft_steps",
                    format!("must be in 1..={n_steps} (T), got {k}"),
                ));
            }
        }
        check_kl_reference(self.kl_reference)?;
        let gamma = self.gamma_denoising;
        if !(gamma > 0.0 && gamma <= 1.0) {
            return Err(Error::config(
                "gamma_denoising",
                format!("must be in (0, 1], got {gamma}"),
            ));
        }
        for (key, floor) in [
            ("min_sigma_sample", self.min_sigma_sample),
            ("min_sigma_logprob", self.min_sigma_logprob),
        ] {
            if let Some(value) = floor {
                if !(value.is_finite() && value > 0.0) {
                    return Err(Error::config(
                        key,
                        format!(
                            "must be a number > 0 (leave the key out for no floor), got {value}"
                        ),
                    ));
                }
            }
        }
        Ok(())
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

/// The fine-tuned transitions of a rollout with their advantages: what a score-function
/// update needs. Rows are step-major like [`Rollout::stacked_transitions`], restricted to
/// the fine-tuned steps `t = K..1`, which are the last `K·B` rows of that order.
#[derive(Debug, Clone)]
pub struct ScoredBatch<D: Backend> {
    /// `x_t` of every fine-tuned (step, sample), `K·B × d`.
    pub states: Matrix<D>,
    /// `x_{t-1}`, same rows.
    pub actions: Matrix<D>,
    /// `t` of every row.
    pub steps: Vec<usize>,
    /// Shaped advantages `A`, one per row.
    pub advantages: Vec<f32>,
    /// Index of the first row in the rollout's full `T·B` order (`(T - K)·B`), to line
    /// rows up with `rollout.log_probs`.
    pub first_row: usize,
    /// Number of episodes B.
    pub batch_size: usize,
    /// `‖x_{t-1} - x_t‖²` of every transition of the rollout (all T steps).
    pub squared_lengths: Vec<f32>,
    /// Mean velocity cost per episode.
    pub velocity_cost: f64,
    /// `μ_ref(x_t, t)` of every row under the KL anchor's reference (`None` without one),
    /// computed once per rollout for every minibatch that scores these rows.
    pub reference_means: Option<Matrix<D>>,
}

impl<D: Backend> ScoredBatch<D> {
    /// Number of (sample, step) pairs, `K·B`.
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The rows `rows` of `m`, in that order.
pub fn gather_rows<D: Backend>(m: &Matrix<D>, rows: &[usize]) -> Matrix<D> {
    let cols = m.shape().1;
    let data = m.as_vec();
    let mut out = Vec::with_capacity(rows.len() * cols);
    for &r in rows {
        out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    matrix(m.device(), out, rows.len(), cols)
}

/// The last `rows` rows of `m`.
fn last_rows<D: Backend>(m: &Matrix<D>, rows: usize) -> Matrix<D> {
    let (total, cols) = *m.shape();
    if rows == total {
        return m.clone();
    }
    let data = m.as_vec()[(total - rows) * cols..].to_vec();
    matrix(m.device(), data, rows, cols)
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
    /// The KL anchor to the sampler fine-tuning started from (`kl_reference > 0`).
    pub anchor: Option<KlAnchor<D>>,
    /// Hyper-parameters.
    pub config: ReinforceConfig,
    /// `log π(x_{t-1} | x_t)` of the actions of the rollout being collected, with their
    /// tapes, so that the update need not run the ε-network again on the same weights and
    /// states (12% of a GCD iteration's matmul work).
    recorded: Vec<RecordedStep<D>>,
}

/// One step's action and its differentiable log-probability, recorded while acting.
struct RecordedStep<D: Backend> {
    t: usize,
    action: Matrix<D>,
    log_prob: Vector<D, OwnedTape<f32, D>>,
}

impl<D: Backend> Reinforce<D> {
    /// An agent that fine-tunes `policy`.
    /// It applies the config's diffusion-RL options to the policy: the steps above
    /// `ft_steps` are frozen at their current values, and the `σ` floors are set; with
    /// `kl_reference > 0` the policy as it then is becomes the KL anchor's reference.
    pub fn new(
        mut policy: GaussianPolicy<D>,
        baseline: Box<dyn Baseline<D>>,
        config: ReinforceConfig,
    ) -> Result<Self> {
        config.validate(policy.n_steps())?;
        if let Some(k) = config.ft_steps {
            policy.freeze_steps_above(k)?;
        }
        policy.set_sigma_floors(config.min_sigma_sample, config.min_sigma_logprob)?;
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
        let anchor = KlAnchor::new(&policy, config.kl_reference)?;
        Ok(Self {
            policy,
            optimizer,
            baseline,
            velocity,
            anchor,
            config,
            recorded: Vec::new(),
        })
    }
}

impl<D: Backend> Reinforce<D> {
    /// Returns-to-go (discounted by `gamma_denoising`), the baseline's advantages and
    /// their shaping, for the fine-tuned steps of `rollout`. Updates stateful baselines
    /// (EMA, value network), so call it once per rollout.
    pub fn score(&mut self, rollout: &Rollout<D>) -> Result<ScoredBatch<D>> {
        let (n_steps, batch, dim) = (rollout.n_steps(), rollout.batch_size(), rollout.dim());
        let (states, actions, steps) = rollout.stacked_transitions();
        let squared_lengths = rollout.squared_step_lengths();
        let terminal = rollout.terminal_reward.as_vec();
        let (returns, velocity_cost) = discounted_returns_to_go(
            &terminal,
            &squared_lengths,
            n_steps,
            dim,
            &self.velocity,
            self.config.tau_velocity,
            self.config.gamma_denoising,
        )?;
        let advantages = self.baseline.advantages(&ReturnBatch {
            n_steps,
            batch_size: batch,
            returns: &returns,
            states: &states,
            steps: &steps,
        })?;
        let rows = self.policy.ft_steps().min(n_steps) * batch;
        let first_row = n_steps * batch - rows;
        let mut advantages = advantages[first_row..].to_vec();
        shape_advantages(
            &mut advantages,
            self.config.normalize_advantages,
            self.config.clip_advantages,
        );
        let states = last_rows(&states, rows);
        let steps = steps[first_row..].to_vec();
        let reference_means = self
            .anchor
            .as_ref()
            .map(|anchor| anchor.reference_mean(&states, &steps));
        Ok(ScoredBatch {
            states,
            actions: last_rows(&actions, rows),
            steps,
            advantages,
            first_row,
            batch_size: batch,
            squared_lengths,
            velocity_cost,
            reference_means,
        })
    }

    /// The entropy bonus `(τ_H/d) Σ_t H_t` as a differentiable scalar.
    pub fn entropy_objective(&self) -> TracedScalar<D> {
        let weight = self.config.tau_entropy / self.policy.dim() as f64;
        self.policy.entropy_sum::<OwnedTape<f32, D>>() * weight as f32
    }

    /// REINFORCE's loss `-(mean_batch Σ_t log π(x_{t-1}|x_t) A_t + (τ_H/d) Σ_t H_t)`, plus
    /// the KL anchor's `kl_reference · mean_batch Σ_t KL_t / d` where there is one.
    pub fn loss(&self, batch: &ScoredBatch<D>) -> TracedScalar<D> {
        self.loss_and_kl(batch).0
    }

    /// [`Reinforce::loss`] and the anchor's `mean_batch Σ_t KL_t` (nats; `None` without
    /// an anchor).
    pub fn loss_and_kl(&self, batch: &ScoredBatch<D>) -> (TracedScalar<D>, Option<f64>) {
        let advantage = vector(self.policy.device(), batch.advantages.clone());
        let mean = self.policy.mean(
            batch.states.clone().traced(Gradients::leaky()),
            &batch.steps,
        );
        let penalty = self.kl_penalty(
            mean.with_empty_tape(),
            batch,
            &batch.steps,
            None,
            batch.batch_size as f64,
        );
        let log_prob = self
            .policy
            .log_prob_of_mean(mean, &batch.steps, &batch.actions);
        let policy_gradient_term = (log_prob * advantage).sum() / batch.batch_size as f32;
        let loss = -(policy_gradient_term + self.entropy_objective());
        match penalty {
            Some((term, kl)) => (loss + term, Some(kl)),
            None => (loss, None),
        }
    }

    /// The KL anchor's loss term and `Σ_rows KL_t / episodes` for the policy's traced
    /// `mean` at `rows` of `batch` (all rows when `None`); `None` without an anchor.
    pub fn kl_penalty(
        &self,
        mean: Matrix<D, OwnedTape<f32, D>>,
        batch: &ScoredBatch<D>,
        steps: &[usize],
        rows: Option<&[usize]>,
        episodes: f64,
    ) -> Option<(TracedScalar<D>, f64)> {
        let anchor = self.anchor.as_ref()?;
        let mean_ref = match (&batch.reference_means, rows) {
            (Some(all), Some(rows)) => gather_rows(all, rows),
            (Some(all), None) => all.clone(),
            // A batch not made by `score` (built by hand): the reference's means now.
            (None, Some(rows)) => anchor.reference_mean(&gather_rows(&batch.states, rows), steps),
            (None, None) => anchor.reference_mean(&batch.states, steps),
        };
        let kl = anchor.kl_rows(&self.policy, mean, mean_ref, steps);
        Some(anchor.penalty(&self.policy, kl, episodes))
    }

    /// [`Reinforce::loss`] from the log-probabilities recorded while acting, when they are
    /// those of `batch`: one recorded step per fine-tuned step, in order, with the very
    /// actions of the batch (compared exactly). `None` otherwise (the caller recomputes).
    fn loss_from_recorded(&mut self, batch: &ScoredBatch<D>) -> Option<TracedScalar<D>> {
        let recorded = std::mem::take(&mut self.recorded);
        let rows = batch.batch_size;
        if rows == 0 || recorded.len() * rows != batch.steps.len() {
            return None;
        }
        let actions = batch.actions.as_vec();
        let dim = self.policy.dim();
        let matches = recorded.iter().enumerate().all(|(k, step)| {
            batch.steps[k * rows..(k + 1) * rows]
                .iter()
                .all(|&t| t == step.t)
                && step.action.as_vec() == actions[k * rows * dim..(k + 1) * rows * dim]
        });
        if !matches {
            return None;
        }
        let dev = self.policy.device().clone();
        let mut policy_gradient_term: Option<TracedScalar<D>> = None;
        for (k, step) in recorded.into_iter().enumerate() {
            let advantage = vector(&dev, batch.advantages[k * rows..(k + 1) * rows].to_vec());
            let term = (step.log_prob * advantage).sum();
            policy_gradient_term = Some(match policy_gradient_term {
                None => term,
                Some(sum) => sum + term,
            });
        }
        let policy_gradient_term = policy_gradient_term? / rows as f32;
        Some(-(policy_gradient_term + self.entropy_objective()))
    }

    /// The gradient of `loss` for every policy parameter (parameter order), unclipped.
    pub fn gradients(&self, loss: TracedScalar<D>) -> Result<Vec<Matrix<D>>> {
        let mut grads = loss.backward();
        gradients_of(&mut grads, &self.policy.parameters())
    }

    /// Clips `gradients` to the global norm `grad_clip` and takes one Adam step; returns
    /// the norm before clipping.
    pub fn apply_gradients(
        &mut self,
        mut gradients: Vec<Matrix<D>>,
        iteration: u64,
    ) -> Result<f64> {
        let grad_norm = clip_grad_norm(&mut gradients, self.config.grad_clip);
        ensure_finite("policy/grad_norm", grad_norm, iteration)?;
        self.optimizer
            .update(self.policy.parameters_mut(), &gradients)?;
        Ok(grad_norm)
    }

    /// After the policy step: moves the adaptive `s_t²` and gathers the statistics every
    /// score-function agent logs.
    pub fn finish_update(&mut self, batch: &ScoredBatch<D>) -> Stats {
        let dim = self.policy.dim();
        self.velocity
            .observe(&batch.squared_lengths, batch.batch_size, dim);
        let (advantage_mean, advantage_std) = mean_std(&batch.advantages);
        let n_steps = self.policy.n_steps();
        let entropy: f64 = (1..=n_steps).map(|t| self.policy.entropy(t) as f64).sum();
        let mut stats = vec![
            ("policy/entropy".to_string(), entropy),
            ("policy/velocity_cost".to_string(), batch.velocity_cost),
            ("policy/advantage_mean".to_string(), advantage_mean),
            ("policy/advantage_std".to_string(), advantage_std),
        ];
        for t in 1..=n_steps {
            stats.push((format!("policy/velocity_scale_{t}"), self.velocity.get(t)));
        }
        stats.extend(self.baseline.stats());
        stats
    }
}

impl<D: Backend> Agent<D> for Reinforce<D> {
    fn name(&self) -> &str {
        "reinforce"
    }

    fn policy(&self) -> &GaussianPolicy<D> {
        &self.policy
    }

    /// Samples like the default; on the fine-tuned steps it keeps the mean's tape and
    /// records `log π` of the action for the update.
    fn act(&mut self, observation: &DenoisingState<D>, rng: &mut ProjectRng) -> Result<Action<D>> {
        let t = observation.t;
        if t == self.policy.n_steps() {
            // A new episode: what an earlier, unfinished one recorded is stale.
            self.recorded.clear();
        }
        let (rows, cols) = *observation.x.shape();
        let noise = normal_matrix(self.policy.device(), rng, rows, cols);
        if t > self.policy.ft_steps() {
            return Ok(Action {
                next: self.policy.sample_step(&observation.x, t, &noise),
                log_prob: None,
            });
        }
        let ts = vec![t; rows];
        let mean = self
            .policy
            .mean(observation.x.clone().traced(Gradients::leaky()), &ts);
        let next = self.policy.sample_from_mean(&mean, t, &noise);
        let log_prob = self.policy.log_prob_of_mean(mean, &ts, &next);
        self.recorded.push(RecordedStep {
            t,
            action: next.clone(),
            log_prob,
        });
        Ok(Action {
            next,
            log_prob: None,
        })
    }

    fn update(
        &mut self,
        rollout: &Rollout<D>,
        _rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats> {
        let batch = self.score(rollout)?;
        let (loss, reused, kl_reference) = if self.anchor.is_some() {
            // The anchor needs the policy's mean at every row, which the recorded
            // log-probabilities do not keep: one ε-network pass again.
            self.recorded.clear();
            let (loss, kl) = self.loss_and_kl(&batch);
            (loss, 0.0, kl)
        } else {
            match self.loss_from_recorded(&batch) {
                Some(loss) => (loss, 1.0, None),
                None => (self.loss(&batch), 0.0, None),
            }
        };
        let loss_value = ensure_finite("policy/loss", loss.as_vec()[0] as f64, iteration)?;
        let gradients = self.gradients(loss)?;
        let grad_norm = self.apply_gradients(gradients, iteration)?;
        let mut stats = vec![
            ("policy/loss".to_string(), loss_value),
            ("policy/grad_norm".to_string(), grad_norm),
            // 1 when the loss used the log-probabilities recorded while acting, 0 when it
            // ran the ε-network again (a rollout this agent did not act in).
            ("policy/log_prob_recorded".to_string(), reused),
        ];
        if let Some(kl) = kl_reference {
            stats.push(("policy/kl_reference".to_string(), kl));
        }
        stats.extend(self.finish_update(&batch));
        Ok(stats)
    }

    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        let names = self.policy.parameter_names();
        checkpoint.put_model(&format!("{prefix}.policy"), &self.policy);
        self.policy
            .save_step_options(checkpoint, &format!("{prefix}.policy"));
        self.optimizer
            .save(checkpoint, &format!("{prefix}.optim"), &names);
        self.baseline
            .save(checkpoint, &format!("{prefix}.baseline"))?;
        if let Some(anchor) = &self.anchor {
            anchor.save(checkpoint, &format!("{prefix}.kl_reference"));
        }
        self.velocity
            .save(checkpoint, &format!("{prefix}.velocity_s2"))
    }

    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        self.recorded.clear();
        if let Some(anchor) = self.anchor.as_mut() {
            anchor.load(checkpoint, path, &format!("{prefix}.kl_reference"))?;
        }
        let names = self.policy.parameter_names();
        checkpoint.load_model(path, &format!("{prefix}.policy"), &mut self.policy)?;
        self.policy
            .load_step_options(checkpoint, path, &format!("{prefix}.policy"))?;
        self.optimizer
            .load(checkpoint, path, &format!("{prefix}.optim"), &names)?;
        self.baseline
            .load(checkpoint, path, &format!("{prefix}.baseline"))?;
        self.velocity
            .load(checkpoint, path, &format!("{prefix}.velocity_s2"))
    }
}
