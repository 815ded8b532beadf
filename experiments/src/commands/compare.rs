//! `dgym compare RUN...`: several runs' `eval.json` side by side.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::eval::INTEGER_KEYS;

/// The columns `dgym compare` shows first, in this order; other numeric keys follow.
const COMPARE_FIRST: &[&str] = &[
    "swd",
    "mmd2",
    "mmd2_median",
    "mode_weight_tv",
    "off_mode_fraction",
    "modes_covered",
    "energy_kl",
    "energy_kl_raw",
    "energy_tv",
    "energy_nll",
    "energy_auroc",
    "n_samples",
    "seed",
];

/// `dgym compare RUN...`: the runs' `eval.json` side by side, as Markdown and CSV text.
pub fn compare_runs(runs: &[PathBuf]) -> Result<(String, String)> {
    if runs.is_empty() {
        bail!("give at least one run directory");
    }
    let mut tables = Vec::new();
    for run in runs {
        let path = run.join("eval.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} has no eval.json: run `dgym eval {}` first",
                run.display(),
                run.display()
            )
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let Some(object) = value.as_object() else {
            bail!(
                "{} is not an eval.json: expected a JSON object of metrics; run `dgym eval {}` again",
                path.display(),
                run.display()
            );
        };
        let numbers: BTreeMap<String, f64> = object
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
            .collect();
        if numbers.is_empty() {
            bail!(
                "{} holds no numeric metric; run `dgym eval {}` again",
                path.display(),
                run.display()
            );
        }
        tables.push((run.display().to_string(), numbers));
    }
    let mut columns: Vec<String> = COMPARE_FIRST
        .iter()
        .filter(|c| tables.iter().any(|(_, m)| m.contains_key(**c)))
        .map(|c| c.to_string())
        .collect();
    for (_, m) in &tables {
        for k in m.keys() {
            if !columns.contains(k) && k != "eval_time_s" {
                columns.push(k.clone());
            }
        }
    }
    let cell = |m: &BTreeMap<String, f64>, c: &str| {
        m.get(c).map_or_else(String::new, |&v| {
            if INTEGER_KEYS.contains(&c) && v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.4}")
            }
        })
    };
    let mut md = format!(
        "| run | {} |\n|---|{}\n",
        columns.join(" | "),
        "---|".repeat(columns.len())
    );
    let mut csv = format!("run,{}\n", columns.join(","));
    for (name, m) in &tables {
        let cells: Vec<String> = columns.iter().map(|c| cell(m, c)).collect();
        md.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
        csv.push_str(&format!("{},{}\n", csv_quote(name), cells.join(",")));
    }
    Ok((md, csv))
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
