//! From a config to components: the mapping from `TrainConfig`'s sections to the
//! library's data sets, sampler, phases, agents and rewards, and back from a run
//! directory to its trained sampler and energy. Nothing below this module sees the whole
//! `TrainConfig`.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::dsm::DsmPhase;
use denoise_gym::ebm::{
    fit_temperature, grid_kl, held_out_nll, ContrastiveConfig, EbmReward, EnergyModel, Grid2d,
};
use denoise_gym::irl::{ExpertSampler, IrlPhase};
use denoise_gym::nn::Parameterized;
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::reward::LearnedReward;
use denoise_gym::rng::Stream;
use denoise_gym::sampler::Sampler;
use denoise_gym::tensor::{matrix, Backend};
use denoise_gym::train::{Phase, RunDir};
use denoise_gym_agents::ddaebm::{Ddaebm, DdaebmPhase, LatentGenerator};

use denoise_gym_envs::{Dataset, DenoisingEnv, GaussianMixture};
use serde_json::json;

use crate::catalog::Catalog;
use crate::config::{RewardConfig, TrainConfig};
use crate::data::PreparedData;
use crate::registry::{Registry, RewardChoice};

/// Reads the resolved config of an existing run, checked against `catalog`'s components.
pub fn load_run_config(run: &RunDir, catalog: &Catalog) -> Result<TrainConfig> {
    run.read_config_text()?;
    TrainConfig::load(Some(&run.config()), &[], catalog)
}

/// Builds the data set `data.dataset` names, reshaped by `data.mixture_weights` /
/// `data.mixture_std` where set.
pub fn build_dataset<D: Backend>(
    registry: &Registry<D>,
    config: &TrainConfig,
) -> Result<Arc<dyn Dataset>> {
    Ok(build_data(registry, config)?.train)
}

/// The data of a run as the config asks: the registry's data set (mixture weights
/// applied), or the train/validation/test splits of its table (see [`crate::data`]).
pub fn build_data<D: Backend>(
    registry: &Registry<D>,
    config: &TrainConfig,
) -> Result<PreparedData> {
    if crate::data::needs_table(config) {
        let splits = crate::data::split_table(config)?;
        return Ok(PreparedData {
            train: Arc::new(splits.train.clone()),
            splits: Some(splits),
        });
    }
    Ok(PreparedData {
        train: build_unsplit_dataset(registry, config)?,
        splits: None,
    })
}

fn build_unsplit_dataset<D: Backend>(
    registry: &Registry<D>,
    config: &TrainConfig,
) -> Result<Arc<dyn Dataset>> {
    let dataset = registry.build_dataset(config)?;
    let config = &config.data;
    if config.mixture_weights.is_empty() && config.mixture_std == 0.0 {
        return Ok(dataset);
    }
    let Some(mixture) = dataset.as_mixture() else {
        bail!(
            "keys data.mixture_weights / data.mixture_std: data set {:?} is not a Gaussian mixture",
            config.dataset
        );
    };
    let n = mixture.n_components();
    let weights = if config.mixture_weights.is_empty() {
        mixture.weights().to_vec()
    } else if config.mixture_weights.len() == n {
        config.mixture_weights.clone()
    } else {
        bail!(
            "key data.mixture_weights: {} weights for the {n} components of {:?}",
            config.mixture_weights.len(),
            config.dataset
        );
    };
    let stds = if config.mixture_std == 0.0 {
        mixture.stds().to_vec()
    } else {
        vec![config.mixture_std; n]
    };
    let reshaped = GaussianMixture::new(
        config.dataset.clone(),
        mixture.means().to_vec(),
        stds,
        weights,
    )
    .with_context(|| "keys data.mixture_weights / data.mixture_std")?;
    Ok(Arc::new(reshaped))
}

/// Batches of `dataset` as `n × d` matrices on `dev`, drawn from the caller's generator.
pub fn data_batches<D: Backend>(
    dev: &D,
    dataset: &Arc<dyn Dataset>,
) -> Box<ExpertSampler<'static, D>> {
    let (dev, dataset) = (dev.clone(), dataset.clone());
    let dim = dataset.dim();
    Box::new(move |n, rng| matrix(&dev, dataset.sample(n, rng), n, dim))
}

/// A freshly initialised sampler-policy of `config` for data of dimension `dim`.
pub fn build_policy<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    dim: usize,
) -> Result<GaussianPolicy<D>> {
    let mut init_rng = Stream::PolicyInit.rng(config.run.seed);
    Ok(GaussianPolicy::new(
        dev,
        config.policy_spec(dim),
        config.schedule()?,
        &mut init_rng,
    )?)
}

/// DSM pretraining of a fresh policy, as `[pretrain]` configures it.
pub fn dsm_phase<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    dataset: &Arc<dyn Dataset>,
) -> Result<DsmPhase<D>> {
    Ok(DsmPhase::new(
        build_policy(dev, config, dataset.dim())?,
        config.dsm_config(),
        data_batches(dev, dataset),
        Stream::Pretrain.rng(config.run.seed),
    )?)
}

/// The EBM of `[reward]` (untrained) for data of dimension `dim`.
pub fn build_energy_model<D: Backend>(
    dev: &D,
    reward: &RewardConfig,
    seed: u64,
    dim: usize,
) -> EnergyModel<D> {
    let mut rng = Stream::RewardInit.rng(seed);
    EnergyModel::new(
        dev,
        dim,
        reward.hidden,
        reward.depth,
        reward.activation,
        &mut rng,
    )
}

/// The IRL phase `dgym train` builds: the denoising environment, the config's agent and
/// reward, expert batches of the data set.
pub type FinetunePhase<D> = IrlPhase<D, DenoisingEnv<D>, RewardChoice<D>>;

/// Fine-tuning of `policy` as `[finetune]`, `[agent]`, `[dxdp]` and `[reward]` configure
/// it, its global steps counted from `step_offset`.
pub fn finetune_phase<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    config: &TrainConfig,
    dataset: &Arc<dyn Dataset>,
    policy: GaussianPolicy<D>,
    step_offset: u64,
) -> Result<FinetunePhase<D>> {
    let reward = Rc::new(RefCell::new(registry.build_reward(dev, config, dataset)?));
    let env = DenoisingEnv::new(
        dev.clone(),
        policy.dim(),
        policy.n_steps(),
        config.finetune.batch_size,
        reward.clone(),
        config.run.seed,
    )?;
    let agent = registry.build_agent(dev, config, policy, &reward)?;
    Ok(IrlPhase::new(
        agent,
        reward,
        env,
        data_batches(dev, dataset),
        config.finetune.n_critic,
        config.run.seed,
        Stream::Finetune.rng(config.run.seed),
        step_offset,
        config.finetune.finetune_ema_decay,
    )?)
}

/// DDAEBM as `[ddaebm]` configures it, freshly initialised, on data of dimension `dim`
/// drawn by `data`.
pub fn ddaebm_phase<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    dim: usize,
    data: Box<ExpertSampler<'static, D>>,
) -> Result<DdaebmPhase<D>> {
    let mut init_rng = Stream::DdaebmInit.rng(config.run.seed);
    let model = Ddaebm::new(
        dev,
        &config.ddaebm_spec(dim),
        config.schedule()?,
        config.ddaebm_config(),
        &mut init_rng,
    )?;
    Ok(DdaebmPhase::new(
        model,
        data,
        config.ddaebm.batch_size,
        config.ddaebm.perfect_generator_fakes,
        Stream::Ddaebm.rng(config.run.seed),
    )?)
}

/// Fits `T_E` of a 2-D energy by held-out likelihood on `[reward]`'s grid
/// (docs/algorithms.md §3), stores it in the model, and reports the raw and calibrated
/// density quality (KL(true ‖ EBM) where the data's density is known, held-out NLL).
/// `None` for data that is not 2-D or when `reward.fit_temperature` is off.
pub fn calibrate_energy<D: Backend>(
    model: &mut EnergyModel<D>,
    dataset: &Arc<dyn Dataset>,
    r: &RewardConfig,
    seed: u64,
) -> Result<Option<serde_json::Value>> {
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
    let mut rng = Stream::HeldOut.rng(seed);
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

/// Fits `T_E` of a fine-tuning phase's EBM (see [`calibrate_energy`]); `None` for the oracle.
pub fn calibrate_finetune<D: Backend>(
    phase: &mut FinetunePhase<D>,
    dataset: &Arc<dyn Dataset>,
    config: &TrainConfig,
) -> Result<Option<serde_json::Value>> {
    let mut reward = phase.reward.borrow_mut();
    let RewardChoice::Ebm(ebm) = &mut *reward else {
        return Ok(None);
    };
    calibrate_energy(&mut ebm.model, dataset, &config.reward, config.run.seed)
}

/// Loads the sampler of `init_from`, checking it fits this config.
pub fn sampler_from_run<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    config: &TrainConfig,
    dim: usize,
) -> Result<GaussianPolicy<D>> {
    let other = Path::new(&config.finetune.init_from);
    let other_config =
        load_run_config(&RunDir::new(other), catalog).with_context(|| "key finetune.init_from")?;
    if other_config.run.method != "diffusion" {
        bail!(
            "key finetune.init_from: run {} is a {} run; fine-tuning starts from a diffusion run's Gaussian policy",
            other.display(),
            other_config.run.method
        );
    }
    // The architecture and schedule must match; σ_1 is this config's own (see below).
    let mine = toml::Value::try_from(&config.policy)?;
    let theirs = toml::Value::try_from(&other_config.policy)?;
    for key in [
        "n_steps",
        "schedule",
        "vp_beta_min",
        "vp_beta_max",
        "hidden",
        "depth",
        "time_embed_dim",
        "activation",
    ] {
        let (a, b) = (mine.get(key), theirs.get(key));
        if a != b {
            let show = |v: Option<&toml::Value>| v.map_or_else(String::new, ToString::to_string);
            bail!(
                "key finetune.init_from: run {} has policy.{key} = {}, this config has {}",
                other.display(),
                show(b),
                show(a)
            );
        }
    }
    let loaded = load_sampler(dev, catalog, other).with_context(|| "key finetune.init_from")?;
    if loaded.dim() != dim {
        bail!(
            "key finetune.init_from: run {} samples dimension {}, this config's data has dimension {dim}",
            other.display(),
            loaded.dim()
        );
    }
    // The weights and σ_2..σ_T come from the earlier run; σ_1 (fix_last_sigma, last_sigma)
    // is this config's: DSM pretraining never depends on it, and a resumed run rebuilds
    // the policy from this config.
    let mut policy = build_policy(dev, config, dim)?;
    for (mine, theirs) in policy
        .eps_net
        .parameters_mut()
        .into_iter()
        .zip(loaded.eps_net.parameters())
    {
        mine.copy_from(&theirs.as_vec());
    }
    let mut log_sigma = loaded.log_sigma.as_vec();
    log_sigma[0] = policy.log_sigma.as_vec()[0];
    policy.log_sigma.copy_from(&log_sigma);
    Ok(policy)
}

/// A run's config, its newest verified checkpoint with its file, and its data dimension.
fn open_run(
    catalog: &Catalog,
    run_dir: &Path,
) -> Result<(TrainConfig, Checkpoint, std::path::PathBuf, usize)> {
    let run = RunDir::new(run_dir);
    let config = load_run_config(&run, catalog)?;
    let (checkpoint, path) = run.load_latest_checkpoint()?;
    let dim: usize = checkpoint.meta_parse(&path, "dim")?;
    Ok((config, checkpoint, path, dim))
}

/// Loads the sampler of a diffusion run (EMA weights when the run kept them).
/// With `eval.select = "best"` that is the selected checkpoint (`selected.json`), else the
/// newest.
pub fn load_sampler<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
) -> Result<GaussianPolicy<D>> {
    let run = RunDir::new(run_dir);
    if let Some(selected) = read_selection(&run)? {
        let config = load_run_config(&run, catalog)?;
        let path = run.checkpoints().join(&selected.checkpoint);
        let checkpoint = Checkpoint::load(&path)?;
        return load_sampler_at(dev, &config, &checkpoint, &path);
    }
    let (config, checkpoint, path, _) = open_run(catalog, run_dir)?;
    load_sampler_at(dev, &config, &checkpoint, &path)
}

/// The file of a run's sampler selection (`eval.select = "best"`).
pub const SELECTION_FILE: &str = "selected.json";

/// Which checkpoint a run with `eval.select = "best"` hands back, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// The checkpoint's file name in `checkpoints/`.
    pub checkpoint: String,
    /// Its global step.
    pub step: u64,
    /// Iterations of fine-tuning behind it (0: the sampler fine-tuning started from).
    pub finetune_iteration: u64,
    /// The criterion, in words.
    pub criterion: String,
    /// Its value at the selected checkpoint.
    pub value: f64,
    /// `(step, value)` of every candidate.
    pub candidates: Vec<(u64, f64)>,
}

/// The run's selection, when it made one.
pub fn read_selection(run: &RunDir) -> Result<Option<Selection>> {
    let path = run.root.join(SELECTION_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected the selection a run with eval.select = \"best\" writes",
            path.display()
        )
    })?))
}

/// The Gaussian sampler of one diffusion checkpoint (EMA weights when it kept them).
pub fn load_sampler_at<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    checkpoint: &Checkpoint,
    path: &Path,
) -> Result<GaussianPolicy<D>> {
    let dim: usize = checkpoint.meta_parse(path, "dim")?;
    let mut policy = build_policy(dev, config, dim)?;
    let prefix = checkpoint
        .metadata
        .get("sampler_prefix")
        .map_or("policy", String::as_str);
    checkpoint.load_model(path, prefix, &mut policy)?;
    // Frozen early steps (ft_steps) and σ floors of a fine-tuned sampler, when it has them.
    policy.load_step_options(checkpoint, path, prefix)?;
    if checkpoint.meta(path, "sampler_weights")? == "ema" {
        let ema_prefix = checkpoint
            .metadata
            .get("sampler_ema_prefix")
            .map_or("ema", String::as_str);
        let names = policy.eps_net.parameter_names();
        checkpoint.load_matrices(path, ema_prefix, &names, policy.eps_net.parameters_mut())?;
    }
    Ok(policy)
}

/// Rebuilds the DDAEBM phase of a DDAEBM run from its last checkpoint.
pub fn load_ddaebm<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
) -> Result<DdaebmPhase<D>> {
    let (config, checkpoint, path, dim) = open_run(catalog, run_dir)?;
    // Loaded to sample or score, never stepped: it draws no data.
    let no_data: Box<ExpertSampler<'static, D>> = {
        let dev = dev.clone();
        Box::new(move |n, _| matrix(&dev, vec![0.0; n * dim], n, dim))
    };
    let mut phase = ddaebm_phase(dev, &config, dim, no_data)?;
    phase.load(&checkpoint, &path)?;
    Ok(phase)
}

/// The generator of a DDAEBM run, as a sampler.
pub fn load_generator<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
) -> Result<LatentGenerator<D>> {
    Ok(load_ddaebm(dev, catalog, run_dir)?.model.generator)
}

/// Loads the final sampler of any run: the Gaussian policy of a diffusion run, the
/// latent generator of a DDAEBM run.
pub fn load_any_sampler<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
) -> Result<Box<dyn Sampler<D>>> {
    let config = load_run_config(&RunDir::new(run_dir), catalog)?;
    if config.run.method == denoise_gym_agents::ddaebm::PHASE {
        Ok(Box::new(load_generator(dev, catalog, run_dir)?))
    } else {
        Ok(Box::new(load_sampler(dev, catalog, run_dir)?))
    }
}

/// Loads the EBM of a GCD run, or the `t = 0` energy `-D(x, 0)` of a DDAEBM run, with its
/// fitted temperature.
pub fn load_energy_model<D: Backend>(
    dev: &D,
    catalog: &Catalog,
    run_dir: &Path,
) -> Result<EnergyModel<D>> {
    let run = RunDir::new(run_dir);
    let config = load_run_config(&run, catalog)?;
    if config.run.method == denoise_gym_agents::ddaebm::PHASE {
        return Ok(load_ddaebm(dev, catalog, run_dir)?.energy_model());
    }
    let (checkpoint, path) = run.load_latest_checkpoint()?;
    let kind = checkpoint.metadata.get("reward_kind").map(String::as_str);
    if kind != Some("ebm") {
        bail!(
            "run {} has no learned energy (its reward is {}); `dgym energy` needs a run with finetune.reward = \"ebm\"",
            run_dir.display(),
            kind.unwrap_or("none: it only pretrained")
        );
    }
    let dim: usize = checkpoint.meta_parse(&path, "dim")?;
    let model = build_energy_model(dev, &config.reward, config.run.seed, dim);
    let mut reward = EbmReward::new(model, ContrastiveConfig::default())?;
    reward.load(&checkpoint, &path, "reward")?;
    Ok(reward.model)
}

/// Warns on stderr when a run has not finished (no `summary.json`): its weights are those
/// of a checkpoint mid-run.
pub fn warn_if_unfinished(run: &RunDir) {
    if !run.summary().exists() {
        eprintln!(
            "warning: run {} has not finished (no summary.json): these are the weights of its latest checkpoint, mid-run",
            run.root.display()
        );
    }
}
