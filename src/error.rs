//! The core crate's error type.

use std::path::PathBuf;

/// Result alias with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core library. Every variant names what was
/// being read or computed, so that a user can act on the message alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is missing, malformed or out of range.
    #[error("{location}: {message}")]
    Config {
        /// File and/or key that holds the bad value, e.g. `run.toml, key policy.n_steps`.
        location: String,
        /// What was expected.
        message: String,
    },
    /// A function argument that a caller controls is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Reading or writing a file failed. The cause is part of the message and
    /// deliberately not a `source()`, so chain-printing reporters do not repeat it.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        cause: std::io::Error,
    },
    /// A checkpoint is missing, unreadable or does not match the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A training quantity became NaN or infinite.
    #[error("{quantity} became non-finite ({value}) at iteration {iteration}")]
    NonFinite {
        /// The quantity's logged name, e.g. `dsm/loss`.
        quantity: String,
        /// The iteration at which it happened.
        iteration: u64,
        /// The offending value.
        value: f64,
    },
    /// A log sink failed.
    #[error("log {path}: {message}")]
    Log {
        /// The log file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The tensor backend reported an error (e.g. CUDA out of memory).
    #[error("device error: {0}")]
    Device(String),
    /// A training phase failed; `note` says where the last good state is.
    #[error("{phase} stopped; {note}")]
    PhaseStopped {
        /// The phase's name.
        phase: String,
        /// Where the last good state is.
        note: String,
        /// Why the phase stopped.
        #[source]
        source: Box<Error>,
    },
    /// An error of a user's own component (agent, reward, phase), passed through.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Shorthand for [`Error::Config`]. Both parts are abbreviated (each line to 300
    /// characters, the whole to 2,000): a 50 MB config line is named, not echoed.
    pub fn config(location: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            location: abbreviate(&location.into(), 300, 2_000),
            message: abbreviate(&message.into(), 300, 2_000),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// Shorthand for [`Error::Checkpoint`].
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Checks that a scalar is finite, else returns [`Error::NonFinite`] naming it.
pub fn ensure_finite(quantity: &str, value: f64, iteration: u64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::NonFinite {
            quantity: quantity.to_string(),
            iteration,
            value,
        })
    }
}

/// `text` with each line cut to `per_line` characters and the whole to `total`, each cut
/// marked with how much was left out.
pub fn abbreviate(text: &str, per_line: usize, total: usize) -> String {
    fn cut(s: &str, max: usize) -> String {
        match s.char_indices().nth(max) {
            None => s.to_string(),
            Some((end, _)) => format!("{}… ({} bytes in all)", &s[..end], s.len()),
        }
    }
    if text.len() <= per_line.min(total) {
        return text.to_string();
    }
    let lines: Vec<String> = text.split('\n').map(|line| cut(line, per_line)).collect();
    cut(&lines.join("\n"), total)
}
