//! Helpers the CLI test binaries share: running the `dgym` binary and reading its output.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `dgym args...` in `cwd`.
pub fn dgym<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dgym"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("cannot start dgym")
}

/// The process's standard output, lossily decoded.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The process's standard error, lossily decoded.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
