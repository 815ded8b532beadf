//! Runs from Python: a run's sampler (sampling, the policy's densities, the weights as
//! numpy), its resolved config, and `dgym train` in-process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use denoise_gym::nn::time_embedding;
use denoise_gym::policy::GaussianPolicy;
use denoise_gym::tensor::{CpuDevice, Matrix};
use denoise_gym::train::RunDir;
use denoise_gym_agents::ddaebm::LatentGenerator;
use denoise_gym_experiments::build::{load_generator, load_run_config, load_sampler};
use denoise_gym_experiments::builtin;
use denoise_gym_experiments::commands::sample::for_each_sample_block;
use denoise_gym_experiments::commands::train::{train_new, train_resume, TrainOptions};
use denoise_gym_experiments::config::TrainConfig;
use dfdx::prelude::*;
use numpy::{PyArray1, PyArray2};
use pyo3::exceptions::{PyFileNotFoundError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::arrays::{array1, array2, matrix_of, Points};
use crate::reward::{parameters_dict, Dataset, RunningCosts};
use crate::{any_error, DenoiseGymError};
use denoise_gym_experiments::eval::sample_metrics;

/// A run's final sampler.
enum SamplerKind {
    /// The Gaussian policy of a diffusion run (DSM, GCD/DxMI fine-tuning).
    Gaussian(Box<GaussianPolicy<CpuDevice>>),
    /// The latent generator of a DDAEBM run.
    Generator(LatentGenerator<CpuDevice>),
}

/// A run's final sampler (EMA weights where the run kept them), as `dgym sample` loads it.
#[pyclass(module = "denoise_gym._native", frozen)]
pub struct Sampler {
    kind: SamplerKind,
}

impl Sampler {
    fn sampler(&self) -> &dyn denoise_gym::sampler::Sampler<CpuDevice> {
        match &self.kind {
            SamplerKind::Gaussian(policy) => policy.as_ref(),
            SamplerKind::Generator(generator) => generator,
        }
    }

    fn gaussian(&self, what: &str) -> PyResult<&GaussianPolicy<CpuDevice>> {
        match &self.kind {
            SamplerKind::Gaussian(policy) => Ok(policy),
            SamplerKind::Generator(_) => Err(PyValueError::new_err(format!(
                "{what} needs a Gaussian policy (a diffusion run); this run's sampler is DDAEBM's latent generator"
            ))),
        }
    }

    /// One step per row from `t` (an int for every row, or a sequence of ints).
    fn steps(&self, t: &Bound<'_, PyAny>, rows: usize, n_steps: usize) -> PyResult<Vec<usize>> {
        // Read as arbitrary Python ints, so that -1 or 2**64 is "not a step", not a TypeError.
        let steps: Vec<i128> = match t.extract::<i128>() {
            Ok(t) => vec![t; rows],
            Err(_) => t.extract::<Vec<i128>>().map_err(|_| {
                PyTypeError::new_err("t must be an int or a sequence of ints (one per row)")
            })?,
        };
        if steps.len() != rows {
            return Err(PyValueError::new_err(format!(
                "t has {} entries for {rows} rows",
                steps.len()
            )));
        }
        if let Some(bad) = steps.iter().find(|&&t| t < 1 || t > n_steps as i128) {
            return Err(PyValueError::new_err(format!(
                "t = {bad} is not a step of 1..={n_steps}"
            )));
        }
        Ok(steps.into_iter().map(|t| t as usize).collect())
    }

    /// `x` (`n × d`) and one step per row, checked against the policy.
    fn inputs(
        &self,
        what: &str,
        x: &Points<'_>,
        t: &Bound<'_, PyAny>,
    ) -> PyResult<(&GaussianPolicy<CpuDevice>, Matrix<CpuDevice>, Vec<usize>)> {
        let policy = self.gaussian(what)?;
        let (x, n) = matrix_of(x, "x", policy.dim())?;
        let steps = self.steps(t, n, policy.n_steps())?;
        Ok((policy, x, steps))
    }
}

#[pymethods]
impl Sampler {
    /// The final sampler of the run in `path`.
    #[staticmethod]
    fn from_run(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        check_run_dir(&path)?;
        let kind = py
            .allow_threads(move || -> anyhow::Result<SamplerKind> {
                let registry = builtin::registry::<CpuDevice>()?;
                let catalog = registry.catalog();
                let dev = CpuDevice::default();
                let config = load_run_config(&RunDir::new(&path), catalog)?;
                Ok(if config.run.method == denoise_gym_agents::ddaebm::PHASE {
                    SamplerKind::Generator(load_generator(&dev, catalog, &path)?)
                } else {
                    SamplerKind::Gaussian(Box::new(load_sampler(&dev, catalog, &path)?))
                })
            })
            .map_err(any_error)?;
        Ok(Self { kind })
    }

    /// `"gaussian"` (a diffusion run's policy) or `"ddaebm"` (a latent generator).
    #[getter]
    fn kind(&self) -> &'static str {
        match self.kind {
            SamplerKind::Gaussian(_) => "gaussian",
            SamplerKind::Generator(_) => "ddaebm",
        }
    }

    /// The data dimension d.
    #[getter]
    fn dim(&self) -> usize {
        self.sampler().dim()
    }

    /// `n` samples `x_0`, `n × d` float32: the numbers `dgym sample RUN --n n --seed seed`
    /// writes.
    #[pyo3(signature = (n, seed = 0))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if n == 0 {
            return Err(PyValueError::new_err("n must be at least 1"));
        }
        crate::arrays::check_buffer(n, self.dim(), "Sampler.sample")?;
        let values = py
            .allow_threads(|| -> anyhow::Result<Vec<f32>> {
                let mut values = Vec::with_capacity(n * self.dim());
                for_each_sample_block(self.sampler(), n, seed, |block| {
                    values.extend_from_slice(block);
                    Ok(())
                })?;
                Ok(values)
            })
            .map_err(any_error)?;
        array2(py, values, n, self.dim())
    }

    /// The number of steps T (Gaussian policies).
    #[getter]
    fn n_steps(&self) -> PyResult<usize> {
        Ok(self.gaussian("n_steps")?.n_steps())
    }

    /// `σ_1..σ_T` (index `t - 1`), float32 (Gaussian policies).
    #[getter]
    fn sigmas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        Ok(array1(py, self.gaussian("sigmas")?.sigmas()))
    }

    /// `ε_θ(x_t, t)`, `n × d`.
    fn predict_eps<'py>(
        &self,
        py: Python<'py>,
        x: Points<'py>,
        t: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (policy, x, steps) = self.inputs("predict_eps", &x, t)?;
        let (n, d) = *x.shape();
        let eps = py.allow_threads(|| policy.predict_eps(x, &steps).as_vec());
        array2(py, eps, n, d)
    }

    /// The policy mean `μ_θ(x_t, t)`, `n × d`.
    fn mean<'py>(
        &self,
        py: Python<'py>,
        x: Points<'py>,
        t: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (policy, x, steps) = self.inputs("mean", &x, t)?;
        let (n, d) = *x.shape();
        let mean = py.allow_threads(|| policy.mean(x, &steps).as_vec());
        array2(py, mean, n, d)
    }

    /// `log π(x_{t-1} | x_t, t)` per row, float32.
    fn log_prob<'py>(
        &self,
        py: Python<'py>,
        x: Points<'py>,
        t: &Bound<'py, PyAny>,
        action: Points<'py>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (policy, x, steps) = self.inputs("log_prob", &x, t)?;
        let (action, rows) = matrix_of(&action, "action", policy.dim())?;
        if rows != x.shape().0 {
            return Err(PyValueError::new_err(format!(
                "action has {rows} rows, x has {}",
                x.shape().0
            )));
        }
        let log_prob = py.allow_threads(|| policy.log_prob(x, &steps, &action).as_vec());
        Ok(array1(py, log_prob))
    }

    /// The running costs of this policy's chain with the given weights (defaults: the
    /// `[agent]` section's).
    #[pyo3(signature = (tau_entropy = 0.1, tau_velocity = 0.01, velocity_scale = "adaptive", velocity_scale_value = 1.0))]
    fn running_costs(
        &self,
        tau_entropy: f64,
        tau_velocity: f64,
        velocity_scale: &str,
        velocity_scale_value: f64,
    ) -> PyResult<RunningCosts> {
        let policy = self.gaussian("running_costs")?;
        RunningCosts::build(
            policy.schedule(),
            policy.dim(),
            tau_entropy,
            tau_velocity,
            velocity_scale,
            velocity_scale_value,
        )
    }

    /// Everything a PyTorch (or numpy) policy needs to start from this sampler, as numpy:
    /// `layers` (a list of `(W, b)`, `W: in × out`, `y = x W + b`, the activation between
    /// layers, none after the last), `activation` (`"relu"`/`"silu"`), `time_embedding`
    /// (`T × e`, row `t - 1` is step t's embedding, appended to `x_t` as the network's
    /// input `[x_t, emb(t)]`), `sigmas`, `alpha_bar`, `beta`, `posterior_c1`,
    /// `posterior_c2` (each length T, index `t - 1`), `clip_x0` (0 = off), `fix_last_sigma`
    /// (σ_1 is held fixed in training), `dim`,
    /// `n_steps`, `min_sigma_sample`, `min_sigma_log_prob` (None = no floor), `parameters`
    /// (every parameter by its checkpoint name, `log_sigma` included), and when the
    /// run froze its early steps, `ft_steps` and `frozen_layers` (the network of the steps
    /// `t > ft_steps`). The mean is `μ = c1_t x̂_0 + c2_t x_t` with
    /// `x̂_0 = (x_t − √(1−ᾱ_t) ε_θ) / √ᾱ_t`, clipped to `±clip_x0` when that is set.
    fn export<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let policy = self.gaussian("export")?;
        let n_steps = policy.n_steps();
        let spec = policy.spec();
        let out = PyDict::new(py);
        let layers = |net: &denoise_gym::nn::Mlp<CpuDevice>| -> PyResult<Bound<'py, PyList>> {
            let list = PyList::empty(py);
            for layer in &net.layers {
                let (rows, cols) = *layer.weight.shape();
                let weight = array2(py, layer.weight.as_vec(), rows, cols)?;
                let bias = array1(py, layer.bias.as_vec());
                list.append((weight, bias))?;
            }
            Ok(list)
        };
        out.set_item("layers", layers(&policy.eps_net)?)?;
        out.set_item(
            "activation",
            match spec.activation {
                denoise_gym::nn::Activation::Relu => "relu",
                denoise_gym::nn::Activation::Silu => "silu",
            },
        )?;
        let steps: Vec<usize> = (1..=n_steps).collect();
        let embedding = time_embedding(&steps, n_steps, spec.time_embed_dim);
        out.set_item(
            "time_embedding",
            array2(py, embedding, n_steps, spec.time_embed_dim)?,
        )?;
        out.set_item("sigmas", array1(py, policy.sigmas()))?;
        let schedule = policy.schedule();
        let per_step = |f: &dyn Fn(usize) -> f64| {
            array1(py, steps.iter().map(|&t| f(t)).collect::<Vec<f64>>())
        };
        out.set_item("alpha_bar", per_step(&|t| schedule.alpha_bar(t)))?;
        out.set_item("beta", per_step(&|t| schedule.beta(t)))?;
        out.set_item("posterior_c1", per_step(&|t| schedule.posterior_c1(t)))?;
        out.set_item("posterior_c2", per_step(&|t| schedule.posterior_c2(t)))?;
        out.set_item("clip_x0", spec.clip_x0)?;
        out.set_item("fix_last_sigma", spec.fix_last_sigma)?;
        out.set_item("dim", policy.dim())?;
        out.set_item("n_steps", n_steps)?;
        let (floor_sample, floor_log_prob) = policy.sigma_floors();
        out.set_item("min_sigma_sample", floor_sample)?;
        out.set_item("min_sigma_log_prob", floor_log_prob)?;
        if let Some(frozen) = policy.frozen_steps() {
            out.set_item("ft_steps", frozen.ft_steps)?;
            out.set_item("frozen_layers", layers(&frozen.eps_net)?)?;
        }
        out.set_item("parameters", parameters_dict(py, policy)?)?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        format!("Sampler(kind={:?}, dim={})", self.kind(), self.dim())
    }
}

/// Fails with `FileNotFoundError` unless `path` is a run directory (it has `config.toml`).
pub fn check_run_dir(path: &Path) -> PyResult<()> {
    if !path.is_dir() {
        return Err(PyFileNotFoundError::new_err(format!(
            "run directory {} does not exist",
            path.display()
        )));
    }
    if !RunDir::new(path).config().is_file() {
        return Err(PyFileNotFoundError::new_err(format!(
            "{} has no config.toml: not a run directory of denoise-gym",
            path.display()
        )));
    }
    Ok(())
}

/// The resolved config of the run in `path` (old keys migrated), as JSON.
#[pyfunction]
pub fn run_config_json(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    check_run_dir(&path)?;
    py.allow_threads(move || -> anyhow::Result<String> {
        let registry = builtin::registry::<CpuDevice>()?;
        let config = load_run_config(&RunDir::new(&path), registry.catalog())?;
        Ok(serde_json::to_string(&config)?)
    })
    .map_err(any_error)
}

/// The most SWD directions `evaluate` takes (dgym's default is 1,000): beyond it the call
/// runs for minutes with nothing to gain, and it cannot be interrupted.
const MAX_SWD_DIRECTIONS: usize = 100_000;

/// SWD, MMD² (and for mixtures the per-mode statistics) of `samples` against as many fresh
/// points of `dataset`, as `dgym eval` computes them: the data and the SWD directions come
/// from the evaluation stream of `seed`. Returns the metrics by name.
#[pyfunction]
#[pyo3(signature = (samples, dataset, seed = 0, swd_directions = 1000))]
pub fn evaluate_samples(
    py: Python<'_>,
    samples: Points<'_>,
    dataset: &Bound<'_, Dataset>,
    seed: u64,
    swd_directions: usize,
) -> PyResult<std::collections::BTreeMap<String, f64>> {
    let law = dataset.get().law.clone();
    let (samples, n) = crate::arrays::rows_of(&samples, "samples", Some(law.dim()))?;
    if n < 2 || swd_directions == 0 || swd_directions > MAX_SWD_DIRECTIONS {
        return Err(PyValueError::new_err(format!(
            "evaluate needs at least 2 samples and 1 to {MAX_SWD_DIRECTIONS} SWD directions (got {n} and {swd_directions})"
        )));
    }
    crate::arrays::check_finite(&samples, law.dim(), "samples")?;
    py.allow_threads(move || -> anyhow::Result<_> {
        let mut rng = denoise_gym::rng::Stream::Eval.rng(seed);
        let data = law.sample(n, &mut rng);
        let metrics = sample_metrics(&samples, &data, law.as_ref(), swd_directions, &mut rng)?;
        Ok(metrics)
    })
    .map_err(any_error)
}

/// The configs shipped with denoise-gym (`experiments/configs/`), by name: `(name, TOML)`.
pub const SHIPPED_CONFIGS: &[(&str, &str)] = &[
    (
        "ddaebm-25gaussians",
        include_str!("../../experiments/configs/ddaebm-25gaussians.toml"),
    ),
    (
        "ddaebm-pinwheel",
        include_str!("../../experiments/configs/ddaebm-pinwheel.toml"),
    ),
    (
        "ddaebm-swissroll",
        include_str!("../../experiments/configs/ddaebm-swissroll.toml"),
    ),
    (
        "ddpm-8gaussians",
        include_str!("../../experiments/configs/ddpm-8gaussians.toml"),
    ),
    (
        "ddpm-8gaussians-t100",
        include_str!("../../experiments/configs/ddpm-8gaussians-t100.toml"),
    ),
    (
        "dxmi-25gaussians",
        include_str!("../../experiments/configs/dxmi-25gaussians.toml"),
    ),
    (
        "dxmi-8gaussians",
        include_str!("../../experiments/configs/dxmi-8gaussians.toml"),
    ),
    (
        "dxmi-checkerboard",
        include_str!("../../experiments/configs/dxmi-checkerboard.toml"),
    ),
    (
        "gcd-25gaussians",
        include_str!("../../experiments/configs/gcd-25gaussians.toml"),
    ),
    (
        "gcd-8gaussians",
        include_str!("../../experiments/configs/gcd-8gaussians.toml"),
    ),
    (
        "gcd-checkerboard",
        include_str!("../../experiments/configs/gcd-checkerboard.toml"),
    ),
    (
        "gcd-swissroll",
        include_str!("../../experiments/configs/gcd-swissroll.toml"),
    ),
    (
        "ipm-8gaussians",
        include_str!("../../experiments/configs/ipm-8gaussians.toml"),
    ),
    (
        "oracle-8gaussians",
        include_str!("../../experiments/configs/oracle-8gaussians.toml"),
    ),
    (
        "ppo-25gaussians",
        include_str!("../../experiments/configs/ppo-25gaussians.toml"),
    ),
    (
        "ppo-8gaussians",
        include_str!("../../experiments/configs/ppo-8gaussians.toml"),
    ),
];

/// The shipped configs' names and TOML texts.
#[pyfunction]
pub fn shipped_configs() -> Vec<(&'static str, &'static str)> {
    SHIPPED_CONFIGS.to_vec()
}

/// The names of the built-in data sets.
#[pyfunction]
pub fn dataset_names() -> PyResult<Vec<String>> {
    let registry = builtin::registry::<CpuDevice>().map_err(any_error)?;
    Ok(registry
        .catalog()
        .names(denoise_gym_experiments::catalog::ComponentKind::Dataset)
        .into_iter()
        .map(str::to_string)
        .collect())
}

/// The names of the 2-D toy data sets (each registered with Gymnasium as
/// `denoise_gym/<name>-v0`).
#[pyfunction]
pub fn toy_dataset_names() -> Vec<&'static str> {
    denoise_gym_envs::TOY_DATASETS.to_vec()
}

/// How often the waiting thread looks at Python's signals while a run trains.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// `dgym train` in-process: a new run of the TOML `config_text` (named `source` in
/// errors) with `overrides` (`section.key=value`) in `out`, or with `resume` the run in
/// `out` continued. The GIL is released while it trains; Ctrl-C (a KeyboardInterrupt)
/// stops it at the next iteration with a checkpoint written, then is raised. Returns
/// `(finished, interrupted_at)`.
#[pyfunction]
#[pyo3(signature = (config_text, source, out, overrides, resume = false))]
pub fn train_config(
    py: Python<'_>,
    config_text: String,
    source: String,
    out: PathBuf,
    overrides: Vec<String>,
    resume: bool,
) -> PyResult<(bool, Option<u64>)> {
    let interrupt = Arc::new(AtomicBool::new(false));
    let options = TrainOptions {
        stop_after: None,
        interrupt: Some(interrupt.clone()),
    };
    // The run is built and trained on its own thread (the registry holds `Rc`s, so it is
    // made there); this thread waits with the GIL released and wakes every 50 ms to let
    // Python see a Ctrl-C.
    let worker = std::thread::Builder::new()
        .name("denoise-gym-train".into())
        .spawn(move || -> anyhow::Result<(bool, Option<u64>)> {
            let registry = builtin::registry::<CpuDevice>()?;
            let dev = CpuDevice::default();
            let outcome = if resume {
                train_resume(&dev, &registry, &out, &options)?
            } else {
                let config = TrainConfig::from_toml_str(
                    &source,
                    &config_text,
                    &overrides,
                    registry.catalog(),
                )?;
                train_new(&dev, &registry, config, Path::new(&out), &options)?
            };
            Ok((outcome.finished, outcome.interrupted_at))
        })
        .map_err(|e| DenoiseGymError::new_err(format!("starting the training thread: {e}")))?;
    let mut pending: Option<PyErr> = None;
    loop {
        let done = py.allow_threads(|| {
            std::thread::sleep(SIGNAL_POLL);
            worker.is_finished()
        });
        if done {
            break;
        }
        if pending.is_none() {
            if let Err(signal) = py.check_signals() {
                interrupt.store(true, Ordering::SeqCst);
                pending = Some(signal);
            }
        }
    }
    let result = match worker.join() {
        Ok(result) => result.map_err(any_error),
        Err(_) => Err(DenoiseGymError::new_err("the training thread panicked")),
    };
    match pending {
        // The run stopped at a checkpoint; the KeyboardInterrupt goes on up.
        Some(signal) => {
            result?;
            Err(signal)
        }
        None => result,
    }
}
