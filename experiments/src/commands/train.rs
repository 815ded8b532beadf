//! `dgym train`: a config's phases on the library's [`Trainer`]. DSM pretraining, then
//! (when `finetune.iterations > 0`) the IRL phase; or DDAEBM (`run.method = "ddaebm"`).
//! Evaluation snapshots and the start-of-fine-tuning metrics reach the run through the
//! trainer's callbacks.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
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
use denoise_gym_envs::{Dataset, TabularDataset};
use serde_json::json;

use crate::build::{
    build_data, build_policy, calibrate_energy, calibrate_finetune, data_batches, ddaebm_phase,
    dsm_phase, finetune_phase, load_run_config, load_sampler_at, sampler_from_run, FinetunePhase,
    Selection, SELECTION_FILE,
};
use crate::config::TrainConfig;
use crate::data::spread_rows;
use crate::data::{write_data_stats, PreparedData, DATA_STATS_FILE};
use crate::eval::{evaluate, heldout_bandwidth, heldout_mmd, log_eval, training_snapshot};
use crate::registry::{Registry, RewardChoice};
use denoise_gym::rng::Stream;

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
    let data = build_data(registry, &config)?;
    let dataset = data.train.clone();
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
        let start_eval = evaluate(&policy, &data, &config)?;
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
    if let Some(splits) = &data.splits {
        write_data_stats(trainer.run_dir(), &splits.stats)?;
    }
    run_phases(dev, registry, trainer, config, data, start)
}

/// Continues an interrupted run from its last checkpoint.
pub fn train_resume<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    run_dir: &Path,
    options: &TrainOptions,
) -> Result<TrainOutcome> {
    let config = load_run_config(&RunDir::new(run_dir), registry.catalog())?;
    let data = build_data(registry, &config)?;
    let dataset = data.train.clone();
    let trainer = Trainer::resume(run_dir, config.run.seed, trainer_options(&config, options))?;
    if let Some(splits) = &data.splits {
        // A run killed between its creation and this file's first write.
        if !trainer.run_dir().root.join(DATA_STATS_FILE).exists() {
            write_data_stats(trainer.run_dir(), &splits.stats)?;
        }
    }
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
    run_phases(dev, registry, trainer, config, data, start)
}

fn run_phases<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    mut trainer: Trainer<D>,
    config: TrainConfig,
    data: PreparedData,
    start: Start<D>,
) -> Result<TrainOutcome> {
    let dataset = data.train.clone();
    let select_best = config.eval.select == "best";
    trainer.add_callback(Box::new(Snapshots {
        dataset: dataset.clone(),
        config: config.clone(),
    }));
    let mut summary = json!({});
    let (mut finetune, start_eval) = match start {
        Start::Ddaebm(phase) => return run_ddaebm(trainer, &config, &data, phase),
        Start::Finetune(phase, start_eval) => {
            trainer.add_callback(Box::new(StartEval(start_eval.to_string())));
            if select_best && trainer.resumed().is_none() {
                // The start is a candidate of the selection like any later checkpoint.
                trainer.save_checkpoint(&phase, true)?;
            }
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
            let pretrained_eval = evaluate(&sampler, &data, &config)?;
            if config.finetune.iterations == 0 {
                log_eval(trainer.logger(), dsm.iteration, &pretrained_eval)?;
                summary["phase"] = json!("pretrain");
                summary["eval"] = pretrained_eval;
                return finish(trainer, summary);
            }
            let finetune =
                finetune_phase(dev, registry, &config, &dataset, sampler, dsm.iteration)?;
            trainer.add_callback(Box::new(StartEval(pretrained_eval.to_string())));
            // The hand-over is a checkpoint of its own: a run killed now resumes in
            // fine-tuning. With eval.select = "best" it is numbered, a candidate.
            trainer.save_checkpoint(&finetune, select_best)?;
            (finetune, pretrained_eval)
        }
    };
    if let Some(held_out) = HeldOut::new(&data, &config, finetune.reward.clone()) {
        trainer.add_callback(Box::new(held_out));
    }
    let f = &config.finetune;
    let cadence = Cadence::new(f.iterations, f.log_every, f.checkpoint_every);
    let (wall_time_s, iterations) = match run_to_end(&mut trainer, &mut finetune, cadence)? {
        Ok(ran) => ran,
        Err(unfinished) => return Ok(unfinished),
    };
    let ebm = calibrate_finetune(&mut finetune, &dataset, &config)?;
    trainer.save_checkpoint(&finetune, false)?;
    let last_eval = evaluate(&finetune.sampler(), &data, &config)?;
    let step = finetune.step_offset + finetune.iteration;
    let final_eval = if select_best {
        let selection = select_checkpoint(dev, &trainer, &config, &data, finetune.step_offset)?;
        let path = trainer.run_dir().checkpoints().join(&selection.checkpoint);
        let checkpoint = Checkpoint::load(&path)?;
        let selected = load_sampler_at(dev, &config, &checkpoint, &path)?;
        let selected_eval = evaluate(&selected, &data, &config)?;
        summary["eval_last"] = last_eval;
        let mut entry = serde_json::to_value(&selection)?;
        entry["select"] = json!("best");
        entry["why"] = json!(if selection.finetune_iteration == finetune.iteration {
            "the last checkpoint has the lowest validation criterion".to_string()
        } else if selection.finetune_iteration == 0 {
            "no fine-tuned checkpoint beats the sampler fine-tuning started from on the validation split: the start is handed back".to_string()
        } else {
            format!(
                "the validation criterion is lowest at fine-tuning iteration {} of {}",
                selection.finetune_iteration, finetune.iteration
            )
        });
        summary["selection"] = entry;
        denoise_gym::io::write_atomic(
            &trainer.run_dir().root.join(SELECTION_FILE),
            serde_json::to_string_pretty(&selection)?.as_bytes(),
        )?;
        selected_eval
    } else {
        last_eval
    };
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
    data: &PreparedData,
    mut phase: DdaebmPhase<D>,
) -> Result<TrainOutcome> {
    let dataset = &data.train;
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
    let final_eval = evaluate(&phase.model.generator, data, config)?;
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

/// Held-out figures logged at every evaluation of fine-tuning, when the data has a
/// validation split: the sampler's multi-scale MMD² against it (`eval/val_mmd2_multiscale`,
/// the criterion of `eval.select = "best"`) and, for a learned energy, its mean on the
/// validation split beside its mean on as many training points (`ebm/energy_validation`,
/// `ebm/energy_train_points`, and their difference `ebm/energy_gap_heldout`): an EBM that
/// memorises the training points gives them lower energy than unseen points of the same
/// law, and the gap grows.
struct HeldOut<D: Backend> {
    validation: TabularDataset,
    /// The validation split's [`heldout_bandwidth`], computed once.
    bandwidth: f64,
    /// As many training points as the validation split has, spread over the train split.
    train_points: Vec<f32>,
    reward: Rc<RefCell<RewardChoice<D>>>,
    n_samples: usize,
    seed: u64,
}

impl<D: Backend> HeldOut<D> {
    fn new(
        data: &PreparedData,
        config: &TrainConfig,
        reward: Rc<RefCell<RewardChoice<D>>>,
    ) -> Option<Self> {
        let splits = data.splits.as_ref()?;
        let validation = splits.validation.clone()?;
        Some(Self {
            bandwidth: heldout_bandwidth(validation.points(), validation.dim()),
            train_points: spread_rows(&splits.train, validation.len()),
            validation,
            reward,
            n_samples: config.eval.snapshot_samples.max(2),
            seed: config.run.seed,
        })
    }
}

impl<D: Backend> Callback<D> for HeldOut<D> {
    fn on_eval(
        &mut self,
        step: u64,
        sampler: &dyn Sampler<D>,
        scalars: &mut Stats,
        _logger: &mut dyn Logger,
    ) -> denoise_gym::Result<()> {
        let validation = &self.validation;
        let mut rng = Stream::Eval.rng(self.seed ^ step.rotate_left(17) ^ 0x5EED_5A1D);
        let samples = sampler.sample(self.n_samples, &mut rng).as_vec();
        let mmd = heldout_mmd(
            &samples,
            validation.points(),
            validation.dim(),
            self.bandwidth,
        );
        scalars.push(("eval/val_mmd2_multiscale".into(), mmd["mmd2_multiscale"]));
        if let RewardChoice::Ebm(ebm) = &*self.reward.borrow() {
            let mean = |points: &[f32]| {
                let e = ebm.model.energy_host(points);
                e.iter().map(|&v| v as f64).sum::<f64>() / e.len().max(1) as f64
            };
            let e_validation = mean(validation.points());
            let e_train = mean(&self.train_points);
            scalars.push(("ebm/energy_validation".into(), e_validation));
            scalars.push(("ebm/energy_train_points".into(), e_train));
            scalars.push(("ebm/energy_gap_heldout".into(), e_validation - e_train));
        }
        Ok(())
    }
}

/// What `eval.select = "best"` ranks fine-tuning's checkpoints by.
const SELECTION_CRITERION: &str =
    "mmd2_multiscale of eval.n_samples samples against the validation split (lower is better)";

/// Ranks every numbered fine-tuning checkpoint of the run (the start included) by the
/// multi-scale MMD² of its sampler against the validation split; the first lowest wins.
fn select_checkpoint<D: Backend>(
    dev: &D,
    trainer: &Trainer<D>,
    config: &TrainConfig,
    data: &PreparedData,
    step_offset: u64,
) -> Result<Selection> {
    let Some(validation) = data.splits.as_ref().and_then(|s| s.validation.as_ref()) else {
        bail!("key eval.select: \"best\" needs a validation split (data.validation_fraction > 0)");
    };
    let bandwidth = heldout_bandwidth(validation.points(), validation.dim());
    let mut ranked: Vec<(u64, f64, String)> = Vec::new();
    let mut found = trainer.run_dir().numbered_checkpoints();
    found.reverse();
    for (step, path) in found {
        if step < step_offset {
            continue;
        }
        let checkpoint = Checkpoint::load(&path)?;
        if checkpoint.metadata.get("phase").map(String::as_str) != Some(denoise_gym::irl::PHASE) {
            continue;
        }
        let sampler = load_sampler_at(dev, config, &checkpoint, &path)?;
        let mut rng = Stream::Eval.rng(config.run.seed);
        let samples = sampler.sample(config.eval.n_samples, &mut rng).as_vec();
        let value = heldout_mmd(&samples, validation.points(), validation.dim(), bandwidth)
            ["mmd2_multiscale"];
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        ranked.push((step, value, name));
    }
    let best = ranked
        .iter()
        .filter(|(_, v, _)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .cloned();
    let Some((step, value, checkpoint)) = best else {
        bail!(
            "eval.select = \"best\": no fine-tuning checkpoint with a finite validation criterion in {}",
            trainer.run_dir().checkpoints().display()
        );
    };
    Ok(Selection {
        checkpoint,
        step,
        finetune_iteration: step - step_offset,
        criterion: SELECTION_CRITERION.to_string(),
        value,
        candidates: ranked.iter().map(|(s, v, _)| (*s, *v)).collect(),
    })
}
