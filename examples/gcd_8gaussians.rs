//! The whole GCD recipe through the public API: the shipped config
//! experiments/configs/gcd-8gaussians.toml (DSM pretraining of a T = 4 sampler on 8
//! Gaussians, then GCD: a learned EBM reward and REINFORCE with a value baseline), built
//! from the built-in registry and run by the library's trainer into a run directory with
//! `metrics.csv`, TensorBoard events, checkpoints and `summary.json`. Run again on the
//! same directory, it resumes.
//!
//! ```sh
//! cargo run --release -p denoise-gym-experiments --example gcd_8gaussians -- runs/gcd-example
//! cargo run --release -p denoise-gym-experiments --example gcd_8gaussians -- runs/tiny --set pretrain.iterations=200
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use denoise_gym_experiments::commands::train::{train_new, train_resume, TrainOptions};
use denoise_gym_experiments::config::TrainConfig;
use denoise_gym_experiments::{builtin, cli};

fn run(dir: &Path, overrides: &[String]) -> Result<()> {
    let registry = builtin::registry::<cli::Device>()?;
    let device = cli::Device::default();
    let options = TrainOptions::default();
    let outcome = if dir.join("config.toml").exists() {
        train_resume(&device, &registry, dir, &options)?
    } else {
        let config_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join("gcd-8gaussians.toml");
        let config = TrainConfig::load(Some(&config_path), overrides, registry.catalog())?;
        train_new(&device, &registry, config, dir, &options)?
    };
    if !outcome.finished {
        bail!("the run stopped before its end: {}", dir.display());
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?;
    let eval = &summary["eval"];
    println!(
        "finished {}: SWD {:.4}, MMD² {:.5}, calibrated KL of the EBM {}",
        dir.display(),
        eval["swd"].as_f64().unwrap_or(f64::NAN),
        eval["mmd2"].as_f64().unwrap_or(f64::NAN),
        summary["ebm"]["kl_calibrated"]
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: gcd_8gaussians RUN_DIR [--set section.key=value ...]");
        return ExitCode::FAILURE;
    };
    let overrides: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].clone())
        .collect();
    match run(Path::new(dir), &overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
