//! # denoise-gym-envs
//!
//! Data sources ("expert demonstrations", [`data`]) and the denoising environment
//! ([`denoising::DenoisingEnv`]) whose episodes run the T-step chain from `x_T ~ N(0, I)`
//! to a sample `x_0`, rewarded at the end by a pluggable [`denoise_gym::reward::RewardModel`].

pub mod data;
pub mod denoising;

pub use data::{
    toy_dataset, DataError, Dataset, GaussianMixture, LabelColumn, Splits, Standardizer,
    TabularDataset, TOY_DATASETS,
};
pub use denoising::{DenoisingEnv, DenoisingState, OracleReward};
