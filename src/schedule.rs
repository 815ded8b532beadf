//! Noise schedules (docs/algorithms.md §1): `β_t`, `α_t`, `ᾱ_t` and the posterior coefficients of
//! `q(x_{t-1} | x_t, x_0)`. Time steps are 1-based as in docs/algorithms.md: `t = 1..T`, `ᾱ_0 = 1`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which `β` schedule to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The variance-preserving schedule of DDGAN/DDAEBM (`βmin = 0.1`, `βmax = 20`); reaches
    /// `N(0, I)` for any T.
    Vp,
    /// DDPM's 1000-step linear `β` (1e-4 to 0.02) respaced to T steps.
    Linear,
    /// Nichol & Dhariwal's cosine schedule, `s = 0.008`.
    Cosine,
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ScheduleKind::Vp => "vp",
            ScheduleKind::Linear => "linear",
            ScheduleKind::Cosine => "cosine",
        };
        f.write_str(name)
    }
}

/// The largest `ᾱ_T` for which `x_T` still counts as drawn from the `N(0, I)` prior.
pub const PRIOR_ALPHA_BAR_MAX: f64 = 1e-2;

const MAX_BETA: f64 = 0.999;

/// A T-step noise schedule with its posterior coefficients, in f64 on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    kind: ScheduleKind,
    /// `β_t` at index `t - 1`.
    betas: Vec<f64>,
    /// `ᾱ_t` at index `t` (`ᾱ_0 = 1`).
    alpha_bars: Vec<f64>,
}

impl Schedule {
    /// Builds the schedule of `kind` with `n_steps = T ≥ 1` steps (the vp schedule with
    /// docs/algorithms.md's `βmin = 0.1`, `βmax = 20`).
    pub fn new(kind: ScheduleKind, n_steps: usize) -> Result<Self> {
        Self::with_vp_range(kind, n_steps, VP_BETA_MIN, VP_BETA_MAX)
    }

    /// Like [`Schedule::new`], with the vp schedule's `βmin`, `βmax` given (ignored by the
    /// other kinds). A small `βmax` makes `ᾱ_T` miss the prior: see [`Schedule::check_prior`].
    pub fn with_vp_range(
        kind: ScheduleKind,
        n_steps: usize,
        beta_min: f64,
        beta_max: f64,
    ) -> Result<Self> {
        if !(beta_min >= 0.0 && beta_max >= beta_min && beta_max.is_finite()) {
            return Err(Error::config(
                "vp_beta_min / vp_beta_max",
                format!("need 0 ≤ beta_min ≤ beta_max < ∞, got {beta_min} and {beta_max}"),
            ));
        }
        if n_steps == 0 {
            return Err(Error::config(
                "n_steps",
                "T must be at least 1 (the number of denoising steps)",
            ));
        }
        let betas = match kind {
            ScheduleKind::Vp => vp_betas(n_steps, beta_min, beta_max),
            ScheduleKind::Linear => linear_betas(n_steps),
            ScheduleKind::Cosine => cosine_betas(n_steps),
        };
        let mut alpha_bars = Vec::with_capacity(n_steps + 1);
        alpha_bars.push(1.0);
        for beta in &betas {
            let previous = alpha_bars[alpha_bars.len() - 1];
            alpha_bars.push(previous * (1.0 - beta));
        }
        Ok(Self {
            kind,
            betas,
            alpha_bars,
        })
    }

    /// Errors unless `ᾱ_T ≤ 1e-2`, i.e. unless `x_T` is close enough to the `N(0, I)` prior
    /// that sampling starts from. `allow_unmatched_prior` turns the check off.
    pub fn check_prior(&self, allow_unmatched_prior: bool) -> Result<()> {
        let last = self.alpha_bar(self.n_steps());
        if last > PRIOR_ALPHA_BAR_MAX && !allow_unmatched_prior {
            return Err(Error::config(
                "schedule",
                format!(
                    "the {} schedule with T = {} ends at alpha_bar_T = {last:.4}, above {PRIOR_ALPHA_BAR_MAX}: \
                     x_T would not match the N(0, I) prior that sampling starts from \
                     (set allow_unmatched_prior = true to run anyway)",
                    self.kind,
                    self.n_steps()
                ),
            ));
        }
        Ok(())
    }

    /// The schedule's kind.
    pub fn kind(&self) -> ScheduleKind {
        self.kind
    }
    /// The number of steps T.
    pub fn n_steps(&self) -> usize {
        self.betas.len()
    }
    /// `β_t` for `t ∈ 1..=T`.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t - 1]
    }
    /// `α_t = 1 - β_t` for `t ∈ 1..=T`.
    pub fn alpha(&self, t: usize) -> f64 {
        1.0 - self.betas[t - 1]
    }
    /// `ᾱ_t` for `t ∈ 0..=T` (`ᾱ_0 = 1`).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alpha_bars[t]
    }
    /// `c1_t = √ᾱ_{t-1} β_t / (1-ᾱ_t)`, the weight of `x_0` in the posterior mean.
    pub fn posterior_c1(&self, t: usize) -> f64 {
        self.alpha_bars[t - 1].sqrt() * self.beta(t) / (1.0 - self.alpha_bars[t])
    }
    /// `c2_t = √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t)`, the weight of `x_t` in the posterior mean.
    pub fn posterior_c2(&self, t: usize) -> f64 {
        self.alpha(t).sqrt() * (1.0 - self.alpha_bars[t - 1]) / (1.0 - self.alpha_bars[t])
    }
    /// `β̃_t = β_t (1-ᾱ_{t-1}) / (1-ᾱ_t)`, the posterior variance (0 at t = 1).
    pub fn beta_tilde(&self, t: usize) -> f64 {
        self.beta(t) * (1.0 - self.alpha_bars[t - 1]) / (1.0 - self.alpha_bars[t])
    }
    /// Posterior mean `c1_t x_0 + c2_t x_t` for host vectors.
    pub fn posterior_mean(&self, t: usize, x0: &[f64], xt: &[f64]) -> Vec<f64> {
        let (c1, c2) = (self.posterior_c1(t), self.posterior_c2(t));
        x0.iter().zip(xt).map(|(a, b)| c1 * a + c2 * b).collect()
    }
}

/// docs/algorithms.md §1's `βmin` of the vp schedule.
pub const VP_BETA_MIN: f64 = 0.1;
/// docs/algorithms.md §1's `βmax` of the vp schedule.
pub const VP_BETA_MAX: f64 = 20.0;

/// The vp schedule's continuous `ᾱ(s) = exp(-½ s² (βmax-βmin) - s βmin)`.
pub fn vp_alpha_bar(s: f64, beta_min: f64, beta_max: f64) -> f64 {
    (-0.5 * s * s * (beta_max - beta_min) - s * beta_min).exp()
}

/// The vp schedule's time grid `s_i = i/T·(1-1e-3) + 1e-3`.
pub fn vp_time(i: usize, n_steps: usize) -> f64 {
    i as f64 / n_steps as f64 * (1.0 - 1e-3) + 1e-3
}

fn vp_betas(n_steps: usize, beta_min: f64, beta_max: f64) -> Vec<f64> {
    let ab = |i: usize| vp_alpha_bar(vp_time(i, n_steps), beta_min, beta_max);
    (1..=n_steps)
        .map(|t| (1.0 - ab(t) / ab(t - 1)).min(MAX_BETA))
        .collect()
}

fn linear_betas(n_steps: usize) -> Vec<f64> {
    const FULL: usize = 1000;
    let mut full_alpha_bars = Vec::with_capacity(FULL);
    let mut running = 1.0;
    for i in 0..FULL {
        let beta = 1e-4 + (0.02 - 1e-4) * i as f64 / (FULL - 1) as f64;
        running *= 1.0 - beta;
        full_alpha_bars.push(running);
    }
    let mut previous = 1.0;
    (1..=n_steps)
        .map(|k| {
            let index = (k as f64 * (FULL - 1) as f64 / n_steps as f64).round() as usize;
            let alpha_bar = full_alpha_bars[index];
            let beta = 1.0 - alpha_bar / previous;
            previous = alpha_bar;
            beta
        })
        .collect()
}

fn cosine_betas(n_steps: usize) -> Vec<f64> {
    const S: f64 = 0.008;
    let f = |t: usize| {
        let angle = (t as f64 / n_steps as f64 + S) / (1.0 + S) * std::f64::consts::FRAC_PI_2;
        angle.cos().powi(2)
    };
    (1..=n_steps)
        .map(|t| (1.0 - f(t) / f(t - 1)).min(MAX_BETA))
        .collect()
}
