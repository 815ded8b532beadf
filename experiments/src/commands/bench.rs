//! `dgym bench`: the time of one training or sampling iteration of every algorithm, at
//! several batch sizes, with the same configs the shipped recipes use (built into the
//! binary, so the bench runs from any directory). `bench/torch_reference.py` times the
//! same work in PyTorch eager and writes the same JSON, and `bench/compare.sh` puts the
//! two side by side.
//!
//! Each row is timed after warm-up iterations that are not counted: `repeats` blocks of
//! `iterations_per_repeat` back-to-back iterations (a block lasts about 0.3 s), and the
//! row reports the minimum and the median over blocks of the seconds per iteration. The
//! minimum is the figure least disturbed by other load on the machine.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use denoise_gym::rng::Stream;
use denoise_gym::tensor::Backend;
use denoise_gym_envs::Dataset;
use serde::{Deserialize, Serialize};

use crate::build::{
    build_dataset, build_policy, data_batches, ddaebm_phase, dsm_phase, finetune_phase,
};
use crate::catalog::Catalog;
use crate::config::TrainConfig;
use crate::registry::Registry;
use denoise_gym::train::Phase;

/// The DSM recipe every policy row starts from (T = 4, width 128, depth 3).
const DDPM_CONFIG: (&str, &str) = (
    "ddpm-8gaussians.toml",
    include_str!("../../configs/ddpm-8gaussians.toml"),
);
/// GCD with REINFORCE and the value baseline.
const GCD_CONFIG: (&str, &str) = (
    "gcd-8gaussians.toml",
    include_str!("../../configs/gcd-8gaussians.toml"),
);
/// GCD with PPO.
const PPO_CONFIG: (&str, &str) = (
    "ppo-8gaussians.toml",
    include_str!("../../configs/ppo-8gaussians.toml"),
);
/// GCD with the DxDP agent.
const DXMI_CONFIG: (&str, &str) = (
    "dxmi-8gaussians.toml",
    include_str!("../../configs/dxmi-8gaussians.toml"),
);
/// DDAEBM at the reference code's settings (T = 4, width 300, n_z = 2).
const DDAEBM_CONFIG: (&str, &str) = (
    "ddaebm-25gaussians.toml",
    include_str!("../../configs/ddaebm-25gaussians.toml"),
);

/// Every row name, in the order the bench runs them.
pub const ROW_NAMES: [&str; 7] = [
    "dsm_step",
    "sample_t4",
    "sample_t100",
    "gcd_reinforce",
    "gcd_ppo",
    "dxdp",
    "ddaebm",
];

/// The batch sizes of a full run and of `--quick`.
const BATCHES: [usize; 4] = [64, 256, 1024, 4096];
const QUICK_BATCHES: [usize; 2] = [64, 256];
/// DDAEBM's reference batch, benched beside the common ones.
const DDAEBM_REFERENCE_BATCH: usize = 200;

/// What to bench.
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Fewer batches (64, 256), repeats and warm-up iterations.
    pub quick: bool,
    /// Only these rows (names of [`ROW_NAMES`]); all when empty.
    pub rows: Vec<String>,
    /// Only these batch sizes; the default set when empty.
    pub batches: Vec<usize>,
    /// Seconds one timed block should last (default 0.3).
    pub block_seconds: Option<f64>,
    /// `KEY=VALUE` config overrides applied to every row after its own settings (e.g.
    /// `policy.n_steps=10`, `data.dataset=gmm`, `data.gmm_dim=64`).
    pub overrides: Vec<String>,
}

/// One timed row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRow {
    /// Which iteration (one of [`ROW_NAMES`]).
    pub name: String,
    /// Batch size (samples per iteration).
    pub batch: usize,
    /// Denoising steps T.
    pub n_steps: usize,
    /// Hidden width of the networks.
    pub width: usize,
    /// `it/s` or `samples/s`.
    pub unit: String,
    /// Timed blocks.
    pub repeats: usize,
    /// Iterations per timed block.
    pub iterations_per_repeat: usize,
    /// Seconds per iteration, the fastest block.
    pub min_s: f64,
    /// Seconds per iteration, the median block.
    pub median_s: f64,
    /// Iterations (or samples) per second at the median.
    pub rate: f64,
    /// Floating-point operations (2 per multiply-add) of the fused kernels' matmuls in
    /// one iteration, in units of 10^9 (dfdx's own matmuls are not counted).
    pub matmul_gflop: f64,
    /// `matmul_gflop / min_s`: the matmul rate the fastest block sustained over the
    /// whole iteration, to set against the machine's `gemm_gflops`.
    pub matmul_gflops: f64,
    /// The process's peak resident memory while the row ran, in MiB (Linux only).
    #[serde(default)]
    pub peak_memory_mib: Option<f64>,
    /// The share of the iteration's thread time (wall time × threads) spent inside the
    /// fused kernels' matmuls; the rest is dfdx's own ops, the element-wise work, the
    /// fork waits and the bookkeeping.
    #[serde(default)]
    pub matmul_share: f64,
    /// The fused kernels' matmul rate while they run, per thread (`matmul_gflop` over the
    /// matmuls' thread-seconds), to set against a one-thread `gemm_gflops`.
    #[serde(default)]
    pub matmul_own_gflops: f64,
    /// The bare matmul rate, on one thread, of exactly the matmuls one iteration of the
    /// row ran (the same shapes, operand layouts and counts, recorded with
    /// `kernels::record_matmul_calls` and timed alone with `kernels::bare_matmul_gflops`).
    #[serde(default)]
    pub gemm_same_shapes_gflops: f64,
    /// `matmul_own_gflops / gemm_same_shapes_gflops`: how close the row's matmuls came,
    /// inside the iteration, to the same matmuls run alone.
    #[serde(default)]
    pub matmul_fraction_of_gemm: f64,
}

/// The machine and build a bench ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineInfo {
    /// Logical cores the process may use.
    pub cores: usize,
    /// Threads of the fused kernels' pool (`denoise_gym::fork::threads`).
    pub threads: usize,
    /// CPU model name.
    pub cpu: String,
    /// Build profile (`release` or `debug`).
    pub profile: String,
    /// The dfdx device (`cpu` or `cuda`).
    pub device: String,
    /// Versions of the pieces that decide speed.
    pub versions: std::collections::BTreeMap<String, String>,
    /// GFLOP/s of the fused kernels' matmul alone on `1024 × 128 · 128 × 128` (one
    /// thread, the shape of a batch-1024 hidden layer) and `4096 × 128 · 128 × 128`
    /// (one row block per thread): what a matmul-bound iteration could reach.
    pub gemm_gflops: std::collections::BTreeMap<String, f64>,
}

/// The whole report (`--json` writes it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// `denoise-gym` (the PyTorch reference writes `pytorch-eager`).
    pub implementation: String,
    /// Where it ran.
    pub machine: MachineInfo,
    /// The timed rows.
    pub rows: Vec<BenchRow>,
}

/// The CPU's model name from `/proc/cpuinfo` (or `unknown`).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// The best of `repeats` timings of one `rows × width · width × width` product, in
/// GFLOP/s, as `blocks` row blocks on the pool's threads (as the MLP kernels cut a pass;
/// 1: one call on this thread).
fn gemm_rate(rows: usize, width: usize, repeats: usize, blocks: usize) -> f64 {
    let a: Vec<f32> = (0..rows * width).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..width * width).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut dst = vec![0.0f32; rows * width];
    let blocks = blocks.clamp(1, rows.max(1));
    let block_rows = rows.div_ceil(blocks);
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let start = Instant::now();
        for _ in 0..10 {
            if blocks == 1 {
                denoise_gym::kernels::matmul_dense(rows, width, width, &a, &b, &mut dst);
                continue;
            }
            let parts: Vec<std::sync::Mutex<_>> = a
                .chunks(block_rows * width)
                .zip(dst.chunks_mut(block_rows * width))
                .map(|part| std::sync::Mutex::new(Some(part)))
                .collect();
            denoise_gym::fork::for_each_index(parts.len(), |i| {
                if let Some((a, d)) = parts[i].lock().ok().and_then(|mut p| p.take()) {
                    denoise_gym::kernels::matmul_dense(a.len() / width, width, width, a, &b, d);
                }
            });
        }
        best = best.min(start.elapsed().as_secs_f64() / 10.0);
    }
    std::hint::black_box(&dst);
    2.0 * (rows * width * width) as f64 / best / 1e9
}

/// This process's machine and build.
pub fn machine_info(device: &str) -> MachineInfo {
    let mut versions = std::collections::BTreeMap::new();
    versions.insert(
        "denoise-gym".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    versions.insert("dfdx".to_string(), "0.13.0".to_string());
    MachineInfo {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        threads: denoise_gym::fork::threads(),
        cpu: cpu_model(),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_string(),
        device: device.to_string(),
        versions,
        gemm_gflops: [
            (
                "1024x128x128, 1 thread".to_string(),
                gemm_rate(1024, 128, 20, 1),
            ),
            // One of the 16 row blocks of a batch-4096 pass at width 128.
            (
                "256x128x128, 1 thread".to_string(),
                gemm_rate(256, 128, 40, 1),
            ),
            (
                format!("4096x128x128, {} threads", denoise_gym::fork::threads()),
                gemm_rate(4096, 128, 10, denoise_gym::fork::threads()),
            ),
            // One of DDAEBM's row blocks at its reference batch 200 (width 300).
            (
                "100x300x300, 1 thread".to_string(),
                gemm_rate(100, 300, 20, 1),
            ),
        ]
        .into_iter()
        .collect(),
    }
}

/// What [`time_iterations`] measured.
struct Timing {
    repeats: usize,
    per_block: usize,
    min_s: f64,
    median_s: f64,
    /// Matmul multiply-adds of the fused kernels per iteration.
    multiply_adds: f64,
    /// Thread-seconds inside the fused kernels' matmuls per iteration.
    matmul_thread_s: f64,
    /// Wall seconds per iteration over all timed blocks (the mean).
    mean_s: f64,
    /// The bare rate of one iteration's matmuls (`kernels::bare_matmul_gflops`).
    gemm_same_shapes_gflops: f64,
}

/// Times `iterate` as the module doc says.
fn time_iterations(
    quick: bool,
    block_seconds: f64,
    mut iterate: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    let (warmup, repeats) = if quick { (1, 2) } else { (3, 5) };
    for _ in 0..warmup {
        iterate()?;
    }
    let start = Instant::now();
    iterate()?;
    let one = start.elapsed().as_secs_f64().max(1e-7);
    let per_block = ((block_seconds / one).ceil() as usize).clamp(1, 100_000);
    let mut seconds = Vec::with_capacity(repeats);
    let multiply_adds_before = denoise_gym::kernels::multiply_adds();
    let nanos_before = denoise_gym::kernels::matmul_nanos();
    for _ in 0..repeats {
        let start = Instant::now();
        for _ in 0..per_block {
            iterate()?;
        }
        seconds.push(start.elapsed().as_secs_f64() / per_block as f64);
    }
    let multiply_adds = (denoise_gym::kernels::multiply_adds() - multiply_adds_before) as f64
        / (repeats * per_block) as f64;
    let matmul_thread_s = (denoise_gym::kernels::matmul_nanos() - nanos_before) as f64
        / 1e9
        / (repeats * per_block) as f64;
    let mean_s = seconds.iter().sum::<f64>() / seconds.len() as f64;
    seconds.sort_by(f64::total_cmp);
    // After the timed blocks, so that neither the recording nor the bare timing is in them.
    let (result, calls) = denoise_gym::kernels::record_matmul_calls(&mut iterate);
    result?;
    let gemm_same_shapes_gflops =
        denoise_gym::kernels::bare_matmul_gflops(&calls, if quick { 0.05 } else { 0.2 });
    Ok(Timing {
        repeats,
        per_block,
        min_s: seconds[0],
        median_s: seconds[seconds.len() / 2],
        multiply_adds,
        matmul_thread_s,
        mean_s,
        gemm_same_shapes_gflops,
    })
}

/// A built-in config with the row's own `overrides`, then the user's `extra` ones
/// (`--set`: they win).
fn load(
    config: (&str, &str),
    overrides: &[String],
    extra: &[String],
    catalog: &Catalog,
) -> Result<TrainConfig> {
    let all = [overrides, extra].concat();
    TrainConfig::from_toml_str(config.0, config.1, &all, catalog)
        .with_context(|| format!("the bench's built-in config {}", config.0))
}

/// The peak resident memory since the last [`reset_peak_memory`], in MiB (Linux's
/// `VmHWM`; `None` elsewhere).
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak resident memory to the current one (Linux: `5` into
/// `/proc/self/clear_refs`), so that each row reports its own peak.
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs one row at one batch size.
fn bench_row<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    name: &str,
    batch: usize,
    quick: bool,
    block_seconds: f64,
    extra: &[String],
) -> Result<BenchRow> {
    let set = |key: &str, value: usize| format!("{key}={value}");
    reset_peak_memory();
    let catalog = registry.catalog();
    let mut rng = Stream::Bench.rng(0);
    let (config, unit, timing) = match name {
        "dsm_step" => {
            let config = load(
                DDPM_CONFIG,
                &[set("pretrain.batch_size", batch)],
                extra,
                catalog,
            )?;
            let dataset = build_dataset(registry, &config)?;
            let mut phase = dsm_phase(dev, &config, &dataset)?;
            let timing = time_iterations(quick, block_seconds, || {
                phase.train_step().map(|_| ()).map_err(Into::into)
            })?;
            (config, "it/s", timing)
        }
        "sample_t4" | "sample_t100" => {
            let n_steps = if name == "sample_t4" { 4 } else { 100 };
            let config = load(
                DDPM_CONFIG,
                &[set("policy.n_steps", n_steps)],
                extra,
                catalog,
            )?;
            // A fresh (untrained) policy: timing does not depend on the weights. The data
            // set only gives the dimension (`--set data.dataset=gmm --set data.gmm_dim=64`).
            let dim = build_dataset(registry, &config)?.dim();
            let policy = build_policy(dev, &config, dim)?;
            let timing = time_iterations(quick, block_seconds, || {
                let samples = policy.sample(batch, &mut rng);
                // Reading the result back waits for the device (CUDA is asynchronous).
                std::hint::black_box(samples.as_vec());
                Ok(())
            })?;
            (config, "samples/s", timing)
        }
        "gcd_reinforce" | "gcd_ppo" | "dxdp" => {
            let (source, mut overrides) = match name {
                "gcd_reinforce" => (GCD_CONFIG, vec![]),
                // Two minibatches per epoch at every batch, as the shipped 512 at B = 256.
                "gcd_ppo" => (
                    PPO_CONFIG,
                    vec![set("ppo.minibatch_size", (batch * 4 / 2).max(1))],
                ),
                _ => (DXMI_CONFIG, vec![]),
            };
            overrides.push(set("finetune.batch_size", batch));
            let config = load(source, &overrides, extra, catalog)?;
            let dataset: Arc<dyn Dataset> = build_dataset(registry, &config)?;
            let policy = build_policy(dev, &config, dataset.dim())?;
            let mut phase = finetune_phase(dev, registry, &config, &dataset, policy, 0)?;
            let timing = time_iterations(quick, block_seconds, || {
                phase.step().map(|_| ()).map_err(Into::into)
            })?;
            (config, "it/s", timing)
        }
        "ddaebm" => {
            let config = load(
                DDAEBM_CONFIG,
                &[set("ddaebm.batch_size", batch)],
                extra,
                catalog,
            )?;
            let dataset = build_dataset(registry, &config)?;
            let mut phase = ddaebm_phase(dev, &config, dataset.dim(), data_batches(dev, &dataset))?;
            let timing = time_iterations(quick, block_seconds, || {
                phase.step().map(|_| ()).map_err(Into::into)
            })?;
            (config, "it/s", timing)
        }
        other => bail!(
            "unknown bench row {other:?}: expected one of {}",
            ROW_NAMES.join(", ")
        ),
    };
    let Timing {
        repeats,
        per_block: iterations_per_repeat,
        min_s,
        median_s,
        multiply_adds,
        matmul_thread_s,
        mean_s,
        gemm_same_shapes_gflops,
    } = timing;
    let matmul_gflop = 2.0 * multiply_adds / 1e9;
    let per_iteration = if unit == "samples/s" {
        batch as f64
    } else {
        1.0
    };
    let width = if name == "ddaebm" {
        config.ddaebm.hidden
    } else {
        config.policy.hidden
    };
    let matmul_own_gflops = if matmul_thread_s > 0.0 {
        matmul_gflop / matmul_thread_s
    } else {
        0.0
    };
    Ok(BenchRow {
        name: name.to_string(),
        batch,
        n_steps: config.policy.n_steps,
        width,
        unit: unit.to_string(),
        repeats,
        iterations_per_repeat,
        min_s,
        median_s,
        rate: per_iteration / median_s,
        matmul_gflop,
        matmul_gflops: matmul_gflop / min_s,
        peak_memory_mib: peak_memory_mib(),
        matmul_share: matmul_thread_s / (mean_s * denoise_gym::fork::threads() as f64),
        matmul_own_gflops,
        gemm_same_shapes_gflops,
        matmul_fraction_of_gemm: if gemm_same_shapes_gflops > 0.0 {
            matmul_own_gflops / gemm_same_shapes_gflops
        } else {
            0.0
        },
    })
}

/// Runs the bench; `progress` gets each row as it finishes.
pub fn run_bench<D: Backend>(
    dev: &D,
    registry: &Registry<D>,
    device_name: &str,
    options: &BenchOptions,
    mut progress: impl FnMut(&BenchRow),
) -> Result<BenchReport> {
    for name in &options.rows {
        if !ROW_NAMES.contains(&name.as_str()) {
            bail!(
                "--rows: unknown row {name:?}: expected one of {}",
                ROW_NAMES.join(", ")
            );
        }
    }
    if let Some(zero) = options.batches.iter().find(|&&b| b == 0) {
        bail!("--batches: a batch size must be at least 1, got {zero}");
    }
    let block_seconds = options.block_seconds.unwrap_or(0.3);
    if !(block_seconds > 0.0 && block_seconds.is_finite()) {
        bail!("--block-seconds: must be a positive number of seconds, got {block_seconds}");
    }
    let mut rows = Vec::new();
    for name in ROW_NAMES {
        if !options.rows.is_empty() && !options.rows.iter().any(|r| r == name) {
            continue;
        }
        let mut batches: Vec<usize> = if !options.batches.is_empty() {
            options.batches.clone()
        } else if options.quick {
            QUICK_BATCHES.to_vec()
        } else {
            BATCHES.to_vec()
        };
        if name == "ddaebm" && options.batches.is_empty() {
            batches.push(DDAEBM_REFERENCE_BATCH);
            batches.sort_unstable();
        }
        for batch in batches {
            let row = bench_row(
                dev,
                registry,
                name,
                batch,
                options.quick,
                block_seconds,
                &options.overrides,
            )
            .with_context(|| format!("bench row {name} at batch {batch}"))?;
            progress(&row);
            rows.push(row);
        }
    }
    Ok(BenchReport {
        implementation: "denoise-gym".to_string(),
        machine: machine_info(device_name),
        rows,
    })
}

/// The report as a Markdown table, with the machine in a header line.
pub fn to_markdown(report: &BenchReport) -> String {
    let m = &report.machine;
    let gemm: Vec<String> = m
        .gemm_gflops
        .iter()
        .map(|(shape, rate)| format!("{shape} {rate:.1}"))
        .collect();
    let mut out = format!(
        "{} on {} ({} cores, {} threads, {} build, device {}; matmul alone, GFLOP/s: {})\n\n",
        report.implementation,
        m.cpu,
        m.cores,
        m.threads,
        m.profile,
        m.device,
        gemm.join(", ")
    );
    out.push_str(
        "| row | batch | T | width | rate | unit | min ms | median ms | matmul GFLOP/it | matmul GFLOP/s | matmul share | matmul GFLOP/s per thread while running | same matmuls alone, GFLOP/s | fraction | peak MiB | blocks × its |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.3} | {:.3} | {:.4} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} | {} | {} × {} |\n",
            r.name,
            r.batch,
            r.n_steps,
            r.width,
            r.rate,
            r.unit,
            r.min_s * 1e3,
            r.median_s * 1e3,
            r.matmul_gflop,
            r.matmul_gflops,
            r.matmul_share,
            r.matmul_own_gflops,
            r.gemm_same_shapes_gflops,
            r.matmul_fraction_of_gemm,
            r.peak_memory_mib
                .map_or_else(|| "–".to_string(), |m| format!("{m:.0}")),
            r.repeats,
            r.iterations_per_repeat
        ));
    }
    out
}

/// `dgym bench --threads`: the bench once per thread count, each in a child process of
/// this program with that `RAYON_NUM_THREADS` (the pool's size is fixed for a process),
/// in the order given. The children's progress goes to this process's standard error.
pub fn run_thread_scaling(options: &BenchOptions, threads: &[usize]) -> Result<Vec<BenchReport>> {
    if let Some(zero) = threads.iter().find(|&&t| t == 0) {
        bail!("--threads: a thread count must be at least 1, got {zero}");
    }
    let exe = std::env::current_exe().context("finding this program to run the bench")?;
    let dir = tempfile::tempdir().context("a folder for the children's reports")?;
    let mut reports = Vec::new();
    for &count in threads {
        let json = dir.path().join(format!("threads-{count}.json"));
        let mut command = std::process::Command::new(&exe);
        command.arg("bench").arg("--json").arg(&json);
        if options.quick {
            command.arg("--quick");
        }
        if !options.rows.is_empty() {
            command.arg("--rows").arg(options.rows.join(","));
        }
        if !options.batches.is_empty() {
            let batches: Vec<String> = options.batches.iter().map(|b| b.to_string()).collect();
            command.arg("--batches").arg(batches.join(","));
        }
        if let Some(seconds) = options.block_seconds {
            command.arg("--block-seconds").arg(seconds.to_string());
        }
        for set in &options.overrides {
            command.arg("--set").arg(set);
        }
        eprintln!("== {count} thread(s)");
        let status = command
            .env("RAYON_NUM_THREADS", count.to_string())
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("starting {}", exe.display()))?;
        if !status.success() {
            bail!("the bench with {count} thread(s) failed ({status})");
        }
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("reading {}", json.display()))?;
        reports.push(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?,
        );
    }
    Ok(reports)
}

/// The reports of [`run_thread_scaling`] as one Markdown table: each row's rate at every
/// thread count, and its speed-up over the first count.
pub fn scaling_markdown(reports: &[BenchReport]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let counts: Vec<usize> = reports.iter().map(|r| r.machine.threads).collect();
    let mut out = format!(
        "{} on {} ({} cores, {} build): rate by thread count, and speed-up over {} thread(s)\n\n",
        first.implementation,
        first.machine.cpu,
        first.machine.cores,
        first.machine.profile,
        counts[0]
    );
    out.push_str("| row | batch | unit |");
    for c in &counts {
        out.push_str(&format!(" {c} thr |"));
    }
    for c in &counts[1..] {
        out.push_str(&format!(" ×{c}/{} |", counts[0]));
    }
    out.push('\n');
    out.push_str(&"|---".repeat(3 + 2 * counts.len() - 1));
    out.push_str("|\n");
    for (i, row) in first.rows.iter().enumerate() {
        let rates: Vec<Option<f64>> = reports
            .iter()
            .map(|r| {
                r.rows
                    .get(i)
                    .filter(|other| other.name == row.name && other.batch == row.batch)
                    .map(|other| other.rate)
            })
            .collect();
        out.push_str(&format!("| {} | {} | {} |", row.name, row.batch, row.unit));
        for rate in &rates {
            match rate {
                Some(r) => out.push_str(&format!(" {r:.1} |")),
                None => out.push_str(" – |"),
            }
        }
        for rate in &rates[1..] {
            match (rate, rates[0]) {
                (Some(r), Some(base)) => out.push_str(&format!(" {:.2} |", r / base)),
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}
