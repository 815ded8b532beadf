//! Tensor aliases and the few host/device helpers the project needs.
//!
//! All parameters are runtime-shaped `Matrix` values (`rows × cols`), because dfdx 0.13's
//! module system only supports compile-time shapes and our widths come from configs.

use dfdx::prelude::*;

use crate::nn::Mlp;

/// The dfdx devices this project runs on (`Cpu`, and `Cuda` with the `cuda` feature).
///
/// The methods are the hot operations a device may do better than dfdx's composed
/// kernels; the defaults are the composed dfdx code (what `Cuda` uses), and `Cpu`
/// overrides them with the fused kernels of [`crate::kernels`].
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
    /// [`crate::kernels::relu_mlp_value_and_input_gradient`]). `Err` hands the input back
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
        crate::kernels::mlp_forward(mlp, x)
    }

    fn mlp_forward_frozen<T: Tape<f32, Self> + Merge<T>>(
        mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
    ) -> Matrix<Self, T> {
        crate::kernels::mlp_forward_frozen(mlp, x)
    }

    fn mlp_forward_constant_suffix(
        mlp: &Mlp<Self>,
        x: &Matrix<Self>,
        suffix: &[f32],
    ) -> Matrix<Self> {
        crate::kernels::mlp_forward_constant_suffix(mlp, x, suffix)
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
        if !crate::kernels::adam_step(
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
        crate::kernels::squared_norm(x)
    }

    fn relu_mlp_value_and_input_gradient<T: Tape<f32, Self> + Merge<T>>(
        mlp: &Mlp<Self>,
        x: Matrix<Self, T>,
        dim: usize,
    ) -> std::result::Result<(Vector<Self, T>, Matrix<Self, T>), Matrix<Self, T>> {
        Ok(crate::kernels::relu_mlp_value_and_input_gradient(
            mlp, x, dim,
        ))
    }
}

#[cfg(feature = "cuda")]
impl Backend for Cuda {}

/// A runtime-shaped `rows × cols` f32 tensor, optionally carrying a gradient tape `T`.
pub type Matrix<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

/// A runtime-shaped f32 vector (e.g. one value per sample), optionally with a tape.
pub type Vector<D, T = NoneTape> = Tensor<(usize,), f32, D, T>;

/// The default CPU device.
pub type CpuDevice = Cpu;

/// Builds a `rows × cols` matrix from row-major host data.
///
/// Panics only on a length mismatch, which is a programming error inside the library.
pub fn matrix<D: Backend>(dev: &D, data: Vec<f32>, rows: usize, cols: usize) -> Matrix<D> {
    assert_eq!(data.len(), rows * cols, "matrix: data length vs shape");
    dev.tensor_from_vec(data, (rows, cols))
}

/// Builds a vector from host data.
pub fn vector<D: Backend>(dev: &D, data: Vec<f32>) -> Vector<D> {
    let n = data.len();
    dev.tensor_from_vec(data, (n,))
}

/// Multiplies row `i` of `x` by `coefs[i]`. When every coefficient is the same (a batch at
/// one time step, the common case in rollouts) this is one scalar multiply instead of a
/// broadcast of a host-built column.
pub fn scale_rows<D: Backend, T: Tape<f32, D> + Merge<NoneTape>>(
    x: Matrix<D, T>,
    coefs: &[f32],
) -> Matrix<D, T> {
    let first = coefs.first().copied().unwrap_or(1.0);
    if coefs.iter().all(|&c| c == first) {
        return x * first;
    }
    let shape = *x.shape();
    let column = vector(x.device(), coefs.to_vec());
    x * column.broadcast_like::<_, Axis<1>>(&shape)
}

/// Sum of each row: `B × d → B`.
pub fn row_sums<D: Backend, T: Tape<f32, D>>(x: Matrix<D, T>) -> Vector<D, T> {
    x.sum::<_, Axis<1>>()
}

/// Copies a matrix to host memory, row-major.
pub fn to_host<D: Backend, T>(x: &Tensor<(usize, usize), f32, D, T>) -> Vec<f32> {
    x.as_vec()
}
