//! `dgym`'s own components, each registered once: a line per method, data set, agent,
//! baseline and reward. A program that adds its own starts from [`registry`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use denoise_gym::ebm::EbmReward;
use denoise_gym::reward::DifferentiableReward;
use denoise_gym::tensor::Backend;
use denoise_gym_agents::{make_baseline, Dxdp, Ppo, Reinforce, BASELINES};
use denoise_gym_envs::{toy_dataset, Dataset, GaussianMixture, OracleReward, TabularDataset};

use crate::build::build_energy_model;
use crate::catalog::Catalog;
use crate::registry::{Registry, RewardChoice};

/// The registry of every built-in component.
pub fn registry<D: Backend>() -> Result<Registry<D>> {
    let mut r = Registry::empty();
    r.method(
        "diffusion",
        "DSM pretraining of the Gaussian sampler-policy, then optional fine-tuning ([pretrain], [finetune])",
    )?;
    r.method(
        "ddaebm",
        "DDAEBM: a per-step energy and a latent generator ([ddaebm])",
    )?;

    for &name in denoise_gym_envs::TOY_DATASETS {
        r.dataset(name, "a 2-D toy data set", move |_| {
            Ok(Arc::from(toy_dataset(name)?))
        })?;
    }
    r.dataset(
        "gmm",
        "a d-dimensional Gaussian mixture (data.gmm_*)",
        |config| {
            let c = &config.data;
            let gmm = GaussianMixture::gmm(
                c.gmm_dim,
                c.gmm_components,
                c.gmm_scale,
                c.gmm_std,
                c.gmm_seed,
            )?;
            Ok(Arc::new(gmm) as Arc<dyn Dataset>)
        },
    )?;
    r.dataset(
        "csv",
        "points of a CSV file (data.path; data.label_column or data.drop_last_column)",
        |config| {
            let c = &config.data;
            if c.path.is_empty() {
                bail!("key data.path: the csv data set needs a file path");
            }
            let path = Path::new(&c.path);
            let data = match &c.label_column {
                Some(column) => TabularDataset::from_csv_with_label_column(path, column)?.0,
                None => TabularDataset::from_csv(path, c.drop_last_column)?,
            };
            Ok(Arc::new(data) as Arc<dyn Dataset>)
        },
    )?;
    r.dataset("digits", "the 8x8 digits images, 64-D in [-1, 1]", |_| {
        Ok(Arc::new(TabularDataset::digits()?) as Arc<dyn Dataset>)
    })?;

    r.agent(
        "reinforce",
        "REINFORCE with a baseline (docs/algorithms.md §4.1)",
        Some("agent"),
        |ctx| {
            let baseline = ctx.baseline()?;
            let agent = Reinforce::new(ctx.policy, baseline, ctx.config.agent.clone())?;
            Ok(Box::new(agent))
        },
    )?;
    r.agent(
        "ppo",
        "PPO's clipped surrogate on REINFORCE's returns (docs/algorithms.md §4.1)",
        Some("ppo"),
        |ctx| {
            let baseline = ctx.baseline()?;
            let (agent, ppo) = (ctx.config.agent.clone(), ctx.config.ppo.clone());
            Ok(Box::new(Ppo::new(ctx.policy, baseline, agent, ppo)?))
        },
    )?;
    r.agent(
        "dxdp",
        "DxDP: value-based pathwise updates through the reward (docs/algorithms.md §4.2)",
        Some("dxdp"),
        |ctx| {
            let reward: std::rc::Rc<std::cell::RefCell<dyn DifferentiableReward<D>>> =
                ctx.reward.clone();
            let (agent, dxdp) = (ctx.config.agent.clone(), ctx.config.dxdp.clone());
            let mut rng = ctx.rng();
            Ok(Box::new(Dxdp::new(
                ctx.policy, reward, agent, dxdp, &mut rng,
            )?))
        },
    )?;

    for &(name, doc) in BASELINES {
        let section = (name == "value").then_some("value_baseline");
        r.baseline(name, doc, section, move |ctx| {
            let value = &ctx.config.value_baseline;
            Ok(make_baseline(
                name,
                ctx.dev,
                ctx.dim,
                ctx.n_steps,
                value,
                &mut ctx.rng(),
            )?)
        })?;
    }

    r.reward(
        "ebm",
        "GCD's energy-based model learned from the data ([reward], docs/algorithms.md §3)",
        Some("reward"),
        |ctx| {
            let learner = ctx.config.reward.contrastive();
            learner.validate()?;
            let model = build_energy_model(
                ctx.dev,
                &ctx.config.reward,
                ctx.config.run.seed,
                ctx.dataset.dim(),
            );
            Ok(RewardChoice::Ebm(EbmReward::new(model, learner)?))
        },
    )?;
    r.reward(
        "oracle",
        "the exact log-density of a Gaussian-mixture data set",
        None,
        |ctx| {
            Ok(RewardChoice::Oracle(
                OracleReward::new(ctx.dataset.clone()).context("key finetune.reward")?,
            ))
        },
    )?;
    Ok(r)
}

/// What configs may name with the built-in components only (the CPU registry's catalog:
/// the names and sections are the same on every device).
pub fn catalog() -> Result<Catalog> {
    Ok(registry::<dfdx::tensor::Cpu>()?.catalog().clone())
}
