//! Data sets, the oracle and learned rewards, and the agents' running costs.

use std::sync::{Arc, Mutex, MutexGuard};

use denoise_gym::agent::{VelocityScale, VelocityScaleKind};
use denoise_gym::ebm::{ContrastiveConfig, EbmReward, EnergyModel};
use denoise_gym::nn::Parameterized;
use denoise_gym::policy::HALF_LOG_TWO_PI;
use denoise_gym::reward::{LearnedReward, RewardModel};
use denoise_gym::rng::seeded;
use denoise_gym::schedule::Schedule;
use denoise_gym::tensor::{vector, CpuDevice, Matrix, Vector};
use denoise_gym_experiments::build::{build_dataset, build_energy_model, load_energy_model};
use denoise_gym_experiments::builtin;
use denoise_gym_experiments::config::TrainConfig;
use dfdx::prelude::*;
use numpy::{PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{array1, array2, check_finite, matrix_of, rows_of, Points, Values};
use crate::{any_error, library_error, DenoiseGymError};

/// Keyword arguments as the TOML lines of one config section (`key = value`), so that the
/// library's own parser checks them (unknown keys, wrong types) with its own messages.
pub fn section_toml(section: &str, keys: Option<&Bound<'_, PyDict>>) -> PyResult<String> {
    let mut text = String::new();
    if let Some(keys) = keys {
        let json = keys
            .py()
            .import("json")?
            .call_method1("dumps", (keys,))?
            .extract::<String>()?;
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| PyValueError::new_err(format!("[{section}] keys: {e}")))?;
        let table = toml::to_string(&value)
            .map_err(|e| PyValueError::new_err(format!("[{section}] keys: {e}")))?;
        text.push_str(&table);
    }
    Ok(text)
}

/// A data set of the built-in registry: `Dataset("8gaussians")`, or any `[data]` section's
/// keys: `Dataset("csv", path="points.csv")`.
#[pyclass(module = "denoise_gym._native", frozen)]
pub struct Dataset {
    pub(crate) law: Arc<dyn denoise_gym_envs::Dataset>,
}

#[pymethods]
impl Dataset {
    /// `Dataset(name, **data_keys)`: the data set `name` as `[data] dataset = name` and the
    /// other keys of `[data]` would build it in a config.
    #[new]
    #[pyo3(signature = (name, **keys))]
    fn new(name: &str, keys: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let text = format!(
            "[data]\ndataset = {}\n{}",
            toml::Value::from(name),
            section_toml("data", keys)?
        );
        let registry = builtin::registry::<CpuDevice>().map_err(any_error)?;
        let config = TrainConfig::from_toml_str("Dataset(...)", &text, &[], registry.catalog())
            .map_err(crate::value_error)?;
        let law = build_dataset(&registry, &config).map_err(crate::value_error)?;
        Ok(Self { law })
    }

    /// The data set's name.
    #[getter]
    fn name(&self) -> String {
        self.law.name().to_string()
    }

    /// The dimension d of a point.
    #[getter]
    fn dim(&self) -> usize {
        self.law.dim()
    }

    /// `n` fresh points, an `n × d` float32 array; `seed` fixes them.
    #[pyo3(signature = (n, seed = 0))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::arrays::check_buffer(n, self.law.dim(), "Dataset.sample")?;
        let law = self.law.clone();
        let values = py.allow_threads(move || law.sample(n, &mut seeded(seed, 0)));
        array2(py, values, n, self.law.dim())
    }

    /// The exact log-density at each row of `points` (float64), for data sets that have
    /// one (the Gaussian mixtures); `ValueError` otherwise.
    fn log_density<'py>(
        &self,
        py: Python<'py>,
        points: Points<'py>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (values, _) = rows_of(&points, "points", Some(self.law.dim()))?;
        match self.law.log_density(&values) {
            Some(log_p) => Ok(array1(py, log_p)),
            None => Err(PyValueError::new_err(format!(
                "data set `{}` has no exact log-density (only the Gaussian mixtures do)",
                self.law.name()
            ))),
        }
    }

    fn __repr__(&self) -> String {
        format!("Dataset({:?}, dim={})", self.law.name(), self.law.dim())
    }
}

/// The exact log-density of a mixture as the reward: `r(x_0) = log p(x_0)`.
#[pyclass(module = "denoise_gym._native", frozen)]
pub struct OracleReward {
    pub(crate) oracle: Arc<denoise_gym_envs::OracleReward>,
    dataset: Py<Dataset>,
}

#[pymethods]
impl OracleReward {
    /// `OracleReward(dataset)`: `dataset` is a `Dataset` or the name of a built-in one; it
    /// must have an exact density (`ValueError` otherwise).
    #[new]
    fn new(py: Python<'_>, dataset: &Bound<'_, PyAny>) -> PyResult<Self> {
        let dataset: Py<Dataset> = match dataset.extract::<Py<Dataset>>() {
            Ok(dataset) => dataset,
            Err(_) => {
                let name: String = dataset.extract().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(
                        "OracleReward(dataset): dataset must be a Dataset or a data set's name",
                    )
                })?;
                Py::new(py, Dataset::new(&name, None)?)?
            }
        };
        let law = dataset.get().law.clone();
        let oracle = denoise_gym_envs::OracleReward::new(law).map_err(library_error)?;
        Ok(Self {
            oracle: Arc::new(oracle),
            dataset,
        })
    }

    /// The data set whose density this is.
    #[getter]
    fn dataset(&self, py: Python<'_>) -> Py<Dataset> {
        self.dataset.clone_ref(py)
    }

    /// The dimension d.
    #[getter]
    fn dim(&self) -> usize {
        RewardModel::<CpuDevice>::dim(self.oracle.as_ref())
    }

    /// `log p(x)` per row, float32 (the value the environment hands out).
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        points: Points<'py>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let (x0, _) = matrix_of(&points, "points", self.dim())?;
        check_finite(&x0.as_vec(), self.dim(), "points")?;
        let reward =
            RewardModel::<CpuDevice>::reward(self.oracle.as_ref(), &x0).map_err(library_error)?;
        Ok(array1(py, reward.as_vec()))
    }

    fn __repr__(&self) -> String {
        format!("OracleReward({:?})", self.dataset.get().law.name())
    }
}

/// A learnable energy and its contrastive learner, with the number of updates so far.
pub struct EnergyState {
    pub(crate) reward: EbmReward<CpuDevice>,
    iteration: u64,
}

/// Locks shared state; a lock poisoned by a panic is an error, not a second panic.
pub fn lock<T>(state: &Mutex<T>) -> PyResult<MutexGuard<'_, T>> {
    state
        .lock()
        .map_err(|_| DenoiseGymError::new_err("internal: state poisoned by an earlier panic"))
}

/// The EBM reward `r(x) = -E_φ(x)` of GCD/DxMI, trainable from Python by the contrastive
/// update `L_E = mean E(x⁺) − mean E(x⁻) + γ (mean E(x⁺)² + mean E(x⁻)²)` with Adam.
#[pyclass(module = "denoise_gym._native", frozen)]
pub struct EnergyReward {
    pub(crate) state: Arc<Mutex<EnergyState>>,
    dim: usize,
}

impl EnergyReward {
    fn energies(&self, py: Python<'_>, points: &Points<'_>) -> PyResult<Vec<f32>> {
        let (values, _) = rows_of(points, "points", Some(self.dim))?;
        check_finite(&values, self.dim, "points")?;
        let state = self.state.clone();
        py.allow_threads(move || -> PyResult<Vec<f32>> {
            Ok(lock(&state)?.reward.model.energy_host(&values))
        })
    }

    fn from_model(model: EnergyModel<CpuDevice>, contrastive: ContrastiveConfig) -> PyResult<Self> {
        let dim = model.dim();
        let reward = EbmReward::new(model, contrastive).map_err(library_error)?;
        Ok(Self {
            state: Arc::new(Mutex::new(EnergyState {
                reward,
                iteration: 0,
            })),
            dim,
        })
    }
}

#[pymethods]
impl EnergyReward {
    /// `EnergyReward(dim, seed=0, **reward_keys)`: a fresh energy network `dim → hidden ×
    /// depth → 1`, initialised as `dgym train` initialises a run with `run.seed = seed`,
    /// and its learner; the keys are those of a config's `[reward]` section (`hidden`,
    /// `depth`, `activation`, `gamma`, `lr`, `betas`, `grad_clip`).
    #[new]
    #[pyo3(signature = (dim, seed = 0, **keys))]
    fn new(dim: usize, seed: u64, keys: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        if dim == 0 {
            return Err(PyValueError::new_err(
                "EnergyReward: dim must be at least 1",
            ));
        }
        // Checked as the [reward] section of a config that fine-tunes against an EBM is
        // (sizes, ranges, memory), not parsed alone.
        let text = format!(
            "[finetune]\niterations = 1\nreward = \"ebm\"\n[reward]\n{}",
            section_toml("reward", keys)?
        );
        let registry = builtin::registry::<CpuDevice>().map_err(any_error)?;
        let config =
            TrainConfig::from_toml_str("EnergyReward(...)", &text, &[], registry.catalog())
                .map_err(crate::value_error)?
                .reward;
        let widest = config.hidden.max(1);
        crate::arrays::check_buffer(dim, widest, "EnergyReward: the first layer")?;
        crate::arrays::check_buffer(
            widest.saturating_mul(widest),
            config.depth.max(1),
            "EnergyReward: the hidden layers",
        )?;
        let contrastive = config.contrastive();
        contrastive.validate().map_err(library_error)?;
        let model = build_energy_model(&CpuDevice::default(), &config, seed, dim);
        Self::from_model(model, contrastive)
    }

    /// The EBM of a finished (or checkpointed) GCD/DxMI run, or `-D(x, 0)` of a DDAEBM
    /// run, with its fitted temperature; updates start from a fresh Adam state with the
    /// run's `[reward]` learning settings.
    #[staticmethod]
    fn from_run(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        crate::run::check_run_dir(&path)?;
        let (model, contrastive) = py
            .allow_threads(move || -> anyhow::Result<_> {
                let registry = builtin::registry::<CpuDevice>()?;
                let catalog = registry.catalog();
                let config = denoise_gym_experiments::build::load_run_config(
                    &denoise_gym::train::RunDir::new(&path),
                    catalog,
                )?;
                let model = load_energy_model(&CpuDevice::default(), catalog, &path)?;
                Ok((model, config.reward.contrastive()))
            })
            .map_err(any_error)?;
        Self::from_model(model, contrastive)
    }

    /// The dimension d.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// The calibration temperature `T_E` (1 until a run fitted it).
    #[getter]
    fn temperature(&self) -> PyResult<f64> {
        Ok(lock(&self.state)?.reward.model.temperature)
    }

    /// The number of updates made through this object.
    #[getter]
    fn iteration(&self) -> PyResult<u64> {
        Ok(lock(&self.state)?.iteration)
    }

    /// Raw energies `E_φ(x)` per row, float32.
    fn energy<'py>(
        &self,
        py: Python<'py>,
        points: Points<'py>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        Ok(array1(py, self.energies(py, &points)?))
    }

    /// The reward `-E_φ(x)` per row, float32 (what the environment hands out).
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        points: Points<'py>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let energies = self.energies(py, &points)?;
        Ok(array1(py, energies.into_iter().map(|e| -e).collect()))
    }

    /// One contrastive update on data `positive` (`x⁺`) against samples `negative` (`x⁻`),
    /// both `n × d` (`n` may differ). Returns what the model was before the step:
    /// `energy_pos`, `energy_neg`, `energy_gap`, `L_E`, `grad_norm` (the `ebm/...` scalars
    /// `dgym` logs, without the prefix).
    fn update<'py>(
        &self,
        py: Python<'py>,
        positive: Points<'py>,
        negative: Points<'py>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (positive, _) = matrix_of(&positive, "positive", self.dim)?;
        let (negative, _) = matrix_of(&negative, "negative", self.dim)?;
        for (what, batch) in [("positive", &positive), ("negative", &negative)] {
            check_finite(&batch.as_vec(), self.dim, what)?;
        }
        let state = self.state.clone();
        let stats = py.allow_threads(move || -> PyResult<_> {
            let mut state = lock(&state)?;
            let iteration = state.iteration;
            let stats = state
                .reward
                .learn(&positive, &negative, iteration)
                .map_err(library_error)?;
            state.iteration += 1;
            Ok(stats)
        })?;
        let out = PyDict::new(py);
        for (name, value) in stats {
            out.set_item(name.trim_start_matches("ebm/"), value)?;
        }
        Ok(out)
    }

    /// The network's parameters by name (`net.layers.0.weight`, `in × out`, and
    /// `net.layers.0.bias`, `1 × out`; `y = x W + b`), float32 copies.
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = lock(&self.state)?;
        parameters_dict(py, &state.reward.model)
    }

    fn __repr__(&self) -> PyResult<String> {
        let state = lock(&self.state)?;
        Ok(format!(
            "EnergyReward(dim={}, updates={}, temperature={})",
            self.dim, state.iteration, state.reward.model.temperature
        ))
    }
}

/// A model's parameters by name, as float32 arrays of their shapes.
pub fn parameters_dict<'py, M: Parameterized<CpuDevice>>(
    py: Python<'py>,
    model: &M,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, parameter) in model.parameter_names().into_iter().zip(model.parameters()) {
        let (rows, cols) = *parameter.shape();
        out.set_item(name, array2(py, parameter.as_vec(), rows, cols)?)?;
    }
    Ok(out)
}

/// The running costs of the entropy-regularised return (docs/algorithms.md §4), as reward
/// terms for an agent written in Python:
/// the velocity reward `r_t = -τ_v ‖x_t − x_{t-1}‖² / (2 s_t² d)` of each step and the
/// entropy bonus `τ_H Σ_t H_t`, `H_t = d (log σ_t + ½ log 2πe)`, of a Gaussian policy.
/// `s_t²` is fixed or a running average of the policy's own step lengths, as the Rust
/// agents keep it.
#[pyclass(module = "denoise_gym._native", frozen)]
pub struct RunningCosts {
    scale: Mutex<VelocityScale>,
    tau_entropy: f64,
    tau_velocity: f64,
    dim: usize,
    n_steps: usize,
}

impl RunningCosts {
    /// Running costs over `schedule` in `dim` dimensions.
    pub fn build(
        schedule: &Schedule,
        dim: usize,
        tau_entropy: f64,
        tau_velocity: f64,
        velocity_scale: &str,
        velocity_scale_value: f64,
    ) -> PyResult<Self> {
        let kind = match velocity_scale {
            "adaptive" => VelocityScaleKind::Adaptive,
            "fixed" => VelocityScaleKind::Fixed,
            other => {
                return Err(PyValueError::new_err(format!(
                    "velocity_scale must be \"adaptive\" or \"fixed\", got {other:?}"
                )))
            }
        };
        for (key, value) in [("tau_entropy", tau_entropy), ("tau_velocity", tau_velocity)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(PyValueError::new_err(format!(
                    "{key} must be a finite number ≥ 0, got {value}"
                )));
            }
        }
        if !(velocity_scale_value.is_finite() && velocity_scale_value > 0.0) {
            return Err(PyValueError::new_err(format!(
                "velocity_scale_value must be a finite number > 0, got {velocity_scale_value}"
            )));
        }
        Ok(Self {
            scale: Mutex::new(VelocityScale::new(kind, schedule, velocity_scale_value)),
            tau_entropy,
            tau_velocity,
            dim,
            n_steps: schedule.n_steps(),
        })
    }

    fn check_step(&self, t: usize) -> PyResult<()> {
        if t == 0 || t > self.n_steps {
            return Err(PyValueError::new_err(format!(
                "t = {t} is not a step of 1..={}",
                self.n_steps
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl RunningCosts {
    /// `τ_H`.
    #[getter]
    fn tau_entropy(&self) -> f64 {
        self.tau_entropy
    }

    /// `τ_v`.
    #[getter]
    fn tau_velocity(&self) -> f64 {
        self.tau_velocity
    }

    /// The scales `s_t²` for `t = 1..T` (index `t - 1`), float64.
    #[getter]
    fn velocity_scales<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        Ok(array1(py, lock(&self.scale)?.s2.clone()))
    }

    /// The velocity reward `-τ_v ‖x_t − x_{t-1}‖² / (2 s_t² d)` of the step `x_t → x_{t-1}`
    /// per row, float64.
    fn velocity_reward<'py>(
        &self,
        py: Python<'py>,
        x_t: Points<'py>,
        x_prev: Points<'py>,
        t: usize,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        self.check_step(t)?;
        let (a, n) = rows_of(&x_t, "x_t", Some(self.dim))?;
        let (b, m) = rows_of(&x_prev, "x_prev", Some(self.dim))?;
        if n != m {
            return Err(PyValueError::new_err(format!(
                "x_t has {n} rows, x_prev {m}"
            )));
        }
        let s2 = lock(&self.scale)?.get(t);
        let d = self.dim as f64;
        let rewards = a
            .chunks(self.dim)
            .zip(b.chunks(self.dim))
            .map(|(u, v)| {
                let squared: f64 = u
                    .iter()
                    .zip(v)
                    .map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2))
                    .sum();
                -self.tau_velocity * squared / (2.0 * s2 * d)
            })
            .collect();
        Ok(array1(py, rewards))
    }

    /// The entropy bonus `τ_H Σ_t d (log σ_t + ½ log 2πe)` of a Gaussian policy with the
    /// given `σ_1..σ_T`.
    fn entropy_bonus(&self, sigmas: Values<'_>) -> PyResult<f64> {
        let sigmas = sigmas.as_array();
        if sigmas.len() != self.n_steps {
            return Err(PyValueError::new_err(format!(
                "sigmas has {} entries; expected T = {}",
                sigmas.len(),
                self.n_steps
            )));
        }
        if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(PyValueError::new_err(format!(
                "every sigma must be finite and > 0, got {bad}"
            )));
        }
        let d = self.dim as f64;
        let half_log_two_pi_e = f64::from(HALF_LOG_TWO_PI) + 0.5;
        Ok(self.tau_entropy
            * sigmas
                .iter()
                .map(|s| d * (f64::from(*s).ln() + half_log_two_pi_e))
                .sum::<f64>())
    }

    /// Moves adaptive scales toward a rollout's `‖x_{t-1} − x_t‖²`: `squared_lengths` is
    /// `T × n`, row k the step from `t = T − k` (the order a rollout runs in). Fixed scales
    /// ignore it.
    fn observe(&self, squared_lengths: Points<'_>) -> PyResult<()> {
        let (values, rows) = rows_of(&squared_lengths, "squared_lengths", None)?;
        if rows != self.n_steps {
            return Err(PyValueError::new_err(format!(
                "squared_lengths has {rows} rows; expected one per step, T = {}",
                self.n_steps
            )));
        }
        check_finite(&values, values.len() / rows.max(1), "squared_lengths")?;
        if let Some(bad) = values.iter().find(|v| **v < 0.0) {
            return Err(PyValueError::new_err(format!(
                "squared_lengths holds {bad}: a squared length is ≥ 0"
            )));
        }
        let batch = values.len() / rows.max(1);
        lock(&self.scale)?.observe(&values, batch, self.dim);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!(
            "RunningCosts(tau_entropy={}, tau_velocity={}, T={}, d={})",
            self.tau_entropy, self.tau_velocity, self.n_steps, self.dim
        )
    }
}

/// What scores the final samples of a native environment.
#[derive(Clone)]
pub enum RewardSource {
    /// 0 for every sample (the Python side scores them with a callable).
    Zero(usize),
    /// The exact log-density.
    Oracle(Arc<denoise_gym_envs::OracleReward>),
    /// A (possibly learning) EBM, shared with its `EnergyReward`.
    Energy(Arc<Mutex<EnergyState>>, usize),
}

impl RewardSource {
    /// The reward object `reward` (an `OracleReward`, an `EnergyReward` or None for zero).
    pub fn from_py(reward: Option<&Bound<'_, PyAny>>, dim: usize) -> PyResult<Self> {
        let Some(reward) = reward else {
            return Ok(RewardSource::Zero(dim));
        };
        if let Ok(oracle) = reward.downcast::<OracleReward>() {
            return Ok(RewardSource::Oracle(oracle.get().oracle.clone()));
        }
        if let Ok(energy) = reward.downcast::<EnergyReward>() {
            let energy = energy.get();
            return Ok(RewardSource::Energy(energy.state.clone(), energy.dim));
        }
        Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "a native reward must be an OracleReward or an EnergyReward, got {}",
            reward.get_type().name()?
        )))
    }
}

/// [`RewardSource`] as the library's reward model.
pub struct RewardAdapter(pub RewardSource);

impl RewardModel<CpuDevice> for RewardAdapter {
    fn reward(&self, x0: &Matrix<CpuDevice>) -> denoise_gym::Result<Vector<CpuDevice>> {
        match &self.0 {
            RewardSource::Zero(_) => Ok(vector(x0.device(), vec![0.0; x0.shape().0])),
            RewardSource::Oracle(oracle) => RewardModel::<CpuDevice>::reward(oracle.as_ref(), x0),
            RewardSource::Energy(state, _) => {
                let state = state.lock().map_err(|_| {
                    denoise_gym::Error::InvalidArgument(
                        "EnergyReward poisoned by an earlier panic".into(),
                    )
                })?;
                state.reward.reward(x0)
            }
        }
    }

    fn dim(&self) -> usize {
        match &self.0 {
            RewardSource::Zero(dim) | RewardSource::Energy(_, dim) => *dim,
            RewardSource::Oracle(oracle) => RewardModel::<CpuDevice>::dim(oracle.as_ref()),
        }
    }

    fn name(&self) -> &str {
        match &self.0 {
            RewardSource::Zero(_) => "python",
            RewardSource::Oracle(_) => "oracle",
            RewardSource::Energy(..) => "ebm",
        }
    }
}
