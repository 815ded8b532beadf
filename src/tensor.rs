//! Tensor aliases and the few host/device helpers the project needs: a leaf that knows
//! the devices only through the [`Backend`] trait (re-exported from [`crate::backend`]).
//!
//! All parameters are runtime-shaped `Matrix` values (`rows × cols`), because dfdx 0.13's
//! module system only supports compile-time shapes and our widths come from configs.

use dfdx::prelude::*;

pub use crate::backend::Backend;

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
