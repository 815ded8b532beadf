//! The `dgym` run configuration: one TOML file, one section per concern.

use std::path::Path;

use anyhow::Result;
use denoise_gym::config::{Documented, SectionDocs};

use crate::catalog::{Catalog, ComponentKind, SectionConfig, BUILTIN_SECTIONS};
use denoise_gym::config_section;
use denoise_gym::nn::Activation;
use denoise_gym::policy::PolicySpec;
use denoise_gym::schedule::{Schedule, ScheduleKind};
use denoise_gym::Error;
use denoise_gym_agents::ddaebm::{DdaebmConfig, DdaebmSpec};
use denoise_gym_agents::{DxdpConfig, PpoConfig, ReinforceConfig, ValueBaselineConfig};
use denoise_gym_envs::LabelColumn;
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
        /// For `csv`: the column of class labels, by header name or 0-based index (negative counts from the end, -1 = last); it is left out of the points. Integer labels are kept, other strings are numbered in sorted order. Replaces drop_last_column (set one of the two).
        pub label_column: Option<LabelColumn> = None,
        /// For a table (csv, digits): the share of rows held out as the validation split (eval.select = "best", held-out curves); 0 = none.
        pub validation_fraction: f64 = 0.0,
        /// For a table (csv, digits): the share of rows held out as the test split (final metrics, anomaly scores); 0 = none. Stratified by label when there are labels.
        pub test_fraction: f64 = 0.0,
        /// Seed of the train/validation/test split (fixed, independent of run.seed, so that every method and seed sees the same split).
        pub split_seed: u64 = 0,
        /// For a table: standardise every column with the train split's mean and std; the statistics are stored in the run (data_stats.json) and `dgym sample`/`energy` work in the data's own units.
        pub standardize: bool = false,
        /// With standardize: the smallest std a column is divided by (a column constant on the train split is only centred).
        pub min_std: f64 = 0.0,
        /// For a labelled table: train on these classes only (anomaly detection: every other class of the test split is an anomaly); [] = all.
        pub inlier_classes: Vec<u32> = Vec::new(),
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
        /// Agent: reinforce, ppo, dxdp or one a program registered (`dgym config` lists them); its own settings are the section of its name.
        pub agent: String = "reinforce".to_string(),
        /// Baseline of a score-function agent (reinforce, ppo): none, batch_mean, ema, leave_one_out, value ([value_baseline]), group_normalized.
        pub baseline: String = "value".to_string(),
        /// Reward: ebm (GCD: an EBM learned from data, [reward]) or oracle (the exact log-density of a mixture).
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
        /// Which fine-tuned sampler the run hands back: "last", or "best" (the checkpoint, the fine-tuning start included, with the lowest multi-scale MMD² against the validation split; needs data.validation_fraction > 0).
        pub select: String = "last".to_string(),
        /// Anomaly baselines: k of the k-nearest-neighbour distance score.
        pub anomaly_knn_k: usize = 5,
        /// Anomaly baselines: noise draws per step of the DSM sampler's denoising-error score (every step t = 1..T).
        pub anomaly_dsm_draws: usize = 8,
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

/// A whole `dgym train` configuration: one section per component. The built-in
/// components' sections are typed fields; the sections of components a program registers
/// ([`crate::registry::Registry`]) are kept as TOML in [`TrainConfig::sections`] and
/// checked against their registered types by [`TrainConfig::validate_with`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
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
    /// The settings every score-function agent shares (REINFORCE's whole config).
    pub agent: ReinforceConfig,
    /// The `value` baseline's network.
    pub value_baseline: ValueBaselineConfig,
    /// PPO's own settings.
    pub ppo: PpoConfig,
    /// DxDP's own settings.
    pub dxdp: DxdpConfig,
    /// The EBM reward.
    pub reward: RewardConfig,
    /// Final evaluation.
    pub eval: EvalConfig,
    /// DDAEBM (run.method = "ddaebm").
    pub ddaebm: DdaebmSection,
    /// The sections of registered components that are not built in, by section name.
    /// An unknown section is an error of [`TrainConfig::validate_with`].
    #[serde(flatten)]
    pub sections: std::collections::BTreeMap<String, toml::Value>,
}

impl TrainConfig {
    /// Reads `path` (defaults when `None`), moves old keys to their new names (with a
    /// warning), applies `--set` overrides and validates against `catalog`'s components.
    pub fn load(path: Option<&Path>, overrides: &[String], catalog: &Catalog) -> Result<Self> {
        let file = path.map_or_else(|| "config".to_string(), |p| p.display().to_string());
        let text = match path {
            Some(path) => Some(denoise_gym::config::read_text(path)?),
            None => None,
        };
        let config = match &text {
            Some(text) => Self::parse(&file, text)?,
            None => TrainConfig::default(),
        };
        Ok(config.finish(&file, text.as_deref(), overrides, catalog)?)
    }

    /// Parses a config from TOML text (`name` labels errors, like a file path would),
    /// applies `--set` overrides and validates: for configs built into a binary.
    pub fn from_toml_str(
        name: &str,
        text: &str,
        overrides: &[String],
        catalog: &Catalog,
    ) -> Result<Self> {
        Ok(Self::parse(name, text)?.finish(name, Some(text), overrides, catalog)?)
    }

    /// Parses config text, old keys moved to their new names, without validating it.
    pub fn parse_text(file: &str, text: &str) -> Result<Self, Error> {
        Self::parse(file, text)
    }

    /// Parses config text, old keys moved to their new names.
    fn parse(file: &str, text: &str) -> Result<Self, Error> {
        let migrated = crate::compat::migrate_text(text, file)?;
        denoise_gym::config::parse(file, migrated.as_deref().unwrap_or(text))
    }

    /// Registered sections resolved, overrides applied, the whole validated; `text` (the
    /// file's) gives an unknown section its line.
    fn finish(
        mut self,
        file: &str,
        text: Option<&str>,
        overrides: &[String],
        catalog: &Catalog,
    ) -> Result<Self, Error> {
        let at_line = |name: &str| {
            let header = format!("[{name}]");
            text.and_then(|t| t.lines().position(|l| l.trim() == header))
                .map_or_else(|| file.to_string(), |i| format!("{file}, line {}", i + 1))
        };
        self.resolve_sections(&at_line, catalog)?;
        let overrides: Vec<String> = overrides
            .iter()
            .map(|o| crate::compat::migrate_override(o))
            .collect();
        let mut config = denoise_gym::config::apply_overrides(self, &overrides)?;
        config
            .resolve_sections(&|_| file.to_string(), catalog)
            .and_then(|()| config.validate_with(file, catalog))
            .map_err(|e| blame_override(e, file, &overrides))?;
        Ok(config)
    }

    /// Every registered component's section with its defaults filled in, checked against
    /// its type; a section no component registered is an error naming the known ones.
    /// `file(section)` names where a section is.
    pub fn resolve_sections(
        &mut self,
        file: &dyn Fn(&str) -> String,
        catalog: &Catalog,
    ) -> Result<(), Error> {
        for (name, value) in &mut self.sections {
            let file = file(name);
            let Some(spec) = catalog.section(name) else {
                let mut known: Vec<String> =
                    BUILTIN_SECTIONS.iter().map(|s| s.to_string()).collect();
                known.extend(catalog.sections().iter().map(|s| s.name.clone()));
                return Err(Error::config(
                    format!("{file}, [{name}]"),
                    format!("unknown section; known sections: {}", known.join(", ")),
                ));
            };
            *value = spec
                .resolve(value)
                .map_err(|e| Error::config(format!("{file}, [{name}]"), e))?;
        }
        for spec in catalog.sections() {
            self.sections
                .entry(spec.name.clone())
                .or_insert_with(|| spec.defaults.clone());
        }
        Ok(())
    }

    /// The registered section `name` as its type (its defaults when absent).
    pub fn section<C: SectionConfig>(&self, name: &str) -> Result<C, Error> {
        match self.sections.get(name) {
            Some(value) => C::deserialize(value.clone())
                .map_err(|e| Error::config(format!("[{name}]"), e.to_string())),
            None => Ok(C::default()),
        }
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

    /// Every section with its docs, the registered components' after the built-in ones,
    /// for `dgym config` and the sweeps' key checks.
    pub fn section_docs_with(catalog: &Catalog) -> Vec<SectionDocs> {
        let mut docs = Self::section_docs();
        docs.extend(catalog.section_docs());
        docs
    }

    /// The built-in sections with their docs.
    pub fn section_docs() -> Vec<SectionDocs> {
        vec![
            SectionDocs {
                name: "run".to_string(),
                doc: "The run as a whole.".to_string(),
                fields: RunConfig::field_docs(),
            },
            SectionDocs {
                name: "data".to_string(),
                doc: "The data (\"expert demonstrations\").".to_string(),
                fields: DataConfig::field_docs(),
            },
            SectionDocs {
                name: "policy".to_string(),
                doc: "The sampler-policy (docs/algorithms.md §1-2).".to_string(),
                fields: PolicyConfig::field_docs(),
            },
            SectionDocs {
                name: "pretrain".to_string(),
                doc: "DSM pretraining of the sampler (docs/algorithms.md §2).".to_string(),
                fields: PretrainConfig::field_docs(),
            },
            SectionDocs {
                name: "finetune".to_string(),
                doc: "Fine-tuning the sampler as a policy against a reward (docs/algorithms.md §3-4).".to_string(),
                fields: FinetuneConfig::field_docs(),
            },
            SectionDocs {
                name: "agent".to_string(),
                doc: "The settings every fine-tuning agent shares (docs/algorithms.md §4, §4.1): REINFORCE's whole config.".to_string(),
                fields: ReinforceConfig::field_docs(),
            },
            SectionDocs {
                name: "value_baseline".to_string(),
                doc: "The network of the value baseline (finetune.baseline = \"value\", docs/algorithms.md §4.1).".to_string(),
                fields: ValueBaselineConfig::field_docs(),
            },
            SectionDocs {
                name: "ppo".to_string(),
                doc: "PPO's own settings (finetune.agent = \"ppo\", docs/algorithms.md §4.1); the rest are [agent]'s.".to_string(),
                fields: PpoConfig::field_docs(),
            },
            SectionDocs {
                name: "dxdp".to_string(),
                doc: "DxDP's own settings (finetune.agent = \"dxdp\", docs/algorithms.md §4.2); the rest are [agent]'s.".to_string(),
                fields: DxdpConfig::field_docs(),
            },
            SectionDocs {
                name: "reward".to_string(),
                doc: "The EBM reward and its contrastive learner (docs/algorithms.md §3).".to_string(),
                fields: RewardConfig::field_docs(),
            },
            SectionDocs {
                name: "ddaebm".to_string(),
                doc: "DDAEBM (docs/algorithms.md §5), trained when run.method = \"ddaebm\".".to_string(),
                fields: DdaebmSection::field_docs(),
            },
            SectionDocs {
                name: "eval".to_string(),
                doc: "Evaluation written to summary.json (docs/algorithms.md §7).".to_string(),
                fields: EvalConfig::field_docs(),
            },
        ]
    }

    /// Semantic checks that serde cannot express, with the component names `catalog`
    /// knows; errors name the file and key.
    pub fn validate_with(&self, file: &str, catalog: &Catalog) -> Result<(), Error> {
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
        catalog.check(ComponentKind::Method, &self.run.method, &at("run.method"))?;
        if self.run.method == "ddaebm" {
            self.validate_ddaebm(&at)?;
        }
        catalog.check(
            ComponentKind::Dataset,
            &self.data.dataset,
            &at("data.dataset"),
        )?;
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
            catalog.check(ComponentKind::Agent, &f.agent, &at("finetune.agent"))?;
            catalog.check(ComponentKind::Reward, &f.reward, &at("finetune.reward"))?;
            catalog.check(
                ComponentKind::Baseline,
                &f.baseline,
                &at("finetune.baseline"),
            )?;
            if f.baseline == "leave_one_out" && f.batch_size < 2 {
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
                self.dxdp.validate(&self.agent).map_err(|e| match e {
                    Error::Config { location, message } if location.starts_with("agent.") => {
                        Error::config(at(&location), message)
                    }
                    Error::Config { location, message } => {
                        Error::config(at(&format!("dxdp.{location}")), message)
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
        self.validate_data_split(&at)?;
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
            let (f, r) = (&self.finetune, &self.reward);
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
            let v = &self.value_baseline;
            parts.push((
                "value_baseline.hidden",
                mul(&[
                    mlp(d.saturating_add(w(v.time_embed_dim)), v.hidden, v.depth, 1),
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
    /// The split, standardisation, label and selection keys (what can be checked without
    /// reading the data).
    fn validate_data_split(&self, at: &dyn Fn(&str) -> String) -> Result<(), Error> {
        let d = &self.data;
        if d.label_column.is_some() && d.dataset != "csv" {
            return Err(Error::config(
                at("data.label_column"),
                format!(
                    "only the csv data set reads a label column (data set {:?})",
                    d.dataset
                ),
            ));
        }
        if d.label_column.is_some() && d.drop_last_column {
            return Err(Error::config(
                at("data.label_column"),
                "set label_column or drop_last_column, not both (label_column = -1 reads the last column as labels instead of dropping it)",
            ));
        }
        for (key, value) in [
            ("data.validation_fraction", d.validation_fraction),
            ("data.test_fraction", d.test_fraction),
        ] {
            if !(value.is_finite() && (0.0..1.0).contains(&value)) {
                return Err(Error::config(at(key), "must be a number in [0, 1)"));
            }
        }
        if d.validation_fraction + d.test_fraction >= 1.0 {
            return Err(Error::config(
                at("data.validation_fraction / test_fraction"),
                format!(
                    "{} + {} leaves no training rows: their sum must be below 1",
                    d.validation_fraction, d.test_fraction
                ),
            ));
        }
        if !(d.min_std.is_finite() && d.min_std >= 0.0) {
            return Err(Error::config(
                at("data.min_std"),
                "must be a finite number >= 0",
            ));
        }
        if !d.inlier_classes.is_empty() && d.test_fraction == 0.0 {
            return Err(Error::config(
                at("data.inlier_classes"),
                "anomaly detection scores the test split: set data.test_fraction > 0",
            ));
        }
        let e = &self.eval;
        match e.select.as_str() {
            "last" => {}
            "best" => {
                if d.validation_fraction == 0.0 {
                    return Err(Error::config(
                        at("eval.select"),
                        "\"best\" selects on the validation split: set data.validation_fraction > 0",
                    ));
                }
                if self.run.method != "diffusion" || self.finetune.iterations == 0 {
                    return Err(Error::config(
                        at("eval.select"),
                        "\"best\" selects among fine-tuning checkpoints: it needs run.method = \"diffusion\" and finetune.iterations > 0",
                    ));
                }
            }
            other => {
                return Err(Error::config(
                    at("eval.select"),
                    format!("expected \"last\" or \"best\", found {other:?}"),
                ))
            }
        }
        if e.anomaly_knn_k == 0 || e.anomaly_dsm_draws == 0 {
            return Err(Error::config(
                at("eval.anomaly_knn_k / anomaly_dsm_draws"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

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
                ("agent.velocity_scale_value", a.velocity_scale_value),
                ("value_baseline.lr", self.value_baseline.lr),
            ]);
            let v = &self.value_baseline;
            sizes.extend([
                ("value_baseline.hidden", v.hidden),
                ("value_baseline.depth", v.depth),
                ("value_baseline.time_embed_dim", v.time_embed_dim),
                ("value_baseline.steps", v.steps),
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

impl RewardConfig {
    /// The contrastive learner's settings.
    pub fn contrastive(&self) -> denoise_gym::ebm::ContrastiveConfig {
        denoise_gym::ebm::ContrastiveConfig {
            gamma: self.gamma,
            lr: self.lr,
            betas: self.betas,
            grad_clip: self.grad_clip,
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
        self.agent.validate(n_steps).map_err(in_agent)?;
        let in_ppo = |e: Error| match e {
            Error::Config { location, message } => {
                Error::config(at(&format!("ppo.{location}")), message)
            }
            other => other,
        };
        self.ppo.validate().map_err(in_ppo)?;
        if self.finetune.agent == "ppo" {
            let ft_steps = self.agent.ft_steps.unwrap_or(n_steps);
            self.ppo
                .check_minibatch(self.finetune.batch_size * ft_steps)
                .map_err(in_ppo)?;
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
