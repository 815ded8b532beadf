//! numpy arrays in and out. Inputs are taken as `PyArrayLike` with type changes allowed
//! (lists, float64 and int arrays become float32 in one numpy call); every shape is
//! checked here, before any data reaches the library.

use denoise_gym::tensor::{matrix, CpuDevice, Matrix};
use numpy::ndarray::Array2;
use numpy::{AllowTypeChange, IntoPyArray, PyArray1, PyArray2, PyArrayLike1, PyArrayLike2};
use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::prelude::*;

/// A 2-D float input, converted to float32.
pub type Points<'py> = PyArrayLike2<'py, f32, AllowTypeChange>;
/// A 1-D float input, converted to float32.
pub type Values<'py> = PyArrayLike1<'py, f32, AllowTypeChange>;

/// The rows of `points` (row-major), after checking it has `cols` columns (any number of
/// columns when `cols` is `None`); `what` names the argument in the error.
pub fn rows_of(
    points: &Points<'_>,
    what: &str,
    cols: Option<usize>,
) -> PyResult<(Vec<f32>, usize)> {
    let view = points.as_array();
    let (n, d) = view.dim();
    if let Some(cols) = cols {
        if d != cols {
            return Err(PyValueError::new_err(format!(
                "{what} has shape ({n}, {d}); expected (n, {cols})"
            )));
        }
    }
    Ok((view.iter().copied().collect(), n))
}

/// [`rows_of`] as a CPU matrix of at least one row (dfdx's CPU kernels index the first
/// element of a buffer, so an empty matrix never reaches them).
pub fn matrix_of(
    points: &Points<'_>,
    what: &str,
    cols: usize,
) -> PyResult<(Matrix<CpuDevice>, usize)> {
    let (values, n) = rows_of(points, what, Some(cols))?;
    if n == 0 {
        return Err(PyValueError::new_err(format!(
            "{what} has no rows; expected at least one row of {cols} columns"
        )));
    }
    Ok((matrix(&CpuDevice::default(), values, n, cols), n))
}

/// Fails naming the first non-finite entry (row, column) of a row-major buffer.
pub fn check_finite(values: &[f32], cols: usize, what: &str) -> PyResult<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(PyValueError::new_err(format!(
            "{what} holds {} at row {}, column {}: every entry must be finite",
            values[i],
            i / cols.max(1),
            i % cols.max(1)
        ))),
    }
}

/// A row-major buffer as an `n × d` float32 array.
pub fn array2(
    py: Python<'_>,
    values: Vec<f32>,
    n: usize,
    d: usize,
) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let array = Array2::from_shape_vec((n, d), values)
        .map_err(|e| PyValueError::new_err(format!("internal: {n} × {d} array: {e}")))?;
    Ok(array.into_pyarray(py))
}

/// A vector as a 1-D array.
pub fn array1<T: numpy::Element>(py: Python<'_>, values: Vec<T>) -> Bound<'_, PyArray1<T>> {
    values.into_pyarray(py)
}

/// Checks that an `n × d` float32 buffer can be held before anything allocates it: a size
/// that overflows is a `ValueError`, one the allocator refuses a `MemoryError` (Rust aborts
/// the process on a failed allocation, so it is probed here with `try_reserve`).
pub fn check_buffer(n: usize, d: usize, what: &str) -> PyResult<()> {
    let values = n
        .checked_mul(d)
        .filter(|v| v.checked_mul(4).is_some())
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{what}: {n} × {d} values is more than this machine can address"
            ))
        })?;
    let mut probe: Vec<f32> = Vec::new();
    probe.try_reserve_exact(values).map_err(|_| {
        PyMemoryError::new_err(format!("{what}: cannot allocate {n} × {d} float32 values"))
    })?;
    Ok(())
}
