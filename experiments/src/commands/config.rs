//! `dgym config [CONFIG.toml]`: the resolved config with every default and its doc.

use std::path::Path;

use anyhow::Result;

use crate::config::TrainConfig;

/// The config at `path` (defaults only when `None`) with `--set` overrides applied and
/// validated, rendered as TOML with each section's and field's one-line doc.
pub fn render_config(path: Option<&Path>, overrides: &[String]) -> Result<String> {
    let resolved = TrainConfig::load(path, overrides)?;
    Ok(denoise_gym::config::render_documented(
        &resolved,
        &TrainConfig::section_docs(),
    )?)
}
