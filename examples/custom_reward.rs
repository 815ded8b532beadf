//! A reward of one's own, registered under a name with its config section: a fixed
//! "ring" reward `r(x) = -(‖x‖ - radius)² / (2 width²)` in place of the learned EBM.
//! DSM pretrains a sampler on 8 Gaussians (radius 2√2), then REINFORCE fine-tunes it to
//! maximise the ring reward at `[ring_reward] radius = 2`; the program prints the mean
//! radius of the data and of the fine-tuned samples, which moves towards 2.
//!
//! ```sh
//! cargo run --release -p denoise-gym-experiments --example custom_reward -- runs/ring-reward
//! cargo run --release -p denoise-gym-experiments --example custom_reward -- runs/tiny --tiny
//! ```

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use denoise_gym::agent::Stats;
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::reward::{LearnedReward, RewardModel};
use denoise_gym::tensor::{vector, Backend, Matrix, Vector};
use denoise_gym_envs::{Dataset, GaussianMixture};
use denoise_gym_experiments::build::load_sampler;
use denoise_gym_experiments::commands::train::{train_new, TrainOptions};
use denoise_gym_experiments::config::TrainConfig;
use denoise_gym_experiments::registry::RewardChoice;
use denoise_gym_experiments::{builtin, cli};

denoise_gym::config_section! {
    /// The `[ring_reward]` section.
    pub struct RingRewardConfig {
        /// Radius of the ring the reward peaks on.
        pub radius: f64 = 2.0,
        /// Width of the ring (the reward's standard deviation across it).
        pub width: f64 = 0.5,
    }
}

/// `r(x) = -(‖x‖ - radius)² / (2 width²)`: fixed, so its "learning" step does nothing.
struct RingReward {
    config: RingRewardConfig,
    dim: usize,
}

impl<D: Backend> RewardModel<D> for RingReward {
    fn reward(&self, x0: &Matrix<D>) -> denoise_gym::Result<Vector<D>> {
        let (radius, width) = (self.config.radius, self.config.width);
        let rewards = x0
            .as_vec()
            .chunks(self.dim)
            .map(|x| {
                let norm = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                (-(norm - radius).powi(2) / (2.0 * width * width)) as f32
            })
            .collect();
        Ok(vector(x0.device(), rewards))
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn name(&self) -> &str {
        "ring_reward"
    }
}

impl<D: Backend> LearnedReward<D> for RingReward {
    fn learn(&mut self, _: &Matrix<D>, _: &Matrix<D>, _: u64) -> denoise_gym::Result<Stats> {
        Ok(Stats::default())
    }
    // Nothing changes during training, so nothing is checkpointed.
    fn save(&self, _: &mut Checkpoint, _: &str) -> denoise_gym::Result<()> {
        Ok(())
    }
    fn load(&mut self, _: &Checkpoint, _: &Path, _: &str) -> denoise_gym::Result<()> {
        Ok(())
    }
}

const CONFIG: &str = r#"
[data]
dataset = "8gaussians"
[pretrain]
iterations = 3000
[finetune]
iterations = 300
agent = "reinforce"
baseline = "batch_mean"
reward = "ring_reward"
[agent]
lr = 3e-4
lr_log_sigma = 1e-4
normalize_advantages = true
tau_entropy = 0.0
tau_velocity = 0.0
[ring_reward]
radius = 2.0
width = 0.5
"#;

/// Mean `‖x‖` of 2-D points.
fn mean_radius(points: &[f32]) -> f64 {
    let norms = points.chunks(2).map(|x| f64::from(x[0].hypot(x[1])));
    norms.sum::<f64>() / (points.len() / 2) as f64
}

fn run(dir: &Path, tiny: bool) -> Result<()> {
    let mut registry = builtin::registry::<cli::Device>()?;
    registry.reward_with_config(
        "ring_reward",
        "-(|x| - radius)^2 / (2 width^2) (examples/custom_reward.rs)",
        |ctx, config: RingRewardConfig| {
            let dim = ctx.dataset.dim();
            Ok(RewardChoice::custom(RingReward { config, dim }))
        },
    )?;
    let mut overrides = vec![];
    if tiny {
        overrides.extend(
            [
                "pretrain.iterations=300",
                // 0.999 averages over ~1,000 steps: longer than this whole run.
                "pretrain.ema_decay=0.9",
                "finetune.iterations=60",
                "policy.hidden=32",
                "eval.n_samples=500",
            ]
            .map(String::from),
        );
    }
    let config =
        TrainConfig::from_toml_str("custom_reward", CONFIG, &overrides, registry.catalog())?;
    let device = cli::Device::default();
    train_new(&device, &registry, config, dir, &TrainOptions::default())?;
    let mut rng = denoise_gym::rng::Stream::Eval.rng(0);
    let data = GaussianMixture::eight_gaussians().sample(2000, &mut rng);
    let sampler = load_sampler(&device, registry.catalog(), dir)?;
    let samples = sampler.sample(2000, &mut rng).as_vec();
    println!(
        "mean radius: data {:.3}, fine-tuned samples {:.3} (the ring reward peaks at 2)",
        mean_radius(&data),
        mean_radius(&samples)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: custom_reward RUN_DIR [--tiny]");
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
