//! The run loop as a library: a [`Trainer`] drives [`Phase`]s and owns the run directory.
//!
//! A [`Phase`] is one training algorithm, one iteration at a time (DSM pretraining
//! [`crate::dsm::DsmPhase`], the inverse-RL loop [`crate::irl::IrlPhase`], DDAEBM, or a
//! user's own). The [`Trainer`] gives every phase the same guarantees as `dgym train`:
//!
//! - the run directory ([`RunDir`]): `config.toml`, `run.json`, TensorBoard events,
//!   `metrics.csv`, `checkpoints/`, and `summary.json` written last by [`Trainer::finish`];
//! - the loop with its logging and checkpoint cadence ([`Cadence`]), a progress display,
//!   and a stop after a budget of iterations ([`TrainerOptions::stop_after`], exactly as if
//!   the process had been killed there);
//! - exact resume: [`Trainer::resume`] reopens the run at its last checkpoint and drops the
//!   rows of `metrics.csv` logged after it; [`Trainer::restore`] loads that checkpoint
//!   into the phase it belongs to;
//! - a guard that stops a phase whose logged scalars are NaN or infinite, and an error
//!   that says where the last good state is;
//! - [`Callback`]s that add metrics on log, on an evaluation snapshot and on a checkpoint,
//!   so that this crate never depends on evaluation code or plots.
//!
//! A program with two phases (DSM pretraining, then fine-tuning) looks like this:
//!
//! ```no_run
//! # use denoise_gym::train::*;
//! # use denoise_gym::{Backend, Result};
//! # fn build_pretrain<D: Backend>() -> Box<dyn Phase<D>> { unimplemented!() }
//! # fn build_finetune<D: Backend>(from: Option<&dyn Phase<D>>) -> Box<dyn Phase<D>> { unimplemented!() }
//! fn train<D: Backend>(dir: &std::path::Path, config_toml: &str) -> Result<()> {
//!     let options = TrainerOptions::default();
//!     let mut trainer = if dir.join("config.toml").exists() {
//!         Trainer::<D>::resume(dir, 0, options)?
//!     } else {
//!         Trainer::<D>::create(dir, config_toml, 0, options)?
//!     };
//!     let mut finetune = if trainer.resumes_phase("finetune") {
//!         build_finetune::<D>(None)
//!     } else {
//!         let mut pretrain = build_pretrain::<D>();
//!         trainer.restore(pretrain.as_mut())?;
//!         if trainer.run(pretrain.as_mut(), Cadence::new(1000, 10, 100))?.stopped() {
//!             return Ok(());
//!         }
//!         let finetune = build_finetune(Some(pretrain.as_ref()));
//!         trainer.save_checkpoint(finetune.as_ref(), false)?;
//!         finetune
//!     };
//!     trainer.restore(finetune.as_mut())?;
//!     if trainer.run(finetune.as_mut(), Cadence::new(500, 10, 100))?.stopped() {
//!         return Ok(());
//!     }
//!     trainer.finish(serde_json::json!({ "phase": "finetune" }))?;
//!     Ok(())
//! }
//! ```

mod run_dir;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use run_dir::{default_run_dir, RunDir, RunLock};

use crate::agent::Stats;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::log::{CsvLogger, HParam, Logger, MultiLogger, Progress, TensorBoardLogger};
use crate::sampler::Sampler;
use crate::tensor::Backend;

/// One training algorithm, driven one iteration at a time by a [`Trainer`].
pub trait Phase<D: Backend> {
    /// The phase's name: the `phase` column of `metrics.csv` and the `phase` key of its
    /// checkpoints (`pretrain`, `finetune`, `ddaebm`, ...).
    fn name(&self) -> &str;
    /// Iterations of this phase done.
    fn iterations_done(&self) -> u64;
    /// The global step (one counter across the phases of a run) after the iterations done.
    fn global_step(&self) -> u64;
    /// One iteration; returns the scalars to log at [`Phase::global_step`].
    fn step(&mut self) -> Result<Stats>;
    /// Whether a failed [`Phase::step`] leaves the phase as it was before the call (then
    /// the trainer checkpoints it as the last good state). Default: false.
    fn unchanged_on_error(&self) -> bool {
        false
    }
    /// The whole state (weights, optimiser moments, RNG, counters). The trainer adds the
    /// metadata keys `phase` and `iteration` (the global step).
    fn save(&self) -> Result<Checkpoint>;
    /// Restores the state [`Phase::save`] wrote.
    fn load(&mut self, checkpoint: &Checkpoint, path: &Path) -> Result<()>;
    /// The sampler this phase trains, as it would be evaluated now.
    fn sampler(&self) -> Box<dyn Sampler<D> + '_>;
}

/// Hooks a caller adds to a [`Trainer`]: extra metrics, images, checkpoint contents.
/// Every method has a do-nothing default.
pub trait Callback<D: Backend> {
    /// Every [`TrainerOptions::eval_every`] global steps, with the phase's sampler:
    /// add `eval/...` scalars to this step's row, or log images through `logger`.
    fn on_eval(
        &mut self,
        step: u64,
        sampler: &dyn Sampler<D>,
        scalars: &mut Stats,
        logger: &mut dyn Logger,
    ) -> Result<()> {
        let _ = (step, sampler, scalars, logger);
        Ok(())
    }
    /// Before a row of scalars is logged (after any evaluation): add or change scalars.
    fn on_log(&mut self, step: u64, phase: &str, scalars: &mut Stats) -> Result<()> {
        let _ = (step, phase, scalars);
        Ok(())
    }
    /// Before a checkpoint of `phase` is written: add tensors or metadata.
    fn on_checkpoint(&mut self, step: u64, phase: &str, checkpoint: &mut Checkpoint) -> Result<()> {
        let _ = (step, phase, checkpoint);
        Ok(())
    }
}

/// How long a phase runs and how often it logs and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// Iterations of the phase in all (across resumes).
    pub total: u64,
    /// Log a row every this many iterations (and at the last).
    pub log_every: u64,
    /// Write a numbered checkpoint every this many iterations (and at the last).
    pub checkpoint_every: u64,
}

impl Cadence {
    /// `total` iterations, a row every `log_every`, a checkpoint every `checkpoint_every`
    /// (each at least 1).
    pub fn new(total: u64, log_every: u64, checkpoint_every: u64) -> Self {
        Self {
            total,
            log_every,
            checkpoint_every,
        }
    }
}

/// Options of one invocation of a run.
#[derive(Debug, Clone, Default)]
pub struct TrainerOptions {
    /// Stop after this many iterations of this invocation (across phases), without a
    /// final checkpoint or summary, exactly as if the process had been killed: what
    /// `--stop-after` does, to exercise resume.
    pub stop_after: Option<u64>,
    /// No progress display.
    pub quiet: bool,
    /// Call [`Callback::on_eval`] every this many global steps (0: never).
    pub eval_every: u64,
    /// Log NaN and infinite scalars instead of stopping the phase (the guard is on by
    /// default: a run that diverged should stop while its last checkpoint is good).
    pub allow_non_finite: bool,
    /// When this flag turns true (a SIGTERM or SIGINT handler sets it), the phase stops
    /// between two iterations with a checkpoint of where it is, as [`PhaseEnd::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// How [`Trainer::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PhaseEnd {
    /// Every iteration of the phase is done.
    Finished {
        /// Wall time of this invocation's iterations, in seconds.
        wall_time_s: f64,
        /// Iterations run by this invocation.
        iterations: u64,
    },
    /// The [`TrainerOptions::stop_after`] budget ran out (no checkpoint written, as if
    /// the process had been killed).
    Stopped,
    /// [`TrainerOptions::interrupt`] was raised: the phase stopped between two
    /// iterations and checkpointed its state at `step`.
    Interrupted {
        /// The global step of the checkpoint.
        step: u64,
    },
}

impl PhaseEnd {
    /// Whether the phase did not finish (the caller should return without finishing the
    /// run; a later resume continues it).
    pub fn stopped(&self) -> bool {
        !matches!(self, PhaseEnd::Finished { .. })
    }
}

/// The checkpoint a resumed run continues from.
pub struct Resumed {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Its file, for error messages.
    pub path: PathBuf,
    /// The phase it belongs to (its `phase` metadata).
    pub phase: String,
    /// The global step it was written at (its `iteration` metadata).
    pub step: u64,
    restored: bool,
}

/// The checkpoint metadata key of the number of `metrics.csv` rows written before it.
const METRICS_ROWS: &str = "metrics.rows";

/// Scalars shown next to the progress bar, first match wins (else the row's first).
const HEADLINES: &[&str] = &["dsm/loss", "reward/return_mean", "ddaebm/D_gap"];

/// Owns a run directory and drives [`Phase`]s through it (see the module docs).
pub struct Trainer<D: Backend> {
    run: RunDir,
    _lock: RunLock,
    logger: MultiLogger,
    budget: Option<u64>,
    options: TrainerOptions,
    callbacks: Vec<Box<dyn Callback<D>>>,
    resumed: Option<Resumed>,
}

impl<D: Backend> Trainer<D> {
    /// Starts a new run in `dir`: refuses a directory that exists and is not empty, then
    /// takes the directory's lock ([`RunDir::lock`]) and writes `config_toml` as
    /// `config.toml`, starts `run.json` (with `seed`), `metrics.csv` and a TensorBoard
    /// event file.
    pub fn create(
        dir: &Path,
        config_toml: &str,
        seed: u64,
        options: TrainerOptions,
    ) -> Result<Self> {
        let run = RunDir::new(dir);
        run.check_vacant()?;
        std::fs::create_dir_all(run.checkpoints()).map_err(|e| Error::io(run.checkpoints(), e))?;
        let lock = run.lock()?;
        crate::io::write_atomic(&run.config(), config_toml.as_bytes())?;
        run.record_invocation(seed, None)?;
        let csv = CsvLogger::create(&run.metrics())?;
        let events = TensorBoardLogger::create(&run.root)?;
        Self::open(run, lock, csv, events, options, None)
    }

    /// Reopens an interrupted run in `dir` at its last checkpoint: refuses a finished run
    /// (one with `summary.json`), drops the rows of `metrics.csv` logged after the
    /// checkpoint, and records this invocation in `run.json`. Load the checkpoint into its
    /// phase with [`Trainer::restore`].
    ///
    /// The checkpoint is the newest one that verifies ([`RunDir::load_latest_checkpoint`]:
    /// `last.safetensors`, or the newest intact numbered one). The directory's lock is
    /// taken first: a second process on the same run gets an error.
    pub fn resume(dir: &Path, seed: u64, options: TrainerOptions) -> Result<Self> {
        let run = RunDir::new(dir);
        run.read_config_text()?;
        let lock = run.lock()?;
        if run.summary().exists() {
            return Err(Error::InvalidArgument(format!(
                "run {} already finished ({} exists); nothing to resume",
                run.root.display(),
                run.summary().display()
            )));
        }
        let (checkpoint, path) = run.load_latest_checkpoint()?;
        let phase = checkpoint.meta(&path, "phase")?.to_string();
        let step: u64 = checkpoint.meta_parse(&path, "iteration")?;
        run.record_invocation(seed, Some(step))?;
        let csv = match checkpoint.metadata.get(METRICS_ROWS) {
            Some(_) => CsvLogger::resume_at_row(
                &run.metrics(),
                checkpoint.meta_parse(&path, METRICS_ROWS)?,
                step,
            )?,
            // Written before the row count was kept: the rows up to its step.
            None => CsvLogger::resume(&run.metrics(), step)?,
        };
        let events = TensorBoardLogger::resume(&run.root, step)?;
        let resumed = Resumed {
            checkpoint,
            path,
            phase,
            step,
            restored: false,
        };
        Self::open(run, lock, csv, events, options, Some(resumed))
    }

    fn open(
        run: RunDir,
        lock: RunLock,
        csv: CsvLogger,
        events: TensorBoardLogger,
        options: TrainerOptions,
        resumed: Option<Resumed>,
    ) -> Result<Self> {
        let mut logger = MultiLogger::new();
        logger.push(Box::new(csv));
        logger.push(Box::new(events));
        Ok(Self {
            run,
            _lock: lock,
            logger,
            budget: options.stop_after,
            options,
            callbacks: Vec::new(),
            resumed,
        })
    }

    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// The checkpoint this invocation resumes from, if it is a resume.
    pub fn resumed(&self) -> Option<&Resumed> {
        self.resumed.as_ref()
    }

    /// Whether this invocation resumes from a checkpoint of the phase called `phase`.
    pub fn resumes_phase(&self, phase: &str) -> bool {
        self.resumed.as_ref().is_some_and(|r| r.phase == phase)
    }

    /// Adds a callback; callbacks run in the order they were added.
    pub fn add_callback(&mut self, callback: Box<dyn Callback<D>>) {
        self.callbacks.push(callback);
    }

    /// Records the run's hyperparameters for TensorBoard's HParams dashboard and its
    /// config as text (tag `config`), so that a directory of runs (a sweep) opened in
    /// TensorBoard compares them. Call it once, after [`Trainer::create`]; `finish`
    /// records the session's end.
    pub fn log_hparams(&mut self, hparams: &[(String, HParam)], config_text: &str) -> Result<()> {
        self.logger.log_hparams(hparams)?;
        self.logger
            .log_text(0, "config", &format!("```toml\n{config_text}\n```"))
    }

    /// The loggers (`metrics.csv` and TensorBoard), for rows outside a phase's loop.
    pub fn logger(&mut self) -> &mut MultiLogger {
        &mut self.logger
    }

    /// Loads the resume checkpoint into `phase` when it belongs to it (same name) and has
    /// not been loaded yet; returns whether it did.
    pub fn restore(&mut self, phase: &mut dyn Phase<D>) -> Result<bool> {
        match self.resumed.as_mut() {
            Some(r) if !r.restored && r.phase == phase.name() => {
                phase.load(&r.checkpoint, &r.path)?;
                r.restored = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Writes `phase`'s state as `last.safetensors` (and first as a numbered checkpoint
    /// when `numbered`), with the `phase` and `iteration` metadata and whatever the
    /// callbacks add. The logs are made durable first, so that every row up to the
    /// checkpoint survives a crash.
    pub fn save_checkpoint(&mut self, phase: &dyn Phase<D>, numbered: bool) -> Result<()> {
        self.logger.sync()?;
        let step = phase.global_step();
        let mut checkpoint = phase.save()?;
        checkpoint
            .metadata
            .insert("phase".into(), phase.name().to_string());
        checkpoint
            .metadata
            .insert("iteration".into(), step.to_string());
        if let Some(rows) = self.logger.rows_written() {
            checkpoint
                .metadata
                .insert(METRICS_ROWS.into(), rows.to_string());
        }
        for callback in &mut self.callbacks {
            callback.on_checkpoint(step, phase.name(), &mut checkpoint)?;
        }
        self.run
            .save_checkpoint(&checkpoint, numbered.then_some(step))
    }

    /// Drives `phase` to `cadence.total` iterations (or until the stop budget runs out),
    /// logging and checkpointing on its own iteration count, at its global step.
    pub fn run(&mut self, phase: &mut dyn Phase<D>, cadence: Cadence) -> Result<PhaseEnd> {
        let first = phase.iterations_done();
        if first > cadence.total {
            return Err(Error::InvalidArgument(format!(
                "phase {} is at iteration {first}, past its {} iterations in all: was the run's config edited after it started?",
                phase.name(),
                cadence.total
            )));
        }
        let mut progress = Progress::new(phase.name(), cadence.total, first, self.options.quiet);
        let started = Instant::now();
        while phase.iterations_done() < cadence.total {
            if self.interrupted() {
                self.save_checkpoint(phase, false)?;
                progress.finish();
                return Ok(PhaseEnd::Interrupted {
                    step: phase.global_step(),
                });
            }
            if self.budget == Some(0) {
                self.logger.flush()?;
                return Ok(PhaseEnd::Stopped);
            }
            if let Some(left) = self.budget.as_mut() {
                *left -= 1;
            }
            let mut scalars = match phase.step() {
                Ok(scalars) => scalars,
                Err(error) => {
                    let unchanged = phase.unchanged_on_error();
                    return Err(self.stopped(phase, error, unchanged));
                }
            };
            if let Some(error) = self.non_finite(phase, &scalars) {
                // The step has already changed the phase: its state is not the last good one.
                return Err(self.stopped(phase, error, false));
            }
            let done = phase.iterations_done();
            let step = phase.global_step();
            let eval_every = self.options.eval_every;
            let snapshot = eval_every > 0 && step.is_multiple_of(eval_every);
            if snapshot {
                let sampler = phase.sampler();
                for callback in &mut self.callbacks {
                    callback.on_eval(step, &*sampler, &mut scalars, &mut self.logger)?;
                }
            }
            if snapshot || done.is_multiple_of(cadence.log_every) || done == cadence.total {
                for callback in &mut self.callbacks {
                    callback.on_log(step, phase.name(), &mut scalars)?;
                }
                let elapsed = started.elapsed().as_secs_f64();
                scalars.push(("time/elapsed_s".to_string(), elapsed));
                scalars.push((
                    "time/it_per_s".to_string(),
                    (done - first) as f64 / elapsed.max(1e-9),
                ));
                self.logger.log_scalars(step, phase.name(), &scalars)?;
            }
            if done.is_multiple_of(cadence.checkpoint_every) || done == cadence.total {
                self.save_checkpoint(phase, true)?;
            }
            let headline = HEADLINES
                .iter()
                .find_map(|h| scalars.iter().find(|(name, _)| name == h))
                .or(scalars.first())
                .map_or_else(String::new, |(name, value)| format!("{name} {value:.4}"));
            progress.update(done, &headline);
        }
        progress.finish();
        Ok(PhaseEnd::Finished {
            wall_time_s: started.elapsed().as_secs_f64(),
            iterations: phase.iterations_done() - first,
        })
    }

    fn interrupted(&self) -> bool {
        self.options
            .interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
    }

    /// The non-finite guard: the first NaN or infinite scalar of a step, as an error.
    fn non_finite(&self, phase: &dyn Phase<D>, scalars: &Stats) -> Option<Error> {
        if self.options.allow_non_finite {
            return None;
        }
        let (name, value) = scalars.iter().find(|(_, v)| !v.is_finite())?;
        Some(Error::NonFinite {
            quantity: name.clone(),
            iteration: phase.global_step(),
            value: *value,
        })
    }

    /// The error of a failed step, saying where the last good state is: the phase as it
    /// is, when `unchanged` (saved now), else the last checkpoint written.
    fn stopped(&mut self, phase: &mut dyn Phase<D>, error: Error, unchanged: bool) -> Error {
        if let Err(flush) = self.logger.flush() {
            return flush;
        }
        let note = if unchanged {
            if let Err(save) = self.save_checkpoint(phase, false) {
                return save;
            }
            format!(
                "the last good state (step {}) is in {}",
                phase.global_step(),
                self.run.last_checkpoint().display()
            )
        } else {
            let step = Checkpoint::load(&self.run.last_checkpoint())
                .ok()
                .and_then(|c| c.metadata.get("iteration").cloned())
                .unwrap_or_else(|| "unknown".to_string());
            format!(
                "the last good checkpoint is {} (step {step})",
                self.run.last_checkpoint().display()
            )
        };
        Error::PhaseStopped {
            phase: phase.name().to_string(),
            note,
            source: Box::new(error),
        }
    }

    /// Makes every log durable and writes `summary.json`, last: its presence marks the
    /// run as finished.
    pub fn finish(mut self, summary: serde_json::Value) -> Result<PathBuf> {
        self.logger.log_session_end(true)?;
        self.logger.sync()?;
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::InvalidArgument(format!("summary.json: {e}")))?;
        crate::io::write_atomic(&self.run.summary(), text.as_bytes())?;
        Ok(self.run.root.clone())
    }
}
