//! The native half of the Gymnasium environments: the library's `DenoisingEnv` over a
//! batch of `num_envs` rows, each row seeded on its own (`seed + i`).

use std::sync::Mutex;

use denoise_gym::env::Env;
use denoise_gym::tensor::{matrix, CpuDevice};
use denoise_gym_envs::DenoisingEnv;
use numpy::{PyArray1, PyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::cell::RefCell;
use std::rc::Rc;

use crate::arrays::{array1, array2, check_finite, rows_of, Points};
use crate::library_error;
use crate::reward::{lock, RewardAdapter, RewardSource};

/// The environment and its clock.
struct EnvCell {
    env: DenoisingEnv<CpuDevice>,
    /// The step of the current observation; `None` before the first reset.
    t: Option<usize>,
}

// SAFETY: `DenoisingEnv` is not `Send` only because its reward is an
// `Rc<RefCell<dyn RewardModel>>`. That `Rc` is created in `NativeVecEnv::new`, handed to
// the environment, and never cloned or borrowed out of it (nothing here calls
// `DenoisingEnv::reward_model`), so its reference count is touched by no one but the
// environment. Moving the whole cell to another thread therefore moves every handle of
// that `Rc` with it, and the `Mutex` around the cell lets one thread at a time use it.
// What the `Rc` holds, `RewardAdapter`, is `Send` itself (checked below), and the
// tensors and generators of the environment are plain owned data.
unsafe impl Send for EnvCell {}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<RewardAdapter>();
    assert_send::<denoise_gym::tensor::Matrix<CpuDevice>>();
    assert_send::<denoise_gym_envs::DenoisingState<CpuDevice>>();
    assert_send::<denoise_gym::rng::ProjectRng>();
    assert_send::<CpuDevice>();
};

/// What `NativeVecEnv.step` returns: `(x_{t-1}, reward, terminated, t)`.
type StepOutput<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<f32>>,
    bool,
    usize,
);

/// `num_envs` denoising episodes of `n_steps` steps in `dim` dimensions, stepped together.
/// The Python classes `DenoisingEnv` and `DenoisingVectorEnv` wrap it; use those.
#[pyclass(module = "denoise_gym._native", frozen)]
pub struct NativeVecEnv {
    cell: Mutex<EnvCell>,
    dim: usize,
    n_steps: usize,
    num_envs: usize,
}

#[pymethods]
impl NativeVecEnv {
    /// `NativeVecEnv(dim, n_steps, num_envs, reward=None, seed=0)`: `reward` is an
    /// `OracleReward`, an `EnergyReward` or None (rewards 0, for a Python callable).
    #[new]
    #[pyo3(signature = (dim, n_steps, num_envs, reward = None, seed = 0))]
    fn new(
        dim: usize,
        n_steps: usize,
        num_envs: usize,
        reward: Option<&Bound<'_, PyAny>>,
        seed: u64,
    ) -> PyResult<Self> {
        let source = RewardSource::from_py(reward, dim)?;
        // Per row: its noise generator (320 bytes, 80 floats' worth) and a few d-wide rows.
        crate::arrays::check_buffer(
            num_envs,
            dim.saturating_mul(4).saturating_add(80),
            "NativeVecEnv",
        )?;
        let env = DenoisingEnv::new(
            CpuDevice::default(),
            dim,
            n_steps,
            num_envs,
            Rc::new(RefCell::new(RewardAdapter(source))),
            seed,
        )
        .map_err(library_error)?
        .with_row_seeds(seed);
        Ok(Self {
            cell: Mutex::new(EnvCell { env, t: None }),
            dim,
            n_steps,
            num_envs,
        })
    }

    /// The data dimension d.
    #[getter]
    fn dim(&self) -> usize {
        self.dim
    }

    /// The number of steps T of an episode.
    #[getter]
    fn n_steps(&self) -> usize {
        self.n_steps
    }

    /// The number of rows (episodes) stepped together.
    #[getter]
    fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// The step of the current observation (T after a reset, 0 at the end), None before
    /// the first reset.
    #[getter]
    fn t(&self) -> PyResult<Option<usize>> {
        Ok(lock(&self.cell)?.t)
    }

    /// Starts new episodes: `x_T ~ N(0, I)`, row i from its own generator (seeded with
    /// `seed + i` when `seed` is given, else continuing its stream). Returns `x_T`,
    /// `num_envs × d` float32.
    #[pyo3(signature = (seed = None))]
    fn reset<'py>(
        &self,
        py: Python<'py>,
        seed: Option<u64>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let x = py.allow_threads(|| -> PyResult<Vec<f32>> {
            let mut cell = lock(&self.cell)?;
            let state = cell.env.reset(seed).map_err(library_error)?;
            cell.t = Some(state.t);
            Ok(state.x.as_vec())
        })?;
        array2(py, x, self.num_envs, self.dim)
    }

    /// One step with actions `x_{t-1}` (`num_envs × d`, finite). Returns `(x_{t-1}, reward,
    /// terminated, t)`: the reward is the reward model's at the last step and 0 before.
    /// Stepping before a reset or after the last step is a `ValueError` (the Python
    /// classes reset first, as their autoreset mode says).
    fn step<'py>(&self, py: Python<'py>, actions: Points<'py>) -> PyResult<StepOutput<'py>> {
        let (values, rows) = rows_of(&actions, "actions", Some(self.dim))?;
        if rows != self.num_envs {
            return Err(PyValueError::new_err(format!(
                "actions has shape ({rows}, {}); expected ({}, {})",
                self.dim, self.num_envs, self.dim
            )));
        }
        check_finite(&values, self.dim, "actions")?;
        let (x, reward, terminated, t) = py.allow_threads(|| -> PyResult<_> {
            let mut cell = lock(&self.cell)?;
            let action = matrix(&CpuDevice::default(), values, self.num_envs, self.dim);
            let step = cell.env.step(action).map_err(library_error)?;
            cell.t = Some(step.observation.t);
            Ok((
                step.observation.x.as_vec(),
                step.reward.as_vec(),
                step.terminated,
                step.observation.t,
            ))
        })?;
        Ok((
            array2(py, x, self.num_envs, self.dim)?,
            array1(py, reward),
            terminated,
            t,
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "NativeVecEnv(dim={}, n_steps={}, num_envs={})",
            self.dim, self.n_steps, self.num_envs
        )
    }
}
