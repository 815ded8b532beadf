//! `denoise_gym._native`: the Rust half of the Python package. It is deliberately thin:
//! every number comes from the library crates (`denoise-gym`, `-envs`, `-agents`,
//! `-experiments`), and the Python half (`denoise_gym/`) adds the Gymnasium classes, the
//! run reader and the checks that read better in Python.
//!
//! Arrays cross as numpy arrays (rust-numpy), without per-element Python work. Every class
//! may be used from any Python thread: shared state sits behind a `Mutex`, and the GIL is
//! released around the work that takes time (sampling, energies, updates, training).

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;

mod arrays;
mod env;
mod reward;
mod run;

// Python extensions allocate through Rust's allocator as `dgym` does; mimalloc for the
// same reason as there (many activation-sized buffers per step).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

create_exception!(
    _native,
    DenoiseGymError,
    PyException,
    "An error of denoise-gym's Rust code that is neither a bad value (ValueError) nor a missing file (FileNotFoundError): a corrupt checkpoint, a failed write, a non-finite loss."
);

/// The Python exception for a library error: bad values and configs are `ValueError`, a
/// missing file is `FileNotFoundError`, the rest `DenoiseGymError`.
pub(crate) fn library_error(error: denoise_gym::Error) -> PyErr {
    library_error_kind(&error).raise(error.to_string())
}

/// [`library_error`] for the experiments crate's `anyhow` errors: the first library or I/O
/// error in the chain decides the class; the message is the whole chain.
pub(crate) fn any_error(error: anyhow::Error) -> PyErr {
    any_error_kind(&error).raise(format!("{error:#}"))
}

/// The class [`any_error`] picks.
fn any_error_kind(error: &anyhow::Error) -> ErrorKind {
    if error.chain().any(is_not_found) {
        return ErrorKind::NotFound;
    }
    for cause in error.chain() {
        if let Some(library) = cause.downcast_ref::<denoise_gym::Error>() {
            return library_error_kind(library);
        }
        if cause
            .downcast_ref::<denoise_gym_envs::DataError>()
            .is_some()
        {
            return ErrorKind::Value;
        }
    }
    ErrorKind::Other
}

/// Whether an error is a missing file, however the library wrapped it.
fn is_not_found(cause: &(dyn std::error::Error + 'static)) -> bool {
    use denoise_gym_envs::DataError;
    let io_missing = |io: &std::io::Error| io.kind() == std::io::ErrorKind::NotFound;
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        return io_missing(io);
    }
    match cause.downcast_ref::<DataError>() {
        Some(DataError::Io { cause, .. }) => return io_missing(cause),
        Some(_) => return false,
        None => {}
    }
    match cause.downcast_ref::<denoise_gym::Error>() {
        Some(denoise_gym::Error::Io { cause, .. }) => io_missing(cause),
        Some(denoise_gym::Error::Other(inner)) => is_not_found(inner.as_ref()),
        _ => false,
    }
}

/// Which Python exception class an error becomes.
enum ErrorKind {
    Value,
    NotFound,
    Other,
}

impl ErrorKind {
    fn raise(self, message: String) -> PyErr {
        match self {
            ErrorKind::Value => PyValueError::new_err(message),
            ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            ErrorKind::Other => DenoiseGymError::new_err(message),
        }
    }
}

fn library_error_kind(error: &denoise_gym::Error) -> ErrorKind {
    use denoise_gym::Error;
    match error {
        Error::InvalidArgument(_) | Error::Config { .. } => ErrorKind::Value,
        Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            ErrorKind::NotFound
        }
        _ => ErrorKind::Other,
    }
}

/// [`any_error`] for errors of values the caller passed (a config's keys): a missing file
/// stays `FileNotFoundError`, everything else is a `ValueError`.
pub(crate) fn value_error(error: anyhow::Error) -> PyErr {
    let kind = match any_error_kind(&error) {
        ErrorKind::NotFound => ErrorKind::NotFound,
        ErrorKind::Value | ErrorKind::Other => ErrorKind::Value,
    };
    kind.raise(format!("{error:#}"))
}

/// The native module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DenoiseGymError", m.py().get_type::<DenoiseGymError>())?;
    m.add_class::<env::NativeVecEnv>()?;
    m.add_class::<reward::Dataset>()?;
    m.add_class::<reward::OracleReward>()?;
    m.add_class::<reward::EnergyReward>()?;
    m.add_class::<reward::RunningCosts>()?;
    m.add_class::<run::Sampler>()?;
    m.add_function(wrap_pyfunction!(run::run_config_json, m)?)?;
    m.add_function(wrap_pyfunction!(run::train_config, m)?)?;
    m.add_function(wrap_pyfunction!(run::shipped_configs, m)?)?;
    m.add_function(wrap_pyfunction!(run::dataset_names, m)?)?;
    m.add_function(wrap_pyfunction!(run::evaluate_samples, m)?)?;
    m.add_function(wrap_pyfunction!(run::toy_dataset_names, m)?)?;
    Ok(())
}
