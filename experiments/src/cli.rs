//! The `dgym` command line over any [`Registry`]: [`main_with`] parses the arguments and
//! runs the command, so a program that registers its own agent, reward or data set gets
//! every `dgym` command for it (train, resume, sample, energy, eval, compare,
//! grad-variance, sweep, aggregate, bench, config). `dgym` itself is
//! `main_with(builtin::registry()?)`; see examples/custom_cli.rs for a program of one's own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::commands::sample::write_samples;
use crate::commands::train::{train_new, train_resume, TrainOptions};
use crate::config::TrainConfig;
use crate::registry::Registry;
use anyhow::Result;
use clap::{Parser, Subcommand};
use denoise_gym::train::default_run_dir;

/// The device every command runs on: the CPU, or the GPU with the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub type Device = dfdx::tensor::Cpu;
/// The device every command runs on: the CPU, or the GPU with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type Device = dfdx::tensor::Cuda;

#[derive(Parser)]
#[command(
    name = "dgym",
    version,
    about = "Diffusion samplers as RL policies, EBMs as learned rewards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a config (DSM pretraining, then optional fine-tuning) and write a run directory.
    Train {
        /// The config file (TOML). Not needed with --resume.
        config: Option<PathBuf>,
        /// The run directory (default: runs/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a config field: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue an interrupted run from its last checkpoint.
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "out", "overrides"])]
        resume: Option<PathBuf>,
        /// Stop after N iterations, as if killed (no final checkpoint): for testing --resume.
        #[arg(long, value_name = "N")]
        stop_after: Option<u64>,
    },
    /// Write N samples of a run's final sampler to a CSV file (header x0,x1,...).
    Sample {
        /// The run directory.
        run_dir: PathBuf,
        /// Number of samples.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Output CSV file.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the sampling noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write the EBM's energies at given points: the input columns plus `energy`
    /// (calibrated, p ∝ exp(-energy)) and `energy_raw`.
    Energy {
        /// The run directory (of a run with finetune.reward = "ebm").
        run_dir: PathBuf,
        /// Input CSV of points (header optional).
        #[arg(long)]
        points: PathBuf,
        /// Output CSV file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Evaluate a run: eval.json (SWD, MMD², per-mode and EBM density figures) and PNG
    /// figures in the run directory.
    Eval {
        /// The run directory.
        run_dir: PathBuf,
        /// Number of samples (default: the run's eval.n_samples).
        #[arg(long)]
        n: Option<usize>,
        /// Seed of the evaluation (default: the run's seed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Anomaly detection with a run trained on some classes (data.inlier_classes): scores
    /// its test split (or --data) with the run's energy and four baselines, writes
    /// anomaly.json (AUROC, AUPR, FPR at 95% TPR, per outlier class) and roc.png.
    Anomaly {
        /// The run directory.
        run_dir: PathBuf,
        /// Score this labelled CSV file instead of the run's test split (the run's width).
        #[arg(long)]
        data: Option<PathBuf>,
        /// With --data: its label column, by name or 0-based index (default: the run's
        /// data.label_column, else the last column).
        #[arg(long, value_name = "NAME|INDEX", allow_hyphen_values = true)]
        label_column: Option<String>,
    },
    /// Put runs' eval.json side by side: prints a Markdown table, writes compare.md and compare.csv.
    Compare {
        /// Run directories (each with an eval.json).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Directory for compare.md and compare.csv.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Variance of the policy gradient for each baseline at a finished GCD run's policy
    /// and EBM, over the same batches: prints a Markdown table.
    GradVariance {
        /// The run directory (fine-tuned with finetune.reward = "ebm").
        run_dir: PathBuf,
        /// Measured batches per baseline.
        #[arg(long, default_value_t = 20)]
        batches: usize,
        /// Warm-up batches per baseline (fits the value and EMA baselines) before measuring.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Baselines, comma-separated (none is always measured, as the reference).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "none,batch_mean,ema,leave_one_out,value,group_normalized"
        )]
        baselines: Vec<String>,
        /// Episodes per batch (default: the run's finetune.batch_size).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Seed of the rollouts.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the table as JSON to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a sweep file's grid of configs × seeds (train, then eval, per run), resumable;
    /// then `dgym aggregate`. See docs/configuration.md, "Ablation sweeps".
    Sweep {
        /// The sweep file (TOML).
        sweep: PathBuf,
        /// The sweep directory (default: runs/sweeps/<sweep file name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Runs at once.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Run only slice I of N (1-based), e.g. 2/3.
        #[arg(long, value_name = "I/N")]
        shard: Option<crate::commands::sweep::Shard>,
        /// List the runs (and their state) without running anything.
        #[arg(long)]
        dry_run: bool,
        /// Write a Slurm job-array script (task i runs --shard i/N) instead of running.
        #[arg(long, value_name = "FILE.sbatch", conflicts_with_all = ["shard", "dry_run"])]
        emit_slurm: Option<PathBuf>,
        /// Array tasks of --emit-slurm (default: one per group of runs).
        #[arg(long, value_name = "N", requires = "emit_slurm")]
        shards: Option<usize>,
    },
    /// Tabulate a sweep directory: mean, std, n and 95% CI over seeds per grid point
    /// (aggregate.md, aggregate.csv) and a PNG of a metric against an axis.
    Aggregate {
        /// The sweep directory.
        sweep_dir: PathBuf,
        /// The metric to plot (an eval.json key; default: the sweep file's [plot] or first metric).
        #[arg(long)]
        metric: Option<String>,
        /// The axis along x.
        #[arg(long)]
        x: Option<String>,
        /// The axis whose values are the lines.
        #[arg(long)]
        lines: Option<String>,
    },
    /// Time one iteration of DSM, sampling, GCD (REINFORCE, PPO), DxDP and DDAEBM at batch
    /// 64, 256, 1024 and 4096 (minimum and median over timed blocks, after warm-up).
    Bench {
        /// Also write the report as JSON to this file (what bench/compare.sh reads).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Batches 64 and 256 only, fewer blocks and warm-up iterations.
        #[arg(long)]
        quick: bool,
        /// Only these rows, comma-separated (dsm_step, sample_t4, sample_t100,
        /// gcd_reinforce, gcd_ppo, dxdp, ddaebm).
        #[arg(long, value_delimiter = ',')]
        rows: Vec<String>,
        /// Only these batch sizes, comma-separated.
        #[arg(long, value_delimiter = ',')]
        batches: Vec<usize>,
        /// Seconds one timed block lasts.
        #[arg(long, value_name = "S")]
        block_seconds: Option<f64>,
        /// Thread counts to bench one after another, comma-separated (each in a child
        /// process with that `RAYON_NUM_THREADS`), followed by a scaling table.
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Override a config field of every row: --set section.key=value (repeatable;
        /// e.g. policy.n_steps=10, or data.dataset=gmm with data.gmm_dim=64).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Print the resolved config with every default and its one-line doc.
    Config {
        /// The config file (TOML); defaults only when absent.
        config: Option<PathBuf>,
        /// Override a config field: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

/// SIGTERM (Slurm preemption, `kill`) and SIGINT (Ctrl-C) raise the returned flag, and
/// the signal's number is kept in the second value: the trainer checkpoints and stops
/// between two iterations. A second SIGINT ends the process at once.
fn interrupt_on_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for signal in [SIGTERM, SIGINT] {
        // Registered first, so that it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(signal, 130, flag.clone())?;
        signal_hook::flag::register_usize(signal, which.clone(), signal as usize)?;
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok((flag, which))
}

fn run(cli: Cli, registry: &Registry<Device>) -> Result<ExitCode> {
    let device = Device::default();
    let catalog = registry.catalog();
    match cli.command {
        Command::Train {
            config,
            out,
            overrides,
            resume,
            stop_after,
        } => {
            let (interrupt, signal) = interrupt_on_signals()?;
            let options = TrainOptions {
                stop_after,
                interrupt: Some(interrupt),
            };
            let outcome = if let Some(run_dir) = resume {
                train_resume(&device, registry, &run_dir, &options)?
            } else {
                let Some(config_path) = config else {
                    anyhow::bail!(
                        "give a config file (dgym train CONFIG.toml) or --resume RUN_DIR"
                    );
                };
                let resolved = TrainConfig::load(Some(&config_path), &overrides, catalog)?;
                let out = out.unwrap_or_else(|| default_run_dir(Some(&config_path)));
                train_new(&device, registry, resolved, &out, &options)?
            };
            if let Some(step) = outcome.interrupted_at {
                let code = signal.load(Ordering::SeqCst);
                println!(
                    "interrupted (signal {code}): checkpoint at step {step} in {}; continue with `dgym train --resume {}`",
                    outcome.run_dir.display(),
                    outcome.run_dir.display()
                );
                // 128 + the signal, as a shell reports a process the signal ended: a
                // scheduler (a sweep, Slurm) sees that the run did not finish.
                return Ok(ExitCode::from((128 + code.min(127)) as u8));
            }
            let state = if outcome.finished {
                "finished"
            } else {
                "stopped"
            };
            println!("{state}: {}", outcome.run_dir.display());
        }
        Command::Sample {
            run_dir,
            n,
            out,
            seed,
        } => {
            write_samples(&device, catalog, &run_dir, n, seed, &out)?;
            println!("wrote {n} samples to {}", out.display());
        }
        Command::Energy {
            run_dir,
            points,
            out,
        } => {
            let n =
                crate::commands::energy::write_energies(&device, catalog, &run_dir, &points, &out)?;
            println!("wrote {n} energies to {}", out.display());
        }
        Command::Eval { run_dir, n, seed } => {
            let path = crate::commands::eval::evaluate_run(&device, registry, &run_dir, n, seed)?;
            println!("wrote {}", path.display());
        }
        Command::Anomaly {
            run_dir,
            data,
            label_column,
        } => {
            let label_column = label_column.map(|c| match c.parse::<i64>() {
                Ok(i) => denoise_gym_envs::LabelColumn::Index(i),
                Err(_) => denoise_gym_envs::LabelColumn::Name(c),
            });
            let flat = crate::anomaly::anomaly_command(
                &device,
                catalog,
                &run_dir,
                data.as_deref(),
                label_column,
            )?;
            println!("| method | AUROC | AUPR | FPR@95%TPR |\n|---|---:|---:|---:|");
            for method in crate::anomaly::METHODS {
                if let Some(auroc) = flat.get(&format!("{method}_auroc")) {
                    println!(
                        "| {method} | {auroc:.4} | {:.4} | {:.4} |",
                        flat[&format!("{method}_aupr")],
                        flat[&format!("{method}_fpr95")]
                    );
                }
            }
            println!(
                "wrote {}",
                run_dir.join(crate::anomaly::ANOMALY_FILE).display()
            );
        }
        Command::Compare { runs, out } => {
            let (markdown, csv) = crate::commands::compare::compare_runs(&runs)?;
            std::fs::create_dir_all(&out)
                .map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
            for (name, text) in [("compare.md", &markdown), ("compare.csv", &csv)] {
                let path = out.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            print!("{markdown}");
        }
        Command::GradVariance {
            run_dir,
            batches,
            warmup,
            baselines,
            batch_size,
            seed,
            out,
        } => {
            use crate::commands::grad_variance as gv;
            let options = gv::GradVarianceOptions {
                batches,
                warmup,
                baselines,
                batch_size,
                seed,
            };
            let rows = gv::grad_variance(&device, registry, &run_dir, &options)?;
            print!("{}", gv::to_markdown(&rows));
            if let Some(out) = out {
                std::fs::write(
                    &out,
                    serde_json::to_string_pretty(&gv::to_json(&rows, &options))?,
                )
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            }
        }
        Command::Sweep {
            sweep,
            out,
            jobs,
            shard,
            dry_run,
            emit_slurm,
            shards,
        } => {
            use crate::commands::sweep;
            let options = sweep::SweepOptions {
                out,
                jobs,
                shard,
                dry_run,
            };
            let runner = sweep::Runner {
                exe: std::env::current_exe()?,
                threads_per_run: sweep::threads_per_run(jobs),
            };
            if let Some(script) = emit_slurm {
                let n = sweep::emit_slurm(&sweep, &options, &script, shards, &runner, catalog)?;
                println!(
                    "wrote {} (a job array of {n} tasks): submit it with `sbatch {}`",
                    script.display(),
                    script.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let report = sweep::run_sweep(&sweep, &options, &runner, catalog)?;
            if !report.failed.is_empty() {
                anyhow::bail!(
                    "{} runs failed (each has an error.txt): {}",
                    report.failed.len(),
                    report.failed.join(", ")
                );
            }
        }
        Command::Aggregate {
            sweep_dir,
            metric,
            x,
            lines,
        } => {
            let options = crate::commands::aggregate::AggregateOptions { metric, x, lines };
            let written = crate::commands::aggregate::aggregate(&sweep_dir, &options)?;
            print!("{}", written.markdown);
            println!(
                "wrote {}, {}",
                written.markdown_path.display(),
                written.csv_path.display()
            );
            if let Some(plot) = written.plot_path {
                println!("wrote {}", plot.display());
            }
        }
        Command::Bench {
            json,
            quick,
            rows,
            batches,
            block_seconds,
            threads,
            overrides,
        } => {
            use crate::commands::bench;
            let options = bench::BenchOptions {
                quick,
                rows,
                batches,
                block_seconds,
                overrides,
            };
            // Checked before the bench runs, so that minutes of timing are not lost to a
            // path that cannot be written; opened without truncating, so that a failed
            // bench leaves an earlier report there intact.
            if let Some(path) = &json {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            }
            if !threads.is_empty() {
                let reports = bench::run_thread_scaling(&options, &threads)?;
                print!("{}", bench::scaling_markdown(&reports));
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_string_pretty(&reports)?)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                    println!("wrote {}", path.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let device_name = if cfg!(feature = "cuda") {
                "cuda"
            } else {
                "cpu"
            };
            let report = bench::run_bench(&device, registry, device_name, &options, |row| {
                eprintln!(
                    "{:>14} batch {:>5}: {:>10.1} {} (median {:.3} ms, min {:.3} ms)",
                    row.name,
                    row.batch,
                    row.rate,
                    row.unit,
                    row.median_s * 1e3,
                    row.min_s * 1e3
                );
            })?;
            print!("{}", bench::to_markdown(&report));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        Command::Config { config, overrides } => {
            print!(
                "{}",
                crate::commands::config::render_config(config.as_deref(), &overrides, catalog)?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses the process's arguments and runs the `dgym` command they name over
/// `registry`; errors are printed on stderr. The exit code is 0 on success, 1 on an error,
/// 128 + N for a run interrupted by signal N.
pub fn main_with(registry: Registry<Device>) -> ExitCode {
    match run(Cli::parse(), &registry) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
