//! A run directory and the DSM pretraining runner behind `dgym train`.
//!
//! Layout (ARCHITECTURE.md, "Outputs of a run"): `config.toml`, `run.json`, TensorBoard
//! event files, `metrics.csv`, `checkpoints/{last,step_NNNNNNN}.safetensors`, and
//! `summary.json`, written last: its presence means the run finished.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::error::ensure_finite;
use denoise_gym::log::{CsvLogger, Logger, MultiLogger, Progress, TensorBoardLogger};
use denoise_gym::nn::Parameterized;
use denoise_gym::optim::{clip_grad_norm, gradients_of, Adam, AdamConfig, WeightEma};
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::rng::{normal_matrix, rng_from_json, rng_to_json, seeded, ProjectRng};
use denoise_gym::sampler::Sampler;
use denoise_gym::tensor::{matrix, Backend};
use denoise_gym_envs::{toy_dataset, Dataset, GaussianMixture, TabularDataset};
use dfdx::prelude::*;
use rand::Rng;
use serde_json::json;

use crate::config::{DataConfig, TrainConfig};
use crate::ddaebm::DdaebmState;
use crate::finetune::FinetuneState;

/// RNG streams: one per consumer, so that evaluation never shifts training's numbers.
const STREAM_INIT: u64 = 1;
const STREAM_TRAIN: u64 = 2;
const STREAM_EVAL: u64 = 3;

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The directory.
    pub root: PathBuf,
}

impl RunDir {
    /// Wraps an existing or future run directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `config.toml`, the resolved config as run.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `metrics.csv`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    /// `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/last.safetensors`.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("last.safetensors")
    }

    /// Reads the resolved config of an existing run.
    pub fn load_config(&self) -> Result<TrainConfig> {
        let path = self.config();
        if !path.exists() {
            bail!(
                "{} is not a run directory: it has no config.toml",
                self.root.display()
            );
        }
        TrainConfig::load(Some(&path), &[])
    }

    /// Reads the last checkpoint, with an error that says what is missing.
    pub fn load_last_checkpoint(&self) -> Result<Checkpoint> {
        let path = self.last_checkpoint();
        if !path.exists() {
            bail!(
                "run directory {} has no checkpoint ({} is missing)",
                self.root.display(),
                path.display()
            );
        }
        Ok(Checkpoint::load(&path)?)
    }
}

/// Builds the data set a config names.
pub fn build_dataset(config: &DataConfig) -> Result<Arc<dyn Dataset>> {
    let dataset: Arc<dyn Dataset> = match config.dataset.as_str() {
        "gmm" => Arc::new(GaussianMixture::gmm(
            config.gmm_dim,
            config.gmm_components,
            config.gmm_scale,
            config.gmm_std,
            config.gmm_seed,
        )?),
        "csv" => {
            if config.path.is_empty() {
                bail!("key data.path: the csv data set needs a file path");
            }
            Arc::new(TabularDataset::from_csv(
                Path::new(&config.path),
                config.drop_last_column,
            )?)
        }
        "digits" => Arc::new(TabularDataset::digits()?),
        name => Arc::from(toy_dataset(name).with_context(|| "key data.dataset")?),
    };
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

/// Everything DSM pretraining carries from one iteration to the next.
pub struct PretrainState<D: Backend> {
    /// The sampler being trained.
    pub policy: GaussianPolicy<D>,
    /// Adam over the ε-network's parameters.
    pub optimizer: Adam<D>,
    /// EMA of the ε-network's weights, when `ema_decay > 0`.
    pub ema: Option<WeightEma<D>>,
    /// The training RNG.
    pub rng: ProjectRng,
    /// Iterations done.
    pub iteration: u64,
}

impl<D: Backend> PretrainState<D> {
    /// A fresh state for `config` on data of dimension `dim`.
    pub fn new(dev: &D, config: &TrainConfig, dim: usize) -> Result<Self> {
        let mut init_rng = seeded(config.run.seed, STREAM_INIT);
        let schedule = config.schedule()?;
        let policy = GaussianPolicy::new(dev, config.policy_spec(dim), schedule, &mut init_rng)?;
        let params = policy.eps_net.parameters();
        let optimizer = Adam::new(
            &params,
            vec![config.pretrain.lr; params.len()],
            AdamConfig {
                betas: config.pretrain.betas,
                ..AdamConfig::default()
            },
        )?;
        let ema = (config.pretrain.ema_decay > 0.0)
            .then(|| WeightEma::new(&params, config.pretrain.ema_decay));
        Ok(Self {
            policy,
            optimizer,
            ema,
            rng: seeded(config.run.seed, STREAM_TRAIN),
            iteration: 0,
        })
    }

    /// One DSM step on a fresh batch; returns `(loss, gradient norm before clipping)`.
    pub fn step(&mut self, dataset: &dyn Dataset, config: &TrainConfig) -> Result<(f64, f64)> {
        let dev = self.policy.device().clone();
        let batch = config.pretrain.batch_size;
        let dim = self.policy.dim();
        let n_steps = self.policy.n_steps();
        let x0 = matrix(&dev, dataset.sample(batch, &mut self.rng), batch, dim);
        let ts: Vec<usize> = (0..batch)
            .map(|_| self.rng.gen_range(1..=n_steps))
            .collect();
        let noise = normal_matrix(&dev, &mut self.rng, batch, dim);
        let x_t = self.policy.noised(&x0, &ts, &noise);
        let loss = self
            .policy
            .dsm_loss(x_t.traced(Gradients::leaky()), &ts, &noise);
        let loss_value = loss.as_vec()[0] as f64;
        ensure_finite("dsm/loss", loss_value, self.iteration + 1)?;
        let mut grads = loss.backward();
        let mut gradients = gradients_of(&mut grads, &self.policy.eps_net.parameters())?;
        let grad_norm = clip_grad_norm(&mut gradients, config.pretrain.grad_clip);
        ensure_finite("dsm/grad_norm", grad_norm, self.iteration + 1)?;
        self.optimizer
            .update(self.policy.eps_net.parameters_mut(), &gradients)?;
        if let Some(ema) = self.ema.as_mut() {
            ema.update(&self.policy.eps_net.parameters());
        }
        self.iteration += 1;
        Ok((loss_value, grad_norm))
    }

    /// The sampler used for evaluation and `dgym sample`: EMA weights when kept.
    pub fn sampler(&self) -> GaussianPolicy<D> {
        let mut sampler = self.policy.clone();
        if let Some(ema) = &self.ema {
            ema.copy_to(sampler.eps_net.parameters_mut());
        }
        sampler
    }

    /// Writes the whole state (weights, EMA, optimiser moments and step, RNG, iteration).
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut c = Checkpoint::new();
        c.put_model("policy", &self.policy);
        let names = self.policy.eps_net.parameter_names();
        if let Some(ema) = &self.ema {
            c.put_matrices("ema", &names, &ema.shadow.iter().collect::<Vec<_>>());
        }
        c.put_matrices(
            "pretrain_optim.moment1",
            &names,
            &self.optimizer.moment1.iter().collect::<Vec<_>>(),
        );
        c.put_matrices(
            "pretrain_optim.moment2",
            &names,
            &self.optimizer.moment2.iter().collect::<Vec<_>>(),
        );
        let meta = &mut c.metadata;
        meta.insert("phase".into(), "pretrain".into());
        meta.insert("iteration".into(), self.iteration.to_string());
        meta.insert(
            "pretrain_optim.step".into(),
            self.optimizer.step.to_string(),
        );
        meta.insert("rng".into(), rng_to_json(&self.rng)?);
        meta.insert("dim".into(), self.policy.dim().to_string());
        meta.insert("n_steps".into(), self.policy.n_steps().to_string());
        meta.insert(
            "sampler_weights".into(),
            if self.ema.is_some() { "ema" } else { "current" }.into(),
        );
        Ok(c)
    }

    /// Restores a state written by [`PretrainState::to_checkpoint`].
    pub fn restore(&mut self, c: &Checkpoint, path: &Path) -> Result<()> {
        c.load_model(path, "policy", &mut self.policy)?;
        let names = self.policy.eps_net.parameter_names();
        if let Some(ema) = self.ema.as_mut() {
            c.load_matrices(path, "ema", &names, ema.shadow.iter_mut().collect())?;
        }
        c.load_matrices(
            path,
            "pretrain_optim.moment1",
            &names,
            self.optimizer.moment1.iter_mut().collect(),
        )?;
        c.load_matrices(
            path,
            "pretrain_optim.moment2",
            &names,
            self.optimizer.moment2.iter_mut().collect(),
        )?;
        self.optimizer.step = c.meta_parse(path, "pretrain_optim.step")?;
        self.iteration = c.meta_parse(path, "iteration")?;
        self.rng = rng_from_json(c.meta(path, "rng")?)?;
        Ok(())
    }
}

/// Options of one `dgym train` invocation.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Stop after this many iterations of this invocation (across phases) without a final
    /// checkpoint or summary, exactly as if the process had been killed (to exercise
    /// `--resume`).
    pub stop_after: Option<u64>,
}

/// What a finished (or deliberately stopped) invocation reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Whether `summary.json` was written.
    pub finished: bool,
}

/// Picks `runs/<stem>`, or `runs/<stem>-2`, ... when taken.
pub fn default_run_dir(config_path: Option<&Path>) -> PathBuf {
    let stem = config_path
        .and_then(|p| p.file_stem())
        .map_or_else(|| "run".to_string(), |s| s.to_string_lossy().to_string());
    let base = PathBuf::from("runs");
    let mut candidate = base.join(&stem);
    let mut k = 2;
    while candidate.exists() {
        candidate = base.join(format!("{stem}-{k}"));
        k += 1;
    }
    candidate
}

fn write_run_json(run: &RunDir, config: &TrainConfig, resumed_from: Option<u64>) -> Result<()> {
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let git_commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let mut invocations = match std::fs::read_to_string(run.root.join("run.json")) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("invocations").cloned())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    invocations.push(json!({
        "command_line": std::env::args().collect::<Vec<_>>(),
        "start_time_unix": started,
        "resumed_from_step": resumed_from,
    }));
    let value = json!({
        "crate_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit,
        "seed": config.run.seed,
        "device": if cfg!(feature = "cuda") { "cuda" } else { "cpu" },
        "build_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "invocations": invocations,
    });
    let path = run.root.join("run.json");
    std::fs::write(&path, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// A training phase the run loop can drive: one iteration at a time, checkpointable.
pub(crate) trait PhaseState<D: Backend> {
    /// `pretrain` or `finetune` (the `phase` column of metrics.csv).
    fn phase(&self) -> &'static str;
    /// Iterations of this phase done.
    fn done(&self) -> u64;
    /// The global step (one counter across phases).
    fn global_step(&self) -> u64;
    /// One iteration; returns the scalars to log. On error the state must be unchanged
    /// when [`PhaseState::unchanged_on_error`] is true.
    fn advance(
        &mut self,
        dataset: &Arc<dyn Dataset>,
        config: &TrainConfig,
    ) -> Result<Vec<(String, f64)>>;
    /// Whether a failed [`PhaseState::advance`] leaves the state as it was.
    fn unchanged_on_error(&self) -> bool;
    /// The whole state.
    fn checkpoint(&self) -> Result<Checkpoint>;
    /// The sampler as it would be evaluated now.
    fn sampler(&self) -> Box<dyn Sampler<D> + '_>;
}

impl<D: Backend> PhaseState<D> for PretrainState<D> {
    fn phase(&self) -> &'static str {
        "pretrain"
    }
    fn done(&self) -> u64 {
        self.iteration
    }
    fn global_step(&self) -> u64 {
        self.iteration
    }
    fn advance(
        &mut self,
        dataset: &Arc<dyn Dataset>,
        config: &TrainConfig,
    ) -> Result<Vec<(String, f64)>> {
        let (loss, grad_norm) = self.step(dataset.as_ref(), config)?;
        let mut scalars = vec![
            ("dsm/loss".to_string(), loss),
            ("dsm/grad_norm".to_string(), grad_norm),
        ];
        for (t, sigma) in self.policy.sigmas().iter().enumerate() {
            scalars.push((format!("policy/sigma_{}", t + 1), *sigma as f64));
        }
        Ok(scalars)
    }
    fn unchanged_on_error(&self) -> bool {
        // `step` checks the loss and gradient before any update.
        true
    }
    fn checkpoint(&self) -> Result<Checkpoint> {
        self.to_checkpoint()
    }
    fn sampler(&self) -> Box<dyn Sampler<D> + '_> {
        // Inherent methods of the same name: call them explicitly.
        Box::new(Self::sampler(self))
    }
}

impl<D: Backend> PhaseState<D> for FinetuneState<D> {
    fn phase(&self) -> &'static str {
        "finetune"
    }
    fn done(&self) -> u64 {
        self.iteration
    }
    fn global_step(&self) -> u64 {
        self.step()
    }
    fn advance(
        &mut self,
        dataset: &Arc<dyn Dataset>,
        config: &TrainConfig,
    ) -> Result<Vec<(String, f64)>> {
        self.iterate(dataset, config)
    }
    fn unchanged_on_error(&self) -> bool {
        // The reward may already have been updated when the policy update fails.
        false
    }
    fn checkpoint(&self) -> Result<Checkpoint> {
        self.to_checkpoint()
    }
    fn sampler(&self) -> Box<dyn Sampler<D> + '_> {
        // Inherent methods of the same name: call them explicitly.
        Box::new(Self::sampler(self))
    }
}

pub(crate) fn save_checkpoint(
    run: &RunDir,
    checkpoint: &Checkpoint,
    numbered_step: Option<u64>,
) -> Result<()> {
    if let Some(step) = numbered_step {
        checkpoint.save(
            &run.checkpoints()
                .join(format!("step_{step:07}.safetensors")),
        )?;
    }
    checkpoint.save(&run.last_checkpoint())?;
    Ok(())
}

/// How a phase loop ended.
pub(crate) enum LoopEnd {
    /// Every iteration of the phase is done.
    Finished { wall_time_s: f64, iterations: u64 },
    /// `--stop-after` was reached.
    Stopped,
}

/// How long a phase runs and how often it logs and checkpoints.
pub(crate) struct Cadence {
    pub(crate) total: u64,
    pub(crate) log_every: u64,
    pub(crate) checkpoint_every: u64,
}

/// Drives one phase to its end (or to the `--stop-after` budget), logging and
/// checkpointing on the global step.
pub(crate) fn drive<D: Backend>(
    run: &RunDir,
    config: &TrainConfig,
    dataset: &Arc<dyn Dataset>,
    state: &mut dyn PhaseState<D>,
    cadence: Cadence,
    logger: &mut MultiLogger,
    budget: &mut Option<u64>,
) -> Result<LoopEnd> {
    let first = state.done();
    let mut progress = Progress::new(state.phase(), cadence.total, first, config.run.quiet);
    let started = Instant::now();
    while state.done() < cadence.total {
        if *budget == Some(0) {
            logger.flush()?;
            return Ok(LoopEnd::Stopped);
        }
        if let Some(left) = budget.as_mut() {
            *left -= 1;
        }
        let mut scalars = match state.advance(dataset, config) {
            Ok(scalars) => scalars,
            Err(error) => {
                logger.flush()?;
                let note = if state.unchanged_on_error() {
                    save_checkpoint(run, &state.checkpoint()?, None)?;
                    format!(
                        "the last good state (step {}) is in {}",
                        state.global_step(),
                        run.last_checkpoint().display()
                    )
                } else {
                    let step = Checkpoint::load(&run.last_checkpoint())
                        .ok()
                        .and_then(|c| c.metadata.get("iteration").cloned())
                        .unwrap_or_else(|| "unknown".to_string());
                    format!(
                        "the last good checkpoint is {} (step {step})",
                        run.last_checkpoint().display()
                    )
                };
                return Err(error.context(format!("{} stopped; {note}", state.phase())));
            }
        };
        let done = state.done();
        let step = state.global_step();
        let eval_every = config.eval.eval_every;
        let snapshot = eval_every > 0 && step.is_multiple_of(eval_every);
        if snapshot {
            let snapshot =
                crate::eval::training_snapshot(&*state.sampler(), dataset.as_ref(), config, step)?;
            scalars.extend(snapshot.scalars);
            logger.log_image(step, "samples", &snapshot.image, snapshot.image_size)?;
        }
        if snapshot || done.is_multiple_of(cadence.log_every) || done == cadence.total {
            let elapsed = started.elapsed().as_secs_f64();
            scalars.push(("time/elapsed_s".to_string(), elapsed));
            scalars.push((
                "time/it_per_s".to_string(),
                (done - first) as f64 / elapsed.max(1e-9),
            ));
            logger.log_scalars(step, state.phase(), &scalars)?;
        }
        if done.is_multiple_of(cadence.checkpoint_every) || done == cadence.total {
            save_checkpoint(run, &state.checkpoint()?, Some(step))?;
        }
        let headline = scalars
            .iter()
            .find(|(name, _)| {
                ["dsm/loss", "reward/return_mean", "ddaebm/D_gap"].contains(&name.as_str())
            })
            .map_or_else(String::new, |(name, value)| format!("{name} {value:.4}"));
        progress.update(done, &headline);
    }
    progress.finish();
    Ok(LoopEnd::Finished {
        wall_time_s: started.elapsed().as_secs_f64(),
        iterations: state.done() - first,
    })
}

/// Where a run (re)starts.
enum Start<D: Backend> {
    Pretrain(PretrainState<D>),
    Finetune(FinetuneState<D>),
    Ddaebm(DdaebmState<D>),
}

/// Loads the sampler of `init_from`, checking it fits this config.
fn sampler_from_run<D: Backend>(
    dev: &D,
    config: &TrainConfig,
    dim: usize,
) -> Result<GaussianPolicy<D>> {
    let other = Path::new(&config.finetune.init_from);
    let other_config = RunDir::new(other)
        .load_config()
        .with_context(|| "key finetune.init_from")?;
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
    let loaded = load_sampler(dev, other).with_context(|| "key finetune.init_from")?;
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
    let mut policy = PretrainState::new(dev, config, dim)?.policy;
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

/// Starts a new run of `config` in `out`.
pub fn train_new<D: Backend>(
    dev: &D,
    config: TrainConfig,
    out: &Path,
    options: &TrainOptions,
) -> Result<TrainOutcome> {
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: choose another --out, or continue it with --resume {}",
            out.display(),
            out.display()
        );
    }
    // Everything that can fail on bad input is checked before the directory is created,
    // so a failed start leaves nothing behind to block the corrected command.
    let dataset = build_dataset(&config.data)?;
    let start = if config.run.method == crate::ddaebm::PHASE {
        Start::Ddaebm(DdaebmState::new(dev, &config, dataset.dim())?)
    } else if config.finetune.init_from.is_empty() {
        Start::Pretrain(PretrainState::new(dev, &config, dataset.dim())?)
    } else {
        if config.finetune.iterations == 0 {
            bail!("key finetune.init_from: starting from another run only makes sense with finetune.iterations > 0");
        }
        let policy = sampler_from_run(dev, &config, dataset.dim())?;
        let start_eval = evaluate(&policy, dataset.as_ref(), &config)?;
        Start::Finetune(FinetuneState::new(
            dev, &config, &dataset, policy, 0, start_eval,
        )?)
    };
    let run = RunDir::new(out);
    std::fs::create_dir_all(run.checkpoints())
        .with_context(|| format!("creating {}", run.checkpoints().display()))?;
    std::fs::write(run.config(), denoise_gym::config::to_toml(&config)?)
        .with_context(|| format!("writing {}", run.config().display()))?;
    write_run_json(&run, &config, None)?;
    let csv = CsvLogger::create(&run.metrics())?;
    run_phases(dev, run, config, dataset, start, csv, options)
}

/// Continues an interrupted run from its last checkpoint.
pub fn train_resume<D: Backend>(
    dev: &D,
    run_dir: &Path,
    options: &TrainOptions,
) -> Result<TrainOutcome> {
    let run = RunDir::new(run_dir);
    let config = run.load_config()?;
    if run.summary().exists() {
        bail!(
            "run {} already finished ({} exists); nothing to resume",
            run.root.display(),
            run.summary().display()
        );
    }
    let checkpoint = run.load_last_checkpoint()?;
    let path = run.last_checkpoint();
    let dataset = build_dataset(&config.data)?;
    let start = match checkpoint.meta(&path, "phase")? {
        "pretrain" => {
            let mut state = PretrainState::new(dev, &config, dataset.dim())?;
            state.restore(&checkpoint, &path)?;
            Start::Pretrain(state)
        }
        "finetune" => {
            // A skeleton of the right shapes; every value is overwritten by the checkpoint.
            let skeleton = PretrainState::new(dev, &config, dataset.dim())?.policy;
            let mut state = FinetuneState::new(dev, &config, &dataset, skeleton, 0, json!(null))?;
            state.restore(&checkpoint, &path)?;
            Start::Finetune(state)
        }
        crate::ddaebm::PHASE => {
            let mut state = DdaebmState::new(dev, &config, dataset.dim())?;
            state.restore(&checkpoint, &path)?;
            Start::Ddaebm(state)
        }
        other => bail!("checkpoint {}: unknown phase {other:?}", path.display()),
    };
    let step: u64 = checkpoint.meta_parse(&path, "iteration")?;
    write_run_json(&run, &config, Some(step))?;
    let csv = CsvLogger::resume(&run.metrics(), step)?;
    run_phases(dev, run, config, dataset, start, csv, options)
}

fn run_phases<D: Backend>(
    dev: &D,
    run: RunDir,
    config: TrainConfig,
    dataset: Arc<dyn Dataset>,
    start: Start<D>,
    csv: CsvLogger,
    options: &TrainOptions,
) -> Result<TrainOutcome> {
    let mut logger = MultiLogger::new();
    logger.push(Box::new(csv));
    logger.push(Box::new(TensorBoardLogger::create(&run.root)?));
    let mut budget = options.stop_after;
    let stopped = TrainOutcome {
        run_dir: run.root.clone(),
        finished: false,
    };
    let mut summary = json!({});
    let mut finetune = match start {
        Start::Ddaebm(state) => {
            return crate::ddaebm::run_ddaebm(run, &config, &dataset, state, logger, &mut budget)
        }
        Start::Finetune(state) => state,
        Start::Pretrain(mut state) => {
            let cadence = Cadence {
                total: config.pretrain.iterations,
                log_every: config.pretrain.log_every,
                checkpoint_every: config.pretrain.checkpoint_every,
            };
            let LoopEnd::Finished {
                wall_time_s,
                iterations,
            } = drive(
                &run,
                &config,
                &dataset,
                &mut state,
                cadence,
                &mut logger,
                &mut budget,
            )?
            else {
                return Ok(stopped);
            };
            if !run.last_checkpoint().exists() {
                save_checkpoint(&run, &state.checkpoint()?, None)?;
            }
            summary["pretrain"] = json!({
                "iterations": state.iteration,
                "iterations_this_invocation": iterations,
                "wall_time_s": wall_time_s,
                "dsm_steps_per_s": iterations as f64 / wall_time_s.max(1e-9),
            });
            let sampler = state.sampler();
            let pretrained_eval = evaluate(&sampler, dataset.as_ref(), &config)?;
            if config.finetune.iterations == 0 {
                log_eval(&mut logger, state.iteration, &pretrained_eval)?;
                summary["phase"] = json!("pretrain");
                summary["eval"] = pretrained_eval;
                return finish(run, logger, summary);
            }
            let finetune = FinetuneState::new(
                dev,
                &config,
                &dataset,
                sampler,
                state.iteration,
                pretrained_eval,
            )?;
            // The hand-over is a checkpoint of its own: a run killed now resumes in fine-tuning.
            save_checkpoint(&run, &finetune.to_checkpoint()?, None)?;
            finetune
        }
    };
    let cadence = Cadence {
        total: config.finetune.iterations,
        log_every: config.finetune.log_every,
        checkpoint_every: config.finetune.checkpoint_every,
    };
    let LoopEnd::Finished {
        wall_time_s,
        iterations,
    } = drive(
        &run,
        &config,
        &dataset,
        &mut finetune,
        cadence,
        &mut logger,
        &mut budget,
    )?
    else {
        return Ok(stopped);
    };
    let ebm = finetune.calibrate(&dataset, &config)?;
    save_checkpoint(&run, &finetune.to_checkpoint()?, None)?;
    let final_eval = evaluate(&finetune.sampler(), dataset.as_ref(), &config)?;
    log_eval(&mut logger, finetune.step(), &final_eval)?;
    summary["phase"] = json!("finetune");
    summary["finetune"] = json!({
        "iterations": finetune.iteration,
        "iterations_this_invocation": iterations,
        "wall_time_s": wall_time_s,
        "iterations_per_s": iterations as f64 / wall_time_s.max(1e-9),
        "agent": config.finetune.agent,
        "reward": config.finetune.reward,
        "baseline": config.agent.baseline,
    });
    summary["eval_start"] = finetune.start_eval.clone();
    summary["eval"] = final_eval;
    if let Some(ebm) = ebm {
        summary["ebm"] = ebm;
    }
    finish(run, logger, summary)
}

pub(crate) fn log_eval(
    logger: &mut MultiLogger,
    step: u64,
    eval: &serde_json::Value,
) -> Result<()> {
    let scalars: Vec<(String, f64)> = ["swd", "mmd2", "mmd2_median"]
        .iter()
        .filter_map(|k| eval[*k].as_f64().map(|v| (format!("eval/{k}"), v)))
        .collect();
    logger.log_scalars(step, "eval", &scalars)?;
    Ok(())
}

/// Flushes every log and writes `summary.json` last.
pub(crate) fn finish(
    run: RunDir,
    mut logger: MultiLogger,
    summary: serde_json::Value,
) -> Result<TrainOutcome> {
    logger.flush()?;
    drop(logger);
    let path = run.summary();
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(TrainOutcome {
        run_dir: run.root,
        finished: true,
    })
}

/// The sample evaluation written to `summary.json` (see [`crate::eval`] for the keys).
pub fn evaluate<D: Backend>(
    sampler: &dyn Sampler<D>,
    dataset: &dyn Dataset,
    config: &TrainConfig,
) -> Result<serde_json::Value> {
    let (metrics, _, _) = crate::eval::evaluate_sampler(
        sampler,
        dataset,
        config.eval.n_samples,
        config.eval.swd_directions,
        config.run.seed,
    )?;
    Ok(crate::eval::metrics_to_json(&metrics))
}

/// Loads the sampler of a run (EMA weights when the run kept them).
pub fn load_sampler<D: Backend>(dev: &D, run_dir: &Path) -> Result<GaussianPolicy<D>> {
    let run = RunDir::new(run_dir);
    let config = run.load_config()?;
    let checkpoint = run.load_last_checkpoint()?;
    let path = run.last_checkpoint();
    let dim: usize = checkpoint.meta_parse(&path, "dim")?;
    let schedule = config.schedule()?;
    let mut init_rng = seeded(config.run.seed, STREAM_INIT);
    let mut policy = GaussianPolicy::new(dev, config.policy_spec(dim), schedule, &mut init_rng)?;
    let prefix = checkpoint
        .metadata
        .get("sampler_prefix")
        .map_or("policy", String::as_str);
    checkpoint.load_model(&path, prefix, &mut policy)?;
    // Frozen early steps (ft_steps) and σ floors of a fine-tuned sampler, when it has them.
    policy.load_step_options(&checkpoint, &path, prefix)?;
    if checkpoint.meta(&path, "sampler_weights")? == "ema" {
        let ema_prefix = checkpoint
            .metadata
            .get("sampler_ema_prefix")
            .map_or("ema", String::as_str);
        let names = policy.eps_net.parameter_names();
        checkpoint.load_matrices(&path, ema_prefix, &names, policy.eps_net.parameters_mut())?;
    }
    Ok(policy)
}

/// Loads the final sampler of any run: the Gaussian policy of a diffusion run, the
/// latent generator of a DDAEBM run.
pub fn load_any_sampler<D: Backend>(dev: &D, run_dir: &Path) -> Result<Box<dyn Sampler<D>>> {
    let config = RunDir::new(run_dir).load_config()?;
    if config.run.method == crate::ddaebm::PHASE {
        Ok(Box::new(crate::ddaebm::load_generator(dev, run_dir)?))
    } else {
        Ok(Box::new(load_sampler(dev, run_dir)?))
    }
}

/// Writes `n` samples of a run's sampler to a CSV file with header `x0,x1,…`.
pub fn write_samples<D: Backend>(
    dev: &D,
    run_dir: &Path,
    n: usize,
    seed: u64,
    out: &Path,
) -> Result<()> {
    if n == 0 {
        return Err(anyhow!("--n must be at least 1"));
    }
    let policy = load_any_sampler(dev, run_dir)?;
    let mut rng = seeded(seed, STREAM_EVAL);
    let samples = policy.sample(n, &mut rng).as_vec();
    let dim = policy.dim();
    let mut writer =
        csv::Writer::from_path(out).with_context(|| format!("creating {}", out.display()))?;
    writer.write_record((0..dim).map(|i| format!("x{i}")))?;
    for row in samples.chunks(dim) {
        writer.write_record(row.iter().map(|v| v.to_string()))?;
    }
    writer
        .flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
