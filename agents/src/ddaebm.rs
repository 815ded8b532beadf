//! DDAEBM (docs/algorithms.md §5): an adversarial energy-based model in every denoising step, readable
//! top to bottom in one file.
//!
//! - [`StepEnergy`] `D_φ(x, s)`: an unnormalised log-density of the less noisy variable
//!   (larger = more data-like), so that `log p_φ(x_{t-1} | x_t) = D(x_{t-1}, t-1) +
//!   log q(x_t | x_{t-1}) - log Z`. Its input gradient `∇_x D` is written out as ordinary
//!   tensor ops ([`StepEnergy::value_and_input_gradient`]), because dfdx 0.13 has no double
//!   backward: that keeps the R1 penalty `‖∇_x(...)‖²` a traced function of φ.
//! - [`LatentGenerator`] `G_θ(x_t, z, t) → x̂_0` with the posterior step of docs/algorithms.md §1: the
//!   sampler (a latent-variable policy).
//! - [`LatentEncoder`] `q_ω(z | x_{t-1}, x_t, t) = N(m, diag(exp(v)))`.
//! - [`Ddaebm`]: the three models, two Adam optimisers and [`Ddaebm::train_step`], one
//!   iteration of docs/algorithms.md §5 (energy step with R1, then generator + encoder step).
//!
//! In the environment's terms the generator is a policy ([`LatentGenerator::act`] maps a
//! [`DenoisingState`] to `x_{t-1}`), its per-step reward is [`Ddaebm::step_reward`]
//! `D(x_{t-1}, t-1) + log q(x_t | x_{t-1})`, and the `t = 0` energy `-D(x, 0)` is an
//! ordinary [`EnergyModel`] ([`StepEnergy::energy_at_zero`]), hence a core `RewardModel`.

use std::path::Path;

use denoise_gym::agent::{Action, Stats};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::ebm::EnergyModel;
use denoise_gym::env::DenoisingState;
use denoise_gym::error::{ensure_finite, Error, Result};
use denoise_gym::irl::ExpertSampler;
use denoise_gym::nn::{
    time_embedding, with_time_embedding, Activation, Linear, Mlp, Parameterized,
};
use denoise_gym::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig};
use denoise_gym::policy::HALF_LOG_TWO_PI;
use denoise_gym::rng::{normal_matrix, rng_from_json, rng_to_json, ProjectRng};
use denoise_gym::sampler::Sampler;
use denoise_gym::schedule::Schedule;
use denoise_gym::tensor::{matrix, row_sums, scale_rows, Backend, Matrix, Vector};
use denoise_gym::train::Phase;
use dfdx::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The tape type of a training step: every op recorded, gradients kept for all tensors.
type Traced<D> = OwnedTape<f32, D>;

/// Architecture of the three DDAEBM networks (all MLPs on `[inputs, emb(t)]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdaebmSpec {
    /// Data dimension d.
    pub dim: usize,
    /// Latent dimension `n_z` of the generator (reference: 2).
    pub n_z: usize,
    /// Hidden width of every network (reference: 300).
    pub hidden: usize,
    /// Hidden layers of every network (reference: 2).
    pub depth: usize,
    /// Dimension of the sinusoidal time embedding.
    pub time_embed_dim: usize,
    /// Hidden non-linearity of every network.
    pub activation: Activation,
}

impl DdaebmSpec {
    /// Checks every size is at least 1.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("dim", self.dim),
            ("n_z", self.n_z),
            ("hidden", self.hidden),
            ("depth", self.depth),
            ("time_embed_dim", self.time_embed_dim),
        ] {
            if value == 0 {
                return Err(Error::config(key, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// The training hyper-parameters of docs/algorithms.md §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DdaebmConfig {
    /// `r1`: weight of the R1 penalty on real pairs (reference: 0.02).
    pub r1: f64,
    /// `λ_z`: weight of the encoder's entropy bound on generated pairs (reference: 0.1).
    pub lambda_z: f64,
    /// Floor of the variance in the VAE bound's likelihood, `max(β̃_t, floor)` (reference: 1e-2).
    pub recon_variance_floor: f64,
    /// Adam learning rate of the energy φ.
    pub lr_energy: f64,
    /// Adam learning rate of the generator θ and the encoder ω (one optimiser).
    pub lr_generator: f64,
    /// Adam betas of both optimisers (reference: (0, 0.9)).
    pub betas: [f64; 2],
    /// Global gradient-norm clip of each optimiser (0 = off, as the reference).
    pub grad_clip: f64,
}

impl Default for DdaebmConfig {
    fn default() -> Self {
        Self {
            r1: 0.02,
            lambda_z: 0.1,
            recon_variance_floor: 1e-2,
            lr_energy: 1e-4,
            lr_generator: 1e-4,
            betas: [0.0, 0.9],
            grad_clip: 0.0,
        }
    }
}

impl DdaebmConfig {
    /// Checks every option is in range; errors name the key.
    pub fn validate(&self) -> Result<()> {
        for (key, value) in [
            ("r1", self.r1),
            ("lambda_z", self.lambda_z),
            ("grad_clip", self.grad_clip),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::config(
                    key,
                    format!("must be finite and ≥ 0, got {value}"),
                ));
            }
        }
        for (key, value) in [
            ("recon_variance_floor", self.recon_variance_floor),
            ("lr_energy", self.lr_energy),
            ("lr_generator", self.lr_generator),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::config(
                    key,
                    format!("must be finite and > 0, got {value}"),
                ));
            }
        }
        if self.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(Error::config("betas", "each beta must lie in [0, 1)"));
        }
        Ok(())
    }
}

/// One value per row.
fn per_row(ts: &[usize], f: impl Fn(usize) -> f64) -> Vec<f32> {
    ts.iter().map(|&t| f(t) as f32).collect()
}

/// `g ⊙ act'(a)` for the backward chain, as tensor ops on a pre-activation `a`. SiLU's
/// derivative `σ(a)(1 + a(1 - σ(a)))` is traced (so R1 also gets its second-derivative
/// part); ReLU's is the constant mask `a > 0` (its second derivative is zero almost
/// everywhere, which is also what double backward through a ReLU gives in PyTorch).
fn times_activation_derivative<D: Backend, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
    activation: Activation,
    g: Matrix<D, T>,
    pre: Matrix<D, T>,
) -> Matrix<D, T> {
    match activation {
        Activation::Silu => {
            let gate = pre.with_empty_tape().sigmoid();
            let one_minus_gate = gate.with_empty_tape() * -1.0 + 1.0;
            g * (gate * (pre * one_minus_gate + 1.0))
        }
        Activation::Relu => {
            let (rows, cols) = *pre.shape();
            let mask: Vec<f32> = pre
                .as_vec()
                .into_iter()
                .map(|a| if a > 0.0 { 1.0 } else { 0.0 })
                .collect();
            g * matrix(pre.device(), mask, rows, cols)
        }
    }
}

/// The per-step energy `D_φ(x, s)`, `s = t - 1 ∈ 0..T-1`: an MLP on `[x, emb(s)]` with one
/// output. Larger means more data-like (an unnormalised log-density).
#[derive(Debug, Clone)]
pub struct StepEnergy<D: Backend> {
    /// The network `[x, emb(s)] → D`.
    pub net: Mlp<D>,
    dim: usize,
    n_steps: usize,
    time_embed_dim: usize,
}

impl<D: Backend> StepEnergy<D> {
    /// A fresh network for a T-step schedule.
    pub fn new(dev: &D, spec: &DdaebmSpec, n_steps: usize, rng: &mut impl Rng) -> Self {
        Self {
            net: Mlp::new(
                dev,
                spec.dim + spec.time_embed_dim,
                spec.hidden,
                spec.depth,
                1,
                spec.activation,
                rng,
            ),
            dim: spec.dim,
            n_steps,
            time_embed_dim: spec.time_embed_dim,
        }
    }

    /// The data dimension d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `D(x_i, s_i)` for every row (`s` = the less noisy variable's step, 0 for data).
    pub fn forward<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x: Matrix<D, T>,
        steps: &[usize],
    ) -> Vector<D, T> {
        self.evaluate(x, steps, Mlp::forward)
    }

    /// [`StepEnergy::forward`] for a loss that differentiates through `D` into `x` only
    /// (the generator's): φ gets no gradient (see [`Mlp::forward_frozen`]).
    pub fn forward_frozen<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x: Matrix<D, T>,
        steps: &[usize],
    ) -> Vector<D, T> {
        self.evaluate(x, steps, Mlp::forward_frozen)
    }

    /// `net_pass(D's network, [x, emb(s)])` as one value per row.
    fn evaluate<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x: Matrix<D, T>,
        steps: &[usize],
        net_pass: impl Fn(&Mlp<D>, Matrix<D, T>) -> Matrix<D, T>,
    ) -> Vector<D, T> {
        let rows = x.shape().0;
        let input = with_time_embedding(x, steps, self.n_steps, self.time_embed_dim);
        net_pass(&self.net, input).reshape_like(&(rows,))
    }

    /// `D(x_i, s_i)` and `∇_x D(x_i, s_i)` (`B × d`), both as differentiable functions of
    /// φ: the backward chain `g ← (g ⊙ act'(a_k)) W_kᵀ` over the kept pre-activations
    /// `a_k` is built from ordinary ops, so `‖∇_x D‖²` can be back-propagated into φ
    /// without double backward.
    ///
    /// The gradient's tape holds the forward pass too (the chain reads the
    /// pre-activations), so a loss may use the gradient alone, or both; the returned value
    /// carries a fresh tape and only reaches φ in a loss that also uses the gradient (use
    /// [`StepEnergy::forward`] for the value alone).
    ///
    /// A ReLU network on a device with a fused kernel (the CPU) computes both in one op
    /// ([`Backend::relu_mlp_value_and_input_gradient`]); the rest compose it from dfdx ops
    /// ([`StepEnergy::value_and_input_gradient_composed`], the reference it is tested
    /// against).
    pub fn value_and_input_gradient<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x: Matrix<D, T>,
        steps: &[usize],
    ) -> (Vector<D, T>, Matrix<D, T>) {
        let input = with_time_embedding(x, steps, self.n_steps, self.time_embed_dim);
        if self.net.activation != Activation::Relu {
            return self.chain_composed(input);
        }
        match D::relu_mlp_value_and_input_gradient(&self.net, input, self.dim) {
            Ok(pair) => pair,
            Err(input) => self.chain_composed(input),
        }
    }

    /// [`StepEnergy::value_and_input_gradient`] composed of dfdx ops, for every device and
    /// activation.
    pub fn value_and_input_gradient_composed<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x: Matrix<D, T>,
        steps: &[usize],
    ) -> (Vector<D, T>, Matrix<D, T>) {
        self.chain_composed(with_time_embedding(
            x,
            steps,
            self.n_steps,
            self.time_embed_dim,
        ))
    }

    /// The value and input gradient from the network's input `[x, emb(s)]`, as dfdx ops.
    fn chain_composed<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        input: Matrix<D, T>,
    ) -> (Vector<D, T>, Matrix<D, T>) {
        let rows = input.shape().0;
        let layers = &self.net.layers;
        let last = layers.len() - 1;
        let mut h = input;
        let mut pre_activations = Vec::with_capacity(last);
        for (k, layer) in layers.iter().enumerate() {
            h = layer.forward(h);
            if k < last {
                pre_activations.push(h.with_empty_tape());
                h = self.net.activation.apply(h);
            }
        }
        let value = h.reshape_like(&(rows,));
        // ∂D/∂h_{L-1} = W_Lᵀ for every row.
        let top = &layers[last].weight;
        let width = top.shape().0;
        let mut g: Matrix<D, T> = top
            .retaped::<T>()
            .reshape_like(&(width,))
            .broadcast_like::<_, Axis<0>>(&(rows, width));
        for k in (0..last).rev() {
            let pre = pre_activations
                .pop()
                .expect("one pre-activation per hidden layer");
            let delta = times_activation_derivative(self.net.activation, g, pre);
            let weight_t = layers[k]
                .weight
                .retaped::<T>()
                .permute::<(usize, usize), Axes2<1, 0>>();
            g = delta.matmul(weight_t);
        }
        let gradient = g.slice((.., 0..self.dim));
        let (value, forward_tape) = value.split_tape();
        let (gradient, chain_tape) = gradient.split_tape();
        (
            value.put_tape(T::default()),
            gradient.put_tape(chain_tape.merge(forward_tape)),
        )
    }

    /// `-D(x, 0)` as a core [`EnergyModel`] (low energy = data-like): the constant
    /// `emb(0)` is folded into the first layer's bias and the last layer is negated, so
    /// the result is the very same function of x, usable wherever the project expects
    /// an EBM (temperature fitting, grid KL, `dgym energy`, the reward of a finished
    /// episode). Its temperature is 1.
    pub fn energy_at_zero(&self) -> EnergyModel<D> {
        let d = self.dim;
        let mut layers: Vec<Linear<D>> = self.net.layers.clone();
        let first = &self.net.layers[0];
        let (inputs, width) = *first.weight.shape();
        let weight = first.weight.as_vec();
        let mut bias = first.bias.as_vec();
        let embedding = time_embedding(&[0], self.n_steps, self.time_embed_dim);
        for (j, e) in embedding.iter().enumerate() {
            for (c, b) in bias.iter_mut().enumerate() {
                *b += e * weight[(d + j) * width + c];
            }
        }
        debug_assert_eq!(inputs, d + self.time_embed_dim);
        let dev = first.weight.device().clone();
        layers[0] = Linear {
            weight: matrix(&dev, weight[..d * width].to_vec(), d, width),
            bias: matrix(&dev, bias, 1, width),
        };
        let top = layers.len() - 1;
        layers[top].weight = layers[top].weight.clone() * -1.0;
        layers[top].bias = layers[top].bias.clone() * -1.0;
        EnergyModel {
            net: Mlp {
                layers,
                activation: self.net.activation,
            },
            temperature: 1.0,
        }
    }
}

impl<D: Backend> Parameterized<D> for StepEnergy<D> {
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

/// The latent generator `G_θ(x_t, z, t) → x̂_0` and the posterior step of docs/algorithms.md §1:
/// `x_{t-1} = c1_t x̂_0 + c2_t x_t + √β̃_t ε` (no noise at t = 1, where `β̃_1 = 0`).
#[derive(Debug, Clone)]
pub struct LatentGenerator<D: Backend> {
    /// The network `[x_t, z, emb(t)] → x̂_0`.
    pub net: Mlp<D>,
    schedule: Schedule,
    dim: usize,
    n_z: usize,
    time_embed_dim: usize,
}

impl<D: Backend> LatentGenerator<D> {
    /// A fresh generator for `schedule`.
    pub fn new(dev: &D, spec: &DdaebmSpec, schedule: Schedule, rng: &mut impl Rng) -> Self {
        Self {
            net: Mlp::new(
                dev,
                spec.dim + spec.n_z + spec.time_embed_dim,
                spec.hidden,
                spec.depth,
                spec.dim,
                spec.activation,
                rng,
            ),
            schedule,
            dim: spec.dim,
            n_z: spec.n_z,
            time_embed_dim: spec.time_embed_dim,
        }
    }

    /// The schedule the generator denoises along.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    /// The latent dimension `n_z`.
    pub fn n_z(&self) -> usize {
        self.n_z
    }

    /// `x̂_0 = G(x_t, z, t)`; `x_t` and `z` are `B × d` and `B × n_z`.
    pub fn predict_x0<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x_t: &Matrix<D>,
        z: Matrix<D, T>,
        ts: &[usize],
    ) -> Matrix<D, T> {
        let input = (z, x_t.clone()).concat_along(Axis::<1>);
        let input = with_time_embedding(input, ts, self.schedule.n_steps(), self.time_embed_dim);
        self.net.forward(input)
    }

    /// The posterior mean `c1_t x̂_0 + c2_t x_t` (docs/algorithms.md §1), one step per row.
    pub fn posterior_mean<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x0_hat: Matrix<D, T>,
        x_t: &Matrix<D>,
        ts: &[usize],
    ) -> Matrix<D, T> {
        let s = &self.schedule;
        scale_rows(x0_hat, &per_row(ts, |t| s.posterior_c1(t)))
            + scale_rows(x_t.clone(), &per_row(ts, |t| s.posterior_c2(t)))
    }

    /// One generator step: `x_{t-1} = c1_t G(x_t, z, t) + c2_t x_t + √β̃_t ε`, with the
    /// caller's standard-normal `z` and `noise` (differentiable in θ, and in `z`).
    pub fn step<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x_t: &Matrix<D>,
        z: Matrix<D, T>,
        noise: &Matrix<D>,
        ts: &[usize],
    ) -> Matrix<D, T> {
        let x0_hat = self.predict_x0(x_t, z, ts);
        let spread = per_row(ts, |t| self.schedule.beta_tilde(t).max(0.0).sqrt());
        self.posterior_mean(x0_hat, x_t, ts) + scale_rows(noise.clone(), &spread)
    }

    /// Acting in the denoising environment: draws `z` and the posterior noise from `rng`
    /// and returns `x_{t-1}` for the batch at `(x_t, t)` (no log-probability: the
    /// latent-variable policy has no tractable one).
    pub fn act(&self, observation: &DenoisingState<D>, rng: &mut ProjectRng) -> Action<D> {
        let (rows, cols) = *observation.x.shape();
        let dev = observation.x.device().clone();
        let z = normal_matrix(&dev, rng, rows, self.n_z);
        let noise = normal_matrix(&dev, rng, rows, cols);
        let ts = vec![observation.t; rows];
        Action {
            next: self.step(&observation.x, z, &noise, &ts),
            log_prob: None,
        }
    }
}

impl<D: Backend> Sampler<D> for LatentGenerator<D> {
    fn dim(&self) -> usize {
        self.dim
    }
    fn sample_trajectory(&self, n: usize, rng: &mut ProjectRng) -> Vec<Matrix<D>> {
        let dev = self.net.layers[0].weight.device().clone();
        let mut states = vec![normal_matrix(&dev, rng, n, self.dim)];
        for t in (1..=self.schedule.n_steps()).rev() {
            let x_t = states[states.len() - 1].clone();
            let action = self.act(&DenoisingState { x: x_t, t }, rng);
            states.push(action.next);
        }
        states
    }
}

impl<D: Backend> Parameterized<D> for LatentGenerator<D> {
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

/// The variational posterior `q_ω(z | x_{t-1}, x_t, t) = N(m, diag(exp(v)))`: an MLP on
/// `[x_{t-1}, x_t, emb(t)]` whose `2 n_z` outputs are `(m, v)`.
#[derive(Debug, Clone)]
pub struct LatentEncoder<D: Backend> {
    /// The network `[x_{t-1}, x_t, emb(t)] → (m, v)`.
    pub net: Mlp<D>,
    n_steps: usize,
    n_z: usize,
    time_embed_dim: usize,
}

impl<D: Backend> LatentEncoder<D> {
    /// A fresh encoder for a T-step schedule.
    pub fn new(dev: &D, spec: &DdaebmSpec, n_steps: usize, rng: &mut impl Rng) -> Self {
        Self {
            net: Mlp::new(
                dev,
                2 * spec.dim + spec.time_embed_dim,
                spec.hidden,
                spec.depth,
                2 * spec.n_z,
                spec.activation,
                rng,
            ),
            n_steps,
            n_z: spec.n_z,
            time_embed_dim: spec.time_embed_dim,
        }
    }

    /// `(m, v)` of `q_ω(z | x_{t-1}, x_t, t)`, each `B × n_z` (`v` the log-variance).
    pub fn forward<T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
        &self,
        x_prev: Matrix<D, T>,
        x_t: &Matrix<D>,
        ts: &[usize],
    ) -> (Matrix<D, T>, Matrix<D, T>) {
        let input = (x_prev, x_t.clone()).concat_along(Axis::<1>);
        let input = with_time_embedding(input, ts, self.n_steps, self.time_embed_dim);
        let out = self.net.forward(input);
        let n_z = self.n_z;
        let mean = out.with_empty_tape().slice((.., 0..n_z));
        let log_variance = out.slice((.., n_z..2 * n_z));
        (mean, log_variance)
    }
}

impl<D: Backend> Parameterized<D> for LatentEncoder<D> {
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

/// `-log N(z; m, diag(exp(v)))` per row: `½ Σ_j [v_j + (z_j - m_j)² e^{-v_j} + log 2π]`.
pub fn diagonal_normal_nll<D: Backend, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
    z: Matrix<D, T>,
    mean: Matrix<D, T>,
    log_variance: Matrix<D, T>,
) -> Vector<D, T> {
    let n_z = z.shape().1 as f32;
    let precision = (log_variance.with_empty_tape() * -1.0).exp();
    let squared = (z - mean).square() * precision;
    row_sums(squared + log_variance) * 0.5 + n_z * HALF_LOG_TWO_PI
}

/// `KL(N(m, diag(exp(v))) ‖ N(0, I)) = -½ Σ_j (1 + v_j - m_j² - e^{v_j})` per row.
pub fn kl_to_standard_normal<D: Backend, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
    mean: Matrix<D, T>,
    log_variance: Matrix<D, T>,
) -> Vector<D, T> {
    let variance = log_variance.with_empty_tape().exp();
    row_sums(mean.square() + variance - log_variance - 1.0) * 0.5
}

/// `log q(x_t | x_{t-1}) = -‖x_t - √α_t x_{t-1}‖²/(2β_t) - (d/2) log(2π β_t)` per row.
pub fn forward_log_density<D: Backend, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
    schedule: &Schedule,
    x_prev: Matrix<D, T>,
    x_t: &Matrix<D>,
    ts: &[usize],
) -> Vector<D, T> {
    let d = x_t.shape().1 as f64;
    let residual = scale_rows(x_prev, &per_row(ts, |t| -schedule.alpha(t).sqrt())) + x_t.clone();
    let dev = x_t.device().clone();
    let inverse_two_beta = per_row(ts, |t| -0.5 / schedule.beta(t));
    let constant = per_row(ts, |t| {
        -0.5 * d * (2.0 * std::f64::consts::PI * schedule.beta(t)).ln()
    });
    let n = ts.len();
    row_sums(residual.square()) * dev.tensor_from_vec(inverse_two_beta, (n,))
        + dev.tensor_from_vec(constant, (n,))
}

/// `∇_{x_{t-1}} log q(x_t | x_{t-1}) = √α_t (x_t - √α_t x_{t-1}) / β_t` (a constant here:
/// R1 is taken at fixed real pairs).
pub fn forward_log_density_gradient<D: Backend>(
    schedule: &Schedule,
    x_prev: &Matrix<D>,
    x_t: &Matrix<D>,
    ts: &[usize],
) -> Matrix<D> {
    scale_rows(
        x_t.clone(),
        &per_row(ts, |t| schedule.alpha(t).sqrt() / schedule.beta(t)),
    ) - scale_rows(
        x_prev.clone(),
        &per_row(ts, |t| schedule.alpha(t) / schedule.beta(t)),
    )
}

/// What [`r1_penalty`] returns.
pub struct R1Terms<D: Backend, T> {
    /// `D(x_{t-1}, t-1)` per row, sharing the penalty's tape.
    pub value: Vector<D, T>,
    /// `(r1/2) mean_i ‖∇_{x_{t-1}} [D(x_{t-1}, t-1) + log q(x_t | x_{t-1})]‖²`, traced in φ.
    pub penalty: Tensor<(), f32, D, T>,
    /// `∇_x D(x_{t-1}, t-1)` alone (`B × d`), untraced, for diagnostics.
    pub energy_gradient: Matrix<D>,
}

/// The R1 penalty of docs/algorithms.md §5 on real pairs, `(r1/2) mean_i ‖∇_{x_{t-1}} [D(x_{t-1}, t-1) +
/// log q(x_t | x_{t-1})]‖²`, traced in φ, with `D(x_{t-1}, t-1)` (see
/// [`StepEnergy::value_and_input_gradient`] for how the two share one tape) and the
/// energy's own input gradient.
///
/// Because `E[∇_{x_{t-1}} log q(x_t | x_{t-1}) | x_{t-1}] = 0` under the forward process,
/// the penalty's expectation is `(r1/2) (E‖∇_x D‖² + E‖∇ log q‖²)`: R1 on the full
/// conditional shrinks `∇_x D` itself toward zero on the data.
pub fn r1_penalty<D: Backend, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
    energy: &StepEnergy<D>,
    schedule: &Schedule,
    x_prev: Matrix<D, T>,
    x_t: &Matrix<D>,
    ts: &[usize],
    r1: f64,
) -> R1Terms<D, T> {
    let steps: Vec<usize> = ts.iter().map(|t| t - 1).collect();
    let constant_part =
        forward_log_density_gradient(schedule, &x_prev.retaped::<NoneTape>(), x_t, ts);
    let (value, gradient) = energy.value_and_input_gradient(x_prev, &steps);
    let energy_gradient = gradient.retaped::<NoneTape>();
    let full = gradient + constant_part;
    R1Terms {
        value,
        penalty: row_sums(full.square()).mean() * (0.5 * r1) as f32,
        energy_gradient,
    }
}

/// One iteration's random draws (from the project RNG, so an iteration is reproducible).
#[derive(Debug, Clone)]
pub struct StepNoise<D: Backend> {
    /// `t ~ U{1..T}` per row.
    pub ts: Vec<usize>,
    /// Noise of `x_{t-1} ~ q(x_{t-1} | x_0)`.
    pub eps_prev: Matrix<D>,
    /// Noise of `x_t ~ q(x_t | x_{t-1})`.
    pub eps_t: Matrix<D>,
    /// The generator's latent `z ~ N(0, I)`.
    pub z: Matrix<D>,
    /// Noise of the generator's posterior step.
    pub eps_posterior: Matrix<D>,
    /// Reparameterisation noise of `z_ω ~ q_ω(· | x_{t-1}, x_t)`.
    pub eps_z: Matrix<D>,
}

impl<D: Backend> StepNoise<D> {
    /// Draws everything for a batch of `rows` in `dim` dimensions, `n_z` latents, T steps.
    pub fn draw(
        dev: &D,
        rng: &mut ProjectRng,
        rows: usize,
        dim: usize,
        n_z: usize,
        n_steps: usize,
    ) -> Self {
        let ts = (0..rows).map(|_| rng.gen_range(1..=n_steps)).collect();
        Self {
            ts,
            eps_prev: normal_matrix(dev, rng, rows, dim),
            eps_t: normal_matrix(dev, rng, rows, dim),
            z: normal_matrix(dev, rng, rows, n_z),
            eps_posterior: normal_matrix(dev, rng, rows, dim),
            eps_z: normal_matrix(dev, rng, rows, n_z),
        }
    }
}

/// The real pair `(x_{t-1}, x_t)` of docs/algorithms.md §5 from data `x_0` by the forward process:
/// `x_{t-1} = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε`, `x_t = √α_t x_{t-1} + √β_t ε'`.
pub fn real_pair<D: Backend>(
    schedule: &Schedule,
    x0: &Matrix<D>,
    noise: &StepNoise<D>,
) -> (Matrix<D>, Matrix<D>) {
    let ts = &noise.ts;
    let x_prev = noised_to_previous_step(schedule, x0, &noise.eps_prev, ts);
    let x_t = scale_rows(x_prev.clone(), &per_row(ts, |t| schedule.alpha(t).sqrt()))
        + scale_rows(
            noise.eps_t.clone(),
            &per_row(ts, |t| schedule.beta(t).sqrt()),
        );
    (x_prev, x_t)
}

/// `x_{t-1} = √ᾱ_{t-1} x_0 + √(1-ᾱ_{t-1}) ε` per row: a draw of the forward marginal
/// `q(x_{t-1} | x_0)`.
fn noised_to_previous_step<D: Backend>(
    schedule: &Schedule,
    x0: &Matrix<D>,
    eps: &Matrix<D>,
    ts: &[usize],
) -> Matrix<D> {
    scale_rows(
        x0.clone(),
        &per_row(ts, |t| schedule.alpha_bar(t - 1).sqrt()),
    ) + scale_rows(
        eps.clone(),
        &per_row(ts, |t| (1.0 - schedule.alpha_bar(t - 1)).sqrt()),
    )
}

/// DDAEBM: the per-step energy, the latent generator, the encoder, and their optimisers.
#[derive(Debug, Clone)]
pub struct Ddaebm<D: Backend> {
    /// `D_φ`.
    pub energy: StepEnergy<D>,
    /// `G_θ` (with the schedule).
    pub generator: LatentGenerator<D>,
    /// `q_ω`.
    pub encoder: LatentEncoder<D>,
    /// The hyper-parameters.
    pub config: DdaebmConfig,
    /// Adam over φ.
    pub energy_optimizer: Adam<D>,
    /// Adam over θ then ω (one optimiser, as docs/algorithms.md §5).
    pub generator_optimizer: Adam<D>,
}

impl<D: Backend> Ddaebm<D> {
    /// Fresh networks (initialised from `rng`) and optimiser state.
    pub fn new(
        dev: &D,
        spec: &DdaebmSpec,
        schedule: Schedule,
        config: DdaebmConfig,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        spec.validate()?;
        config.validate()?;
        let n_steps = schedule.n_steps();
        let energy = StepEnergy::new(dev, spec, n_steps, rng);
        let generator = LatentGenerator::new(dev, spec, schedule, rng);
        let encoder = LatentEncoder::new(dev, spec, n_steps, rng);
        let adam = AdamConfig {
            betas: config.betas,
            ..AdamConfig::default()
        };
        let energy_params = energy.parameters();
        let energy_optimizer = Adam::new(
            &energy_params,
            vec![config.lr_energy; energy_params.len()],
            adam,
        )?;
        let mut generator_params = generator.parameters();
        generator_params.extend(encoder.parameters());
        let generator_optimizer = Adam::new(
            &generator_params,
            vec![config.lr_generator; generator_params.len()],
            adam,
        )?;
        Ok(Self {
            energy,
            generator,
            encoder,
            config,
            energy_optimizer,
            generator_optimizer,
        })
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        self.generator.schedule()
    }

    /// The data dimension d.
    pub fn dim(&self) -> usize {
        self.energy.dim()
    }

    /// The per-step reward of the generator-policy, `D(x_{t-1}, t-1) + log q(x_t | x_{t-1})`
    /// (the conditional log-density up to `log Z`), one value per row.
    pub fn step_reward(&self, x_prev: &Matrix<D>, x_t: &Matrix<D>, t: usize) -> Vector<D> {
        let rows = x_prev.shape().0;
        let ts = vec![t; rows];
        let steps = vec![t - 1; rows];
        self.energy.forward(x_prev.clone(), &steps)
            + forward_log_density(self.schedule(), x_prev.clone(), x_t, &ts)
    }

    fn generator_parameters(&self) -> Vec<&Matrix<D>> {
        let mut params = self.generator.parameters();
        params.extend(self.encoder.parameters());
        params
    }

    /// One iteration of docs/algorithms.md §5 on a data batch `x0` (`B × d`), all randomness from `rng`:
    /// the energy step (`L_D` with R1), then the generator + encoder step (`L_G`) against
    /// the updated energy. Returns the scalars to log (`ddaebm/...`). Nothing is updated
    /// when a loss or gradient is not finite.
    pub fn train_step(
        &mut self,
        x0: &Matrix<D>,
        rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats> {
        self.step(x0, None, rng, iteration)
    }

    /// [`Ddaebm::train_step`] with a perfect generator in the energy step: its fakes are
    /// `x̃_{t-1} ~ q(x_{t-1} | x_0')` of a second, independent data batch `x0_fake` (same
    /// `t` per row), i.e. exact draws of the marginal a generator that matches the data
    /// would produce. The generator + encoder step is unchanged (it still trains against
    /// the energy). An ablation: it shows what `L_D` makes of `D` at the game's
    /// equilibrium, where `mean(-D(real) + D(fake))` has zero expected gradient.
    ///
    /// # Errors
    /// As [`Ddaebm::train_step`], and [`Error::InvalidArgument`] if `x0_fake`'s shape is
    /// not `x0`'s.
    pub fn train_step_with_perfect_fakes(
        &mut self,
        x0: &Matrix<D>,
        x0_fake: &Matrix<D>,
        rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats> {
        if x0_fake.shape() != x0.shape() {
            return Err(Error::InvalidArgument(format!(
                "ddaebm step: the perfect fakes' data batch is {:?}, the real one {:?}",
                x0_fake.shape(),
                x0.shape()
            )));
        }
        self.step(x0, Some(x0_fake), rng, iteration)
    }

    fn step(
        &mut self,
        x0: &Matrix<D>,
        x0_fake: Option<&Matrix<D>>,
        rng: &mut ProjectRng,
        iteration: u64,
    ) -> Result<Stats> {
        let (rows, dim) = *x0.shape();
        if rows == 0 || dim != self.dim() {
            return Err(Error::InvalidArgument(format!(
                "ddaebm step: data batch is {rows} × {dim}, expected at least one row of {} columns",
                self.dim()
            )));
        }
        let dev = x0.device().clone();
        let schedule = self.schedule().clone();
        let noise = StepNoise::draw(
            &dev,
            rng,
            rows,
            dim,
            self.generator.n_z(),
            schedule.n_steps(),
        );
        let ts = &noise.ts;
        let steps: Vec<usize> = ts.iter().map(|t| t - 1).collect();
        let (x_prev, x_t) = real_pair(&schedule, x0, &noise);

        // The fake x̃_{t-1}, traced in θ; the energy step sees its value only.
        let fake = self.generator.step(
            &x_t,
            noise.z.clone().traced(Gradients::leaky()),
            &noise.eps_posterior,
            ts,
        );
        let (fake, fake_tape) = fake.split_tape();

        let energy_fake = match x0_fake {
            None => fake.clone(),
            Some(x0_fake) => {
                let eps = normal_matrix(&dev, rng, rows, dim);
                noised_to_previous_step(&schedule, x0_fake, &eps, ts)
            }
        };

        // Energy step: L_D = mean(-D(x_{t-1}) + D(x̃_{t-1})) + R1.
        let R1Terms {
            value: d_real,
            penalty: r1,
            energy_gradient,
        } = r1_penalty(
            &self.energy,
            &schedule,
            x_prev.clone().traced(Gradients::leaky()),
            &x_t,
            ts,
            self.config.r1,
        );
        let d_fake = self
            .energy
            .forward(energy_fake.traced(Gradients::leaky()), &steps);
        let d_real_mean = d_real.as_vec().iter().map(|&v| v as f64).sum::<f64>() / rows as f64;
        let d_fake_mean = d_fake.as_vec().iter().map(|&v| v as f64).sum::<f64>() / rows as f64;
        let r1_value = r1.as_vec()[0] as f64;
        // ‖∇_x D(x_0, 0)‖² on the real rows at t = 1, the number to hold against the data
        // score's E‖∇ log p‖² (what D(·, 0) = log p would need).
        let score_sq: Vec<f64> = energy_gradient
            .as_vec()
            .chunks(dim)
            .zip(ts)
            .filter(|&(_, &t)| t == 1)
            .map(|(row, _)| row.iter().map(|&g| (g as f64).powi(2)).sum())
            .collect();
        let loss_d = d_fake.mean::<(), _>() - d_real.mean::<(), _>() + r1;
        let loss_d_value = ensure_finite("ddaebm/loss_D", loss_d.as_vec()[0] as f64, iteration)?;
        let mut grads = loss_d.backward();
        let mut energy_grads = gradients_of(&mut grads, &self.energy.parameters())?;
        let grad_norm_d = clip_grad_norm(&mut energy_grads, self.config.grad_clip);
        ensure_finite("ddaebm/grad_norm_D", grad_norm_d, iteration)?;

        // Generator + encoder step against the updated energy (computed on a copy so that
        // a non-finite generator loss leaves the whole model unchanged).
        let mut updated_energy = self.energy.clone();
        let mut energy_optimizer = self.energy_optimizer.clone();
        energy_optimizer.update(updated_energy.parameters_mut(), &energy_grads)?;

        let fake = fake.put_tape(fake_tape);
        // Reverse KL to the conditional EBM: -mean[D(x̃, t-1) + log q(x_t | x̃)].
        let conditional = updated_energy.forward_frozen(fake.with_empty_tape(), &steps)
            + forward_log_density(&schedule, fake.with_empty_tape(), &x_t, ts);
        let reverse = conditional.mean::<(), _>() * -1.0;
        // Entropy bound: λ_z mean NLL of z under q_ω(· | x̃, x_t).
        let (m_fake, v_fake) = self.encoder.forward(fake, &x_t, ts);
        let latent =
            diagonal_normal_nll(noise.z.retaped::<Traced<D>>(), m_fake, v_fake).mean::<(), _>();
        // VAE bound of the real step: z_ω ~ q_ω(· | x_{t-1}, x_t), recon NLL + KL.
        let (m_real, v_real) =
            self.encoder
                .forward(x_prev.clone().traced(Gradients::leaky()), &x_t, ts);
        let std_real = (v_real.with_empty_tape() * 0.5).exp();
        let z_omega = m_real.with_empty_tape() + std_real * noise.eps_z.clone();
        let mean_real =
            self.generator
                .posterior_mean(self.generator.predict_x0(&x_t, z_omega, ts), &x_t, ts);
        let floor = self.config.recon_variance_floor;
        let variance = per_row(ts, |t| schedule.beta_tilde(t).max(floor));
        let inverse_two_variance: Vec<f32> = variance.iter().map(|v| 0.5 / v).collect();
        let constant: f64 = variance
            .iter()
            .map(|&v| 0.5 * dim as f64 * (2.0 * std::f64::consts::PI * v as f64).ln())
            .sum::<f64>()
            / rows as f64;
        let recon = (row_sums((mean_real - x_prev.clone()).square())
            * dev.tensor_from_vec(inverse_two_variance, (rows,)))
        .mean::<(), _>()
            + constant as f32;
        let kl = kl_to_standard_normal(m_real, v_real).mean::<(), _>();

        let reverse_value = reverse.as_vec()[0] as f64;
        let latent_value = latent.as_vec()[0] as f64;
        let recon_value = recon.as_vec()[0] as f64;
        let kl_value = kl.as_vec()[0] as f64;
        let loss_g = reverse + latent * self.config.lambda_z as f32 + recon + kl;
        let loss_g_value = ensure_finite("ddaebm/loss_G", loss_g.as_vec()[0] as f64, iteration)?;
        let mut grads = loss_g.backward();
        let mut generator_grads = gradients_of(&mut grads, &self.generator_parameters())?;
        let grad_norm_g = clip_grad_norm(&mut generator_grads, self.config.grad_clip);
        ensure_finite("ddaebm/grad_norm_G", grad_norm_g, iteration)?;

        self.energy = updated_energy;
        self.energy_optimizer = energy_optimizer;
        let mut params = self.generator.parameters_mut();
        params.extend(self.encoder.parameters_mut());
        self.generator_optimizer.update(params, &generator_grads)?;

        let mut stats: Stats = vec![
            ("ddaebm/loss_D".into(), loss_d_value),
            ("ddaebm/loss_G".into(), loss_g_value),
            ("ddaebm/r1".into(), r1_value),
            ("ddaebm/D_real".into(), d_real_mean),
            ("ddaebm/D_fake".into(), d_fake_mean),
            ("ddaebm/D_gap".into(), d_real_mean - d_fake_mean),
            ("ddaebm/reverse_kl".into(), reverse_value),
            ("ddaebm/latent_nll".into(), latent_value),
            ("ddaebm/recon_nll".into(), recon_value),
            ("ddaebm/kl_z".into(), kl_value),
            ("ddaebm/grad_norm_D".into(), grad_norm_d),
            ("ddaebm/grad_norm_G".into(), grad_norm_g),
        ];
        if !score_sq.is_empty() {
            let mean = score_sq.iter().sum::<f64>() / score_sq.len() as f64;
            stats.push(("ddaebm/grad_x_D0_sq".into(), mean));
        }
        Ok(stats)
    }

    /// Writes the three networks and both optimisers' state under `prefix`.
    pub fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) {
        checkpoint.put_model(&format!("{prefix}.energy"), &self.energy);
        checkpoint.put_model(&format!("{prefix}.generator"), &self.generator);
        checkpoint.put_model(&format!("{prefix}.encoder"), &self.encoder);
        self.energy_optimizer.save(
            checkpoint,
            &format!("{prefix}.energy_optim"),
            &self.energy.parameter_names(),
        );
        self.generator_optimizer.save(
            checkpoint,
            &format!("{prefix}.generator_optim"),
            &self.generator_optimizer_names(),
        );
    }

    /// Restores what [`Ddaebm::save`] wrote (the shapes must match this model's).
    pub fn load(&mut self, checkpoint: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        checkpoint.load_model(path, &format!("{prefix}.energy"), &mut self.energy)?;
        checkpoint.load_model(path, &format!("{prefix}.generator"), &mut self.generator)?;
        checkpoint.load_model(path, &format!("{prefix}.encoder"), &mut self.encoder)?;
        let names = self.energy.parameter_names();
        self.energy_optimizer
            .load(checkpoint, path, &format!("{prefix}.energy_optim"), &names)?;
        let names = self.generator_optimizer_names();
        self.generator_optimizer.load(
            checkpoint,
            path,
            &format!("{prefix}.generator_optim"),
            &names,
        )
    }

    fn generator_optimizer_names(&self) -> Vec<String> {
        let generator = self
            .generator
            .parameter_names()
            .into_iter()
            .map(|n| format!("generator.{n}"));
        let encoder = self
            .encoder
            .parameter_names()
            .into_iter()
            .map(|n| format!("encoder.{n}"));
        generator.chain(encoder).collect()
    }
}

/// The `phase` of a DDAEBM checkpoint and of its rows in `metrics.csv`.
pub const PHASE: &str = "ddaebm";

/// DDAEBM training as a [`Phase`]: one [`Ddaebm::train_step`] per iteration on a fresh
/// data batch, and the temperature `T_E` of the `t = 0` energy, fitted after training.
pub struct DdaebmPhase<D: Backend> {
    /// Networks and optimisers.
    pub model: Ddaebm<D>,
    /// The training RNG (data, t, every noise).
    pub rng: ProjectRng,
    /// Iterations done.
    pub iteration: u64,
    /// `T_E` of the `t = 0` energy (1 until fitted).
    pub temperature: f64,
    data: Box<ExpertSampler<'static, D>>,
    batch_size: usize,
    perfect_generator_fakes: bool,
}

impl<D: Backend> DdaebmPhase<D> {
    /// A fresh phase training `model` on batches of `batch_size` drawn by `data`. With
    /// `perfect_generator_fakes` the energy step's fakes are forward-noised draws of a
    /// second data batch instead of the generator's (the perfect-generator ablation).
    pub fn new(
        model: Ddaebm<D>,
        data: Box<ExpertSampler<'static, D>>,
        batch_size: usize,
        perfect_generator_fakes: bool,
        rng: ProjectRng,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        Ok(Self {
            model,
            rng,
            iteration: 0,
            temperature: 1.0,
            data,
            batch_size,
            perfect_generator_fakes,
        })
    }

    /// `-D(x, 0)` with its fitted temperature.
    pub fn energy_model(&self) -> EnergyModel<D> {
        let mut model = self.model.energy.energy_at_zero();
        model.temperature = self.temperature;
        model
    }
}

impl<D: Backend> Phase<D> for DdaebmPhase<D> {
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
        let batch = self.batch_size;
        let x0 = (self.data)(batch, &mut self.rng);
        let next = self.iteration + 1;
        let stats = if self.perfect_generator_fakes {
            let x0_fake = (self.data)(batch, &mut self.rng);
            self.model
                .train_step_with_perfect_fakes(&x0, &x0_fake, &mut self.rng, next)?
        } else {
            self.model.train_step(&x0, &mut self.rng, next)?
        };
        self.iteration = next;
        Ok(stats)
    }
    fn unchanged_on_error(&self) -> bool {
        // `train_step` checks both losses and gradients before it updates anything.
        true
    }
    fn save(&self) -> Result<Checkpoint> {
        let mut c = Checkpoint::new();
        self.model.save(&mut c, "ddaebm");
        let meta = &mut c.metadata;
        meta.insert("rng".into(), rng_to_json(&self.rng)?);
        meta.insert("dim".into(), self.model.dim().to_string());
        meta.insert(
            "n_steps".into(),
            self.model.schedule().n_steps().to_string(),
        );
        // `dgym eval` draws the density figures of any run whose reward kind is an EBM.
        meta.insert("reward_kind".into(), "ebm".into());
        meta.insert("ddaebm.temperature".into(), self.temperature.to_string());
        Ok(c)
    }
    fn load(&mut self, c: &Checkpoint, path: &Path) -> Result<()> {
        if c.meta(path, "phase")? != PHASE {
            return Err(Error::checkpoint(path, "not a DDAEBM checkpoint"));
        }
        self.model.load(c, path, "ddaebm")?;
        self.iteration = c.meta_parse(path, "iteration")?;
        self.rng = rng_from_json(c.meta(path, "rng")?)?;
        self.temperature = c.meta_parse(path, "ddaebm.temperature")?;
        Ok(())
    }
    fn sampler(&self) -> Box<dyn Sampler<D> + '_> {
        Box::new(self.model.generator.clone())
    }
}
