//! `dgym train`: a config's phases on the library's [`Trainer`]. DSM pretraining, then
//! (when `finetune.iterations > 0`) the IRL phase; or DDAEBM (`run.method = "ddaebm"`).
//! Evaluation snapshots and the start-of-fine-tuning metrics reach the run through the
//! trainer's callbacks.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};
use denoise_gym::agent::Stats;
use denoise_gym::checkpoint::Checkpoint;
use denoise_gym::dsm::DsmPhase;
use denoise_gym::log::Logger;
use denoise_gym::sampler::Sampler;
use denoise_gym::tensor::Backend;
use denoise_gym::train::{Cadence, Callback, Phase, PhaseEnd, RunDir, Trainer, TrainerOptions};
use denoise_gym_agents::ddaebm::DdaebmPhase;
use denoise_gym_envs::Dataset;
use serde_json::json;

use crate::build::{
    build_dataset, build_policy, calibrate_energy, calibrate_finetune, data_batches, ddaebm_phase,
    dsm_phase, finetune_phase, load_run_config, sampler_from_run, FinetunePhase,
};
use crate::config::TrainConfig;
use crate::eval::{evaluate, log_eval, training_snapshot};
use crate::registry::Registry;

/// Options of one `dgym train` invocation.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Stop after this many iterations of this invocation (across phases) without a final
    /// checkpoint or summary, exactly as if the process had been killed (to exercise
    /// `--resume`).
    pub stop_after: Option<u64>,
    /// Raised by a SIGTERM or SIGINT handler: checkpoint and stop between iterations.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// What a finished (or deliberately stopped) invocation reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Whether `summary.json` was written.
    pub finished: bool,
    /// The step of the checkpoint written when [`TrainOptions::interrupt`] stopped it.
    pub interrupted_at: Option<u64>,
}

impl TrainOutcome {
    fn unfinished(run_dir: &Path, end: PhaseEnd) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            finished: false,
            interrupted_at: match end {
                PhaseEnd::Interrupted { step } => Some(step),
                _ => None,
            },
        }
    }
}

/// The checkpoint metadata key of the fine-tuning start's metrics.
const START_EVAL: &str = "start_eval";

/// In-training evaluation: `eval/...` scalars and a scatter of samples over data.
struct Snapshots {
    dataset: Arc<dyn Dataset>,
    config: TrainConfig,
}

impl<D: Backend> Callback<D> for Snapshots {
    fn on_eval(
        &mut self,
        step: u64,
        sampler: &dyn Sampler<D>,
        scalars: &mut Stats,
        logger: &mut dyn Logger,
    ) -> denoise_gym::Result<()> {
        let snapshot = training_snapshot(sampler, self.dataset.as_ref(), &self.config, step)
            .map_err(|e| denoise_gym::Error::Other(e.into()))?;
        scalars.extend(snapshot.scalars);
        logger.log_image(step, "samples", &snapshot.image, snapshot.image_size)
    }
}

/// Keeps the metrics of the sampler fine-tuning started from in every fine-tuning
/// checkpoint, for `summary.json`'s `eval_start` after a resume.
struct StartEval(String);

impl<D: Backend> Callback<D> for StartEval {
    fn on_checkpoint(
        &mut self,
        _step: u64,
        phase: &str,
        checkpoint: &mut Checkpoint,
    ) -> denoise_gym::Result<()> {
        if phase == denoise_gym::irl::PHASE {
            checkpoint
                .metadata
                .insert(START_EVAL.into(), self.0.clone());
        }
        Ok(())
    }
}

/// Where an invocation starts.
enum Start<D: Backend> {
    Pretrain(DsmPhase<D>),
    Finetune(FinetunePhase<D>, serde_json::Value),
    Ddaebm(DdaebmPhase<D>),
}

fn trainer_options(config: &TrainConfig, options: &TrainOptions) -> TrainerOptions {
    TrainerOptions {
        stop_after: options.stop_after,
        quiet: config.run.quiet,
        eval_every: config.eval.eval_every,
        allow_non_finite: false,
        interrupt: options.interrupt.clone(),
    }
}

/// Starts a new run of `config` in `out`.
pub fn train_new<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    config: TrainConfig,
    out: &Path,
    options: &TrainOptions,
) -> Result<TrainOutcome> {
    // Everything that can fail on bad input is checked before the directory is created,
    // so a failed start leaves nothing behind to block the corrected command.
    RunDir::new(out).check_vacant()?;
    let dataset = build_dataset(registry, &config)?;
    let start = if config.run.method == denoise_gym_agents::ddaebm::PHASE {
        Start::Ddaebm(ddaebm_phase(
            dev,
            &config,
            dataset.dim(),
            data_batches(dev, &dataset),
        )?)
    } else if config.finetune.init_from.is_empty() {
        let dsm = dsm_phase(dev, &config, &dataset)?;
        if config.finetune.iterations > 0 {
            // Fine-tuning's components are built now, on an untrained policy, and
            // dropped: a bad agent, reward or baseline setting fails before pretraining,
            // not after it (each component draws from its own RNG stream, so this moves
            // no number).
            finetune_phase(dev, registry, &config, &dataset, dsm.sampler(), 0)?;
        }
        Start::Pretrain(dsm)
    } else {
        if config.finetune.iterations == 0 {
            bail!("key finetune.init_from: starting from another run only makes sense with finetune.iterations > 0");
        }
        let policy = sampler_from_run(dev, registry.catalog(), &config, dataset.dim())?;
        let start_eval = evaluate(&policy, dataset.as_ref(), &config)?;
        Start::Finetune(
            finetune_phase(dev, registry, &config, &dataset, policy, 0)?,
            start_eval,
        )
    };
    let text = denoise_gym::config::to_toml(&config)?;
    let mut trainer = Trainer::create(
        out,
        &text,
        config.run.seed,
        trainer_options(&config, options),
    )?;
    trainer.log_hparams(&config.hparams(), &text)?;
    run_phases(dev, registry, trainer, config, dataset, start)
}

/// Continues an interrupted run from its last checkpoint.
pub fn train_resume<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    run_dir: &Path,
    options: &TrainOptions,
) -> Result<TrainOutcome> {
    let config = load_run_config(&RunDir::new(run_dir), registry.catalog())?;
    let dataset = build_dataset(registry, &config)?;
    let trainer = Trainer::resume(run_dir, config.run.seed, trainer_options(&config, options))?;
    let Some(resumed) = trainer.resumed() else {
        bail!("internal: a resumed trainer without a checkpoint");
    };
    let start = match resumed.phase.as_str() {
        denoise_gym::dsm::PHASE => Start::Pretrain(dsm_phase(dev, &config, &dataset)?),
        denoise_gym::irl::PHASE => {
            // A skeleton of the right shapes; every value is overwritten by the checkpoint.
            let skeleton = build_policy(dev, &config, dataset.dim())?;
            let start_eval =
                serde_json::from_str(resumed.checkpoint.meta(&resumed.path, START_EVAL)?)?;
            Start::Finetune(
                finetune_phase(dev, registry, &config, &dataset, skeleton, 0)?,
                start_eval,
            )
        }
        denoise_gym_agents::ddaebm::PHASE => Start::Ddaebm(ddaebm_phase(
            dev,
            &config,
            dataset.dim(),
            data_batches(dev, &dataset),
        )?),
        other => bail!(
            "checkpoint {}: unknown phase {other:?}",
            resumed.path.display()
        ),
    };
    run_phases(dev, registry, trainer, config, dataset, start)
}

fn run_phases<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    mut trainer: Trainer<D>,
    config: TrainConfig,
    dataset: Arc<dyn Dataset>,
    start: Start<D>,
) -> Result<TrainOutcome> {
    trainer.add_callback(Box::new(Snapshots {
        dataset: dataset.clone(),
        config: config.clone(),
    }));
    let mut summary = json!({});
    let (mut finetune, start_eval) = match start {
        Start::Ddaebm(phase) => return run_ddaebm(trainer, &config, &dataset, phase),
        Start::Finetune(phase, start_eval) => {
            trainer.add_callback(Box::new(StartEval(start_eval.to_string())));
            (phase, start_eval)
        }
        Start::Pretrain(mut dsm) => {
            let p = &config.pretrain;
            let cadence = Cadence::new(p.iterations, p.log_every, p.checkpoint_every);
            let (wall_time_s, iterations) = match run_to_end(&mut trainer, &mut dsm, cadence)? {
                Ok(ran) => ran,
                Err(unfinished) => return Ok(unfinished),
            };
            if !trainer.run_dir().last_checkpoint().exists() {
                trainer.save_checkpoint(&dsm, false)?;
            }
            summary["pretrain"] = json!({
                "iterations": dsm.iteration,
                "iterations_this_invocation": iterations,
                "wall_time_s": wall_time_s,
                "dsm_steps_per_s": iterations as f64 / wall_time_s.max(1e-9),
            });
            let sampler = dsm.sampler();
            let pretrained_eval = evaluate(&sampler, dataset.as_ref(), &config)?;
            if config.finetune.iterations == 0 {
                log_eval(trainer.logger(), dsm.iteration, &pretrained_eval)?;
                summary["phase"] = json!("pretrain");
                summary["eval"] = pretrained_eval;
                return finish(trainer, summary);
            }
            let finetune =
                finetune_phase(dev, registry, &config, &dataset, sampler, dsm.iteration)?;
            trainer.add_callback(Box::new(StartEval(pretrained_eval.to_string())));
            // The hand-over is a checkpoint of its own: a run killed now resumes in fine-tuning.
            trainer.save_checkpoint(&finetune, false)?;
            (finetune, pretrained_eval)
        }
    };
    let f = &config.finetune;
    let cadence = Cadence::new(f.iterations, f.log_every, f.checkpoint_every);
    let (wall_time_s, iterations) = match run_to_end(&mut trainer, &mut finetune, cadence)? {
        Ok(ran) => ran,
        Err(unfinished) => return Ok(unfinished),
    };
    let ebm = calibrate_finetune(&mut finetune, &dataset, &config)?;
    trainer.save_checkpoint(&finetune, false)?;
    let final_eval = evaluate(&finetune.sampler(), dataset.as_ref(), &config)?;
    let step = finetune.step_offset + finetune.iteration;
    log_eval(trainer.logger(), step, &final_eval)?;
    summary["phase"] = json!("finetune");
    summary["finetune"] = json!({
        "iterations": finetune.iteration,
        "iterations_this_invocation": iterations,
        "wall_time_s": wall_time_s,
        "iterations_per_s": iterations as f64 / wall_time_s.max(1e-9),
        "agent": config.finetune.agent,
        "reward": config.finetune.reward,
        "baseline": config.finetune.baseline,
    });
    summary["eval_start"] = start_eval;
    summary["eval"] = final_eval;
    if let Some(ebm) = ebm {
        summary["ebm"] = ebm;
    }
    finish(trainer, summary)
}

/// Trains (or continues) a DDAEBM run to its end, then fits `T_E` of `-D(x, 0)`,
/// evaluates the generator and writes `summary.json`.
fn run_ddaebm<D: Backend>(
    mut trainer: Trainer<D>,
    config: &TrainConfig,
    dataset: &Arc<dyn Dataset>,
    mut phase: DdaebmPhase<D>,
) -> Result<TrainOutcome> {
    let g = &config.ddaebm;
    let cadence = Cadence::new(g.iterations, g.log_every, g.checkpoint_every);
    let (wall_time_s, iterations) = match run_to_end(&mut trainer, &mut phase, cadence)? {
        Ok(ran) => ran,
        Err(unfinished) => return Ok(unfinished),
    };
    let mut energy = phase.model.energy.energy_at_zero();
    let ebm = calibrate_energy(&mut energy, dataset, &config.reward, config.run.seed)?;
    phase.temperature = energy.temperature;
    trainer.save_checkpoint(&phase, false)?;
    let final_eval = evaluate(&phase.model.generator, dataset.as_ref(), config)?;
    log_eval(trainer.logger(), phase.iteration, &final_eval)?;
    let mut summary = json!({
        "phase": denoise_gym_agents::ddaebm::PHASE,
        "ddaebm": {
            "iterations": phase.iteration,
            "iterations_this_invocation": iterations,
            "wall_time_s": wall_time_s,
            "iterations_per_s": iterations as f64 / wall_time_s.max(1e-9),
        },
        "eval": final_eval,
    });
    if let Some(ebm) = ebm {
        summary["ebm"] = ebm;
    }
    finish(trainer, summary)
}

/// Restores `phase` when the run resumes in it and runs it to its end: its wall time and
/// iterations, or the outcome of an invocation that stopped before the end.
fn run_to_end<D: Backend>(
    trainer: &mut Trainer<D>,
    phase: &mut dyn Phase<D>,
    cadence: Cadence,
) -> Result<std::result::Result<(f64, u64), TrainOutcome>> {
    trainer.restore(phase)?;
    Ok(match trainer.run(phase, cadence)? {
        PhaseEnd::Finished {
            wall_time_s,
            iterations,
        } => Ok((wall_time_s, iterations)),
        end => Err(TrainOutcome::unfinished(&trainer.run_dir().root, end)),
    })
}

fn finish<D: Backend>(trainer: Trainer<D>, summary: serde_json::Value) -> Result<TrainOutcome> {
    Ok(TrainOutcome {
        run_dir: trainer.finish(summary)?,
        finished: true,
        interrupted_at: None,
    })
}
