//! `dgym`: train, sample and inspect denoise-gym runs: the command line of
//! `denoise_gym_experiments::cli` over the built-in registry.

use std::process::ExitCode;

use denoise_gym_experiments::{builtin, cli};

/// See experiments/Cargo.toml: glibc's malloc unmaps and refaults large buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match builtin::registry::<cli::Device>() {
        Ok(registry) => cli::main_with(registry),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
