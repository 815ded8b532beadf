//! The `dgym` run configuration: one TOML file, one section per concern.

use std::path::Path;

use anyhow::Result;
use denoise_gym::agent::{MaxEntCoefficients, VelocityScaleKind};
use denoise_gym::config::{Documented, SectionDocs};
use denoise_gym::config_section;
use denoise_gym::nn::Activation;
use denoise_gym::policy::PolicySpec;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::Error;
use denoise_gym_agents::ddaebm::{DdaebmConfig, DdaebmSpec};
use denoise_gym_agents::{DxdpConfig, ValueTarget};
use serde::{Deserialize, Serialize};

config_section! {
    /// The run as a whole.
    pub struct RunConfig {
        /// Seed of every random number in the run (data, noise, time steps, initialisation).
        pub seed: u64 = 0,
        /// Hide the progress display.
        pub quiet: bool = false,
        /// What to train: diffusion (DSM pretraining of the Gaussian policy, then optional fine-tuning) or ddaebm (docs/algorithms.md §5, section [ddaebm]).
        pub method: String = "diffusion".to_string(),
    }
}

config_section! {
    /// The data ("expert demonstrations").
    pub struct DataConfig {
        /// Data set: 8gaussians, 25gaussians, swissroll, pinwheel, checkerboard, 2spirals, rings, moons, circles, gmm, csv, digits.
        pub dataset: String = "8gaussians".to_string(),
        /// For `csv`: path of the file (one point per row, header optional), relative to the working directory.
        pub path: String = String::new(),
        /// For `csv`: ignore the last column (e.g. a label).
        pub drop_last_column: bool = false,
        /// For `gmm`: dimension d.
        pub gmm_dim: usize = 2,
        /// For `gmm`: number of components.
        pub gmm_components: usize = 8,
        /// For `gmm`: radius of the sphere the centres are drawn on.
        pub gmm_scale: f64 = 4.0,
        /// For `gmm`: standard deviation of each component.
        pub gmm_std: f64 = 0.5,
        /// For `gmm`: seed of the centres (fixed, independent of run.seed, so runs share one law).
        pub gmm_seed: u64 = 0,
        /// For a mixture (8gaussians, 25gaussians, gmm): relative component weights, in the
        /// set's component order ([] = equal weights), for data with unequal modes.
        pub mixture_weights: Vec<f64> = Vec::new(),
        /// For a mixture: the standard deviation of every component (0 = the set's own), for thin modes.
        pub mixture_std: f64 = 0.0,
    }
}

config_section! {
    /// The sampler-policy (docs/algorithms.md §1-2).
    pub struct PolicyConfig {
        /// Number of denoising steps T (episode length).
        pub n_steps: usize = 4,
        /// Noise schedule: vp, linear or cosine.
        pub schedule: ScheduleKind = ScheduleKind::Vp,
        /// beta_min of the vp schedule.
        pub vp_beta_min: f64 = 0.1,
        /// beta_max of the vp schedule (docs/algorithms.md: 20; much smaller values miss the N(0, I) prior).
        pub vp_beta_max: f64 = 20.0,
        /// Allow a schedule whose alpha_bar_T > 1e-2 (x_T would not match the N(0, I) prior).
        pub allow_unmatched_prior: bool = false,
        /// Hidden width of the eps-network.
        pub hidden: usize = 128,
        /// Number of hidden layers of the eps-network.
        pub depth: usize = 3,
        /// Dimension of the sinusoidal time embedding.
        pub time_embed_dim: usize = 16,
        /// Hidden non-linearity: silu or relu.
        pub activation: Activation = Activation::Silu,
        /// Clip the predicted x0 to [-clip_x0, clip_x0]; 0 = no clipping.
        pub clip_x0: f32 = 0.0,
        /// Keep sigma_1 frozen at max(sqrt(beta_1), 1e-3), or at last_sigma when set.
        pub fix_last_sigma: bool = true,
        /// sigma_1, the last step's noise (0 = max(sqrt(beta_1), 1e-3), 0.69 at T = 4 with vp).
        pub last_sigma: f32 = 0.0,
    }
}

config_section! {
    /// Denoising-score-matching pretraining of the sampler (docs/algorithms.md §2).
    pub struct PretrainConfig {
        /// Number of DSM steps (0 skips pretraining).
        pub iterations: u64 = 10_000,
        /// Data points per step.
        pub batch_size: usize = 256,
        /// Adam learning rate of the eps-network.
        pub lr: f64 = 1e-3,
        /// Adam betas.
        pub betas: [f64; 2] = [0.9, 0.999],
        /// Global gradient-norm clip; 0 = off.
        pub grad_clip: f64 = 0.0,
        /// Decay of the weight EMA used for sampling; 0 = sample with the current weights.
        pub ema_decay: f64 = 0.999,
        /// Log every this many steps.
        pub log_every: u64 = 10,
        /// Write a checkpoint every this many steps (and at the end).
        pub checkpoint_every: u64 = 1000,
    }
}

config_section! {
    /// Fine-tuning the sampler as a policy against a reward (docs/algorithms.md §3-4).
    pub struct FinetuneConfig {
        /// Number of IRL iterations after pretraining (0 = pretraining only).
        pub iterations: u64 = 0,
        /// Episodes (samples) per rollout, and data points per reward update.
        pub batch_size: usize = 256,
        /// Agent: reinforce or ppo.
        pub agent: String = "reinforce".to_string(),
        /// Reward: ebm (GCD: an EBM learned from data) or oracle (the exact log-density of a mixture).
        pub reward: String = "ebm".to_string(),
        /// Start from the final sampler of this earlier run directory instead of pretraining here ("" = pretrain).
        pub init_from: String = String::new(),
        /// Reward updates per policy update (n_critic).
        pub n_critic: usize = 1,
        /// Decay of a weight EMA used for the fine-tuned sampler; 0 = sample with the current weights.
        pub finetune_ema_decay: f64 = 0.0,
        /// Log every this many iterations (1: the reward curve has every iteration).
        pub log_every: u64 = 1,
        /// Write a checkpoint every this many iterations (and at the end).
        pub checkpoint_every: u64 = 500,
    }
}

config_section! {
    /// The agent (docs/algorithms.md §4, §4.1).
    pub struct AgentConfig {
        /// Adam learning rate of the eps-network.
        pub lr: f64 = 1e-4,
        /// Adam learning rate of log sigma_t (its own parameter group).
        pub lr_log_sigma: f64 = 1e-3,
        /// Adam betas.
        pub betas: [f64; 2] = [0.9, 0.999],
        /// Global gradient-norm clip (0 = off).
        pub grad_clip: f64 = 1.0,
        /// Baseline: none, batch_mean, ema, leave_one_out, value, group_normalized.
        pub baseline: String = "value".to_string(),
        /// Normalise advantages to zero mean, unit std.
        pub normalize_advantages: bool = false,
        /// Clip advantages to |A| <= clip_advantages (0 = off).
        pub clip_advantages: f64 = 0.0,
        /// tau_entropy (tau_H): weight of the per-step entropy, divided by d.
        pub tau_entropy: f64 = 0.1,
        /// tau_velocity (tau_v): weight of the velocity cost, divided by d. tau_entropy = tau_velocity = 0 is the IPM baseline.
        pub tau_velocity: f64 = 0.01,
        /// Scale s_t^2 of the velocity cost: adaptive (running average of the step size) or fixed.
        pub velocity_scale: VelocityScaleKind = VelocityScaleKind::Adaptive,
        /// s_t^2 of the fixed velocity scale.
        pub velocity_scale_value: f64 = 1.0,
        /// Hidden width of the value baseline's network.
        pub value_hidden: usize = 128,
        /// Hidden layers of the value baseline's network.
        pub value_depth: usize = 2,
        /// Dimension of the sinusoidal embedding of t in the value baseline's input.
        pub value_time_embed_dim: usize = 16,
        /// Adam learning rate of the value baseline.
        pub value_lr: f64 = 1e-3,
        /// Value-baseline optimiser steps per batch.
        pub value_steps: usize = 1,
        /// Fine-tune only the last ft_steps denoising steps t = ft_steps..1 (DPPO); the earlier steps keep the pretrained network and sigma_t. In 1..=T; absent = all T steps.
        pub ft_steps: Option<usize> = None,
        /// Discount across denoising steps in the return-to-go, G_t = sum_{t' <= t} gamma^(t - t') r_t', in (0, 1].
        pub gamma_denoising: f64 = 1.0,
        /// Floor on sigma_t when sampling (> 0; absent = no floor).
        pub min_sigma_sample: Option<f64> = None,
        /// Floor on sigma_t when scoring log pi (> 0; absent = no floor).
        pub min_sigma_logprob: Option<f64> = None,
        /// PPO: clip range epsilon of the ratio, in (0, 1).
        pub ppo_clip: f64 = 0.2,
        /// PPO: epochs over each rollout.
        pub ppo_epochs: usize = 4,
        /// PPO: (sample, step) pairs per minibatch, at most finetune.batch_size x ft_steps; absent = all pairs in one minibatch.
        pub ppo_minibatch_size: Option<usize> = None,
        /// PPO: stop an update's epochs once a minibatch's approx_kl exceeds this (> 0; absent = never).
        pub ppo_target_kl: Option<f64> = None,
    }
}

config_section! {
    /// The DxDP agent (docs/algorithms.md §4.2, `finetune.agent = "dxdp"`); its learning rates, betas,
    /// tau_entropy, tau_velocity and velocity scale are those of [agent].
    pub struct DxdpSection {
        /// Global gradient-norm clip of the policy update (DxMI: 0.1; replaces agent.grad_clip).
        pub grad_clip: f64 = 0.1,
        /// Hidden width of the value V_psi(x, t).
        pub value_hidden: usize = 128,
        /// Hidden layers of the value.
        pub value_depth: usize = 3,
        /// Dimension of the sinusoidal embedding of t in the value's input.
        pub value_time_embed_dim: usize = 16,
        /// Hidden non-linearity of the value: silu or relu.
        pub value_activation: Activation = Activation::Silu,
        /// Adam learning rate of the value.
        pub value_lr: f64 = 1e-3,
        /// Global gradient-norm clip of each value step (0 = off).
        pub value_grad_clip: f64 = 0.0,
        /// TD target: running_costs (docs/algorithms.md: V(x_{t-1}, t-1) + velocity cost - entropy) or terminal_energy (DxMI's trainer: V(x_{t-1}, t-1) only).
        pub value_target: ValueTarget = ValueTarget::RunningCosts,
        /// States (x_t, t) per policy step, drawn from the rollout's T*B (0 = all).
        pub policy_batch: usize = 0,
    }
}

config_section! {
    /// The EBM reward and its contrastive learner (docs/algorithms.md §3).
    pub struct RewardConfig {
        /// Hidden width of the energy network.
        pub hidden: usize = 128,
        /// Hidden layers of the energy network.
        pub depth: usize = 3,
        /// Hidden non-linearity: relu or silu. ReLU gives a far better calibrated density
        /// on 8 Gaussians (grid KL 0.09 against 0.45 with silu, otherwise identical runs).
        pub activation: Activation = Activation::Relu,
        /// gamma: weight of the energy-magnitude penalty.
        pub gamma: f64 = 1.0,
        /// Adam learning rate.
        pub lr: f64 = 1e-3,
        /// Adam betas.
        pub betas: [f64; 2] = [0.9, 0.999],
        /// Global gradient-norm clip (0 = off).
        pub grad_clip: f64 = 0.0,
        /// Fit the temperature T_E by held-out likelihood at the end (2-D data only).
        pub fit_temperature: bool = true,
        /// Half-width b of the density grid's box [-b, b]^2 (docs/algorithms.md: 4 for 8 Gaussians, 2 for 25 Gaussians).
        pub grid_half_width: f64 = 4.0,
        /// Cells per side of the density grid.
        pub grid_size: usize = 256,
        /// Held-out data points for the temperature fit and the NLL.
        pub held_out: usize = 5000,
    }
}

config_section! {
    /// Evaluation written to summary.json at the end of the run (docs/algorithms.md §7).
    pub struct EvalConfig {
        /// Number of samples (and fresh data points) compared.
        pub n_samples: usize = 2000,
        /// Random directions of the sliced Wasserstein distance.
        pub swd_directions: usize = 1000,
        /// During training, log eval/* metrics and a samples image every this many steps (0 = never).
        pub eval_every: u64 = 1000,
        /// Samples (and fresh data points) of those in-training evaluations.
        pub snapshot_samples: usize = 1000,
    }
}

config_section! {
    /// DDAEBM (docs/algorithms.md §5), trained when run.method = "ddaebm". The schedule is [policy]'s
    /// (n_steps, schedule, vp_beta_min, vp_beta_max); the t = 0 energy's density grid and
    /// T_E fit are [reward]'s (grid_half_width, grid_size, held_out, fit_temperature).
    pub struct DdaebmSection {
        /// Training iterations (one energy step and one generator + encoder step each).
        pub iterations: u64 = 20_000,
        /// Data points (real pairs) per iteration.
        pub batch_size: usize = 200,
        /// Hidden width of the energy, generator and encoder networks.
        pub hidden: usize = 300,
        /// Hidden layers of each network.
        pub depth: usize = 2,
        /// Dimension of the sinusoidal time embedding.
        pub time_embed_dim: usize = 16,
        /// Hidden non-linearity: relu (piecewise linear, as the reference's PReLU) or silu.
        pub activation: Activation = Activation::Relu,
        /// n_z: latent dimension of the generator G(x_t, z, t).
        pub n_z: usize = 2,
        /// r1: weight of the R1 penalty on the real pairs' conditional log-density gradient.
        pub r1: f64 = 0.02,
        /// lambda_z: weight of the encoder's entropy bound on generated pairs.
        pub lambda_z: f64 = 0.1,
        /// Variance floor of the VAE bound's likelihood, max(beta_tilde_t, floor).
        pub recon_variance_floor: f64 = 1e-2,
        /// Adam learning rate of the energy D.
        pub lr_energy: f64 = 1e-4,
        /// Adam learning rate of the generator and the encoder.
        pub lr_generator: f64 = 1e-4,
        /// Adam betas of both optimisers.
        pub betas: [f64; 2] = [0.0, 0.9],
        /// Global gradient-norm clip of each optimiser (0 = off).
        pub grad_clip: f64 = 0.0,
        /// Ablation: the energy step's fakes are forward-noised draws of a second data batch (a perfect generator), showing what L_D makes of D at equilibrium.
        pub perfect_generator_fakes: bool = false,
        /// Log every this many iterations (1: every iteration's losses are in the curves).
        pub log_every: u64 = 1,
        /// Write a checkpoint every this many iterations (and at the end).
        pub checkpoint_every: u64 = 1000,
    }
}

/// The values `run.method` may take.
pub const METHODS: &[&str] = &["diffusion", "ddaebm"];

/// A whole `dgym train` configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The run as a whole.
    pub run: RunConfig,
    /// The data.
    pub data: DataConfig,
    /// The sampler-policy.
    pub policy: PolicyConfig,
    /// DSM pretraining.
    pub pretrain: PretrainConfig,
    /// Fine-tuning as RL against a reward.
    pub finetune: FinetuneConfig,
    /// The fine-tuning agent.
    pub agent: AgentConfig,
    /// The DxDP agent.
    pub dxdp: DxdpSection,
    /// The EBM reward.
    pub reward: RewardConfig,
    /// Final evaluation.
    pub eval: EvalConfig,
    /// DDAEBM (run.method = "ddaebm").
    pub ddaebm: DdaebmSection,
}

impl TrainConfig {
    /// Reads `path` (defaults when `None`), applies `--set` overrides and validates.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let config: TrainConfig = denoise_gym::config::load(path, overrides)?;
        let file = path.map_or_else(|| "config".to_string(), |p| p.display().to_string());
        config
            .validate(&file)
            .map_err(|e| blame_override(e, &file, overrides))?;
        Ok(config)
    }

    /// Parses a config from TOML text (`name` labels errors, like a file path would),
    /// applies `--set` overrides and validates: for configs built into the binary.
    pub fn from_toml_str(name: &str, text: &str, overrides: &[String]) -> Result<Self> {
        let config: TrainConfig = toml::from_str(text)
            .map_err(|e| Error::config(name, e.to_string().trim_end().replace('\n', "\n    ")))?;
        let config = denoise_gym::config::apply_overrides(config, overrides)?;
        config
            .validate(name)
            .map_err(|e| blame_override(e, name, overrides))?;
        Ok(config)
    }

    /// The resolved config flattened to `section.key` hyperparameters for TensorBoard's
    /// HParams dashboard: numbers, strings and flags as they are, lists as their TOML text;
    /// unset optional keys left out.
    pub fn hparams(&self) -> Vec<(String, denoise_gym::log::HParam)> {
        use denoise_gym::log::HParam;
        let mut out = Vec::new();
        let Ok(toml::Value::Table(sections)) = toml::Value::try_from(self) else {
            return out;
        };
        for (section, table) in &sections {
            let Some(table) = table.as_table() else {
                continue;
            };
            for (key, value) in table {
                let value = match value {
                    toml::Value::Integer(i) => HParam::Number(*i as f64),
                    toml::Value::Float(x) => HParam::Number(*x),
                    toml::Value::Boolean(b) => HParam::Bool(*b),
                    toml::Value::String(s) => HParam::Text(s.clone()),
                    other => HParam::Text(other.to_string()),
                };
                out.push((format!("{section}.{key}"), value));
            }
        }
        out
    }

    /// Every section with its docs, for `dgym config`.
    pub fn section_docs() -> Vec<SectionDocs> {
        vec![
            SectionDocs {
                name: "run",
                doc: "The run as a whole.",
                fields: RunConfig::field_docs(),
            },
            SectionDocs {
                name: "data",
                doc: "The data (\"expert demonstrations\").",
                fields: DataConfig::field_docs(),
            },
            SectionDocs {
                name: "policy",
                doc: "The sampler-policy (docs/algorithms.md §1-2).",
                fields: PolicyConfig::field_docs(),
            },
            SectionDocs {
                name: "pretrain",
                doc: "DSM pretraining of the sampler (docs/algorithms.md §2).",
                fields: PretrainConfig::field_docs(),
            },
            SectionDocs {
                name: "finetune",
                doc: "Fine-tuning the sampler as a policy against a reward (docs/algorithms.md §3-4).",
                fields: FinetuneConfig::field_docs(),
            },
            SectionDocs {
                name: "agent",
                doc: "The agent (docs/algorithms.md §4, §4.1).",
                fields: AgentConfig::field_docs(),
            },
            SectionDocs {
                name: "dxdp",
                doc:
                    "The DxDP agent (docs/algorithms.md §4.2); shares [agent]'s learning rates and coefficients.",
                fields: DxdpSection::field_docs(),
            },
            SectionDocs {
                name: "reward",
                doc: "The EBM reward and its contrastive learner (docs/algorithms.md §3).",
                fields: RewardConfig::field_docs(),
            },
            SectionDocs {
                name: "ddaebm",
                doc: "DDAEBM (docs/algorithms.md §5), trained when run.method = \"ddaebm\".",
                fields: DdaebmSection::field_docs(),
            },
            SectionDocs {
                name: "eval",
                doc: "Evaluation written to summary.json (docs/algorithms.md §7).",
                fields: EvalConfig::field_docs(),
            },
        ]
    }

    /// Semantic checks that serde cannot express; errors name the file and key.
    pub fn validate(&self, file: &str) -> Result<(), Error> {
        let at = |key: &str| format!("{file}, key {key}");
        // Before anything is built from the sizes (a schedule of T steps, a mixture of
        // gmm_dim-dimensional means): an absurd size is an error, not an abort.
        self.check_memory(&at, available_memory())?;
        let p = &self.policy;
        if p.n_steps == 0 {
            return Err(Error::config(at("policy.n_steps"), "T must be at least 1"));
        }
        self.schedule()
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::config(at("policy.vp_beta_max"), message),
                other => other,
            })?
            .check_prior(p.allow_unmatched_prior)
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::config(at("policy.schedule"), message),
                other => other,
            })?;
        self.policy_spec(1).validate().map_err(|e| match e {
            Error::Config { location, message } => {
                Error::config(at(&format!("policy.{location}")), message)
            }
            other => other,
        })?;
        if !METHODS.contains(&self.run.method.as_str()) {
            return Err(Error::config(
                at("run.method"),
                format!(
                    "unknown method {:?}; expected one of {}",
                    self.run.method,
                    METHODS.join(", ")
                ),
            ));
        }
        if self.run.method == "ddaebm" {
            self.validate_ddaebm(&at)?;
        }
        let known_data = ["gmm", "csv", "digits"];
        let name = self.data.dataset.as_str();
        if !denoise_gym_envs::TOY_DATASETS.contains(&name) && !known_data.contains(&name) {
            return Err(Error::config(
                at("data.dataset"),
                format!(
                    "unknown data set {name:?}; expected one of {}, {}",
                    denoise_gym_envs::TOY_DATASETS.join(", "),
                    known_data.join(", ")
                ),
            ));
        }
        self.dsm_config().validate().map_err(|e| match e {
            Error::Config { location, message } => {
                Error::config(at(&format!("pretrain.{location}")), message)
            }
            other => other,
        })?;
        let pt = &self.pretrain;
        if pt.log_every == 0 || pt.checkpoint_every == 0 {
            return Err(Error::config(
                at("pretrain.log_every / checkpoint_every"),
                "must be at least 1",
            ));
        }
        let f = &self.finetune;
        if f.iterations > 0 {
            if !denoise_gym_agents::AGENTS.contains(&f.agent.as_str()) {
                return Err(Error::config(
                    at("finetune.agent"),
                    format!(
                        "unknown agent {:?}; expected one of {}",
                        f.agent,
                        denoise_gym_agents::AGENTS.join(", ")
                    ),
                ));
            }
            if !["ebm", "oracle"].contains(&f.reward.as_str()) {
                return Err(Error::config(
                    at("finetune.reward"),
                    format!("unknown reward {:?}; expected ebm or oracle", f.reward),
                ));
            }
            if !denoise_gym_agents::BASELINES.contains(&self.agent.baseline.as_str()) {
                return Err(Error::config(
                    at("agent.baseline"),
                    format!(
                        "unknown baseline {:?}; expected one of {}",
                        self.agent.baseline,
                        denoise_gym_agents::BASELINES.join(", ")
                    ),
                ));
            }
            if self.agent.baseline == "leave_one_out" && f.batch_size < 2 {
                return Err(Error::config(
                    at("finetune.batch_size"),
                    "leave_one_out needs a batch of at least 2 samples",
                ));
            }
            if f.batch_size == 0 || f.n_critic == 0 || f.log_every == 0 || f.checkpoint_every == 0 {
                return Err(Error::config(
                    at("finetune"),
                    "batch_size, n_critic, log_every and checkpoint_every must be at least 1",
                ));
            }
            if !(0.0..1.0).contains(&f.finetune_ema_decay) {
                return Err(Error::config(
                    at("finetune.finetune_ema_decay"),
                    "must be in [0, 1)",
                ));
            }
            let a = &self.agent;
            for (key, value) in [
                ("agent.tau_entropy", a.tau_entropy),
                ("agent.tau_velocity", a.tau_velocity),
            ] {
                if !(value.is_finite() && value >= 0.0) {
                    return Err(Error::config(at(key), "must be a finite number >= 0"));
                }
            }
            if f.agent == "dxdp" {
                if f.reward != "ebm" {
                    return Err(Error::config(
                        at("finetune.reward"),
                        "the dxdp agent differentiates through the reward and needs \"ebm\" (the oracle is host-only)",
                    ));
                }
                self.dxdp_config().validate().map_err(|e| match e {
                    Error::Config { location, message } => {
                        let section = if [
                            "lr",
                            "lr_log_sigma",
                            "tau_entropy",
                            "tau_velocity",
                            "velocity_scale_value",
                        ]
                        .contains(&location.as_str())
                        {
                            "agent"
                        } else {
                            "dxdp"
                        };
                        Error::config(at(&format!("{section}.{location}")), message)
                    }
                    other => other,
                })?;
            }
            if a.velocity_scale_value <= 0.0 {
                return Err(Error::config(
                    at("agent.velocity_scale_value"),
                    "must be > 0",
                ));
            }
            self.validate_score_function_options(&at)?;
        }
        if self.eval.n_samples < 2 {
            return Err(Error::config(at("eval.n_samples"), "must be at least 2"));
        }
        self.validate_common_ranges(&at)
    }

    /// The peak memory a run of this config needs, roughly (within a small factor, on the
    /// high side), as parts attributed to the key that sizes them, in bytes. Products are
    /// taken in u128 and saturate, so no size overflows.
    pub fn memory_parts(&self) -> Vec<(&'static str, u128)> {
        let w = |x: usize| x as u128;
        let mul = |xs: &[u128]| xs.iter().fold(1u128, |a, &b| a.saturating_mul(b));
        let add = |xs: &[u128]| xs.iter().fold(0u128, |a, &b| a.saturating_add(b));
        let d = w(match self.data.dataset.as_str() {
            "gmm" => self.data.gmm_dim,
            "digits" => 64,
            // A CSV file's width is bounded by the file itself.
            _ => 2,
        });
        // An MLP d_in → h × depth → d_out: its parameters.
        let mlp = |d_in: u128, h: usize, depth: usize, d_out: u128| {
            let (h, depth) = (w(h), w(depth));
            add(&[
                mul(&[d_in, h]),
                mul(&[depth.saturating_sub(1), h, h]),
                mul(&[h, d_out]),
                mul(&[depth, h]),
            ])
        };
        // Bytes per parameter: weights, gradients, Adam's two moments, an EMA, the copies
        // a sampler, a frozen network and a checkpoint make, in f32.
        const PER_PARAMETER: u128 = 4 * 10;
        // Bytes per activation: the forward value, its gradient and the tape's copies.
        const PER_ACTIVATION: u128 = 4 * 6;
        let p = &self.policy;
        let t = w(p.n_steps);
        let mut parts = vec![
            (
                "policy.hidden",
                mul(&[
                    mlp(d.saturating_add(w(p.time_embed_dim)), p.hidden, p.depth, d),
                    PER_PARAMETER,
                ]),
            ),
            ("policy.n_steps", mul(&[t, 16 * 8])),
            (
                "pretrain.batch_size",
                mul(&[
                    w(self.pretrain.batch_size),
                    w(p.depth).saturating_add(2),
                    w(p.hidden).max(d).saturating_add(w(p.time_embed_dim)),
                    PER_ACTIVATION,
                ]),
            ),
            (
                "data.gmm_components",
                mul(&[w(self.data.gmm_components), d, 8 * 3]),
            ),
            (
                "eval.n_samples",
                mul(&[
                    w(self.eval.n_samples).max(w(self.eval.snapshot_samples)),
                    d.saturating_add(1),
                    8 * 4,
                ]),
            ),
            // The trajectory figure draws at most 2,000 chains of T + 1 states.
            (
                "policy.n_steps",
                mul(&[w(self.eval.n_samples).min(2000), d, t.saturating_add(1), 4]),
            ),
            (
                "eval.swd_directions",
                mul(&[w(self.eval.swd_directions), d.saturating_add(4096), 8]),
            ),
        ];
        if self.finetune.iterations > 0 {
            let (f, a, r) = (&self.finetune, &self.agent, &self.reward);
            parts.push((
                "finetune.batch_size",
                mul(&[
                    w(f.batch_size),
                    t,
                    w(p.depth).saturating_add(2),
                    w(p.hidden).max(d),
                    PER_ACTIVATION,
                    2,
                ]),
            ));
            parts.push((
                "reward.hidden",
                mul(&[mlp(d, r.hidden, r.depth, 1), PER_PARAMETER]),
            ));
            parts.push((
                "agent.value_hidden",
                mul(&[
                    mlp(
                        d.saturating_add(w(a.value_time_embed_dim)),
                        a.value_hidden,
                        a.value_depth,
                        1,
                    ),
                    PER_PARAMETER,
                ]),
            ));
            parts.push((
                "reward.grid_size",
                mul(&[w(r.grid_size), w(r.grid_size), 8 * 4]),
            ));
            parts.push(("reward.held_out", mul(&[w(r.held_out), d, 8])));
        }
        if self.run.method == "ddaebm" {
            let g = &self.ddaebm;
            let input = d
                .saturating_mul(2)
                .saturating_add(w(g.time_embed_dim))
                .saturating_add(w(g.n_z));
            parts.push((
                "ddaebm.hidden",
                mul(&[mlp(input, g.hidden, g.depth, d), 3, PER_PARAMETER]),
            ));
            parts.push((
                "ddaebm.batch_size",
                mul(&[
                    w(g.batch_size),
                    24,
                    w(g.depth).saturating_add(1),
                    w(g.hidden).max(d),
                    PER_ACTIVATION,
                ]),
            ));
        }
        parts
    }

    /// Refuses a config whose [`TrainConfig::memory_parts`] add up to more than
    /// `available` bytes (`None`: unknown, no check), naming the key of the largest part.
    pub fn check_memory(
        &self,
        at: &dyn Fn(&str) -> String,
        available: Option<u128>,
    ) -> Result<(), Error> {
        let Some(available) = available else {
            return Ok(());
        };
        let parts = self.memory_parts();
        let total = parts.iter().fold(0u128, |a, (_, b)| a.saturating_add(*b));
        if total <= available {
            return Ok(());
        }
        let (key, largest) = parts
            .iter()
            .max_by_key(|(_, bytes)| *bytes)
            .copied()
            .unwrap_or(("policy.hidden", total));
        Err(Error::config(
            at(key),
            format!(
                "this run would need {} of memory ({} of it for this setting), more than the {} available",
                human_bytes(total),
                human_bytes(largest),
                human_bytes(available).trim_start_matches("about ")
            ),
        ))
    }

    /// The same rule for the same kind of value in every section it appears in: clips and
    /// gradient clips are finite and ≥ 0 (0 = off), learning rates finite and > 0, sizes
    /// at least 1; and what the end of a run needs (the EBM's temperature fit) is checked
    /// before the run starts, not after it.
    fn validate_common_ranges(&self, at: &dyn Fn(&str) -> String) -> Result<(), Error> {
        let finetunes = self.finetune.iterations > 0;
        let ebm = self.run.method == "ddaebm" || (finetunes && self.finetune.reward == "ebm");
        let mut clips = vec![("pretrain.grad_clip", self.pretrain.grad_clip)];
        let mut rates = vec![];
        let mut sizes = vec![("eval.swd_directions", self.eval.swd_directions)];
        if finetunes {
            let a = &self.agent;
            clips.extend([
                ("agent.grad_clip", a.grad_clip),
                ("agent.clip_advantages", a.clip_advantages),
            ]);
            rates.extend([
                ("agent.lr", a.lr),
                ("agent.lr_log_sigma", a.lr_log_sigma),
                ("agent.value_lr", a.value_lr),
                ("agent.velocity_scale_value", a.velocity_scale_value),
            ]);
            sizes.extend([
                ("agent.value_hidden", a.value_hidden),
                ("agent.value_depth", a.value_depth),
                ("agent.value_time_embed_dim", a.value_time_embed_dim),
                ("agent.value_steps", a.value_steps),
            ]);
        }
        if ebm && self.run.method != "ddaebm" {
            let r = &self.reward;
            clips.push(("reward.grad_clip", r.grad_clip));
            rates.push(("reward.lr", r.lr));
            sizes.extend([("reward.hidden", r.hidden), ("reward.depth", r.depth)]);
        }
        if ebm && self.reward.fit_temperature {
            // T_E is fitted on this grid with these held-out points after training.
            sizes.extend([
                ("reward.grid_size", self.reward.grid_size.saturating_sub(1)),
                ("reward.held_out", self.reward.held_out),
            ]);
            let b = self.reward.grid_half_width;
            if !(b.is_finite() && b > 0.0) {
                return Err(Error::config(
                    at("reward.grid_half_width"),
                    "must be a finite number > 0",
                ));
            }
        }
        for (key, value) in clips {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Error::config(
                    at(key),
                    format!("must be a finite number >= 0 (0 = off), got {value}"),
                ));
            }
        }
        for (key, value) in rates {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::config(
                    at(key),
                    format!("must be a finite number > 0, got {value}"),
                ));
            }
        }
        for (key, value) in sizes {
            if value == 0 {
                let least = if key == "reward.grid_size" { 2 } else { 1 };
                return Err(Error::config(at(key), format!("must be at least {least}")));
            }
        }
        Ok(())
    }

    /// The DxDP agent's settings: [dxdp] plus the learning rates and coefficients of [agent].
    pub fn dxdp_config(&self) -> DxdpConfig {
        let (a, x) = (&self.agent, &self.dxdp);
        DxdpConfig {
            lr: a.lr,
            lr_log_sigma: a.lr_log_sigma,
            betas: a.betas,
            grad_clip: x.grad_clip,
            coefficients: MaxEntCoefficients {
                tau_entropy: a.tau_entropy,
                tau_velocity: a.tau_velocity,
            },
            velocity_scale: a.velocity_scale,
            velocity_scale_value: a.velocity_scale_value,
            value_hidden: x.value_hidden,
            value_depth: x.value_depth,
            value_activation: x.value_activation,
            value_time_embed_dim: x.value_time_embed_dim,
            value_lr: x.value_lr,
            value_grad_clip: x.value_grad_clip,
            value_target: x.value_target,
            policy_batch: x.policy_batch,
        }
    }

    fn validate_ddaebm(&self, at: &dyn Fn(&str) -> String) -> Result<(), Error> {
        let g = &self.ddaebm;
        let nested = |e: Error| match e {
            Error::Config { location, message } => {
                Error::config(at(&format!("ddaebm.{location}")), message)
            }
            other => other,
        };
        self.ddaebm_spec(1).validate().map_err(nested)?;
        self.ddaebm_config().validate().map_err(nested)?;
        for (key, value) in [
            ("iterations", g.iterations),
            ("batch_size", g.batch_size as u64),
            ("log_every", g.log_every),
            ("checkpoint_every", g.checkpoint_every),
        ] {
            if value == 0 {
                return Err(Error::config(
                    at(&format!("ddaebm.{key}")),
                    "must be at least 1",
                ));
            }
        }
        if self.finetune.iterations > 0 || !self.finetune.init_from.is_empty() {
            return Err(Error::config(
                at("finetune"),
                "run.method = \"ddaebm\" trains its own generator from scratch: leave finetune.iterations at 0 and finetune.init_from empty",
            ));
        }
        Ok(())
    }

    /// The DDAEBM architecture for data of dimension `dim`.
    pub fn ddaebm_spec(&self, dim: usize) -> DdaebmSpec {
        let g = &self.ddaebm;
        DdaebmSpec {
            dim,
            n_z: g.n_z,
            hidden: g.hidden,
            depth: g.depth,
            time_embed_dim: g.time_embed_dim,
            activation: g.activation,
        }
    }

    /// DDAEBM's training hyper-parameters.
    pub fn ddaebm_config(&self) -> DdaebmConfig {
        let g = &self.ddaebm;
        DdaebmConfig {
            r1: g.r1,
            lambda_z: g.lambda_z,
            recon_variance_floor: g.recon_variance_floor,
            lr_energy: g.lr_energy,
            lr_generator: g.lr_generator,
            betas: g.betas,
            grad_clip: g.grad_clip,
        }
    }

    /// The noise schedule the config describes.
    pub fn schedule(&self) -> Result<Schedule, Error> {
        let p = &self.policy;
        Schedule::with_vp_range(p.schedule, p.n_steps, p.vp_beta_min, p.vp_beta_max)
    }

    /// The policy architecture for data of dimension `dim`.
    pub fn policy_spec(&self, dim: usize) -> PolicySpec {
        let p = &self.policy;
        PolicySpec {
            dim,
            hidden: p.hidden,
            depth: p.depth,
            time_embed_dim: p.time_embed_dim,
            activation: p.activation,
            clip_x0: p.clip_x0,
            fix_last_sigma: p.fix_last_sigma,
            last_sigma: p.last_sigma,
        }
    }
}

impl TrainConfig {
    /// DSM pretraining's settings.
    pub fn dsm_config(&self) -> denoise_gym::dsm::DsmConfig {
        let p = &self.pretrain;
        denoise_gym::dsm::DsmConfig {
            batch_size: p.batch_size,
            lr: p.lr,
            betas: p.betas,
            grad_clip: p.grad_clip,
            ema_decay: p.ema_decay,
        }
    }

    /// REINFORCE's options (shared by every score-function agent).
    pub fn reinforce_config(&self) -> denoise_gym_agents::ReinforceConfig {
        let a = &self.agent;
        denoise_gym_agents::ReinforceConfig {
            lr: a.lr,
            lr_log_sigma: a.lr_log_sigma,
            betas: a.betas,
            grad_clip: a.grad_clip,
            normalize_advantages: a.normalize_advantages,
            clip_advantages: a.clip_advantages,
            coefficients: denoise_gym::agent::MaxEntCoefficients {
                tau_entropy: a.tau_entropy,
                tau_velocity: a.tau_velocity,
            },
            velocity_scale: a.velocity_scale,
            velocity_scale_value: a.velocity_scale_value,
            ft_steps: a.ft_steps,
            gamma_denoising: a.gamma_denoising,
            min_sigma_sample: a.min_sigma_sample,
            min_sigma_logprob: a.min_sigma_logprob,
        }
    }

    /// PPO's own options.
    pub fn ppo_config(&self) -> denoise_gym_agents::PpoConfig {
        let a = &self.agent;
        denoise_gym_agents::PpoConfig {
            clip: a.ppo_clip,
            epochs: a.ppo_epochs,
            minibatch_size: a.ppo_minibatch_size,
            target_kl: a.ppo_target_kl,
        }
    }

    /// The diffusion-RL and PPO options, checked by the agents' own validation with the
    /// key named in this file's terms (`agent.ft_steps`, ...).
    fn validate_score_function_options(&self, at: &dyn Fn(&str) -> String) -> Result<(), Error> {
        let in_agent = |e: Error| match e {
            Error::Config { location, message } => {
                Error::config(at(&format!("agent.{location}")), message)
            }
            other => other,
        };
        let n_steps = self.policy.n_steps;
        self.reinforce_config()
            .validate(n_steps)
            .map_err(in_agent)?;
        let ppo = self.ppo_config();
        ppo.validate().map_err(in_agent)?;
        if self.finetune.agent == "ppo" {
            let ft_steps = self.agent.ft_steps.unwrap_or(n_steps);
            ppo.check_minibatch(self.finetune.batch_size * ft_steps)
                .map_err(in_agent)?;
        }
        Ok(())
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes; `None` where it cannot be read.
pub fn available_memory() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `1.2 GB`-style sizes for messages.
fn human_bytes(bytes: u128) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == units.len() - 1 && value >= 1000.0 {
        return "more than 1000 EB".to_string();
    }
    format!("about {value:.1} {}", units[unit])
}

/// A validation error about a key that a `--set` gave names that `--set`, not the file.
fn blame_override(error: Error, file: &str, overrides: &[String]) -> Error {
    let Error::Config { location, message } = error else {
        return error;
    };
    let key = location.rsplit("key ").next().unwrap_or_default();
    match overrides
        .iter()
        .rev()
        .find(|set| set.split_once('=').is_some_and(|(k, _)| k.trim() == key))
    {
        Some(set) => Error::config(format!("--set {set} (over {file})"), message),
        None => Error::Config { location, message },
    }
}
