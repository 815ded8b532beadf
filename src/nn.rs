//! Runtime-shaped layers: [`Linear`], [`Mlp`], the sinusoidal [`time_embedding`], and the
//! [`Parameterized`] trait through which optimisers, clipping, EMA and checkpoints reach
//! a model's parameters.

use dfdx::prelude::*;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::tensor::{matrix, Backend, Matrix};

/// A model whose parameters the project's optimiser, EMA and checkpoint code can visit.
/// Names and order are stable: they key checkpoints and optimiser state.
pub trait Parameterized<D: Backend> {
    /// The parameters, in a fixed order.
    fn parameters(&self) -> Vec<&Matrix<D>>;
    /// The same parameters, mutably, in the same order.
    fn parameters_mut(&mut self) -> Vec<&mut Matrix<D>>;
    /// One stable name per parameter, in the same order (e.g. `layers.0.weight`).
    fn parameter_names(&self) -> Vec<String>;
}

/// The non-linearity between hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `x · sigmoid(x)` (a.k.a. swish), common in diffusion networks.
    Silu,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    /// Applies the activation.
    pub fn apply<D: Backend, T: Tape<f32, D> + Merge<T>>(&self, x: Matrix<D, T>) -> Matrix<D, T> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Silu => {
                let gate = x.with_empty_tape().sigmoid();
                x * gate
            }
        }
    }
}

/// A fully connected layer `y = x W + b`, `W: in × out`, `b: 1 × out`.
#[derive(Debug, Clone)]
pub struct Linear<D: Backend> {
    /// Weight, `in × out`.
    pub weight: Matrix<D>,
    /// Bias, `1 × out`.
    pub bias: Matrix<D>,
}

impl<D: Backend> Linear<D> {
    /// PyTorch's default initialisation: weight and bias uniform in `±1/√in`.
    pub fn new(dev: &D, inputs: usize, outputs: usize, rng: &mut impl Rng) -> Self {
        let bound = 1.0 / (inputs as f32).sqrt();
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-bound..bound)).collect() };
        let weight = matrix(dev, uniform(inputs * outputs), inputs, outputs);
        let bias = matrix(dev, uniform(outputs), 1, outputs);
        Self { weight, bias }
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.weight.shape().0
    }
    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.weight.shape().1
    }

    /// `x W + b` for a `B × in` batch.
    pub fn forward<T: Tape<f32, D> + Merge<T>>(&self, x: Matrix<D, T>) -> Matrix<D, T> {
        let batch = x.shape().0;
        let outputs = self.outputs();
        let product = x.matmul(self.weight.retaped::<T>());
        let bias = self
            .bias
            .retaped::<T>()
            .reshape_like(&(outputs,))
            .broadcast_like::<_, Axis<0>>(&(batch, outputs));
        product + bias
    }
}

/// A multi-layer perceptron: `Linear → act → … → Linear` (no activation on the output).
#[derive(Debug, Clone)]
pub struct Mlp<D: Backend> {
    /// The layers, input first.
    pub layers: Vec<Linear<D>>,
    /// The hidden non-linearity.
    pub activation: Activation,
}

impl<D: Backend> Mlp<D> {
    /// `inputs → hidden × depth → outputs`, i.e. `depth` hidden layers of width `hidden`.
    pub fn new(
        dev: &D,
        inputs: usize,
        hidden: usize,
        depth: usize,
        outputs: usize,
        activation: Activation,
        rng: &mut impl Rng,
    ) -> Self {
        let mut widths = vec![inputs];
        widths.extend(std::iter::repeat_n(hidden, depth));
        widths.push(outputs);
        let layers = widths
            .windows(2)
            .map(|w| Linear::new(dev, w[0], w[1], rng))
            .collect();
        Self { layers, activation }
    }

    /// Number of inputs of the first layer.
    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, Linear::inputs)
    }

    /// The forward pass on a `B × inputs` batch (fused into one op on the CPU; see
    /// [`Backend::mlp_forward`]).
    pub fn forward<T: Tape<f32, D> + Merge<T>>(&self, x: Matrix<D, T>) -> Matrix<D, T> {
        D::mlp_forward(self, x)
    }

    /// [`Mlp::forward`] for a network held fixed in this backward pass: gradients reach
    /// the input, and the weights' gradients may be left out (see
    /// [`Backend::mlp_forward_frozen`]); read none of them.
    pub fn forward_frozen<T: Tape<f32, D> + Merge<T>>(&self, x: Matrix<D, T>) -> Matrix<D, T> {
        D::mlp_forward_frozen(self, x)
    }

    /// The forward pass composed of dfdx ops, layer by layer: what devices without a
    /// fused kernel run, and the reference the fused kernel is tested against.
    pub fn forward_composed<T: Tape<f32, D> + Merge<T>>(&self, x: Matrix<D, T>) -> Matrix<D, T> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = self.activation.apply(h);
            }
        }
        h
    }
}

impl<D: Backend> Parameterized<D> for Mlp<D> {
    fn parameters(&self) -> Vec<&Matrix<D>> {
        self.layers
            .iter()
            .flat_map(|l| [&l.weight, &l.bias])
            .collect()
    }
    fn parameters_mut(&mut self) -> Vec<&mut Matrix<D>> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.weight, &mut l.bias])
            .collect()
    }
    fn parameter_names(&self) -> Vec<String> {
        (0..self.layers.len())
            .flat_map(|i| [format!("layers.{i}.weight"), format!("layers.{i}.bias")])
            .collect()
    }
}

/// `[x, emb(t)]`: a `B × d` batch with the sinusoidal embedding of each row's step appended
/// (`B × (d + embed_dim)`), the input of every time-conditioned network here.
pub fn with_time_embedding<D: Backend, T: Tape<f32, D>>(
    x: Matrix<D, T>,
    ts: &[usize],
    n_steps: usize,
    embed_dim: usize,
) -> Matrix<D, T> {
    let rows = x.shape().0;
    assert_eq!(ts.len(), rows, "one time step per row");
    let embedding = crate::tensor::matrix(
        x.device(),
        time_embedding(ts, n_steps, embed_dim),
        rows,
        embed_dim,
    );
    (x, embedding).concat_along(Axis::<1>)
}

/// Sinusoidal embedding of integer time steps, `[sin(τ f_k), cos(τ f_k)]` with
/// `f_k = 10000^{-k/(dim/2)}`. The step is rescaled to `τ = t · 1000 / T` so that the
/// embedding spans the same frequencies whatever T is: with raw `t ∈ {1..4}` most
/// frequencies would be nearly constant and the network could barely tell steps apart.
/// Returns a row-major `ts.len() × dim` host buffer.
pub fn time_embedding(ts: &[usize], n_steps: usize, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let frequencies: Vec<f64> = (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp())
        .collect();
    // A batch holds few distinct steps (one in a rollout, T in a stacked one): each row
    // is computed once and copied for its repeats.
    let mut first_row: std::collections::HashMap<usize, usize> = Default::default();
    let mut out = Vec::with_capacity(ts.len() * dim);
    for (row, &t) in ts.iter().enumerate() {
        if let Some(&earlier) = first_row.get(&t) {
            out.extend_from_within(earlier * dim..(earlier + 1) * dim);
            continue;
        }
        first_row.insert(t, row);
        let tau = t as f64 * 1000.0 / n_steps as f64;
        out.extend(frequencies.iter().map(|f| (tau * f).sin() as f32));
        out.extend(frequencies.iter().map(|f| (tau * f).cos() as f32));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}
