//! A data set of one's own, registered under a name with its config section: points on a
//! noisy ring, `[ring] radius`, `std`. DSM pretrains the sampler on it, and GCD fine-tunes
//! it against an EBM learned from it, exactly as for a built-in data set; the program
//! prints the evaluation `summary.json` holds (SWD, MMD² against fresh ring points).
//!
//! ```sh
//! cargo run --release -p denoise-gym-experiments --example custom_dataset -- runs/ring
//! cargo run --release -p denoise-gym-experiments --example custom_dataset -- runs/tiny --tiny
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{ensure, Result};
use denoise_gym_envs::Dataset;
use denoise_gym_experiments::commands::train::{train_new, TrainOptions};
use denoise_gym_experiments::config::TrainConfig;
use denoise_gym_experiments::{builtin, cli};
use rand::{Rng, RngCore};

denoise_gym::config_section! {
    /// The `[ring]` section.
    pub struct RingConfig {
        /// Radius of the ring.
        pub radius: f64 = 2.0,
        /// Standard deviation of the radial noise.
        pub std: f64 = 0.1,
    }
}

/// Points at a uniform angle and radius `radius + std · N(0, 1)`.
struct Ring(RingConfig);

impl Dataset for Ring {
    fn name(&self) -> &str {
        "ring"
    }
    fn dim(&self) -> usize {
        2
    }
    fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<f32> {
        let mut points = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let angle = rng.gen::<f64>() * std::f64::consts::TAU;
            // Box-Muller: one standard normal from two uniforms.
            let (u, v) = (1.0 - rng.gen::<f64>(), rng.gen::<f64>());
            let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
            let r = self.0.radius + self.0.std * normal;
            points.extend([(r * angle.cos()) as f32, (r * angle.sin()) as f32]);
        }
        points
    }
}

const CONFIG: &str = r#"
[data]
dataset = "ring"
[pretrain]
iterations = 3000
[finetune]
iterations = 300
[ring]
radius = 2.0
std = 0.1
"#;

fn run(dir: &Path, tiny: bool) -> Result<()> {
    let mut registry = builtin::registry::<cli::Device>()?;
    registry.dataset_with_config(
        "ring",
        "a noisy ring (examples/custom_dataset.rs)",
        |_, config: RingConfig| {
            ensure!(
                config.radius > 0.0 && config.std >= 0.0,
                "key ring.radius / ring.std: must be > 0 and >= 0"
            );
            Ok(Arc::new(Ring(config)) as Arc<dyn Dataset>)
        },
    )?;
    let mut overrides = vec![];
    if tiny {
        overrides.extend(
            [
                "pretrain.iterations=300",
                // 0.999 averages over ~1,000 steps: longer than this whole run.
                "pretrain.ema_decay=0.9",
                "finetune.iterations=30",
                "policy.hidden=32",
                "reward.hidden=32",
                "reward.grid_size=32",
                "reward.held_out=200",
                "eval.n_samples=500",
            ]
            .map(String::from),
        );
    }
    let config =
        TrainConfig::from_toml_str("custom_dataset", CONFIG, &overrides, registry.catalog())?;
    let device = cli::Device::default();
    train_new(&device, &registry, config, dir, &TrainOptions::default())?;
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?;
    for (when, key) in [("after DSM", "eval_start"), ("after GCD", "eval")] {
        println!(
            "{when}: SWD {:.4}, MMD² {:.5}",
            summary[key]["swd"].as_f64().unwrap_or(f64::NAN),
            summary[key]["mmd2"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: custom_dataset RUN_DIR [--tiny]");
        return ExitCode::FAILURE;
    };
    match run(Path::new(dir), args.iter().any(|a| a == "--tiny")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
