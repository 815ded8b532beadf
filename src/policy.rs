//! The Gaussian diffusion policy of docs/algorithms.md §2: `π_θ(x_{t-1} | x_t, t) = N(μ_θ(x_t, t), σ_t² I)`
//! with an ε-prediction MLP for the mean and one learnable `log σ_t` per step, plus the
//! denoising-score-matching (DSM) pretraining loss.

use dfdx::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::nn::{time_embedding, with_time_embedding, Activation, Mlp, Parameterized};
use crate::rng::normal_matrix;
use crate::schedule::Schedule;
use crate::tensor::{matrix, row_sums, scale_rows, Backend, Matrix, Vector};

/// `½ log 2π`.
pub const HALF_LOG_TWO_PI: f32 = 0.918_938_5;

/// Architecture and noise options of a [`GaussianPolicy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Data dimension d.
    pub dim: usize,
    /// Hidden width of the ε-network.
    pub hidden: usize,
    /// Number of hidden layers of the ε-network.
    pub depth: usize,
    /// Dimension of the sinusoidal time embedding (docs/algorithms.md: 16 or more).
    pub time_embed_dim: usize,
    /// Hidden non-linearity.
    pub activation: Activation,
    /// Clip `x̂_0` to `[-clip_x0, clip_x0]`; 0 turns clipping off.
    pub clip_x0: f32,
    /// Keep `σ_1` frozen at `max(√β_1, 1e-3)` (or at `last_sigma` when that is set).
    pub fix_last_sigma: bool,
    /// The value `σ_1` starts at (and is frozen at with `fix_last_sigma`); 0 means docs/algorithms.md's
    /// `max(√β_1, 1e-3)`. Few-step samplers of sharp data need it small: at T = 4 the
    /// default is 0.69, twice a mode's width on 8 Gaussians and 20× on 25 Gaussians.
    pub last_sigma: f32,
}

impl PolicySpec {
    /// Checks the sizes are usable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("dim", self.dim),
            ("hidden", self.hidden),
            ("depth", self.depth),
            ("time_embed_dim", self.time_embed_dim),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        if self.last_sigma < 0.0 || !self.last_sigma.is_finite() {
            return Err(Error::config(
                "last_sigma",
                "must be a finite number ≥ 0 (0 = sqrt(beta_1))",
            ));
        }
        if self.clip_x0 < 0.0 || !self.clip_x0.is_finite() {
            return Err(Error::config(
                "clip_x0",
                "must be a finite number ≥ 0 (0 = off)",
            ));
        }
        Ok(())
    }
}

/// DPPO's partial fine-tuning: the steps `t > ft_steps` (the early, noisy ones) keep a
/// frozen copy of the pretrained ε-network and their `σ_t`; only `t = ft_steps..1` learn.
#[derive(Debug, Clone)]
pub struct FrozenSteps<D: Backend> {
    /// The fine-tuned steps are `t = 1..=ft_steps`.
    pub ft_steps: usize,
    /// The ε-network of the steps `t > ft_steps`, as it was when they were frozen. It is
    /// not among the policy's parameters, so no optimiser reaches it.
    pub eps_net: Mlp<D>,
}

/// The sampler-policy: ε-network, per-step `log σ_t`, and the schedule it denoises along.
#[derive(Debug, Clone)]
pub struct GaussianPolicy<D: Backend> {
    /// The noise-prediction network `ε_θ([x_t, emb(t)])`.
    pub eps_net: Mlp<D>,
    /// Learnable `log σ_t`, a `1 × T` row; column `t - 1` holds step t.
    pub log_sigma: Matrix<D>,
    schedule: Schedule,
    spec: PolicySpec,
    /// 0 where `log σ_t` is frozen, 1 where it learns.
    sigma_mask: Matrix<D>,
    /// The frozen values where `sigma_mask` is 0, else 0.
    sigma_frozen: Matrix<D>,
    /// Steps that keep the pretrained network (`None`: every step learns).
    frozen: Option<FrozenSteps<D>>,
    /// Floor on `σ_t` when sampling (DPPO's `min_sampling_denoising_std`).
    min_sigma_sample: Option<f32>,
    /// Floor on `σ_t` when scoring `log π` (DPPO's `min_logprob_denoising_std`).
    min_sigma_log_prob: Option<f32>,
}

impl<D: Backend> GaussianPolicy<D> {
    /// A freshly initialised policy; `log σ_t` starts at `½ log β̃_t` (`½ log β_1`, or
    /// `log last_sigma`, at t = 1).
    pub fn new(dev: &D, spec: PolicySpec, schedule: Schedule, rng: &mut impl Rng) -> Result<Self> {
        spec.validate()?;
        let n_steps = schedule.n_steps();
        let eps_net = Mlp::new(
            dev,
            spec.dim + spec.time_embed_dim,
            spec.hidden,
            spec.depth,
            spec.dim,
            spec.activation,
            rng,
        );
        let initial: Vec<f32> = (1..=n_steps)
            .map(|t| {
                let variance = if t == 1 {
                    schedule.beta(1)
                } else {
                    schedule.beta_tilde(t)
                };
                (0.5 * variance.ln()) as f32
            })
            .collect();
        let frozen_log_sigma = if spec.last_sigma > 0.0 {
            spec.last_sigma.ln()
        } else {
            (schedule.beta(1).sqrt().max(1e-3)).ln() as f32
        };
        let mut mask = vec![1.0f32; n_steps];
        let mut frozen = vec![0.0f32; n_steps];
        let mut initial = initial;
        initial[0] = frozen_log_sigma;
        if spec.fix_last_sigma {
            mask[0] = 0.0;
            frozen[0] = frozen_log_sigma;
        }
        Ok(Self {
            eps_net,
            log_sigma: matrix(dev, initial, 1, n_steps),
            sigma_mask: matrix(dev, mask, 1, n_steps),
            sigma_frozen: matrix(dev, frozen, 1, n_steps),
            schedule,
            spec,
            frozen: None,
            min_sigma_sample: None,
            min_sigma_log_prob: None,
        })
    }

    /// Freezes the steps `t > ft_steps` at their current network and `σ_t` (DPPO's
    /// `ft_denoising_steps`): later updates change only the steps `t = ft_steps..1`.
    /// `ft_steps = T` freezes nothing; `ft_steps` outside `1..=T` is an error.
    pub fn freeze_steps_above(&mut self, ft_steps: usize) -> Result<()> {
        let n_steps = self.n_steps();
        if ft_steps == 0 || ft_steps > n_steps {
            return Err(Error::config(
                "ft_steps",
                format!("must be in 1..={n_steps} (T), got {ft_steps}"),
            ));
        }
        if let Some(frozen) = &self.frozen {
            return Err(Error::InvalidArgument(format!(
                "the steps above {} are frozen already",
                frozen.ft_steps
            )));
        }
        if ft_steps == n_steps {
            return Ok(());
        }
        let current = self.log_sigma_row::<NoneTape>().as_vec();
        let mut mask = self.sigma_mask.as_vec();
        let mut frozen = self.sigma_frozen.as_vec();
        for t in ft_steps + 1..=n_steps {
            mask[t - 1] = 0.0;
            frozen[t - 1] = current[t - 1];
        }
        self.sigma_mask.copy_from(&mask);
        self.sigma_frozen.copy_from(&frozen);
        // A deep copy: the frozen network must not share storage with the live one.
        let mut eps_net = self.eps_net.clone();
        for (copy, live) in eps_net
            .parameters_mut()
            .into_iter()
            .zip(self.eps_net.parameters())
        {
            *copy = self.device().tensor_from_vec(live.as_vec(), *live.shape());
        }
        self.frozen = Some(FrozenSteps { ft_steps, eps_net });
        Ok(())
    }

    /// The frozen steps, if any.
    pub fn frozen_steps(&self) -> Option<&FrozenSteps<D>> {
        self.frozen.as_ref()
    }

    /// The number of steps that learn, `t = ft_steps..1` (T when nothing is frozen).
    pub fn ft_steps(&self) -> usize {
        self.frozen.as_ref().map_or(self.n_steps(), |f| f.ft_steps)
    }

    /// Sets the floors on `σ_t` used when sampling and when scoring `log π` (`None`: no
    /// floor). A floor must be a positive finite number.
    pub fn set_sigma_floors(&mut self, sample: Option<f64>, log_prob: Option<f64>) -> Result<()> {
        for (key, floor) in [
            ("min_sigma_sample", sample),
            ("min_sigma_logprob", log_prob),
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
        self.min_sigma_sample = sample.map(|v| v as f32);
        self.min_sigma_log_prob = log_prob.map(|v| v as f32);
        Ok(())
    }

    /// The floors on `σ_t` `(when sampling, when scoring log π)`.
    pub fn sigma_floors(&self) -> (Option<f32>, Option<f32>) {
        (self.min_sigma_sample, self.min_sigma_log_prob)
    }

    /// Writes what [`GaussianPolicy::freeze_steps_above`] and
    /// [`GaussianPolicy::set_sigma_floors`] set, next to the parameters stored under `prefix`
    /// (the frozen network, the frozen `σ_t`, the floors), so that a resumed run and a
    /// loaded sampler act as this one.
    pub fn save_step_options(&self, checkpoint: &mut Checkpoint, prefix: &str) {
        if let Some(frozen) = &self.frozen {
            checkpoint
                .metadata
                .insert(format!("{prefix}.ft_steps"), frozen.ft_steps.to_string());
            checkpoint.put_model(&format!("{prefix}.frozen_eps_net"), &frozen.eps_net);
            checkpoint.put_matrix(format!("{prefix}.frozen_log_sigma"), &self.sigma_frozen);
        }
        for (key, floor) in [
            ("min_sigma_sample", self.min_sigma_sample),
            ("min_sigma_logprob", self.min_sigma_log_prob),
        ] {
            if let Some(value) = floor {
                checkpoint
                    .metadata
                    .insert(format!("{prefix}.{key}"), value.to_string());
            }
        }
    }

    /// Restores what [`GaussianPolicy::save_step_options`] wrote. A checkpoint without
    /// frozen steps cannot restore a policy that has them.
    pub fn load_step_options(
        &mut self,
        checkpoint: &Checkpoint,
        path: &std::path::Path,
        prefix: &str,
    ) -> Result<()> {
        let key = format!("{prefix}.ft_steps");
        if checkpoint.metadata.contains_key(&key) {
            let ft_steps: usize = checkpoint.meta_parse(path, &key)?;
            match &self.frozen {
                None => self.freeze_steps_above(ft_steps)?,
                Some(f) if f.ft_steps != ft_steps => {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "fine-tunes the last {ft_steps} steps, this policy the last {}",
                            f.ft_steps
                        ),
                    ))
                }
                Some(_) => {}
            }
            if let Some(frozen) = self.frozen.as_mut() {
                checkpoint.load_model(
                    path,
                    &format!("{prefix}.frozen_eps_net"),
                    &mut frozen.eps_net,
                )?;
            }
            checkpoint.load_matrix(
                path,
                &format!("{prefix}.frozen_log_sigma"),
                &mut self.sigma_frozen,
            )?;
        } else if let Some(f) = &self.frozen {
            return Err(Error::checkpoint(
                path,
                format!(
                    "has no metadata `{key}`, but this policy fine-tunes only the last {} steps",
                    f.ft_steps
                ),
            ));
        }
        let floor = |name: &str| -> Result<Option<f64>> {
            let key = format!("{prefix}.{name}");
            if checkpoint.metadata.contains_key(&key) {
                Ok(Some(checkpoint.meta_parse(path, &key)?))
            } else {
                Ok(None)
            }
        };
        let (sample, log_prob) = (floor("min_sigma_sample")?, floor("min_sigma_logprob")?);
        self.set_sigma_floors(sample, log_prob)
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    /// The architecture options.
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }
    /// Data dimension d.
    pub fn dim(&self) -> usize {
        self.spec.dim
    }
    /// Number of denoising steps T.
    pub fn n_steps(&self) -> usize {
        self.schedule.n_steps()
    }
    /// The device the parameters live on.
    pub fn device(&self) -> &D {
        self.log_sigma.device()
    }

    fn check_steps(&self, ts: &[usize], rows: usize) {
        assert_eq!(ts.len(), rows, "one time step per sample");
        debug_assert!(ts.iter().all(|&t| (1..=self.n_steps()).contains(&t)));
    }

    /// `ε_θ(x_t, t)` for a `B × d` batch with one step per sample.
    pub fn predict_eps<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x_t: Matrix<D, T>,
        ts: &[usize],
    ) -> Matrix<D, T> {
        let batch = x_t.shape().0;
        self.check_steps(ts, batch);
        if !T::OWNS_TAPE && batch > 0 && ts.iter().all(|&t| t == ts[0]) {
            // One step for the whole batch and no gradient (sampling): its embedding's share
            // of the first layer is one row, computed once.
            let net = match &self.frozen {
                Some(frozen) if ts[0] > frozen.ft_steps => &frozen.eps_net,
                _ => &self.eps_net,
            };
            let suffix = time_embedding(&ts[..1], self.n_steps(), self.spec.time_embed_dim);
            let (x, tape) = x_t.split_tape();
            return D::mlp_forward_constant_suffix(net, &x, &suffix).put_tape(tape);
        }
        let input = with_time_embedding(x_t, ts, self.n_steps(), self.spec.time_embed_dim);
        let Some(frozen) = &self.frozen else {
            return self.eps_net.forward(input);
        };
        let learns: Vec<f32> = ts
            .iter()
            .map(|&t| if t <= frozen.ft_steps { 1.0 } else { 0.0 })
            .collect();
        if learns.iter().all(|&w| w == 1.0) {
            return self.eps_net.forward(input);
        }
        if learns.iter().all(|&w| w == 0.0) {
            return frozen.eps_net.forward(input);
        }
        // Rows of both kinds (a stacked batch of steps): weights 1 and 0 select each row's
        // network exactly (1·a + 0·b = a in floating point), and the 0 rows send no
        // gradient into the live network.
        let keeps: Vec<f32> = learns.iter().map(|w| 1.0 - w).collect();
        let live = self.eps_net.forward(input.with_empty_tape());
        let kept = frozen.eps_net.forward(input);
        scale_rows(live, &learns) + scale_rows(kept, &keeps)
    }

    /// The policy mean `μ_θ = c1_t x̂_0 + c2_t x_t` with
    /// `x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t` (clipped if `clip_x0 > 0`).
    pub fn mean<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x_t: Matrix<D, T>,
        ts: &[usize],
    ) -> Matrix<D, T> {
        let eps = self.predict_eps(x_t.with_empty_tape(), ts);
        let s = &self.schedule;
        // One step for the whole batch (sampling, a rollout step): each coefficient is one
        // scalar, not a per-row vector computed on the host (6% of T = 4 sampling).
        let single_step = ts.first().copied().filter(|&t| ts.iter().all(|&u| u == t));
        let scale = |x: Matrix<D, T>, f: &dyn Fn(usize) -> f64| -> Matrix<D, T> {
            match single_step {
                Some(t) => x * f(t) as f32,
                None => scale_rows(x, &ts.iter().map(|&t| f(t) as f32).collect::<Vec<_>>()),
            }
        };
        let mut x0_hat = scale(x_t.with_empty_tape(), &|t| 1.0 / s.alpha_bar(t).sqrt())
            - scale(eps, &|t| {
                (1.0 - s.alpha_bar(t)).sqrt() / s.alpha_bar(t).sqrt()
            });
        if self.spec.clip_x0 > 0.0 {
            x0_hat = x0_hat.clamp(-self.spec.clip_x0, self.spec.clip_x0);
        }
        scale(x0_hat, &|t| s.posterior_c1(t)) + scale(x_t, &|t| s.posterior_c2(t))
    }

    /// The effective `1 × T` row of `log σ_t` (frozen entries replaced by their values).
    pub fn log_sigma_row<T: Tape<f32, D> + Merge<NoneTape>>(&self) -> Matrix<D, T> {
        self.log_sigma.retaped::<T>() * self.sigma_mask.clone() + self.sigma_frozen.clone()
    }

    /// `log σ_t` for each sample's step, a `B` vector.
    pub fn log_sigma_at<T: Tape<f32, D> + Merge<NoneTape>>(&self, ts: &[usize]) -> Vector<D, T> {
        let n_steps = self.n_steps();
        let indices: Vec<usize> = ts.iter().map(|&t| t - 1).collect();
        let n = indices.len();
        let index = self.device().tensor_from_vec(indices, (n,));
        self.log_sigma_row::<T>()
            .reshape_like(&(n_steps,))
            .gather(index)
    }

    /// `σ_t` for `t = 1..T` (index `t - 1`) on the host.
    pub fn sigmas(&self) -> Vec<f32> {
        self.log_sigma_row::<NoneTape>()
            .as_vec()
            .into_iter()
            .map(f32::exp)
            .collect()
    }

    /// `log π(a | x_t, t) = -‖a - μ‖²/(2σ_t²) - d log σ_t - (d/2) log 2π`, one value per sample,
    /// with `σ_t` raised to `min_sigma_logprob` where that floor is set.
    pub fn log_prob<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x_t: Matrix<D, T>,
        ts: &[usize],
        action: &Matrix<D>,
    ) -> Vector<D, T> {
        let mean = self.mean(x_t, ts);
        self.log_prob_of_mean(mean, ts, action)
    }

    /// [`GaussianPolicy::log_prob`] from an already computed mean `μ_θ(x_t, t)` (as
    /// [`GaussianPolicy::mean`] returns it), so that an agent that sampled `action` from
    /// that mean can score it without running the ε-network again.
    pub fn log_prob_of_mean<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        mean: Matrix<D, T>,
        ts: &[usize],
        action: &Matrix<D>,
    ) -> Vector<D, T> {
        let d = self.dim() as f32;
        self.check_steps(ts, mean.shape().0);
        let squared = row_sums((mean - action.clone()).square());
        let mut log_sigma = self.log_sigma_at::<T>(ts);
        if let Some(floor) = self.min_sigma_log_prob {
            log_sigma = log_sigma.clamp(floor.ln(), f32::MAX);
        }
        let inverse_variance = (log_sigma.with_empty_tape() * -2.0).exp();
        squared * inverse_variance * -0.5 - log_sigma * d - d * HALF_LOG_TWO_PI
    }

    /// The analytic per-step entropy `H_t = d (log σ_t + ½ log 2πe)`, host value.
    pub fn entropy(&self, t: usize) -> f32 {
        let log_sigma = self.sigmas()[t - 1].ln();
        self.dim() as f32 * (log_sigma + HALF_LOG_TWO_PI + 0.5)
    }

    /// `Σ_t H_t` as a differentiable scalar (gradient into `log σ`).
    pub fn entropy_sum<T: Tape<f32, D> + Merge<NoneTape>>(&self) -> Tensor<(), f32, D, T> {
        let d = self.dim() as f32;
        let constant = d * self.n_steps() as f32 * (HALF_LOG_TWO_PI + 0.5);
        self.log_sigma_row::<T>().sum() * d + constant
    }

    /// One policy step `x_{t-1} = μ_θ(x_t, t) + σ_t ε` for a whole batch at step t, with the
    /// standard-normal `noise` supplied by the caller (from the project RNG), and `σ_t`
    /// raised to `min_sigma_sample` where that floor is set.
    pub fn sample_step(&self, x_t: &Matrix<D>, t: usize, noise: &Matrix<D>) -> Matrix<D> {
        let ts = vec![t; x_t.shape().0];
        self.sample_from_mean(&self.mean(x_t.clone(), &ts), t, noise)
    }

    /// `x_{t-1} = μ + σ_t ε` for a mean already computed at step t: what
    /// [`GaussianPolicy::sample_step`] returns, given the same mean.
    pub fn sample_from_mean<T: Tape<f32, D>>(
        &self,
        mean: &Matrix<D, T>,
        t: usize,
        noise: &Matrix<D>,
    ) -> Matrix<D> {
        let sigma = self.sigmas()[t - 1].max(self.min_sigma_sample.unwrap_or(0.0));
        mean.retaped::<NoneTape>() + noise.clone() * sigma
    }

    /// The whole chain `x_T, x_{T-1}, …, x_0` for `n` samples, `x_T ~ N(0, I)`.
    pub fn sample_trajectory(&self, n: usize, rng: &mut impl Rng) -> Vec<Matrix<D>> {
        let dev = self.device().clone();
        let d = self.dim();
        let mut states = Vec::with_capacity(self.n_steps() + 1);
        states.push(normal_matrix(&dev, rng, n, d));
        for t in (1..=self.n_steps()).rev() {
            let noise = normal_matrix(&dev, rng, n, d);
            let next = self.sample_step(&states[states.len() - 1], t, &noise);
            states.push(next);
        }
        states
    }

    /// `n` samples `x_0` from the full chain.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Matrix<D> {
        let mut states = self.sample_trajectory(n, rng);
        states
            .pop()
            .unwrap_or_else(|| normal_matrix(self.device(), rng, n, self.dim()))
    }

    /// The forward process `x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε`, one step per row.
    pub fn noised(&self, x0: &Matrix<D>, ts: &[usize], noise: &Matrix<D>) -> Matrix<D> {
        let s = &self.schedule;
        let signal: Vec<f32> = ts.iter().map(|&t| s.alpha_bar(t).sqrt() as f32).collect();
        let spread: Vec<f32> = ts
            .iter()
            .map(|&t| (1.0 - s.alpha_bar(t)).sqrt() as f32)
            .collect();
        scale_rows(x0.clone(), &signal) + scale_rows(noise.clone(), &spread)
    }

    /// The DSM loss `mean_batch ‖ε - ε_θ(x_t, t)‖²` (squared norm summed over the d
    /// dimensions, as docs/algorithms.md §2 writes it) for given `x_t = noised(x_0, t, ε)`.
    pub fn dsm_loss<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x_t: Matrix<D, T>,
        ts: &[usize],
        noise: &Matrix<D>,
    ) -> Tensor<(), f32, D, T> {
        let predicted = self.predict_eps(x_t, ts);
        row_sums((predicted - noise.clone()).square()).mean()
    }
}

impl<D: Backend> Parameterized<D> for GaussianPolicy<D> {
    fn parameters(&self) -> Vec<&Matrix<D>> {
        let mut all = self.eps_net.parameters();
        all.push(&self.log_sigma);
        all
    }
    fn parameters_mut(&mut self) -> Vec<&mut Matrix<D>> {
        let mut all = self.eps_net.parameters_mut();
        all.push(&mut self.log_sigma);
        all
    }
    fn parameter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .eps_net
            .parameter_names()
            .into_iter()
            .map(|n| format!("eps_net.{n}"))
            .collect();
        names.push("log_sigma".to_string());
        names
    }
}
