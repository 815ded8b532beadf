//! `dgym config [CONFIG.toml]`: the resolved config with every default and its doc.

use std::path::Path;

use anyhow::Result;

use crate::catalog::{Catalog, ComponentKind};
use crate::config::TrainConfig;

/// The config at `path` (defaults only when `None`) with `--set` overrides applied and
/// validated, rendered as TOML with each section's and field's one-line doc, then every
/// component `catalog` registers under the key that chooses it.
pub fn render_config(
    path: Option<&Path>,
    overrides: &[String],
    catalog: &Catalog,
) -> Result<String> {
    let resolved = TrainConfig::load(path, overrides, catalog)?;
    let mut out = denoise_gym::config::render_documented(
        &resolved,
        &TrainConfig::section_docs_with(catalog),
    )?;
    out.push_str("\n# Registered components, by the key that chooses them:\n");
    for kind in ComponentKind::ALL {
        out.push_str(&format!("# {}:\n", kind.key()));
        for c in catalog.components().iter().filter(|c| c.kind == kind) {
            let section = c
                .section
                .as_ref()
                .map_or_else(String::new, |s| format!(" [{s}]"));
            out.push_str(&format!("#   {}{section}: {}\n", c.name, c.doc));
        }
    }
    Ok(out)
}
