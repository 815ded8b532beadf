//! The DDAEBM run (`run.method = "ddaebm"`, SPEC §5): one phase that trains the per-step
//! energy, the latent generator and the encoder from scratch, driven by the same loop,
//! logs and checkpoints as the diffusion phases; at the end the `t = 0` energy `-D(x, 0)`
//! gets its temperature `T_E` (SPEC §3) and the generator is evaluated.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::ebm::EnergyModel;
use denoise_gym::log::MultiLogger;
use denoise_gym::rng::{rng_from_json, rng_to_json, seeded, ProjectRng};
use denoise_gym::sampler::Sampler;
use denoise_gym::tensor::{matrix, Backend};
use denoise_gym_agents::ddaebm::{Ddaebm, LatentGenerator};
use denoise_gym_envs::Dataset;
use serde_json::json;

use crate::config::TrainConfig;
use crate::finetune::calibrate_energy;
use crate::run::{
    drive, evaluate, finish, log_eval, save_checkpoint, Cadence, LoopEnd, PhaseState, RunDir,
    TrainOutcome,
};

/// RNG streams of a DDAEBM run (initialisation, training), distinct from the others.
const STREAM_DDAEBM_INIT: u64 = 21;
const STREAM_DDAEBM: u64 = 22;

/// The `phase` of a DDAEBM checkpoint and of its rows in metrics.csv.
pub const PHASE: &str = "ddaebm";

/// Everything a DDAEBM run carries from one iteration to the next.
pub struct DdaebmState<D: Backend> {
    /// Networks and optimisers.
    pub model: Ddaebm<D>,
    /// The training RNG (data, t, every noise).
    pub rng: ProjectRng,
    /// Iterations done.
    pub iteration: u64,
    /// `T_E` of the `t = 0` energy (1 until fitted at the end).
    pub temperature: f64,
}

impl<D: Backend> DdaebmState<D> {
    /// A fresh state for `config` on data of dimension `dim`.
    pub fn new(dev: &D, config: &TrainConfig, dim: usize) -> Result<Self> {
        let mut init_rng = seeded(config.run.seed, STREAM_DDAEBM_INIT);
        let model = Ddaebm::new(
            dev,
            &config.ddaebm_spec(dim),
            config.schedule()?,
            config.ddaebm_config(),
            &mut init_rng,
        )?;
        Ok(Self {
            model,
            rng: seeded(config.run.seed, STREAM_DDAEBM),
            iteration: 0,
            temperature: 1.0,
        })
    }

    /// `-D(x, 0)` with its fitted temperature.
    pub fn energy_model(&self) -> EnergyModel<D> {
        let mut model = self.model.energy.energy_at_zero();
        model.temperature = self.temperature;
        model
    }

    /// The whole state (weights, both optimisers, RNG, iteration, `T_E`).
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut c = Checkpoint::new();
        self.model.save(&mut c, "ddaebm");
        let meta = &mut c.metadata;
        meta.insert("phase".into(), PHASE.into());
        meta.insert("iteration".into(), self.iteration.to_string());
        meta.insert("rng".into(), rng_to_json(&self.rng)?);
        meta.insert("dim".into(), self.model.dim().to_string());
        meta.insert(
            "n_steps".into(),
            self.model.schedule().n_steps().to_string(),
        );
        // `dgym eval` draws the density figures of any run whose reward kind is an EBM.
        meta.insert("reward_kind".into(), "ebm".into());
        meta.insert("ddaebm.temperature".into(), self.temperature.to_string());
        Ok(c)
    }

    /// Restores [`DdaebmState::to_checkpoint`]'s output.
    pub fn restore(&mut self, c: &Checkpoint, path: &Path) -> Result<()> {
        self.model.load(c, path, "ddaebm")?;
        self.iteration = c.meta_parse(path, "iteration")?;
        self.rng = rng_from_json(c.meta(path, "rng")?)?;
        self.temperature = c.meta_parse(path, "ddaebm.temperature")?;
        Ok(())
    }
}

impl<D: Backend> PhaseState<D> for DdaebmState<D> {
    fn phase(&self) -> &'static str {
        PHASE
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
        let batch = config.ddaebm.batch_size;
        let dim = dataset.dim();
        let dev = self.model.energy.net.layers[0].weight.device().clone();
        let x0 = matrix(&dev, dataset.sample(batch, &mut self.rng), batch, dim);
        let next = self.iteration + 1;
        let stats = if config.ddaebm.perfect_generator_fakes {
            let x0_fake = matrix(&dev, dataset.sample(batch, &mut self.rng), batch, dim);
            self.model
                .train_step_with_perfect_fakes(&x0, &x0_fake, &mut self.rng, next)?
        } else {
            self.model.train_step(&x0, &mut self.rng, next)?
        };
        self.iteration = next;
        Ok(stats)
    }
    fn unchanged_on_error(&self) -> bool {
        // `train_step` checks both losses and gradients before it updates anything.
        true
    }
    fn checkpoint(&self) -> Result<Checkpoint> {
        self.to_checkpoint()
    }
    fn sampler(&self) -> Box<dyn Sampler<D> + '_> {
        Box::new(self.model.generator.clone())
    }
}

/// Trains (or continues) a DDAEBM run to its end, then fits `T_E`, evaluates and writes
/// `summary.json`.
pub fn run_ddaebm<D: Backend>(
    run: RunDir,
    config: &TrainConfig,
    dataset: &Arc<dyn Dataset>,
    mut state: DdaebmState<D>,
    mut logger: MultiLogger,
    budget: &mut Option<u64>,
) -> Result<TrainOutcome> {
    let cadence = Cadence {
        total: config.ddaebm.iterations,
        log_every: config.ddaebm.log_every,
        checkpoint_every: config.ddaebm.checkpoint_every,
    };
    let LoopEnd::Finished {
        wall_time_s,
        iterations,
    } = drive(
        &run,
        config,
        dataset,
        &mut state,
        cadence,
        &mut logger,
        budget,
    )?
    else {
        return Ok(TrainOutcome {
            run_dir: run.root.clone(),
            finished: false,
        });
    };
    let mut energy = state.model.energy.energy_at_zero();
    let ebm = calibrate_energy(&mut energy, dataset, config)?;
    state.temperature = energy.temperature;
    save_checkpoint(&run, &state.to_checkpoint()?, None)?;
    let final_eval = evaluate(&state.model.generator, dataset.as_ref(), config)?;
    log_eval(&mut logger, state.iteration, &final_eval)?;
    let mut summary = json!({
        "phase": PHASE,
        "ddaebm": {
            "iterations": state.iteration,
            "iterations_this_invocation": iterations,
            "wall_time_s": wall_time_s,
            "iterations_per_s": iterations as f64 / wall_time_s.max(1e-9),
        },
        "eval": final_eval,
    });
    if let Some(ebm) = ebm {
        summary["ebm"] = ebm;
    }
    finish(run, logger, summary)
}

/// Rebuilds the state of a DDAEBM run from its last checkpoint.
fn load_state<D: Backend>(dev: &D, run_dir: &Path) -> Result<DdaebmState<D>> {
    let run = RunDir::new(run_dir);
    let config = run.load_config()?;
    let checkpoint = run.load_last_checkpoint()?;
    let path = run.last_checkpoint();
    if checkpoint.meta(&path, "phase")? != PHASE {
        bail!("checkpoint {} is not a DDAEBM checkpoint", path.display());
    }
    let dim: usize = checkpoint.meta_parse(&path, "dim")?;
    let mut state = DdaebmState::new(dev, &config, dim)?;
    state.restore(&checkpoint, &path)?;
    Ok(state)
}

/// The generator of a DDAEBM run, as a sampler.
pub fn load_generator<D: Backend>(dev: &D, run_dir: &Path) -> Result<LatentGenerator<D>> {
    Ok(load_state(dev, run_dir)?.model.generator)
}

/// The `t = 0` energy `-D(x, 0)` of a DDAEBM run, with its fitted `T_E`.
pub fn load_energy_model<D: Backend>(dev: &D, run_dir: &Path) -> Result<EnergyModel<D>> {
    Ok(load_state(dev, run_dir)?.energy_model())
}
