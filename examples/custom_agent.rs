//! A user's own agent on the library's run loop: DSM pretraining of a T = 4 sampler on
//! 8 Gaussians, then GCD (a learned EBM reward, no MCMC) with a REINFORCE agent written
//! here, both phases driven by `denoise_gym::train::Trainer`, so that the run gets
//! `metrics.csv`, TensorBoard events, checkpoints and exact resume without a line of
//! its own for them. The same agent, with its config section, is one registry line in
//! examples/custom_cli.rs, which gives it every `dgym` command.
//!
//! ```sh
//! cargo run --release --example custom_agent -- runs/my-gcd                 # a new run, or resume it
//! cargo run --release --example custom_agent -- runs/my-gcd --stop-after 500 # stop as if killed
//! cargo run --release --example custom_agent -- runs/tiny --tiny             # seconds, for CI
//! ```

use std::path::Path;
use std::sync::Arc;

use denoise_gym::agent::{Agent, Stats};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::dsm::{DsmConfig, DsmPhase};
use denoise_gym::ebm::{ContrastiveConfig, EbmReward, EnergyModel};
use denoise_gym::irl::{ExpertSampler, IrlPhase};
use denoise_gym::nn::{Activation, Parameterized};
use denoise_gym::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig};
use denoise_gym::policy::{GaussianPolicy, PolicySpec};
use denoise_gym::reward::shared;
use denoise_gym::rng::{ProjectRng, Stream};
use denoise_gym::rollout::Rollout;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::tensor::{matrix, vector, Backend};
use denoise_gym::train::{Cadence, Trainer, TrainerOptions};
use denoise_gym::Result;
use denoise_gym_envs::{Dataset, DenoisingEnv, GaussianMixture};
use dfdx::prelude::*;

denoise_gym::config_section! {
    /// The `[plain_reinforce]` section.
    pub struct PlainReinforceConfig {
        /// Adam learning rate of the eps-network.
        pub lr: f64 = 1e-4,
        /// Global gradient-norm clip.
        pub grad_clip: f64 = 1.0,
    }
}

/// REINFORCE on the ε-network, the batch-mean terminal reward as its baseline.
pub struct PlainReinforce<D: Backend> {
    policy: GaussianPolicy<D>,
    optimizer: Adam<D>,
    grad_clip: f64,
}

impl<D: Backend> PlainReinforce<D> {
    /// The agent of `policy`, with Adam on its ε-network.
    pub fn new(policy: GaussianPolicy<D>, config: &PlainReinforceConfig) -> Result<Self> {
        let params = policy.eps_net.parameters();
        let optimizer = Adam::new(
            &params,
            vec![config.lr; params.len()],
            AdamConfig::default(),
        )?;
        let grad_clip = config.grad_clip;
        Ok(Self {
            policy,
            optimizer,
            grad_clip,
        })
    }
}

impl<D: Backend> Agent<D> for PlainReinforce<D> {
    fn name(&self) -> &str {
        "plain-reinforce"
    }
    fn policy(&self) -> &GaussianPolicy<D> {
        &self.policy
    }
    fn update(&mut self, rollout: &Rollout<D>, _: &mut ProjectRng, _: u64) -> Result<Stats> {
        let (n_steps, batch) = (rollout.n_steps(), rollout.batch_size());
        let (states, actions, steps) = rollout.stacked_transitions();
        let log_prob = self
            .policy
            .log_prob(states.traced(Gradients::leaky()), &steps, &actions);
        let reward = rollout.terminal_reward.as_vec();
        let mean = reward.iter().sum::<f32>() / batch as f32;
        let advantage = (0..n_steps * batch)
            .map(|k| reward[k % batch] - mean)
            .collect();
        let objective = (log_prob * vector(self.policy.device(), advantage)).sum() / batch as f32;
        let mut grads = (-objective).backward();
        let mut g = gradients_of(&mut grads, &self.policy.eps_net.parameters())?;
        let grad_norm = clip_grad_norm(&mut g, self.grad_clip);
        self.optimizer
            .update(self.policy.eps_net.parameters_mut(), &g)?;
        Ok(vec![("plain/grad_norm".to_string(), grad_norm)])
    }
    // Weights and Adam's moments: what exact resume needs.
    fn save(&self, c: &mut Checkpoint, prefix: &str) -> Result<()> {
        c.put_model(&format!("{prefix}.policy"), &self.policy);
        let names = self.policy.eps_net.parameter_names();
        self.optimizer.save(c, &format!("{prefix}.optim"), &names);
        Ok(())
    }
    fn load(&mut self, c: &Checkpoint, path: &Path, prefix: &str) -> Result<()> {
        c.load_model(path, &format!("{prefix}.policy"), &mut self.policy)?;
        let names = self.policy.eps_net.parameter_names();
        self.optimizer
            .load(c, path, &format!("{prefix}.optim"), &names)
    }
}

/// How long and how wide.
pub struct Settings {
    /// DSM steps.
    pub pretrain_iterations: u64,
    /// GCD iterations.
    pub finetune_iterations: u64,
    /// Width of the ε-network and the energy.
    pub hidden: usize,
}

/// Runs (or resumes) the whole recipe in `dir`; returns whether it finished.
pub fn train(dir: &Path, settings: &Settings, stop_after: Option<u64>) -> Result<bool> {
    let (dev, seed, n_steps, batch) = (Cpu::default(), 0, 4, 256);
    let data: Arc<dyn Dataset> = Arc::new(GaussianMixture::eight_gaussians());
    let batches = || -> Box<ExpertSampler<'static, Cpu>> {
        let data = data.clone();
        Box::new(move |n, rng| matrix(&Cpu::default(), data.sample(n, rng), n, 2))
    };
    let new_policy = || {
        let spec = PolicySpec {
            dim: 2,
            hidden: settings.hidden,
            depth: 3,
            time_embed_dim: 16,
            activation: Activation::Silu,
            clip_x0: 0.0,
            fix_last_sigma: false,
            last_sigma: 0.0,
        };
        let schedule = Schedule::new(ScheduleKind::Vp, n_steps)?;
        GaussianPolicy::new(&dev, spec, schedule, &mut Stream::PolicyInit.rng(seed))
    };
    let gcd = |policy: GaussianPolicy<Cpu>, step_offset: u64| {
        let energy = EnergyModel::new(
            &dev,
            2,
            settings.hidden,
            3,
            Activation::Silu,
            &mut Stream::RewardInit.rng(seed),
        );
        let reward = shared(EbmReward::new(energy, ContrastiveConfig::default())?);
        let env = DenoisingEnv::new(dev.clone(), 2, n_steps, batch, reward.clone(), seed)?;
        let agent = Box::new(PlainReinforce::new(
            policy,
            &PlainReinforceConfig::default(),
        )?);
        let rng = Stream::Finetune.rng(seed);
        IrlPhase::new(
            agent,
            reward,
            env,
            batches(),
            1,
            seed,
            rng,
            step_offset,
            0.0,
        )
    };

    let options = TrainerOptions {
        stop_after,
        quiet: true,
        ..TrainerOptions::default()
    };
    let mut trainer = if dir.join("config.toml").exists() {
        Trainer::resume(dir, seed, options)?
    } else {
        Trainer::create(dir, "# examples/custom_agent.rs\n", seed, options)?
    };
    let mut finetune = if trainer.resumes_phase(denoise_gym::irl::PHASE) {
        gcd(new_policy()?, 0)?
    } else {
        let config = DsmConfig {
            batch_size: 256,
            lr: 1e-3,
            betas: [0.9, 0.999],
            grad_clip: 1.0,
            ema_decay: 0.0,
        };
        let mut dsm = DsmPhase::new(new_policy()?, config, batches(), Stream::Pretrain.rng(seed))?;
        trainer.restore(&mut dsm)?;
        let cadence = Cadence::new(settings.pretrain_iterations, 50, 100);
        if trainer.run(&mut dsm, cadence)?.stopped() {
            return Ok(false);
        }
        let finetune = gcd(dsm.sampler(), dsm.iteration)?;
        trainer.save_checkpoint(&finetune, false)?;
        finetune
    };
    trainer.restore(&mut finetune)?;
    let cadence = Cadence::new(settings.finetune_iterations, 10, 50);
    if trainer.run(&mut finetune, cadence)?.stopped() {
        return Ok(false);
    }
    trainer.finish(serde_json::json!({ "finetune_iterations": finetune.iteration }))?;
    Ok(true)
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: custom_agent RUN_DIR [--stop-after N] [--tiny]");
        return std::process::ExitCode::FAILURE;
    };
    let stop_after = args
        .iter()
        .position(|a| a == "--stop-after")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let settings = if args.iter().any(|a| a == "--tiny") {
        Settings {
            pretrain_iterations: 200,
            finetune_iterations: 40,
            hidden: 32,
        }
    } else {
        Settings {
            pretrain_iterations: 10_000,
            finetune_iterations: 2_000,
            hidden: 128,
        }
    };
    match train(Path::new(dir), &settings, stop_after) {
        Ok(finished) => {
            println!("{}: {dir}", if finished { "finished" } else { "stopped" });
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
