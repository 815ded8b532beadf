//! The registry: every agent, baseline, reward and data set `dgym` can build, registered
//! by name once with its doc and (for a program's own component) its config type. The
//! config checks, `dgym config`, the sweeps and every command read it, so a component a
//! program registers is trained, resumed, sampled, evaluated and swept like a built-in
//! one. [`crate::builtin::registry`] holds the built-in components;
//! [`crate::cli::main_with`] runs the whole `dgym` command line over any registry.
//!
//! ```no_run
//! # use denoise_gym_experiments::{builtin, cli, registry::Registry};
//! # fn my_agent(ctx: denoise_gym_experiments::registry::AgentContext<'_, cli::Device>, c: ())
//! #     -> anyhow::Result<Box<dyn denoise_gym::agent::Agent<cli::Device>>> { unimplemented!() }
//! let mut registry = builtin::registry::<cli::Device>().unwrap();
//! // registry.agent_with_config("my_agent", "what it does", my_agent)?;
//! std::process::exit(match cli::main_with(registry) { _ => 0 });
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use denoise_gym::agent::{Agent, Baseline, Stats};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::ebm::EbmReward;
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::reward::{DifferentiableReward, LearnedReward, RewardModel};
use denoise_gym::rng::{ProjectRng, Stream};
use denoise_gym::tensor::{Backend, Matrix, Vector};
use denoise_gym_envs::{Dataset, OracleReward};
use dfdx::prelude::OwnedTape;

use crate::catalog::{Catalog, ComponentKind, SectionConfig, SectionSpec};
use crate::config::TrainConfig;

/// What an agent's builder gets: the device, the whole config, the sampler-policy to
/// fine-tune (pretrained, or from `finetune.init_from`) and the reward it acts against.
pub struct AgentContext<'a, D: Backend> {
    /// The device.
    pub dev: &'a D,
    /// The resolved config.
    pub config: &'a TrainConfig,
    /// The policy to fine-tune.
    pub policy: GaussianPolicy<D>,
    /// The reward, shared with the environment and the IRL loop that trains it.
    pub reward: Rc<RefCell<RewardChoice<D>>>,
    registry: &'a Registry<D>,
}

impl<D: Backend> AgentContext<'_, D> {
    /// The generator an agent's own networks start from (`Stream::AgentInit`).
    pub fn rng(&self) -> ProjectRng {
        Stream::AgentInit.rng(self.config.run.seed)
    }

    /// The baseline `finetune.baseline` names, fresh, for this policy.
    pub fn baseline(&self) -> Result<Box<dyn Baseline<D>>> {
        self.registry.build_baseline(
            self.dev,
            self.config,
            &self.config.finetune.baseline,
            self.policy.dim(),
            self.policy.n_steps(),
        )
    }
}

/// What a baseline's builder gets.
pub struct BaselineContext<'a, D: Backend> {
    /// The device.
    pub dev: &'a D,
    /// The resolved config.
    pub config: &'a TrainConfig,
    /// The data dimension `d`.
    pub dim: usize,
    /// The number of denoising steps `T`.
    pub n_steps: usize,
}

impl<D: Backend> BaselineContext<'_, D> {
    /// The generator a baseline's networks start from (`Stream::AgentInit`).
    pub fn rng(&self) -> ProjectRng {
        Stream::AgentInit.rng(self.config.run.seed)
    }
}

/// What a reward's builder gets.
pub struct RewardContext<'a, D: Backend> {
    /// The device.
    pub dev: &'a D,
    /// The resolved config.
    pub config: &'a TrainConfig,
    /// The expert data (its dimension is the reward's input width).
    pub dataset: &'a Arc<dyn Dataset>,
}

impl<D: Backend> RewardContext<'_, D> {
    /// The generator a reward's networks start from (`Stream::RewardInit`).
    pub fn rng(&self) -> ProjectRng {
        Stream::RewardInit.rng(self.config.run.seed)
    }
}

/// The reward of a fine-tuning run: the learned EBM, the oracle, or a registered one.
pub enum RewardChoice<D: Backend> {
    /// GCD's energy-based reward.
    Ebm(EbmReward<D>),
    /// The exact log-density of the data's mixture.
    Oracle(OracleReward),
    /// A reward a program registered (host-side: a pathwise agent cannot differentiate it).
    Custom(Box<dyn LearnedReward<D>>),
}

impl<D: Backend> RewardChoice<D> {
    /// A registered reward.
    pub fn custom(reward: impl LearnedReward<D> + 'static) -> Self {
        RewardChoice::Custom(Box::new(reward))
    }

    /// The learned reward inside, for the methods every kind shares.
    fn learned(&self) -> &dyn LearnedReward<D> {
        match self {
            RewardChoice::Ebm(r) => r,
            RewardChoice::Oracle(r) => r,
            RewardChoice::Custom(r) => r.as_ref(),
        }
    }

    fn learned_mut(&mut self) -> &mut dyn LearnedReward<D> {
        match self {
            RewardChoice::Ebm(r) => r,
            RewardChoice::Oracle(r) => r,
            RewardChoice::Custom(r) => r.as_mut(),
        }
    }
}

impl<D: Backend> RewardModel<D> for RewardChoice<D> {
    fn reward(&self, x0: &Matrix<D>) -> denoise_gym::Result<Vector<D>> {
        self.learned().reward(x0)
    }
    fn dim(&self) -> usize {
        self.learned().dim()
    }
    fn name(&self) -> &str {
        match self {
            RewardChoice::Ebm(_) => "ebm",
            RewardChoice::Oracle(_) => "oracle",
            RewardChoice::Custom(r) => r.name(),
        }
    }
}

impl<D: Backend> LearnedReward<D> for RewardChoice<D> {
    fn learn(
        &mut self,
        positive: &Matrix<D>,
        negative: &Matrix<D>,
        iteration: u64,
    ) -> denoise_gym::Result<Stats> {
        self.learned_mut().learn(positive, negative, iteration)
    }
    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> denoise_gym::Result<()> {
        self.learned().save(checkpoint, prefix)
    }
    fn load(
        &mut self,
        checkpoint: &Checkpoint,
        path: &Path,
        prefix: &str,
    ) -> denoise_gym::Result<()> {
        self.learned_mut().load(checkpoint, path, prefix)
    }
}

impl<D: Backend> DifferentiableReward<D> for RewardChoice<D> {
    fn reward_traced(
        &self,
        x0: Matrix<D, OwnedTape<f32, D>>,
    ) -> denoise_gym::Result<Vector<D, OwnedTape<f32, D>>> {
        match self {
            RewardChoice::Ebm(r) => r.reward_traced(x0),
            _ => Err(denoise_gym::Error::InvalidArgument(format!(
                "the {} reward is computed on the host and cannot be differentiated; \
                 a pathwise agent (dxdp) needs finetune.reward = \"ebm\"",
                self.name()
            ))),
        }
    }
}

type AgentBuilder<D> = Box<dyn Fn(AgentContext<'_, D>) -> Result<Box<dyn Agent<D>>>>;
type BaselineBuilder<D> = Box<dyn Fn(BaselineContext<'_, D>) -> Result<Box<dyn Baseline<D>>>>;
type RewardBuilder<D> = Box<dyn Fn(RewardContext<'_, D>) -> Result<RewardChoice<D>>>;
type DatasetBuilder = Box<dyn Fn(&TrainConfig) -> Result<Arc<dyn Dataset>>>;

/// Every component `dgym` can build on device `D`, by name.
pub struct Registry<D: Backend> {
    catalog: Catalog,
    agents: BTreeMap<String, AgentBuilder<D>>,
    baselines: BTreeMap<String, BaselineBuilder<D>>,
    rewards: BTreeMap<String, RewardBuilder<D>>,
    datasets: BTreeMap<String, DatasetBuilder>,
}

impl<D: Backend> Default for Registry<D> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<D: Backend> Registry<D> {
    /// A registry without a single component (see [`crate::builtin::registry`] for `dgym`'s).
    pub fn empty() -> Self {
        Self {
            catalog: Catalog::default(),
            agents: BTreeMap::new(),
            baselines: BTreeMap::new(),
            rewards: BTreeMap::new(),
            datasets: BTreeMap::new(),
        }
    }

    /// What configs may name: the device-independent half.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Records a run method (`run.method`); the methods' phases are built by `dgym train`.
    pub fn method(&mut self, name: &str, doc: &str) -> Result<&mut Self> {
        self.catalog
            .add_builtin(ComponentKind::Method, name, doc, None)?;
        Ok(self)
    }

    /// Registers an agent whose settings live in sections already in the config
    /// (`builtin_section`: `[agent]`, `[ppo]`, ... or none).
    pub fn agent(
        &mut self,
        name: &str,
        doc: &str,
        builtin_section: Option<&str>,
        build: impl Fn(AgentContext<'_, D>) -> Result<Box<dyn Agent<D>>> + 'static,
    ) -> Result<&mut Self> {
        self.catalog
            .add_builtin(ComponentKind::Agent, name, doc, builtin_section)?;
        self.agents.insert(name.to_string(), Box::new(build));
        Ok(self)
    }

    /// Registers an agent with its own config section `[name]` of type `C` (declared
    /// with `denoise_gym::config_section!`), which its builder receives resolved.
    pub fn agent_with_config<C: SectionConfig>(
        &mut self,
        name: &str,
        doc: &str,
        build: impl Fn(AgentContext<'_, D>, C) -> Result<Box<dyn Agent<D>>> + 'static,
    ) -> Result<&mut Self> {
        let section = self.register_section::<C>(ComponentKind::Agent, name, doc)?;
        self.agents.insert(
            name.to_string(),
            Box::new(move |ctx| {
                let config = ctx.config.section::<C>(&section)?;
                build(ctx, config)
            }),
        );
        Ok(self)
    }

    /// Registers a baseline (for score-function agents: `AgentContext::baseline`).
    pub fn baseline(
        &mut self,
        name: &str,
        doc: &str,
        builtin_section: Option<&str>,
        build: impl Fn(BaselineContext<'_, D>) -> Result<Box<dyn Baseline<D>>> + 'static,
    ) -> Result<&mut Self> {
        self.catalog
            .add_builtin(ComponentKind::Baseline, name, doc, builtin_section)?;
        self.baselines.insert(name.to_string(), Box::new(build));
        Ok(self)
    }

    /// Registers a baseline with its own config section `[name]` of type `C`.
    pub fn baseline_with_config<C: SectionConfig>(
        &mut self,
        name: &str,
        doc: &str,
        build: impl Fn(BaselineContext<'_, D>, C) -> Result<Box<dyn Baseline<D>>> + 'static,
    ) -> Result<&mut Self> {
        let section = self.register_section::<C>(ComponentKind::Baseline, name, doc)?;
        self.baselines.insert(
            name.to_string(),
            Box::new(move |ctx| {
                let config = ctx.config.section::<C>(&section)?;
                build(ctx, config)
            }),
        );
        Ok(self)
    }

    /// Registers a reward.
    pub fn reward(
        &mut self,
        name: &str,
        doc: &str,
        builtin_section: Option<&str>,
        build: impl Fn(RewardContext<'_, D>) -> Result<RewardChoice<D>> + 'static,
    ) -> Result<&mut Self> {
        self.catalog
            .add_builtin(ComponentKind::Reward, name, doc, builtin_section)?;
        self.rewards.insert(name.to_string(), Box::new(build));
        Ok(self)
    }

    /// Registers a reward with its own config section `[name]` of type `C`.
    pub fn reward_with_config<C: SectionConfig>(
        &mut self,
        name: &str,
        doc: &str,
        build: impl Fn(RewardContext<'_, D>, C) -> Result<RewardChoice<D>> + 'static,
    ) -> Result<&mut Self> {
        let section = self.register_section::<C>(ComponentKind::Reward, name, doc)?;
        self.rewards.insert(
            name.to_string(),
            Box::new(move |ctx| {
                let config = ctx.config.section::<C>(&section)?;
                build(ctx, config)
            }),
        );
        Ok(self)
    }

    /// Registers a data set read from `[data]`'s keys.
    pub fn dataset(
        &mut self,
        name: &str,
        doc: &str,
        build: impl Fn(&TrainConfig) -> Result<Arc<dyn Dataset>> + 'static,
    ) -> Result<&mut Self> {
        self.catalog
            .add_builtin(ComponentKind::Dataset, name, doc, Some("data"))?;
        self.datasets.insert(name.to_string(), Box::new(build));
        Ok(self)
    }

    /// Registers a data set with its own config section `[name]` of type `C`.
    pub fn dataset_with_config<C: SectionConfig>(
        &mut self,
        name: &str,
        doc: &str,
        build: impl Fn(&TrainConfig, C) -> Result<Arc<dyn Dataset>> + 'static,
    ) -> Result<&mut Self> {
        let section = self.register_section::<C>(ComponentKind::Dataset, name, doc)?;
        self.datasets.insert(
            name.to_string(),
            Box::new(move |config| build(config, config.section::<C>(&section)?)),
        );
        Ok(self)
    }

    /// Adds a component with its own section `[name]` of type `C` to the catalog;
    /// returns the section's name.
    fn register_section<C: SectionConfig>(
        &mut self,
        kind: ComponentKind,
        name: &str,
        doc: &str,
    ) -> Result<String> {
        let section = SectionSpec::of::<C>(name, doc)?;
        self.catalog.add(kind, name, doc, Some(section))?;
        Ok(name.to_string())
    }

    /// The agent `finetune.agent` names, fine-tuning `policy` against `reward`.
    pub fn build_agent(
        &self,
        dev: &D,
        config: &TrainConfig,
        policy: GaussianPolicy<D>,
        reward: &Rc<RefCell<RewardChoice<D>>>,
    ) -> Result<Box<dyn Agent<D>>> {
        let name = &config.finetune.agent;
        let build = self
            .agents
            .get(name)
            .ok_or_else(|| unknown(self, ComponentKind::Agent, name))?;
        build(AgentContext {
            dev,
            config,
            policy,
            reward: reward.clone(),
            registry: self,
        })
    }

    /// The baseline `name`, fresh (stateful baselines start empty).
    pub fn build_baseline(
        &self,
        dev: &D,
        config: &TrainConfig,
        name: &str,
        dim: usize,
        n_steps: usize,
    ) -> Result<Box<dyn Baseline<D>>> {
        let build = self
            .baselines
            .get(name)
            .ok_or_else(|| unknown(self, ComponentKind::Baseline, name))?;
        build(BaselineContext {
            dev,
            config,
            dim,
            n_steps,
        })
    }

    /// The reward `finetune.reward` names, for data `dataset`.
    pub fn build_reward(
        &self,
        dev: &D,
        config: &TrainConfig,
        dataset: &Arc<dyn Dataset>,
    ) -> Result<RewardChoice<D>> {
        let name = &config.finetune.reward;
        let build = self
            .rewards
            .get(name)
            .ok_or_else(|| unknown(self, ComponentKind::Reward, name))?;
        build(RewardContext {
            dev,
            config,
            dataset,
        })
    }

    /// The data set `data.dataset` names, before `[data]`'s mixture reshaping.
    pub fn build_dataset(&self, config: &TrainConfig) -> Result<Arc<dyn Dataset>> {
        let name = &config.data.dataset;
        let build = self
            .datasets
            .get(name)
            .ok_or_else(|| unknown(self, ComponentKind::Dataset, name))?;
        build(config)
    }
}

fn unknown<D: Backend>(registry: &Registry<D>, kind: ComponentKind, name: &str) -> anyhow::Error {
    anyhow!(
        "key {}: unknown {} {name:?}; this program registers {}",
        kind.key(),
        kind.noun(),
        registry.catalog.names(kind).join(", ")
    )
}
