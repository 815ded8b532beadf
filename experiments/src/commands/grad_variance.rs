//! `dgym grad-variance`: the variance of the score-function policy gradient for each
//! baseline at one fixed point (a finished GCD run's policy and EBM), over the same
//! batches for every baseline.
//!
//! For each baseline it draws `batches` rollouts of the frozen policy, rewards them with
//! the frozen EBM (`-E(x_0)`), and reads REINFORCE's gradient (docs/algorithms.md §4.1, the run's
//! options, no clipping, no update) of every policy parameter as one vector `g_b`. It
//! reports `E‖g‖²`, the trace of the covariance `Σ_b ‖g_b - ḡ‖² / (n - 1)`, the squared
//! norm of the expected gradient `‖E g‖²` (estimated without bias as `‖ḡ‖² - tr Cov / n`:
//! with 20 batches `‖ḡ‖²` alone is mostly noise), the trace relative to REINFORCE without
//! a baseline, and the noise-to-signal ratio `tr Cov / ‖E g‖²`, which does not depend on
//! the gradient's scale (the `group_normalized` advantages are rescaled). PPO's gradient at ratio 1 is
//! REINFORCE's divided by the number of fine-tuned steps, so its variance is that table
//! divided by `K²`.
//!
//! Every baseline sees the same rollouts (common random numbers), so differences come from
//! the baselines. Stateful baselines (`ema`, `value`) first see `warmup` batches; the run's
//! own baseline also starts from its checkpointed state.

use std::path::Path;

use anyhow::{bail, Context, Result};
use denoise_gym::agent::Agent;
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::reward::RewardModel;
use denoise_gym::rng::Stream;
use denoise_gym::rollout::Rollout;
use denoise_gym::tensor::Backend;
use denoise_gym_agents::Reinforce;
use serde_json::json;

use denoise_gym::train::RunDir;

use crate::build::{load_energy_model, load_run_config};
use crate::catalog::ComponentKind;
use crate::registry::Registry;

/// Options of one measurement.
#[derive(Debug, Clone)]
pub struct GradVarianceOptions {
    /// Measured batches per baseline.
    pub batches: usize,
    /// Warm-up batches for each baseline before measuring.
    pub warmup: usize,
    /// Baselines to compare (REINFORCE-none is always measured, as the reference).
    pub baselines: Vec<String>,
    /// Episodes per batch (default: the run's finetune.batch_size).
    pub batch_size: Option<usize>,
    /// Seed of the rollouts.
    pub seed: u64,
}

/// One baseline's row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct GradVarianceRow {
    /// The baseline.
    pub baseline: String,
    /// `E‖g‖²` over the batches.
    pub mean_squared_norm: f64,
    /// `‖E g‖²`, estimated as `‖ḡ‖² - tr Cov / n` (unbiased; can be negative when the
    /// noise swamps the mean).
    pub squared_norm_of_mean: f64,
    /// `tr Cov(g) = Σ_b ‖g_b - ḡ‖² / (n - 1)`.
    pub variance: f64,
    /// `variance` divided by REINFORCE-none's.
    pub relative_variance: f64,
    /// `tr Cov / ‖E g‖²`.
    pub noise_to_signal: f64,
}

/// Measures every baseline at the fixed point of `run_dir`'s last checkpoint.
pub fn grad_variance<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    run_dir: &Path,
    options: &GradVarianceOptions,
) -> Result<Vec<GradVarianceRow>> {
    if options.batches < 2 {
        bail!("--batches must be at least 2 (a variance needs two batches)");
    }
    let run = RunDir::new(run_dir);
    let catalog = registry.catalog();
    let config = load_run_config(&run, catalog)?;
    let (checkpoint, path) = run.load_latest_checkpoint()?;
    if checkpoint.metadata.get("phase").map(String::as_str) != Some("finetune") {
        bail!(
            "run {} has not fine-tuned: grad-variance needs a run with finetune.iterations > 0 and an EBM reward",
            run_dir.display()
        );
    }
    let ebm = load_energy_model(dev, catalog, run_dir)?;
    let dim: usize = checkpoint.meta_parse(&path, "dim")?;
    let batch_size = options.batch_size.unwrap_or(config.finetune.batch_size);
    if batch_size < 2 {
        bail!("--batch-size must be at least 2");
    }
    let mut names = vec!["none".to_string()];
    for name in &options.baselines {
        if catalog.find(ComponentKind::Baseline, name).is_none() {
            bail!(
                "--baselines: unknown baseline {name:?}; expected some of {}",
                catalog.names(ComponentKind::Baseline).join(", ")
            );
        }
        if !names.contains(name) {
            names.push(name.clone());
        }
    }

    // The run's agent as checkpointed (policy with its options, velocity scale, baseline).
    let load_agent = || -> Result<Reinforce<D>> {
        let mut rng = Stream::PolicyInit.rng(config.run.seed);
        let policy =
            GaussianPolicy::new(dev, config.policy_spec(dim), config.schedule()?, &mut rng)?;
        let n_steps = policy.n_steps();
        let baseline =
            registry.build_baseline(dev, &config, &config.finetune.baseline, dim, n_steps)?;
        let mut agent = Reinforce::new(policy, baseline, config.agent.clone())?;
        agent
            .load(&checkpoint, &path, "agent")
            .with_context(|| format!("loading the agent of {}", run_dir.display()))?;
        Ok(agent)
    };
    let rollout =
        |agent: &Reinforce<D>, rng: &mut denoise_gym::rng::ProjectRng| -> Result<Rollout<D>> {
            let states = agent.policy.sample_trajectory(batch_size, rng);
            let terminal_reward = ebm.reward(&states[states.len() - 1])?;
            Ok(Rollout {
                states,
                log_probs: Vec::new(),
                terminal_reward,
            })
        };

    let mut rows = Vec::new();
    for name in &names {
        let mut agent = load_agent()?;
        if *name != config.finetune.baseline {
            agent.baseline =
                registry.build_baseline(dev, &config, name, dim, agent.policy.n_steps())?;
        }
        let mut warmup_rng = Stream::GradVarianceWarmup.rng(options.seed);
        for _ in 0..options.warmup {
            let data = rollout(&agent, &mut warmup_rng)?;
            agent.score(&data)?;
        }
        let mut rng = Stream::GradVarianceMeasured.rng(options.seed);
        let mut gradients: Vec<Vec<f64>> = Vec::with_capacity(options.batches);
        for _ in 0..options.batches {
            let data = rollout(&agent, &mut rng)?;
            let batch = agent.score(&data)?;
            let grads = agent.gradients(agent.loss(&batch))?;
            gradients.push(
                grads
                    .iter()
                    .flat_map(|g| g.as_vec())
                    .map(f64::from)
                    .collect(),
            );
        }
        rows.push(summarise(name, &gradients));
    }
    let reference = rows[0].variance;
    for row in &mut rows {
        row.relative_variance = row.variance / reference;
    }
    Ok(rows)
}

/// The statistics of one baseline's gradient vectors.
fn summarise(baseline: &str, gradients: &[Vec<f64>]) -> GradVarianceRow {
    let n = gradients.len() as f64;
    let len = gradients[0].len();
    let mut mean = vec![0.0; len];
    for g in gradients {
        for (m, v) in mean.iter_mut().zip(g) {
            *m += v / n;
        }
    }
    let squared = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
    let mean_squared_norm = gradients.iter().map(|g| squared(g)).sum::<f64>() / n;
    let variance = gradients
        .iter()
        .map(|g| {
            g.iter()
                .zip(&mean)
                .map(|(x, m)| (x - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / (n - 1.0);
    let squared_norm_of_mean = squared(&mean) - variance / n;
    GradVarianceRow {
        baseline: baseline.to_string(),
        mean_squared_norm,
        squared_norm_of_mean,
        variance,
        relative_variance: f64::NAN,
        noise_to_signal: variance / squared_norm_of_mean,
    }
}

/// The rows as a Markdown table.
pub fn to_markdown(rows: &[GradVarianceRow]) -> String {
    let mut out = String::from(
        "| baseline | E‖g‖² | ‖E g‖² | tr Cov(g) | tr Cov relative to none | tr Cov / ‖E g‖² |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.3} | {:.1} |\n",
            r.baseline,
            r.mean_squared_norm,
            r.squared_norm_of_mean,
            r.variance,
            r.relative_variance,
            r.noise_to_signal
        ));
    }
    out
}

/// The rows as JSON.
pub fn to_json(rows: &[GradVarianceRow], options: &GradVarianceOptions) -> serde_json::Value {
    json!({
        "batches": options.batches,
        "warmup": options.warmup,
        "seed": options.seed,
        "batch_size": options.batch_size,
        "rows": rows.iter().map(|r| json!({
            "baseline": r.baseline,
            "mean_squared_norm": r.mean_squared_norm,
            "squared_norm_of_mean": r.squared_norm_of_mean,
            "variance": r.variance,
            "relative_variance": r.relative_variance,
            "noise_to_signal": r.noise_to_signal,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarise_gives_the_moments_of_hand_made_vectors() {
        // g = (1, 0), (3, 2): mean (2, 1), E‖g‖² = (1 + 13)/2 = 7, ‖ḡ‖² = 5,
        // tr Cov = (‖(-1,-1)‖² + ‖(1,1)‖²)/(2 - 1) = 4, ‖E g‖² ≈ 5 - 4/2 = 3.
        let row = summarise("x", &[vec![1.0, 0.0], vec![3.0, 2.0]]);
        assert_eq!(row.mean_squared_norm, 7.0);
        assert_eq!(row.squared_norm_of_mean, 3.0);
        assert_eq!(row.variance, 4.0);
        assert_eq!(row.noise_to_signal, 4.0 / 3.0);
        // The estimate of ‖E g‖² is unbiased: E‖ḡ‖² = ‖E g‖² + tr Cov / n. Averaged over
        // every pair of draws of g = μ ± (1, 1), each of probability ½, it is ‖μ‖².
        let mu = [0.5, -0.25];
        let draws = [1.0, -1.0];
        let mut total = 0.0;
        for a in draws {
            for b in draws {
                let g = |s: f64| vec![mu[0] + s, mu[1] + s];
                total += summarise("x", &[g(a), g(b)]).squared_norm_of_mean / 4.0;
            }
        }
        assert!((total - (0.25 + 0.0625)).abs() < 1e-12, "{total}");
    }
}
