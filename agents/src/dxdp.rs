//! DxDP, the value-based pathwise update of DxMI (docs/algorithms.md §4.2), readable top to bottom.
//!
//! A time-conditioned value `V_ψ(x, t)` estimates the cost still to come from `(x, t)`
//! (energy at the end plus running costs), with `V_ψ(x, 0) := E_φ(x)`. Each iteration:
//!
//! 1. **Value**, backward in time `t = 1..T`, one optimiser step per t on the rollout's
//!    states at step t: `L_V = mean (V_ψ(x_t, t) - stopgrad(target_t))²` with
//!    `target_t = V_ψ(x_{t-1}, t-1) + τ_v ‖x_{t-1} - x_t‖²/(2 s_t² d) - τ_H H_t / d`
//!    (docs/algorithms.md), or `V_ψ(x_{t-1}, t-1)` alone (what DxMI's trainer does with its shipped
//!    configs: `entropy_in_value` and `velocity_in_value` are `None` there), chosen by
//!    [`ValueTarget`].
//! 2. **Policy**, on the rollout's states `(x_t, t)`, with the reparameterised step
//!    `x' = μ_θ(x_t, t) + σ_t ε`:
//!    `L_π = mean[ V_ψ(x', t-1) + τ_v ‖x' - x_t‖²/(2 s_t² d) - τ_H log σ_t ]`, the gradient
//!    flowing through `V_ψ` (through `E_φ` at `t = 1`) into the ε-network and every `log σ_t`.
//!
//! No back-propagation through the whole trajectory and no score-function variance.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use denoise_gym::agent::{
    returns_to_go, Agent, KlAnchor, MaxEntCoefficients, Stats, VelocityScale,
};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::error::{ensure_finite, Error, Result};
use denoise_gym::nn::{with_time_embedding, Activation, Mlp, Parameterized};
use denoise_gym::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::reward::DifferentiableReward;
use denoise_gym::rng::{normal_matrix, ProjectRng};
use denoise_gym::rollout::Rollout;
use denoise_gym::tensor::{matrix, row_sums, vector, Backend, Matrix, Vector};
use dfdx::prelude::*;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::reinforce::{policy_learning_rates, ReinforceConfig};

pub use denoise_gym::agent::TracedScalar;

/// `½ log 2πe`: the per-dimension entropy of a unit Gaussian.
const HALF_LOG_TWO_PI_E: f64 = 1.418_938_533_204_672_7;

/// What the value is regressed on at step t (docs/algorithms.md §4.2 against DxMI's public trainer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueTarget {
    /// docs/algorithms.md §4.2: `V(x_{t-1}, t-1) + τ_v ‖x_{t-1} - x_t‖²/(2 s_t² d) - τ_H H_t / d`, so
    /// `V` is the whole maximum-entropy cost to go.
    RunningCosts,
    /// DxMI's trainer as its configs ship it: `V(x_{t-1}, t-1)` only, so `V` is the
    /// expected final energy and the running costs enter only the policy loss.
    TerminalEnergy,
}

denoise_gym::config_section! {
    /// The `[dxdp]` section: DxDP's own settings (docs/algorithms.md §4.2); its learning
    /// rates, betas, tau_entropy, tau_velocity and velocity scale are `[agent]`'s
    /// ([`ReinforceConfig`]), as PPO's are.
    pub struct DxdpConfig {
        /// Global gradient-norm clip of the policy update (DxMI: 0.1; replaces agent.grad_clip).
        pub grad_clip: f64 = 0.1,
        /// Hidden width of the value V_psi(x, t).
        pub value_hidden: usize = 128,
        /// Hidden layers of the value.
        pub value_depth: usize = 3,
        /// Dimension of the sinusoidal embedding of t in the value's input.
        pub value_time_embed_dim: usize = 16,
        /// Hidden non-linearity of the value: silu or relu.
        pub value_activation: Activation = Activation::Silu,
        /// Adam learning rate of the value.
        pub value_lr: f64 = 1e-3,
        /// Global gradient-norm clip of each value step (0 = off).
        pub value_grad_clip: f64 = 0.0,
        /// TD target: running_costs (docs/algorithms.md: V(x_{t-1}, t-1) + velocity cost - entropy) or terminal_energy (DxMI's trainer: V(x_{t-1}, t-1) only).
        pub value_target: ValueTarget = ValueTarget::RunningCosts,
        /// States (x_t, t) per policy step, drawn from the rollout's T*B (0 = all).
        pub policy_batch: usize = 0,
    }
}

impl DxdpConfig {
    /// Checks the ranges a config file cannot express, of this section and of the
    /// `[agent]` settings DxDP reads (`agent` names those keys `agent.*`).
    pub fn validate(&self, agent: &ReinforceConfig) -> Result<()> {
        let positive = [
            ("agent.lr", agent.lr),
            ("agent.lr_log_sigma", agent.lr_log_sigma),
            ("value_lr", self.value_lr),
            ("agent.velocity_scale_value", agent.velocity_scale_value),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::config(key, "must be a finite number > 0"));
            }
        }
        let non_negative = [
            ("grad_clip", self.grad_clip),
            ("value_grad_clip", self.value_grad_clip),
            ("agent.tau_entropy", agent.tau_entropy),
            ("agent.tau_velocity", agent.tau_velocity),
        ];
        for (key, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::config(key, "must be a finite number >= 0"));
            }
        }
        if self.value_hidden == 0 || self.value_depth == 0 || self.value_time_embed_dim == 0 {
            return Err(Error::config(
                "value_hidden / value_depth / value_time_embed_dim",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `V_ψ(x, t)` for `t ≥ 1`: an MLP on `[x, emb(t)]` predicting the cost to go.
#[derive(Debug, Clone)]
pub struct TimeConditionedValue<D: Backend> {
    /// The network `d + embed → hidden × depth → 1`.
    pub net: Mlp<D>,
    n_steps: usize,
    time_embed_dim: usize,
}

impl<D: Backend> TimeConditionedValue<D> {
    /// A fresh value network for data of dimension `dim` over `n_steps` steps.
    pub fn new(
        dev: &D,
        dim: usize,
        n_steps: usize,
        config: &DxdpConfig,
        rng: &mut impl Rng,
    ) -> Self {
        Self {
            net: Mlp::new(
                dev,
                dim + config.value_time_embed_dim,
                config.value_hidden,
                config.value_depth,
                1,
                config.value_activation,
                rng,
            ),
            n_steps,
            time_embed_dim: config.value_time_embed_dim,
        }
    }

    /// `V_ψ(x_i, t_i)` per row (every `t_i ≥ 1`), differentiable when `x` carries a tape.
    pub fn cost_to_go<T: Tape<f32, D> + Merge<T>>(
        &self,
        x: Matrix<D, T>,
        ts: &[usize],
    ) -> Vector<D, T> {
        let rows = x.shape().0;
        let input = with_time_embedding(x, ts, self.n_steps, self.time_embed_dim);
        self.net.forward(input).reshape_like(&(rows,))
    }
}

impl<D: Backend> Parameterized<D> for TimeConditionedValue<D> {
    fn parameters(&self) -> Vec<&Matrix<D>> {
        self.net.parameters()
    }
    fn parameters_mut(&mut self) -> Vec<&mut Matrix<D>> {
        self.net.parameters_mut()
    }
    fn parameter_names(&self) -> Vec<String> {
        self.net.parameter_names()
    }
}

/// The energy the value ends on: `V(x, 0) = E_φ(x) = -r(x)`.
pub type SharedDifferentiableReward<D> = Rc<RefCell<dyn DifferentiableReward<D>>>;

/// The DxDP agent.
pub struct Dxdp<D: Backend> {
    /// The sampler-policy.
    pub policy: GaussianPolicy<D>,
    /// Adam over every policy parameter.
    pub optimizer: Adam<D>,
    /// `V_ψ(x, t)`, `t ≥ 1`.
    pub value: TimeConditionedValue<D>,
    /// Adam over `V_ψ`.
    pub value_optimizer: Adam<D>,
    /// `E_φ`, read (never trained) here.
    pub reward: SharedDifferentiableReward<D>,
    /// The velocity cost's `s_t²`.
    pub velocity: VelocityScale,
    /// The KL anchor to the sampler fine-tuning started from (`kl_reference > 0`).
    pub anchor: Option<KlAnchor<D>>,
    /// The shared `[agent]` settings: learning rates, betas, `τ_H`, `τ_v`, velocity scale.
    pub agent: ReinforceConfig,
    /// DxDP's own hyper-parameters.
    pub config: DxdpConfig,
}

impl<D: Backend> Dxdp<D> {
    /// An agent that fine-tunes `policy` against the energy of `reward`.
    pub fn new(
        policy: GaussianPolicy<D>,
        reward: SharedDifferentiableReward<D>,
        agent: ReinforceConfig,
        config: DxdpConfig,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        config.validate(&agent)?;
        if reward.borrow().dim() != policy.dim() {
            return Err(Error::InvalidArgument(format!(
                "dxdp: the reward takes {}-dimensional samples, the policy makes {}",
                reward.borrow().dim(),
                policy.dim()
            )));
        }
        let optimizer = Adam::new(
            &policy.parameters(),
            policy_learning_rates(&policy, agent.lr, agent.lr_log_sigma),
            AdamConfig {
                betas: agent.betas,
                ..AdamConfig::default()
            },
        )?;
        let value = TimeConditionedValue::new(
            policy.device(),
            policy.dim(),
            policy.n_steps(),
            &config,
            rng,
        );
        let value_params = value.parameters();
        let value_optimizer = Adam::new(
            &value_params,
            vec![config.value_lr; value_params.len()],
            AdamConfig::default(),
        )?;
        let velocity = VelocityScale::new(
            agent.velocity_scale,
            policy.schedule(),
            agent.velocity_scale_value,
        );
        let anchor = KlAnchor::new(&policy, agent.kl_reference)?;
        Ok(Self {
            policy,
            optimizer,
            value,
            value_optimizer,
            reward,
            velocity,
            anchor,
            agent,
            config,
        })
    }

    /// `V(x, t)` per row on the host: `E_φ(x)` at `t = 0`, `V_ψ(x, t)` after.
    pub fn cost_to_go(&self, x: &Matrix<D>, t: usize) -> Result<Vec<f32>> {
        if t == 0 {
            Ok(self
                .reward
                .borrow()
                .reward(x)?
                .as_vec()
                .into_iter()
                .map(|r| -r)
                .collect())
        } else {
            let rows = x.shape().0;
            Ok(self.value.cost_to_go(x.clone(), &vec![t; rows]).as_vec())
        }
    }

    /// `target_t` of every sample of `rollout` at step `t` (docs/algorithms.md §4.2), with the current
    /// `V_ψ`, `E_φ`, `σ_t` and `s_t²`.
    pub fn td_targets(&self, rollout: &Rollout<D>, t: usize) -> Result<Vec<f32>> {
        let next_cost = self.cost_to_go(rollout.state(t - 1), t - 1)?;
        if self.config.value_target == ValueTarget::TerminalEnergy {
            return Ok(next_cost);
        }
        let d = rollout.dim() as f64;
        let MaxEntCoefficients {
            tau_entropy,
            tau_velocity,
        } = self.agent.coefficients();
        let per_dim_entropy = (self.policy.sigmas()[t - 1] as f64).ln() + HALF_LOG_TWO_PI_E;
        let velocity_weight = tau_velocity / (2.0 * self.velocity.get(t) * d);
        let squared =
            row_sums((rollout.state(t - 1).clone() - rollout.state(t).clone()).square()).as_vec();
        Ok(next_cost
            .iter()
            .zip(squared)
            .map(|(&v, s)| {
                (v as f64 + velocity_weight * s as f64 - tau_entropy * per_dim_entropy) as f32
            })
            .collect())
    }

    /// One optimiser step of `V_ψ` at step t; returns `(L_V, mean V(x_t, t) before the step)`.
    fn value_step(&mut self, rollout: &Rollout<D>, t: usize, iteration: u64) -> Result<(f64, f64)> {
        let targets = self.td_targets(rollout, t)?;
        let x_t = rollout.state(t);
        let rows = x_t.shape().0;
        let dev = self.policy.device().clone();
        let predicted = self
            .value
            .cost_to_go(x_t.clone().traced(Gradients::leaky()), &vec![t; rows]);
        let value_mean = predicted.retaped::<NoneTape>().mean().as_vec()[0] as f64;
        let loss = (predicted - vector(&dev, targets)).square().mean();
        let loss_value = ensure_finite(
            &format!("value/loss_{t}"),
            loss.as_vec()[0] as f64,
            iteration,
        )?;
        let mut grads = loss.backward();
        let mut gradients = gradients_of(&mut grads, &self.value.parameters())?;
        clip_grad_norm(&mut gradients, self.config.value_grad_clip);
        self.value_optimizer
            .update(self.value.parameters_mut(), &gradients)?;
        Ok((loss_value, value_mean))
    }

    /// The policy loss `L_π` summed over the rows of one group of states that all end on
    /// `V_ψ` (`t ≥ 2`) or all on `E_φ` (`t = 1`), with the KL anchor's
    /// `kl_reference · KL_t / d` per row where there is one; returns
    /// `(sum, Σ future cost, Σ KL_t)`.
    fn group_loss(
        &self,
        x_t: &Matrix<D>,
        ts: &[usize],
        noise: &Matrix<D>,
    ) -> Result<(TracedScalar<D>, f64, f64)> {
        let (rows, d) = *x_t.shape();
        let MaxEntCoefficients {
            tau_entropy,
            tau_velocity,
        } = self.agent.coefficients();
        let mean = self.policy.mean(x_t.clone().traced(Gradients::leaky()), ts);
        // Per row, as the other terms: `kl_reference · Σ_rows KL_t / d` and `Σ_rows KL_t`.
        let penalty = self.anchor.as_ref().map(|anchor| {
            let mean_ref = anchor.reference_mean(x_t, ts);
            let kl = anchor.kl_rows(&self.policy, mean.with_empty_tape(), mean_ref, ts);
            anchor.penalty(&self.policy, kl, 1.0)
        });
        let log_sigma = self.policy.log_sigma_at::<OwnedTape<f32, D>>(ts);
        let sigma = log_sigma
            .with_empty_tape()
            .exp()
            .broadcast_like::<_, Axis<1>>(&(rows, d));
        let x_next = mean + sigma * noise.clone();
        let velocity_weights: Vec<f32> = ts
            .iter()
            .map(|&t| (tau_velocity / (2.0 * self.velocity.get(t) * d as f64)) as f32)
            .collect();
        let velocity_cost = row_sums((x_next.with_empty_tape() - x_t.clone()).square())
            * vector(x_t.device(), velocity_weights);
        let future = if ts[0] == 1 {
            self.reward.borrow().reward_traced(x_next)? * -1.0
        } else {
            let previous: Vec<usize> = ts.iter().map(|&t| t - 1).collect();
            self.value.cost_to_go(x_next, &previous)
        };
        let future_sum = future.retaped::<NoneTape>().sum().as_vec()[0] as f64;
        let sum = (future + velocity_cost - log_sigma * tau_entropy as f32).sum();
        Ok(match penalty {
            Some((term, kl_sum)) => (sum + term, future_sum, kl_sum),
            None => (sum, future_sum, 0.0),
        })
    }

    /// `L_π` (docs/algorithms.md §4.2) on the states `x_t` (rows at steps `ts`, any mix of steps) with
    /// the standard-normal `noise` of the reparameterised step; a traced scalar.
    /// Returns `(L_π, mean future cost V(x', t-1), mean KL_t to the anchor's reference)`.
    pub fn policy_loss(
        &self,
        x_t: &Matrix<D>,
        ts: &[usize],
        noise: &Matrix<D>,
    ) -> Result<(TracedScalar<D>, f64, f64)> {
        let (rows, d) = *x_t.shape();
        if rows == 0 || ts.len() != rows || noise.shape() != x_t.shape() {
            return Err(Error::InvalidArgument(format!(
                "dxdp policy loss: {rows} states, {} steps, noise {:?}",
                ts.len(),
                noise.shape()
            )));
        }
        // States ending on E_φ and states ending on V_ψ go through different networks.
        let host = x_t.as_vec();
        let host_noise = noise.as_vec();
        let mut total: Option<TracedScalar<D>> = None;
        let (mut future_total, mut kl_total) = (0.0, 0.0);
        for terminal in [true, false] {
            let rows_in: Vec<usize> = (0..rows).filter(|&i| (ts[i] == 1) == terminal).collect();
            if rows_in.is_empty() {
                continue;
            }
            let gather = |src: &[f32]| -> Vec<f32> {
                rows_in
                    .iter()
                    .flat_map(|&i| src[i * d..(i + 1) * d].iter().copied())
                    .collect()
            };
            let dev = x_t.device();
            let group_x = matrix(dev, gather(&host), rows_in.len(), d);
            let group_noise = matrix(dev, gather(&host_noise), rows_in.len(), d);
            let group_ts: Vec<usize> = rows_in.iter().map(|&i| ts[i]).collect();
            let (sum, future, kl) = self.group_loss(&group_x, &group_ts, &group_noise)?;
            future_total += future;
            kl_total += kl;
            total = Some(match total {
                None => sum,
                Some(previous) => previous + sum,
            });
        }
        let total = total.ok_or_else(|| Error::InvalidArgument("no states".to_string()))?;
        Ok((
            total / rows as f32,
            future_total / rows as f64,
            kl_total / rows as f64,
        ))
    }
}

impl<D: Backend> Agent<D> for Dxdp<D> {
    fn name(&self) -> &str {
        "dxdp"
    }

    fn policy(&self) -> &GaussianPolicy<D> {
        &self.policy
    }

    fn update(
        &mut self,
        rollout: &Rollout<D>,
        rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats> {
        let (n_steps, batch, dim) = (rollout.n_steps(), rollout.batch_size(), rollout.dim());
        let mut stats = Stats::new();

        // 1. Value, backward in time so that each target uses the freshest V(·, t-1).
        for t in 1..=n_steps {
            let (loss, value_mean) = self.value_step(rollout, t, iteration)?;
            stats.push((format!("value/loss_{t}"), loss));
            stats.push((format!("value/V_{t}"), value_mean));
        }

        // 2. Policy, on the rollout's states (all, or a random subset).
        let (states, _, steps) = rollout.stacked_transitions();
        let total_rows = steps.len();
        let (states, steps) = match self.config.policy_batch {
            n if n == 0 || n >= total_rows => (states, steps),
            n => {
                let mut rows: Vec<usize> = (0..total_rows).collect();
                rows.shuffle(rng);
                rows.truncate(n);
                let host = states.as_vec();
                let data: Vec<f32> = rows
                    .iter()
                    .flat_map(|&i| host[i * dim..(i + 1) * dim].iter().copied())
                    .collect();
                let picked_steps = rows.iter().map(|&i| steps[i]).collect();
                (matrix(states.device(), data, n, dim), picked_steps)
            }
        };
        let noise = normal_matrix(self.policy.device(), rng, steps.len(), dim);
        let (loss, future_cost, kl_per_row) = self.policy_loss(&states, &steps, &noise)?;
        let loss_value = ensure_finite("policy/loss", loss.as_vec()[0] as f64, iteration)?;
        let mut grads = loss.backward();
        let mut gradients = gradients_of(&mut grads, &self.policy.parameters())?;
        let grad_norm = clip_grad_norm(&mut gradients, self.config.grad_clip);
        ensure_finite("policy/grad_norm", grad_norm, iteration)?;
        self.optimizer
            .update(self.policy.parameters_mut(), &gradients)?;

        let squared_lengths = rollout.squared_step_lengths();
        let terminal = rollout.terminal_reward.as_vec();
        let (_, velocity_cost) = returns_to_go(
            &terminal,
            &squared_lengths,
            n_steps,
            dim,
            &self.velocity,
            self.agent.tau_velocity,
        )?;
        self.velocity.observe(&squared_lengths, batch, dim);
        let entropy: f64 = (1..=n_steps).map(|t| self.policy.entropy(t) as f64).sum();
        stats.extend([
            ("policy/loss".to_string(), loss_value),
            ("policy/grad_norm".to_string(), grad_norm),
            ("policy/value_term".to_string(), future_cost),
            ("policy/entropy".to_string(), entropy),
            (
                "policy/entropy_term".to_string(),
                self.agent.tau_entropy * entropy / (dim * n_steps) as f64,
            ),
            ("policy/velocity_cost".to_string(), velocity_cost),
        ]);
        if self.anchor.is_some() {
            // Rows of every step: the mean KL_t times T is Σ_t KL_t per chain.
            stats.push((
                "policy/kl_reference".to_string(),
                kl_per_row * n_steps as f64,
            ));
        }
        for t in 1..=n_steps {
            stats.push((format!("policy/velocity_scale_{t}"), self.velocity.get(t)));
        }
        Ok(stats)
    }

    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> Result<()> {
        checkpoint.put_model(&format!("{prefix}.policy"), &self.policy);
        self.policy
            .save_step_options(checkpoint, &format!("{prefix}.policy"));
        self.optimizer.save(
            checkpoint,
            &format!("{prefix}.optim"),
            &self.policy.parameter_names(),
        );
        checkpoint.put_model(&format!("{prefix}.value"), &self.value);
        self.value_optimizer.save(
            checkpoint,
            &format!("{prefix}.value_optim"),
            &self.value.parameter_names(),
        );
        if let Some(anchor) = &self.anchor {
            anchor.save(checkpoint, &format!("{prefix}.kl_reference"));
        }
        self.velocity
            .save(checkpoint, &format!("{prefix}.velocity_s2"))
    }

    fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        let names = self.policy.parameter_names();
        checkpoint.load_model(path, &format!("{prefix}.policy"), &mut self.policy)?;
        self.policy
            .load_step_options(checkpoint, path, &format!("{prefix}.policy"))?;
        self.optimizer
            .load(checkpoint, path, &format!("{prefix}.optim"), &names)?;
        let names = self.value.parameter_names();
        checkpoint.load_model(path, &format!("{prefix}.value"), &mut self.value)?;
        self.value_optimizer
            .load(checkpoint, path, &format!("{prefix}.value_optim"), &names)?;
        if let Some(anchor) = self.anchor.as_mut() {
            anchor.load(checkpoint, path, &format!("{prefix}.kl_reference"))?;
        }
        self.velocity
            .load(checkpoint, path, &format!("{prefix}.velocity_s2"))
    }
}
