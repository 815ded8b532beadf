//! The devices: the [`Backend`] trait (the hot operations a device may do better than
//! dfdx's composed kernels), its CPU implementation ([`cpu`]: the fused kernels, the only
//! place that touches a tensor's storage through raw pointers, with [`fork`]'s thread
//! pool), and the CUDA one (dfdx's composed kernels, with the `cuda` feature).

pub mod cpu;
pub mod fork;

use dfdx::prelude::*;

use crate::nn::Mlp;
use crate::tensor::{matrix, Matrix, Vector};

/// The dfdx devices this project runs on (`Cpu`, and `Cuda` with the `cuda` feature).
///
/// The methods are the hot operations a device may do better than dfdx's composed
/// kernels; the defaults are the composed dfdx code (what `Cuda` uses), and `Cpu`
/// overrides them with the fused kernels of [`cpu`].
pub trait Backend: Device<f32> + Default {
    /// The forward pass of an MLP (see [`Mlp::forward`]).
    fn mlp_forward<T: Tape<f32, Self> + Merge<T>>(
        mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
    ) -> Matrix<Self, T> {
        mlp.forward_composed(x)
    }

    /// The forward pass of an MLP whose weights stay fixed in this backward pass (a
    /// network a loss differentiates through, not into): the input's gradient is exact,
    /// the weights' gradients may be left out (the CPU kernel computes none, which saves
    /// a product per layer). The default is [`Backend::mlp_forward`].
    fn mlp_forward_frozen<T: Tape<f32, Self> + Merge<T>>(
        mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
    ) -> Matrix<Self, T> {
        Self::mlp_forward(mlp, x)
    }

    /// The forward pass of an MLP, without a tape, on inputs `[x_r, suffix]`: every row
    /// of `x` followed by the same `suffix` (a time embedding shared by the whole batch).
    /// The default builds the inputs and calls [`Mlp::forward`].
    fn mlp_forward_constant_suffix(
        mlp: &Mlp<Self>,
        x: &Matrix<Self>,
        suffix: &[f32],
    ) -> Matrix<Self> {
        let rows = x.shape().0;
        let repeated: Vec<f32> = (0..rows).flat_map(|_| suffix.iter().copied()).collect();
        let suffix = matrix(x.device(), repeated, rows, suffix.len());
        mlp.forward((x.clone(), suffix).concat_along(Axis::<1>))
    }

    /// One Adam step of one parameter in place (see [`crate::optim::Adam::update`]):
    /// `m ← β1 m + (1-β1) g`, `v ← β2 v + (1-β2) g²`, `θ ← θ - lr_t m / (√v + eps_t)`.
    fn adam_step(
        param: &mut Matrix<Self>,
        grad: &Matrix<Self>,
        moments: (&mut Matrix<Self>, &mut Matrix<Self>),
        betas: [f64; 2],
        lr_t: f32,
        eps_t: f32,
    ) {
        composed_adam_step(param, grad, moments, betas, lr_t, eps_t);
    }

    /// `Σ x²` over the elements of a matrix.
    fn squared_norm(x: &Matrix<Self>) -> f64 {
        x.clone().square().sum::<(), _>().as_vec()[0] as f64
    }

    /// A one-output ReLU MLP's value per row and its input gradient (first `dim`
    /// columns), both traced in the weights, as one fused op (DDAEBM's R1; see
    /// [`cpu::relu_mlp_value_and_input_gradient`]). `Err` hands the input back
    /// where the device has no such kernel, for the caller's composed version.
    #[allow(clippy::type_complexity)]
    fn relu_mlp_value_and_input_gradient<T: Tape<f32, Self> + Merge<T>>(
        _mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
        _dim: usize,
    ) -> std::result::Result<(Vector<Self, T>, Matrix<Self, T>), Matrix<Self, T>> {
        Err(x)
    }
}

/// Adam's step as dfdx ops (the default of [`Backend::adam_step`], and the CPU's fallback
/// for a buffer that is not dense).
fn composed_adam_step<D: Device<f32>>(
    param: &mut Matrix<D>,
    grad: &Matrix<D>,
    moments: (&mut Matrix<D>, &mut Matrix<D>),
    betas: [f64; 2],
    lr_t: f32,
    eps_t: f32,
) {
    let (moment1, moment2) = moments;
    let [beta1, beta2] = betas;
    moment1.axpy(beta1, grad, 1.0 - beta1);
    moment2.axpy(beta2, &grad.clone().square(), 1.0 - beta2);
    let direction = moment1.clone() / (moment2.clone().sqrt() + eps_t);
    param.axpy(1.0, &direction, -lr_t);
}

impl Backend for Cpu {
    fn mlp_forward<T: Tape<f32, Self> + Merge<T>>(
        mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
    ) -> Matrix<Self, T> {
        cpu::mlp_forward(mlp, x)
    }

    fn mlp_forward_frozen<T: Tape<f32, Self> + Merge<T>>(
        mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
    ) -> Matrix<Self, T> {
        cpu::mlp_forward_frozen(mlp, x)
    }

    fn mlp_forward_constant_suffix(
        mlp: &Mlp<Self>,
        x: &Matrix<Self>,
        suffix: &[f32],
    ) -> Matrix<Self> {
        cpu::mlp_forward_constant_suffix(mlp, x, suffix)
    }

    fn adam_step(
        param: &mut Matrix<Self>,
        grad: &Matrix<Self>,
        moments: (&mut Matrix<Self>, &mut Matrix<Self>),
        betas: [f64; 2],
        lr_t: f32,
        eps_t: f32,
    ) {
        let (moment1, moment2) = moments;
        if !cpu::adam_step(
            param,
            grad,
            (&mut *moment1, &mut *moment2),
            betas,
            lr_t,
            eps_t,
        ) {
            composed_adam_step(param, grad, (moment1, moment2), betas, lr_t, eps_t);
        }
    }

    fn squared_norm(x: &Matrix<Self>) -> f64 {
        cpu::squared_norm(x)
    }

    fn relu_mlp_value_and_input_gradient<T: Tape<f32, Self> + Merge<T>>(
        mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
        dim: usize,
    ) -> std::result::Result<(Vector<Self, T>, Matrix<Self, T>), Matrix<Self, T>> {
        Ok(cpu::relu_mlp_value_and_input_gradient(mlp, x, dim))
    }
}

#[cfg(feature = "cuda")]
impl Backend for Cuda {}
