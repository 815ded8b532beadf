//! The fine-tuning phase: the pretrained sampler becomes a policy, trained by an agent
//! against a reward (a learned EBM for GCD, or the exact log-density as an oracle),
//! through the core IRL loop.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{bail, Result};
use denoise_gym::agent::{Agent, Baseline, Stats};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::ebm::{
    fit_temperature, grid_kl, held_out_nll, ContrastiveConfig, EbmReward, EnergyModel, Grid2d,
};
use denoise_gym::irl::irl_iteration;
use denoise_gym::nn::Parameterized;
use denoise_gym::optim::WeightEma;
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::reward::{DifferentiableReward, LearnedReward, RewardModel};
use denoise_gym::rng::{rng_from_json, rng_to_json, seeded, ProjectRng};
use denoise_gym::tensor::{matrix, Backend, Matrix, Vector};
use denoise_gym_agents::{make_baseline, Dxdp, Ppo, Reinforce, ValueBaselineSpec};
use denoise_gym_envs::{Dataset, DenoisingEnv, OracleReward};
use dfdx::prelude::OwnedTape;
use serde_json::json;

use crate::config::TrainConfig;

/// RNG streams of the fine-tuning phase (distinct from pretraining's).
const STREAM_FINETUNE_INIT: u64 = 11;
const STREAM_FINETUNE: u64 = 12;
const STREAM_HELD_OUT: u64 = 13;

/// The reward a config chooses: the learned EBM, or the oracle.
pub enum RewardChoice<D: Backend> {
    /// GCD's energy-based reward.
    Ebm(EbmReward<D>),
    /// The exact log-density of the data's mixture.
    Oracle(OracleReward),
}

impl<D: Backend> RewardModel<D> for RewardChoice<D> {
    fn reward(&self, x0: &Matrix<D>) -> denoise_gym::Result<Vector<D>> {
        match self {
            RewardChoice::Ebm(r) => r.reward(x0),
            RewardChoice::Oracle(r) => r.reward(x0),
        }
    }
    fn dim(&self) -> usize {
        match self {
            RewardChoice::Ebm(r) => r.dim(),
            RewardChoice::Oracle(r) => RewardModel::<D>::dim(r),
        }
    }
    fn name(&self) -> &str {
        match self {
            RewardChoice::Ebm(_) => "ebm",
            RewardChoice::Oracle(_) => "oracle",
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
        match self {
            RewardChoice::Ebm(r) => r.learn(positive, negative, iteration),
            RewardChoice::Oracle(r) => LearnedReward::<D>::learn(r, positive, negative, iteration),
        }
    }
    fn save(&self, checkpoint: &mut Checkpoint, prefix: &str) -> denoise_gym::Result<()> {
        match self {
            RewardChoice::Ebm(r) => r.save(checkpoint, prefix),
            RewardChoice::Oracle(r) => LearnedReward::<D>::save(r, checkpoint, prefix),
        }
    }
    fn load(
        &mut self,
        checkpoint: &Checkpoint,
        path: &Path,
        prefix: &str,
    ) -> denoise_gym::Result<()> {
        match self {
            RewardChoice::Ebm(r) => r.load(checkpoint, path, prefix),
            RewardChoice::Oracle(r) => LearnedReward::<D>::load(r, checkpoint, path, prefix),
        }
    }
}

impl<D: Backend> DifferentiableReward<D> for RewardChoice<D> {
    fn reward_traced(
        &self,
        x0: Matrix<D, OwnedTape<f32, D>>,
    ) -> denoise_gym::Result<Vector<D, OwnedTape<f32, D>>> {
        match self {
            RewardChoice::Ebm(r) => r.reward_traced(x0),
            RewardChoice::Oracle(_) => Err(denoise_gym::Error::InvalidArgument(
                "the oracle reward is computed on the host and cannot be differentiated; \
                 a pathwise agent (dxdp) needs finetune.reward = \"ebm\""
                    .to_string(),
            )),
        }
    }
}

/// Builds the EBM of a config (untrained) for data of dimension `dim`.
pub fn build_energy_model<D: Backend>(dev: &D, config: &TrainConfig, dim: usize) -> EnergyModel<D> {
    let r = &config.reward;
    let mut rng = seeded(config.run.seed, STREAM_FINETUNE_INIT);
    EnergyModel::new(dev, dim, r.hidden, r.depth, r.activation, &mut rng)
}

fn build_reward<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    dataset: &Arc<dyn Dataset>,
) -> Result<RewardChoice<D>> {
    Ok(match config.finetune.reward.as_str() {
        "oracle" => RewardChoice::Oracle(OracleReward::new(dataset.clone())?),
        _ => {
            let r = &config.reward;
            let learner = ContrastiveConfig {
                gamma: r.gamma,
                lr: r.lr,
                betas: r.betas,
                grad_clip: r.grad_clip,
                n_critic: config.finetune.n_critic,
            };
            learner.validate()?;
            RewardChoice::Ebm(EbmReward::new(
                build_energy_model(dev, config, dataset.dim()),
                learner,
            )?)
        }
    })
}

/// The baseline `name` with the config's value-network options (a fresh one: stateful
/// baselines start empty).
pub fn build_baseline<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    name: &str,
    dim: usize,
    n_steps: usize,
) -> Result<Box<dyn Baseline<D>>> {
    let a = &config.agent;
    let mut rng = seeded(config.run.seed, STREAM_FINETUNE_INIT + 100);
    Ok(make_baseline(
        name,
        dev,
        dim,
        n_steps,
        ValueBaselineSpec {
            hidden: a.value_hidden,
            depth: a.value_depth,
            lr: a.value_lr,
            steps_per_batch: a.value_steps,
        },
        &mut rng,
    )?)
}

fn build_agent<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    policy: GaussianPolicy<D>,
    reward: &Rc<RefCell<RewardChoice<D>>>,
) -> Result<Box<dyn Agent<D>>> {
    if config.finetune.agent == "dxdp" {
        let reward: Rc<RefCell<dyn DifferentiableReward<D>>> = reward.clone();
        let mut rng = seeded(config.run.seed, STREAM_FINETUNE_INIT + 100);
        return Ok(Box::new(Dxdp::new(
            policy,
            reward,
            config.dxdp_config(),
            &mut rng,
        )?));
    }
    let baseline = build_baseline(
        dev,
        config,
        &config.agent.baseline,
        policy.dim(),
        policy.n_steps(),
    )?;
    match config.finetune.agent.as_str() {
        "reinforce" => Ok(Box::new(Reinforce::new(
            policy,
            baseline,
            config.reinforce_config(),
        )?)),
        "ppo" => Ok(Box::new(Ppo::new(
            policy,
            baseline,
            config.reinforce_config(),
            config.ppo_config(),
        )?)),
        other => bail!("key finetune.agent: unknown agent {other:?}"),
    }
}

/// A well-mixed seed for the environment's `x_T` draw at `iteration`.
fn env_seed(seed: u64, iteration: u64) -> u64 {
    let mut z = seed ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything fine-tuning carries from one iteration to the next.
pub struct FinetuneState<D: Backend> {
    /// The agent (owns the policy).
    pub agent: Box<dyn Agent<D>>,
    /// The reward, shared with the environment.
    pub reward: Rc<RefCell<RewardChoice<D>>>,
    /// The denoising environment.
    pub env: DenoisingEnv<D>,
    /// The fine-tuning RNG.
    pub rng: ProjectRng,
    /// Fine-tuning iterations done.
    pub iteration: u64,
    /// Global step of fine-tuning iteration 0 (pretraining steps before it).
    pub step_offset: u64,
    /// Optional weight EMA of the fine-tuned ε-network.
    pub ema: Option<WeightEma<D>>,
    /// Metrics of the sampler fine-tuning started from.
    pub start_eval: serde_json::Value,
}

impl<D: Backend> FinetuneState<D> {
    /// A fresh phase starting from `policy`.
    pub fn new(
        dev: &D,
        config: &TrainConfig,
        dataset: &Arc<dyn Dataset>,
        policy: GaussianPolicy<D>,
        step_offset: u64,
        start_eval: serde_json::Value,
    ) -> Result<Self> {
        let reward = Rc::new(RefCell::new(build_reward(dev, config, dataset)?));
        let env = DenoisingEnv::new(
            dev.clone(),
            policy.dim(),
            policy.n_steps(),
            config.finetune.batch_size,
            reward.clone(),
            config.run.seed,
        )?;
        let decay = config.finetune.finetune_ema_decay;
        let ema = (decay > 0.0).then(|| WeightEma::new(&policy.eps_net.parameters(), decay));
        Ok(Self {
            agent: build_agent(dev, config, policy, &reward)?,
            reward,
            env,
            rng: seeded(config.run.seed, STREAM_FINETUNE),
            iteration: 0,
            step_offset,
            ema,
            start_eval,
        })
    }

    /// The global step (one counter across phases).
    pub fn step(&self) -> u64 {
        self.step_offset + self.iteration
    }

    /// One IRL iteration.
    pub fn iterate(&mut self, dataset: &Arc<dyn Dataset>, config: &TrainConfig) -> Result<Stats> {
        let dev = self.agent.policy().device().clone();
        let dim = dataset.dim();
        let mut expert =
            |n: usize, rng: &mut ProjectRng| matrix(&dev, dataset.sample(n, rng), n, dim);
        let next = self.iteration + 1;
        let stats = irl_iteration(
            &mut self.env,
            self.agent.as_mut(),
            self.reward.as_ref(),
            &mut expert,
            config.finetune.n_critic,
            env_seed(config.run.seed, next),
            &mut self.rng,
            self.step_offset + next,
        )?;
        if let Some(ema) = self.ema.as_mut() {
            ema.update(&self.agent.policy().eps_net.parameters());
        }
        self.iteration = next;
        Ok(stats)
    }

    /// The fine-tuned sampler (EMA weights when kept).
    pub fn sampler(&self) -> GaussianPolicy<D> {
        let mut sampler = self.agent.policy().clone();
        if let Some(ema) = &self.ema {
            ema.copy_to(sampler.eps_net.parameters_mut());
        }
        sampler
    }

    /// The whole state as a checkpoint.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut c = Checkpoint::new();
        self.agent.save(&mut c, "agent")?;
        self.reward.borrow().save(&mut c, "reward")?;
        let policy = self.agent.policy();
        let meta = &mut c.metadata;
        meta.insert("phase".into(), "finetune".into());
        meta.insert("iteration".into(), self.step().to_string());
        meta.insert("finetune_iteration".into(), self.iteration.to_string());
        meta.insert("step_offset".into(), self.step_offset.to_string());
        meta.insert("rng".into(), rng_to_json(&self.rng)?);
        meta.insert("dim".into(), policy.dim().to_string());
        meta.insert("n_steps".into(), policy.n_steps().to_string());
        meta.insert(
            "reward_kind".into(),
            self.reward.borrow().name().to_string(),
        );
        meta.insert("start_eval".into(), self.start_eval.to_string());
        meta.insert("sampler_prefix".into(), "agent.policy".into());
        if let Some(ema) = &self.ema {
            let names = policy.eps_net.parameter_names();
            c.put_matrices(
                "finetune_ema",
                &names,
                &ema.shadow.iter().collect::<Vec<_>>(),
            );
            c.metadata.insert("sampler_weights".into(), "ema".into());
            c.metadata
                .insert("sampler_ema_prefix".into(), "finetune_ema".into());
        } else {
            c.metadata
                .insert("sampler_weights".into(), "current".into());
        }
        Ok(c)
    }

    /// Restores [`FinetuneState::to_checkpoint`]'s output.
    pub fn restore(&mut self, c: &Checkpoint, path: &Path) -> Result<()> {
        self.agent.load(c, path, "agent")?;
        self.reward.borrow_mut().load(c, path, "reward")?;
        self.iteration = c.meta_parse(path, "finetune_iteration")?;
        self.step_offset = c.meta_parse(path, "step_offset")?;
        self.rng = rng_from_json(c.meta(path, "rng")?)?;
        self.start_eval = serde_json::from_str(c.meta(path, "start_eval")?)?;
        if let Some(ema) = self.ema.as_mut() {
            let names = self.agent.policy().eps_net.parameter_names();
            c.load_matrices(
                path,
                "finetune_ema",
                &names,
                ema.shadow.iter_mut().collect(),
            )?;
        }
        Ok(())
    }

    /// At the end of a GCD run on 2-D data: fits `T_E` by held-out likelihood on the
    /// config's grid, stores it in the EBM, and reports the raw and calibrated density
    /// quality (KL(true ‖ EBM) where the data's density is known, held-out NLL).
    pub fn calibrate(
        &mut self,
        dataset: &Arc<dyn Dataset>,
        config: &TrainConfig,
    ) -> Result<Option<serde_json::Value>> {
        let mut reward = self.reward.borrow_mut();
        let RewardChoice::Ebm(ebm) = &mut *reward else {
            return Ok(None);
        };
        calibrate_energy(&mut ebm.model, dataset, config)
    }
}

/// Fits `T_E` of a 2-D energy by held-out likelihood on the config's grid (SPEC §3),
/// stores it in the model, and reports the raw and calibrated density quality
/// (KL(true ‖ EBM) where the data's density is known, held-out NLL). `None` for data that
/// is not 2-D or when `reward.fit_temperature` is off.
pub fn calibrate_energy<D: Backend>(
    model: &mut EnergyModel<D>,
    dataset: &Arc<dyn Dataset>,
    config: &TrainConfig,
) -> Result<Option<serde_json::Value>> {
    let r = &config.reward;
    if dataset.dim() != 2 || !r.fit_temperature {
        return Ok(None);
    }
    let b = r.grid_half_width;
    let grid = Grid2d::new([-b, -b], [b, b], r.grid_size)?;
    let points = grid.points();
    let grid_energy: Vec<f64> = model
        .energy_host(&points)
        .iter()
        .map(|&e| e as f64)
        .collect();
    let mut rng = seeded(config.run.seed, STREAM_HELD_OUT);
    let held_out = dataset.sample(r.held_out, &mut rng);
    let held_out_energy: Vec<f64> = model
        .energy_host(&held_out)
        .iter()
        .map(|&e| e as f64)
        .collect();
    let (temperature, nll) = fit_temperature(&grid_energy, grid.cell_area(), &held_out_energy)?;
    model.temperature = temperature;
    let nll_raw = held_out_nll(&grid_energy, grid.cell_area(), &held_out_energy, 1.0);
    let mut out = json!({
        "temperature": temperature,
        "held_out_nll_calibrated": nll,
        "held_out_nll_raw": nll_raw,
        "grid_half_width": b,
        "grid_size": r.grid_size,
    });
    if let Some(true_log_density) = dataset.log_density(&points) {
        out["kl_calibrated"] = json!(grid_kl(
            &true_log_density,
            &grid_energy,
            temperature,
            grid.cell_area()
        ));
        out["kl_raw"] = json!(grid_kl(
            &true_log_density,
            &grid_energy,
            1.0,
            grid.cell_area()
        ));
    }
    Ok(Some(out))
}
