//! `dgym sweep`: ablations over a grid of configs and seeds.
//!
//! A sweep file (TOML) names a base config, axes of config values and seeds; every grid
//! point × seed is one ordinary run directory under the sweep directory, named by its
//! axis values (`T=4,method=gcd/seed=1`). The runs are child processes of the same `dgym`
//! binary (`train`, then `eval`), at most `--jobs` at once. The sweep directory keeps the
//! expanded plan (`sweep.json`), so that
//!
//! - running the sweep again skips finished runs and resumes unfinished ones (the sweep
//!   may be killed at any point, SIGKILL included: children die with it);
//! - a different sweep file pointed at the same directory is refused;
//! - `--shard I/N` takes a deterministic slice, a run always in the same shard as the
//!   run it starts from (`finetune.init_from = "@axis=label"`), so that N machines cover
//!   the grid exactly once (`--emit-slurm` writes a Slurm job array doing that);
//! - `dgym aggregate` ([`crate::aggregate`]) knows which runs to expect.
//!
//! The format is documented in the README ("Ablation sweeps").

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::run::RunDir;

/// The expanded plan in a sweep directory.
pub const PLAN_FILE: &str = "sweep.json";
/// A copy of the sweep file as last run, for people.
pub const SWEEP_COPY: &str = "sweep.toml";
/// The base config with the sweep's `[set]` applied; every run is this plus its overrides.
pub const BASE_FILE: &str = "base.toml";
/// Written into a run directory when the run failed: the command, exit status and error.
pub const ERROR_FILE: &str = "error.txt";
/// Children's stdout and stderr, one file per run: `logs/<point>/seed=S.log`.
pub const LOG_DIR: &str = "logs";

/// Metrics aggregated when the sweep file names none.
const DEFAULT_METRICS: &[&str] = &["swd", "mmd2"];

/// Top-level keys of a sweep file.
const SWEEP_KEYS: &[&str] = &["base", "set", "seeds", "metrics", "grid", "zip", "plot"];

/// Prefix of a `finetune.init_from` value that names a sibling grid point.
const SIBLING_PREFIX: char = '@';

/// One axis of the grid: a single config key, or several zipped keys whose values move
/// together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// The name in run names and tables (`T`, `method`, or a key's last segment).
    pub name: String,
    /// One label per value (position), unique within the axis.
    pub labels: Vec<String>,
    /// The dotted config keys the axis sets.
    pub keys: Vec<String>,
    /// `values[i][k]`: the value (TOML text) of `keys[k]` at position `i`.
    pub values: Vec<Vec<String>>,
}

/// What `dgym aggregate` plots when not told otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlotSpec {
    /// The metric (an `eval.json` key).
    pub metric: String,
    /// The axis along x.
    pub x: String,
    /// The axis whose values are the lines (`None`: every other axis combination).
    pub lines: Option<String>,
}

/// One run of the sweep: a grid point and a seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// The run directory relative to the sweep directory (`<point>/seed=S`).
    pub name: String,
    /// The grid point (`T=4,method=gcd`, or `base` for a grid without axes).
    pub point: String,
    /// The label of each axis at this point.
    pub labels: Vec<String>,
    /// `run.seed`.
    pub seed: u64,
    /// `--set` overrides on top of the base config (`run.seed` included).
    pub overrides: Vec<String>,
    /// The run (name) whose final sampler this one starts from.
    pub init_from: Option<String>,
    /// Runs linked by `init_from` share a group; shards are made of whole groups.
    pub group: usize,
}

/// A sweep file, expanded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The sweep file it was read from (for messages only).
    pub sweep_file: String,
    /// The base config with `[set]` applied, as TOML.
    pub base_config: String,
    /// The axes, in file order (the first varies slowest).
    pub axes: Vec<Axis>,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Every run, grid order, seeds innermost.
    pub runs: Vec<PlannedRun>,
    /// Metrics to aggregate (`eval.json` keys).
    pub metrics: Vec<String>,
    /// The default plot of `dgym aggregate`.
    pub plot: Option<PlotSpec>,
}

impl Plan {
    /// Whether two plans describe the same runs (same base config, axes, seeds and
    /// overrides); metrics and the plot may differ.
    pub fn same_runs(&self, other: &Plan) -> bool {
        self.base_config == other.base_config
            && self.axes == other.axes
            && self.seeds == other.seeds
            && self.runs == other.runs
    }

    /// The number of groups (units of sharding).
    pub fn n_groups(&self) -> usize {
        self.runs.iter().map(|r| r.group + 1).max().unwrap_or(0)
    }

    /// The runs of shard `shard` (all runs without one), in plan order.
    pub fn shard_runs(&self, shard: Option<Shard>) -> Vec<&PlannedRun> {
        self.runs
            .iter()
            .filter(|r| shard.is_none_or(|s| r.group % s.count == s.index - 1))
            .collect()
    }

    /// The axis called `name`, or an error naming the axes there are.
    pub fn axis_index(&self, name: &str, what: &str) -> Result<usize> {
        self.axes
            .iter()
            .position(|a| a.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.axes.iter().map(|a| a.name.as_str()).collect();
                anyhow!(
                    "{what}: no axis {name:?}{}; the axes are: {}",
                    suggestion(name, names.iter().copied()),
                    if names.is_empty() {
                        "(none)".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            })
    }
}

/// `--shard I/N`: the I-th (1-based) of N disjoint slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1..=count.
    pub index: usize,
    /// The number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("shard {s:?}: expected I/N with 1 <= I <= N, e.g. 2/3");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

// ---------------------------------------------------------------------------------------
// Reading a sweep file
// ---------------------------------------------------------------------------------------

/// ` (did you mean "x"?)` for the closest candidate, or nothing when none is close.
fn suggestion<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| {
            // A bare field name (`n_steps`) should find `policy.n_steps`.
            let last = c.rsplit('.').next().unwrap_or(c);
            let d = strsim::levenshtein(name, c).min(strsim::levenshtein(name, last));
            (d, c)
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d <= name.len().max(3) / 2 + 1 => format!(" (did you mean {c:?}?)"),
        _ => String::new(),
    }
}

/// Every leaf key of a [`TrainConfig`], dotted (`policy.n_steps`), optional keys (absent
/// from a serialised default) included.
pub fn config_keys() -> Vec<String> {
    let mut keys: Vec<String> = TrainConfig::section_docs()
        .iter()
        .flat_map(|section| {
            section
                .fields
                .iter()
                .map(move |(field, _)| format!("{}.{field}", section.name))
        })
        .collect();
    if let Ok(toml::Value::Table(sections)) = toml::Value::try_from(TrainConfig::default()) {
        for (section, fields) in sections {
            if let toml::Value::Table(fields) = fields {
                keys.extend(fields.keys().map(|f| format!("{section}.{f}")));
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Checks that `key` is a config field; `where_` says where it appeared.
fn check_key(key: &str, known: &[String], file: &str, where_: &str) -> Result<()> {
    if key == "run.seed" {
        bail!("{file}, {where_}: run.seed is set by `seeds = [...]`, not as a config key");
    }
    if !known.iter().any(|k| k == key) {
        bail!(
            "{file}, {where_}: unknown config key {key:?}{}",
            suggestion(key, known.iter().map(String::as_str))
        );
    }
    Ok(())
}

/// The paths (segments) of a table's entries in file order, descending into tables
/// unless `leaf` says a table is itself an entry. TOML's own parser sorts keys; the
/// order of axes matters (run names, the order runs start), so it is read from the
/// document.
fn ordered_paths(
    table: &dyn toml_edit::TableLike,
    prefix: &[String],
    leaf: &dyn Fn(&dyn toml_edit::TableLike) -> bool,
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (key, item) in table.iter() {
        let mut path = prefix.to_vec();
        path.push(key.to_string());
        match item.as_table_like() {
            Some(inner) if !leaf(inner) => out.extend(ordered_paths(inner, &path, leaf)),
            _ => out.push(path),
        }
    }
    out
}

fn get_path<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut value = table.get(first)?;
    for segment in rest {
        value = value.as_table()?.get(segment)?;
    }
    Some(value)
}

/// `n_steps` of `policy.n_steps`: an axis's default name.
fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// The label of a value in run names: strings bare, `/` (a path separator) replaced.
fn value_label(value: &toml::Value) -> String {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.replace(['/', '\\'], "_")
}

fn check_label(label: &str, file: &str, where_: &str) -> Result<()> {
    if label.is_empty() || label == "." || label == ".." {
        bail!("{file}, {where_}: {label:?} cannot name a run directory; give labels = [...]");
    }
    Ok(())
}

/// An axis value: a scalar or an array (e.g. `betas`), never a table.
fn check_value(value: &toml::Value, file: &str, where_: &str) -> Result<String> {
    if value.is_table() {
        bail!("{file}, {where_}: a value cannot be a table");
    }
    Ok(value.to_string())
}

/// The table `name` of a sweep file, parsed and as a document (for its key order).
fn section<'a>(
    table: &'a toml::Table,
    document: &'a toml_edit::DocumentMut,
    name: &str,
    file: &str,
) -> Result<Option<(&'a toml::Table, &'a dyn toml_edit::TableLike)>> {
    let Some(value) = table.get(name) else {
        return Ok(None);
    };
    match (
        value.as_table(),
        document.get(name).and_then(|i| i.as_table_like()),
    ) {
        (Some(t), Some(d)) => Ok(Some((t, d))),
        _ => bail!("{file}, key {name}: expected a table of \"key\" = ..."),
    }
}

/// Reads and expands a sweep file, checking every run's config.
pub fn load_plan(sweep_file: &Path) -> Result<Plan> {
    let file = sweep_file.display().to_string();
    let text = std::fs::read_to_string(sweep_file)
        .with_context(|| format!("reading sweep file {file}"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{file}: {}",
            e.to_string().trim_end().replace('\n', "\n    ")
        )
    })?;
    let document: toml_edit::DocumentMut = text.parse().map_err(|e| anyhow!("{file}: {e}"))?;
    for key in table.keys() {
        if !SWEEP_KEYS.contains(&key.as_str()) {
            bail!(
                "{file}: unknown key {key:?}{}; a sweep file has {}",
                suggestion(key, SWEEP_KEYS.iter().copied()),
                SWEEP_KEYS.join(", ")
            );
        }
    }
    let known = config_keys();

    // The base config, then `[set]`.
    let base_dir = sweep_file.parent().unwrap_or(Path::new("."));
    let mut base: TrainConfig = match table.get("base") {
        None => TrainConfig::default(),
        Some(toml::Value::String(path)) => {
            let path = base_dir.join(path);
            TrainConfig::load(Some(&path), &[])
                .with_context(|| format!("{file}, key base: the base config {}", path.display()))?
        }
        Some(toml::Value::Table(inline)) => {
            TrainConfig::deserialize(toml::Value::Table(inline.clone()))
                .map_err(|e| anyhow!("{file}, [base]: {}", e.to_string().trim_end()))?
        }
        Some(_) => bail!("{file}, key base: expected a config path (string) or a [base] table"),
    };
    if let Some((set, doc_set)) = section(&table, &document, "set", &file)? {
        let mut overrides = Vec::new();
        for path in ordered_paths(doc_set, &[], &|_| false) {
            let key = path.join(".");
            check_key(&key, &known, &file, "[set]")?;
            let value = get_path(set, &path).ok_or_else(|| anyhow!("{file}, [set]: {key}"))?;
            overrides.push(format!(
                "{key}={}",
                check_value(value, &file, &format!("[set] {key}"))?
            ));
        }
        base = denoise_gym::config::apply_overrides(base, &overrides)
            .with_context(|| format!("{file}, [set]"))?;
    }
    base.validate(&format!("{file} (base config)"))?;
    let base_config = denoise_gym::config::to_toml(&base)?;

    // Axes: [grid] entries, then [[zip]] groups.
    let mut axes: Vec<Axis> = Vec::new();
    if let Some((grid, doc_grid)) = section(&table, &document, "grid", &file)? {
        let is_spec = |t: &dyn toml_edit::TableLike| t.contains_key("values");
        for path in ordered_paths(doc_grid, &[], &is_spec) {
            let key = path.join(".");
            let where_ = format!("[grid] {key}");
            check_key(&key, &known, &file, &where_)?;
            let entry = get_path(grid, &path).ok_or_else(|| anyhow!("{file}, {where_}"))?;
            let (name, values, labels) = match entry {
                toml::Value::Array(values) => (None, values.clone(), None),
                toml::Value::Table(spec) => {
                    for k in spec.keys() {
                        if !["name", "values", "labels"].contains(&k.as_str()) {
                            bail!("{file}, {where_}: unknown key {k:?}; an axis has name, values, labels");
                        }
                    }
                    let values = spec
                        .get("values")
                        .and_then(|v| v.as_array())
                        .ok_or_else(|| anyhow!("{file}, {where_}: values must be an array"))?;
                    let name = match spec.get("name") {
                        None => None,
                        Some(toml::Value::String(s)) => Some(s.clone()),
                        Some(_) => bail!("{file}, {where_}: name must be a string"),
                    };
                    (name, values.clone(), spec.get("labels").cloned())
                }
                _ => bail!("{file}, {where_}: expected an array of values"),
            };
            if values.is_empty() {
                bail!("{file}, {where_}: the axis has no values");
            }
            let texts = values
                .iter()
                .map(|v| check_value(v, &file, &where_))
                .collect::<Result<Vec<_>>>()?;
            let labels = read_labels(labels.as_ref(), &values, &file, &where_)?;
            axes.push(Axis {
                name: name.unwrap_or_else(|| last_segment(&key).to_string()),
                labels,
                keys: vec![key],
                values: texts.into_iter().map(|t| vec![t]).collect(),
            });
        }
    }
    if let Some(zips) = table.get("zip") {
        let zips = zips
            .as_array()
            .ok_or_else(|| anyhow!("{file}, key zip: expected [[zip]] tables"))?;
        let doc_zips = document["zip"]
            .as_array_of_tables()
            .ok_or_else(|| anyhow!("{file}, key zip: expected [[zip]] tables"))?;
        for (z, (zip, doc_zip)) in zips.iter().zip(doc_zips.iter()).enumerate() {
            let where_zip = format!("[[zip]] number {}", z + 1);
            let zip = zip
                .as_table()
                .ok_or_else(|| anyhow!("{file}, {where_zip}: expected a table"))?;
            let mut keys = Vec::new();
            let mut columns: Vec<Vec<toml::Value>> = Vec::new();
            for path in ordered_paths(doc_zip, &[], &|_| false) {
                let key = path.join(".");
                if key == "name" || key == "labels" {
                    continue;
                }
                let where_ = format!("{where_zip}, {key}");
                check_key(&key, &known, &file, &where_)?;
                let values = get_path(zip, &path)
                    .and_then(|v| v.as_array())
                    .ok_or_else(|| anyhow!("{file}, {where_}: expected an array of values"))?;
                if values.is_empty() {
                    bail!("{file}, {where_}: the axis has no values");
                }
                keys.push(key);
                columns.push(values.clone());
            }
            if keys.is_empty() {
                bail!("{file}, {where_zip}: no config keys to zip");
            }
            let n = columns[0].len();
            if columns.iter().any(|c| c.len() != n) {
                let lengths: Vec<String> = keys
                    .iter()
                    .zip(&columns)
                    .map(|(k, c)| format!("{k} has {}", c.len()))
                    .collect();
                bail!(
                    "{file}, {where_zip}: zipped axes must have equal lengths; {}",
                    lengths.join(", ")
                );
            }
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(
                    columns
                        .iter()
                        .map(|c| check_value(&c[i], &file, &where_zip))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            let name = match zip.get("name") {
                None => keys
                    .iter()
                    .map(|k| last_segment(k))
                    .collect::<Vec<_>>()
                    .join("+"),
                Some(toml::Value::String(s)) => s.clone(),
                Some(_) => bail!("{file}, {where_zip}: name must be a string"),
            };
            let labels = match zip.get("labels") {
                Some(labels) => read_labels(Some(labels), &columns[0], &file, &where_zip)?,
                None => (0..n)
                    .map(|i| {
                        columns
                            .iter()
                            .map(|c| value_label(&c[i]))
                            .collect::<Vec<_>>()
                            .join("+")
                    })
                    .collect(),
            };
            check_unique_labels(&labels, &file, &where_zip)?;
            axes.push(Axis {
                name,
                labels,
                keys,
                values,
            });
        }
    }
    for (i, axis) in axes.iter().enumerate() {
        if axis.name.is_empty() || axis.name.contains(['/', '\\', ',', '=']) {
            bail!(
                "{file}: axis name {:?} must be non-empty, without / , =",
                axis.name
            );
        }
        for other in &axes[..i] {
            if other.name == axis.name {
                bail!(
                    "{file}: two axes are called {:?} ({} and {}); name one with {{ name = \"...\", values = [...] }}",
                    axis.name,
                    other.keys.join("+"),
                    axis.keys.join("+")
                );
            }
            if let Some(k) = axis.keys.iter().find(|k| other.keys.contains(k)) {
                bail!("{file}: key {k:?} is on two axes");
            }
        }
    }

    let seeds: Vec<u64> = match table.get("seeds") {
        None => vec![0],
        Some(toml::Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_integer()
                    .and_then(|i| u64::try_from(i).ok())
                    .ok_or_else(|| {
                        anyhow!("{file}, key seeds: {v} is not a seed (an integer >= 0)")
                    })
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("{file}, key seeds: expected an array of integers"),
    };
    if seeds.is_empty() {
        bail!("{file}, key seeds: no seeds");
    }
    if let Some(s) = seeds
        .iter()
        .enumerate()
        .find_map(|(i, s)| seeds[..i].contains(s).then_some(s))
    {
        bail!("{file}, key seeds: seed {s} appears twice");
    }
    let metrics: Vec<String> = match table.get("metrics") {
        None => DEFAULT_METRICS.iter().map(|s| s.to_string()).collect(),
        Some(toml::Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("{file}, key metrics: {v} is not a metric name"))
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("{file}, key metrics: expected an array of eval.json keys"),
    };
    if metrics.is_empty() {
        bail!("{file}, key metrics: no metrics");
    }

    let mut plan = Plan {
        sweep_file: file.clone(),
        base_config,
        axes,
        seeds,
        runs: Vec::new(),
        metrics,
        plot: None,
    };
    plan.plot = match table.get("plot") {
        None => None,
        Some(toml::Value::Table(p)) => {
            for k in p.keys() {
                if !["metric", "x", "lines"].contains(&k.as_str()) {
                    bail!("{file}, [plot]: unknown key {k:?}; a plot has metric, x, lines");
                }
            }
            let get = |k: &str| -> Result<Option<String>> {
                match p.get(k) {
                    None => Ok(None),
                    Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => bail!("{file}, [plot] {k}: expected a string"),
                }
            };
            let x = get("x")?.ok_or_else(|| anyhow!("{file}, [plot]: x (an axis) is missing"))?;
            let lines = get("lines")?;
            plan.axis_index(&x, &format!("{file}, [plot] x"))?;
            if let Some(l) = &lines {
                plan.axis_index(l, &format!("{file}, [plot] lines"))?;
            }
            Some(PlotSpec {
                metric: get("metric")?.unwrap_or_else(|| plan.metrics[0].clone()),
                x,
                lines,
            })
        }
        Some(_) => bail!("{file}, key plot: expected a [plot] table"),
    };
    plan.runs = expand(&plan, &base, &file)?;
    Ok(plan)
}

fn read_labels(
    labels: Option<&toml::Value>,
    values: &[toml::Value],
    file: &str,
    where_: &str,
) -> Result<Vec<String>> {
    let labels: Vec<String> = match labels {
        None => values.iter().map(value_label).collect(),
        Some(toml::Value::Array(labels)) => {
            if labels.len() != values.len() {
                bail!(
                    "{file}, {where_}: {} labels for {} values",
                    labels.len(),
                    values.len()
                );
            }
            labels
                .iter()
                .map(|l| {
                    l.as_str()
                        .map(|s| s.replace(['/', '\\'], "_"))
                        .ok_or_else(|| anyhow!("{file}, {where_}: labels must be strings"))
                })
                .collect::<Result<_>>()?
        }
        Some(_) => bail!("{file}, {where_}: labels must be an array of strings"),
    };
    check_unique_labels(&labels, file, where_)?;
    Ok(labels)
}

fn check_unique_labels(labels: &[String], file: &str, where_: &str) -> Result<()> {
    for (i, label) in labels.iter().enumerate() {
        check_label(label, file, where_)?;
        if labels[..i].contains(label) {
            bail!("{file}, {where_}: the value {label:?} appears twice");
        }
    }
    Ok(())
}

/// The name of a grid point.
fn point_name(axes: &[Axis], positions: &[usize]) -> String {
    if axes.is_empty() {
        return "base".to_string();
    }
    axes.iter()
        .zip(positions)
        .map(|(a, &i)| format!("{}={}", a.name, a.labels[i]))
        .collect::<Vec<_>>()
        .join(",")
}

/// The run directory (relative) of a grid point and seed.
fn run_name(point: &str, seed: u64) -> String {
    format!("{point}/seed={seed}")
}

/// Parses `@axis=label[,axis=label...]` into `(axis index, label index)` pairs.
fn parse_sibling(reference: &str, axes: &[Axis], where_: &str) -> Result<Vec<(usize, usize)>> {
    let body = reference.trim_start_matches(SIBLING_PREFIX);
    let mut out = Vec::new();
    for part in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, label) = part.split_once('=').ok_or_else(|| {
            anyhow!("{where_}: init_from {reference:?}: expected @axis=value[,axis=value]")
        })?;
        let a = axes.iter().position(|a| a.name == name).ok_or_else(|| {
            anyhow!(
                "{where_}: init_from {reference:?}: no axis {name:?}{}",
                suggestion(name, axes.iter().map(|a| a.name.as_str()))
            )
        })?;
        let l = axes[a]
            .labels
            .iter()
            .position(|x| x == label)
            .ok_or_else(|| {
                anyhow!(
                "{where_}: init_from {reference:?}: axis {name} has no value {label:?} (it has {})",
                axes[a].labels.join(", ")
            )
            })?;
        out.push((a, l));
    }
    if out.is_empty() {
        bail!("{where_}: init_from {reference:?}: name the sibling point, e.g. @method=dsm");
    }
    Ok(out)
}

/// Every grid point × seed, with overrides, `init_from` links and groups.
fn expand(plan: &Plan, base: &TrainConfig, file: &str) -> Result<Vec<PlannedRun>> {
    let axes = &plan.axes;
    let mut points: Vec<Vec<usize>> = vec![vec![]];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..axis.labels.len()).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    // Per point: overrides and the sibling it starts from (as positions).
    let mut per_point = Vec::new();
    for positions in &points {
        let name = point_name(axes, positions);
        let mut overrides = Vec::new();
        let mut sibling = None;
        for (axis, &i) in axes.iter().zip(positions) {
            for (key, value) in axis.keys.iter().zip(&axis.values[i]) {
                let literal = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
                    Ok(t) => t.get("v").and_then(|v| v.as_str().map(str::to_string)),
                    Err(_) => None,
                };
                match literal {
                    Some(s) if key == "finetune.init_from" && s.starts_with(SIBLING_PREFIX) => {
                        let replace = parse_sibling(&s, axes, &format!("{file}, point {name}"))?;
                        let mut source = positions.clone();
                        for (a, l) in replace {
                            source[a] = l;
                        }
                        sibling = Some(source);
                    }
                    _ => overrides.push(format!("{key}={value}")),
                }
            }
        }
        per_point.push((name, overrides, sibling));
    }
    let index_of = |positions: &[usize]| points.iter().position(|p| p == positions);
    let mut runs = Vec::new();
    for (p, (name, overrides, sibling)) in per_point.iter().enumerate() {
        let source = match sibling {
            None => None,
            Some(source) => {
                let s =
                    index_of(source).ok_or_else(|| anyhow!("{file}, point {name}: init_from"))?;
                if s == p {
                    bail!("{file}, point {name}: finetune.init_from names the point itself");
                }
                if per_point[s].2.is_some() {
                    bail!(
                        "{file}, point {name}: init_from point {} itself starts from another point; chains are not supported",
                        per_point[s].0
                    );
                }
                Some(s)
            }
        };
        for &seed in &plan.seeds {
            let mut run_overrides = overrides.clone();
            run_overrides.push(format!("run.seed={seed}"));
            let run = run_name(name, seed);
            let config = denoise_gym::config::apply_overrides(base.clone(), &run_overrides)
                .with_context(|| format!("{file}, run {run}"))?;
            config.validate(&format!("{file} (run {run})"))?;
            if source.is_some() && config.finetune.iterations == 0 {
                bail!(
                    "{file}, run {run}: finetune.init_from starts from a sibling, which needs finetune.iterations > 0"
                );
            }
            runs.push(PlannedRun {
                name: run,
                point: name.clone(),
                labels: axes
                    .iter()
                    .zip(&points[p])
                    .map(|(a, &i)| a.labels[i].clone())
                    .collect(),
                seed,
                overrides: run_overrides,
                init_from: source.map(|s| run_name(&per_point[s].0, seed)),
                group: 0,
            });
        }
    }
    // Groups: a source and the runs starting from it; numbered in plan order.
    let mut group_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut next = 0;
    for run in &mut runs {
        let root = run.init_from.clone().unwrap_or_else(|| run.name.clone());
        run.group = *group_of.entry(root).or_insert_with(|| {
            next += 1;
            next - 1
        });
    }
    Ok(runs)
}

// ---------------------------------------------------------------------------------------
// The sweep directory
// ---------------------------------------------------------------------------------------

/// `runs/sweeps/<sweep file stem>`.
pub fn default_sweep_dir(sweep_file: &Path) -> PathBuf {
    let stem = sweep_file
        .file_stem()
        .map_or_else(|| "sweep".to_string(), |s| s.to_string_lossy().to_string());
    PathBuf::from("runs").join("sweeps").join(stem)
}

/// Writes `text` to `path` through a temporary file and a rename, so that readers (other
/// shards, a killed sweep's restart) never see half a file.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Reads the plan stored in a sweep directory.
pub fn read_plan(dir: &Path) -> Result<Plan> {
    let path = dir.join(PLAN_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a sweep directory (no {PLAN_FILE}; `dgym sweep` writes it)",
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a sweep plan", path.display()))
}

/// Refuses a directory holding another sweep's runs (or anything else).
fn check_dir(dir: &Path, plan: &Plan) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    if !dir.join(PLAN_FILE).exists() {
        let visible = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok())
            .any(|e| !e.file_name().to_string_lossy().starts_with('.'));
        if visible {
            bail!(
                "{} exists and is not a sweep directory (no {PLAN_FILE}): choose another --out",
                dir.display()
            );
        }
        return Ok(false);
    }
    let stored = read_plan(dir)?;
    if !stored.same_runs(plan) {
        let what = if stored.base_config != plan.base_config {
            "base config".to_string()
        } else if stored.axes != plan.axes {
            "axes".to_string()
        } else if stored.seeds != plan.seeds {
            "seeds".to_string()
        } else {
            "runs".to_string()
        };
        bail!(
            "{} holds the runs of a different sweep (made by {}; its {what} differ from {}): \
             refusing to mix results; choose another --out or delete the directory",
            dir.display(),
            stored.sweep_file,
            plan.sweep_file
        );
    }
    Ok(true)
}

/// Creates (or checks) the sweep directory and records the plan.
fn prepare_dir(dir: &Path, plan: &Plan, sweep_file: &Path) -> Result<()> {
    check_dir(dir, plan)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The plan goes first: its presence makes the directory a sweep directory.
    write_atomic(&dir.join(PLAN_FILE), &serde_json::to_string_pretty(plan)?)?;
    write_atomic(&dir.join(BASE_FILE), &plan.base_config)?;
    let text = std::fs::read_to_string(sweep_file)
        .with_context(|| format!("reading {}", sweep_file.display()))?;
    write_atomic(&dir.join(SWEEP_COPY), &text)
}

/// Where a run stands on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// `summary.json` and a readable `eval.json`.
    Done,
    /// Trained, not evaluated.
    NeedsEval,
    /// A checkpoint without `summary.json`: continue with `--resume`.
    Partial,
    /// Nothing worth keeping (absent, or killed before its first checkpoint).
    New,
}

/// Reads `path` as a JSON object, `None` when absent or not (yet) complete.
pub fn read_json_object(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.is_object().then_some(value)
}

/// The state of a run directory.
pub fn run_state(run_dir: &Path) -> RunState {
    let run = RunDir::new(run_dir);
    if run.summary().exists() {
        if read_json_object(&run_dir.join("eval.json")).is_some() {
            RunState::Done
        } else {
            RunState::NeedsEval
        }
    } else if run.last_checkpoint().exists() && run.config().exists() {
        RunState::Partial
    } else {
        RunState::New
    }
}

// ---------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------

/// Options of `dgym sweep`.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The sweep directory (default [`default_sweep_dir`]).
    pub out: Option<PathBuf>,
    /// Runs at once.
    pub jobs: usize,
    /// Only this slice of the runs.
    pub shard: Option<Shard>,
    /// Print the runs, run nothing.
    pub dry_run: bool,
}

/// The `dgym` binary that runs each run (`std::env::current_exe()` from the CLI).
#[derive(Debug, Clone)]
pub struct Runner {
    /// Path of the `dgym` executable.
    pub exe: PathBuf,
    /// `RAYON_NUM_THREADS` for every run (`None`: the runs inherit the sweep's
    /// environment); see [`threads_per_run`].
    pub threads_per_run: Option<usize>,
}

/// The threads each of `jobs` concurrent runs gets: the cores divided among them, when
/// more than one run at once shares the machine and `RAYON_NUM_THREADS` is not set already.
/// A run's fused kernels split every network pass over its threads, with a helper thread
/// that spins between passes; two runs each splitting over all cores would take turns on
/// them instead. Runs resumed with the same `--jobs` keep their thread count (the row
/// blocks, and so the numbers, depend on it).
pub fn threads_per_run(jobs: usize) -> Option<usize> {
    if jobs <= 1 || std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / jobs).max(1))
}

/// What a sweep invocation did.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    /// Runs finished by this invocation.
    pub finished: usize,
    /// Runs already finished before.
    pub skipped: usize,
    /// Runs that failed (names).
    pub failed: Vec<String>,
    /// Whether `dgym aggregate` ran at the end.
    pub aggregated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Train,
    Eval,
}

struct Active {
    run: usize,
    stage: Stage,
    child: Child,
    log: PathBuf,
    log_start: u64,
    command: String,
    started: Instant,
    train_s: f64,
}

enum Outcome {
    Pending,
    Done,
    Failed,
}

/// Runs `dgym <args>` with its output appended to `log`; the child dies with the sweep.
fn spawn(runner: &Runner, args: &[String], log: &Path) -> Result<(Child, u64)> {
    let exe = &runner.exe;
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let start = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file));
    if let Some(threads) = runner.threads_per_run {
        command.env("RAYON_NUM_THREADS", threads.to_string());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe, and nothing else runs between fork and exec.
        // The children are spawned from the main thread, which lives as long as the
        // sweep, so PDEATHSIG fires exactly when the sweep process dies (SIGKILL
        // included): a restarted sweep never finds a stray child writing into a run.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok((child, start))
}

/// The text a child wrote to its log since `start`.
fn log_since(log: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let _ = file.read_to_string(&mut text);
        }
    }
    text
}

/// The most telling line of a failed child's output: its `error:` line, else the last.
fn error_line(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("error:"))
        .or_else(|| output.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("exit status {}", status.code().unwrap_or(-1))
}

/// `dgym sweep`: runs (or, with `dry_run`, lists) the runs of a sweep file.
pub fn run_sweep(
    sweep_file: &Path,
    options: &SweepOptions,
    runner: &Runner,
) -> Result<SweepReport> {
    let plan = load_plan(sweep_file)?;
    let dir = options
        .out
        .clone()
        .unwrap_or_else(|| default_sweep_dir(sweep_file));
    let runs = plan.shard_runs(options.shard);
    let shard_note = options.shard.map_or_else(String::new, |s| {
        format!(", shard {}/{}: {} runs", s.index, s.count, runs.len())
    });
    let header = format!(
        "{} runs ({} grid points × {} seeds, {} groups){shard_note} in {}",
        plan.runs.len(),
        plan.runs.len() / plan.seeds.len(),
        plan.seeds.len(),
        plan.n_groups(),
        dir.display()
    );
    if options.dry_run {
        check_dir(&dir, &plan)?;
        println!("{header}");
        for run in &runs {
            let state = match run_state(&dir.join(&run.name)) {
                RunState::Done => "done",
                RunState::NeedsEval => "trained, eval pending",
                RunState::Partial => "partial: resumes",
                RunState::New if dir.join(&run.name).join(ERROR_FILE).exists() => "failed: retries",
                RunState::New => "new",
            };
            let from = run
                .init_from
                .as_ref()
                .map_or_else(String::new, |s| format!("  init_from {s}"));
            let sets: Vec<&str> = run.overrides.iter().map(String::as_str).collect();
            println!(
                "  {:<40} [{state}]  --set {}{from}",
                run.name,
                sets.join(" --set ")
            );
        }
        println!("{} runs", runs.len());
        return Ok(SweepReport::default());
    }
    if options.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    prepare_dir(&dir, &plan, sweep_file)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    println!("{header}");

    let index: BTreeMap<&str, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut outcome: Vec<Outcome> = runs.iter().map(|_| Outcome::Pending).collect();
    let mut report = SweepReport::default();
    for (i, run) in runs.iter().enumerate() {
        if run_state(&dir.join(&run.name)) == RunState::Done {
            outcome[i] = Outcome::Done;
            report.skipped += 1;
        }
    }
    if report.skipped > 0 {
        println!("{} runs finished earlier: skipped", report.skipped);
    }
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} runs [{elapsed_precise}] {msg}",
        )
        .map_err(|e| anyhow!("progress template: {e}"))?,
    );
    bar.set_position(report.skipped as u64);
    let mut active: Vec<Active> = Vec::new();
    let total = runs.len();
    let mut completed = report.skipped;
    loop {
        // Start what is ready, in plan order.
        while active.len() < options.jobs {
            let next = (0..runs.len()).find(|&i| {
                matches!(outcome[i], Outcome::Pending)
                    && !active.iter().any(|a| a.run == i)
                    && runs[i].init_from.as_ref().is_none_or(|s| {
                        index
                            .get(s.as_str())
                            .is_none_or(|&j| matches!(outcome[j], Outcome::Done))
                    })
            });
            let Some(i) = next else { break };
            let run = runs[i];
            match start_run(&dir, run, runner) {
                Ok(Some(a)) => active.push(Active { run: i, ..a }),
                Ok(None) => {
                    // Finished meanwhile by another invocation on the same directory.
                    outcome[i] = Outcome::Done;
                    completed += 1;
                    report.skipped += 1;
                    bar.set_position(completed as u64);
                }
                Err(error) => {
                    record_failure(&dir, run, "", &format!("{error:#}"));
                    outcome[i] = Outcome::Failed;
                    completed += 1;
                    report.failed.push(run.name.clone());
                    bar.suspend(|| {
                        println!("[{completed}/{total}] FAILED {}: {error:#}", run.name)
                    });
                    bar.set_position(completed as u64);
                }
            }
        }
        // Runs whose source failed cannot start.
        for i in 0..runs.len() {
            if !matches!(outcome[i], Outcome::Pending) {
                continue;
            }
            if let Some(&j) = runs[i]
                .init_from
                .as_ref()
                .and_then(|s| index.get(s.as_str()))
            {
                if matches!(outcome[j], Outcome::Failed) {
                    let message = format!("its init_from run {} failed", runs[j].name);
                    record_failure(&dir, runs[i], "", &message);
                    outcome[i] = Outcome::Failed;
                    completed += 1;
                    report.failed.push(runs[i].name.clone());
                    bar.suspend(|| {
                        println!("[{completed}/{total}] FAILED {}: {message}", runs[i].name)
                    });
                    bar.set_position(completed as u64);
                }
            }
        }
        if active.is_empty() {
            break;
        }
        let names: Vec<&str> = active.iter().map(|a| runs[a.run].name.as_str()).collect();
        bar.set_message(names.join("  "));
        std::thread::sleep(Duration::from_millis(50));
        let mut k = 0;
        while k < active.len() {
            let status = match active[k].child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => {
                    k += 1;
                    continue;
                }
                Err(e) => bail!("waiting for {}: {e}", runs[active[k].run].name),
            };
            let a = active.remove(k);
            let run = runs[a.run];
            if !status.success() {
                let output = log_since(&a.log, a.log_start);
                let message = format!("{}: {}", describe_status(status), error_line(&output));
                record_failure(&dir, run, &a.command, &format!("{message}\n\n{output}"));
                outcome[a.run] = Outcome::Failed;
                completed += 1;
                report.failed.push(run.name.clone());
                bar.suspend(|| {
                    println!(
                        "[{completed}/{total}] FAILED {} ({} failed, {message}; see {})",
                        run.name,
                        if a.stage == Stage::Train {
                            "train"
                        } else {
                            "eval"
                        },
                        dir.join(&run.name).join(ERROR_FILE).display()
                    )
                });
                bar.set_position(completed as u64);
                continue;
            }
            match a.stage {
                Stage::Train => {
                    let train_s = a.started.elapsed().as_secs_f64();
                    match spawn_eval(&dir, run, runner) {
                        Ok(mut next) => {
                            next.run = a.run;
                            next.train_s = train_s;
                            active.insert(k, next);
                            k += 1;
                        }
                        Err(error) => {
                            record_failure(&dir, run, "", &format!("{error:#}"));
                            outcome[a.run] = Outcome::Failed;
                            completed += 1;
                            report.failed.push(run.name.clone());
                            bar.suspend(|| {
                                println!("[{completed}/{total}] FAILED {}: {error:#}", run.name)
                            });
                            bar.set_position(completed as u64);
                        }
                    }
                }
                Stage::Eval => {
                    outcome[a.run] = Outcome::Done;
                    completed += 1;
                    report.finished += 1;
                    let eval_s = a.started.elapsed().as_secs_f64();
                    let figures = read_json_object(&dir.join(&run.name).join("eval.json"))
                        .map(|e| {
                            plan.metrics
                                .iter()
                                .filter_map(|m| e[m].as_f64().map(|v| format!("{m} {v:.4}")))
                                .collect::<Vec<_>>()
                                .join("  ")
                        })
                        .unwrap_or_default();
                    bar.suspend(|| {
                        println!(
                            "[{completed}/{total}] done {}  (train {:.1} s, eval {eval_s:.1} s)  {figures}",
                            run.name, a.train_s
                        )
                    });
                    bar.set_position(completed as u64);
                }
            }
        }
    }
    bar.finish_and_clear();
    let all_complete = plan.runs.iter().all(|r| {
        let d = dir.join(&r.name);
        run_state(&d) == RunState::Done || d.join(ERROR_FILE).exists()
    });
    if options.shard.is_none() || all_complete {
        // The runs are what matters: a table that cannot be written is reported, and
        // `dgym aggregate` can be run again by hand.
        match crate::aggregate::aggregate(&dir, &crate::aggregate::AggregateOptions::default()) {
            Ok(written) => {
                println!("aggregate: {}", written.markdown_path.display());
                report.aggregated = true;
            }
            Err(error) => eprintln!(
                "warning: dgym aggregate {} failed: {error:#}",
                dir.display()
            ),
        }
    }
    println!(
        "{} runs finished now, {} earlier, {} failed",
        report.finished,
        report.skipped,
        report.failed.len()
    );
    Ok(report)
}

/// Starts the next stage of a run: `train` (new or `--resume`) or `eval`.
fn start_run(dir: &Path, run: &PlannedRun, runner: &Runner) -> Result<Option<Active>> {
    let run_dir = dir.join(&run.name);
    let _ = std::fs::remove_file(run_dir.join(ERROR_FILE));
    let args: Vec<String> = match run_state(&run_dir) {
        RunState::Done => return Ok(None),
        RunState::NeedsEval => return spawn_eval(dir, run, runner).map(Some),
        RunState::Partial => vec![
            "train".into(),
            "--resume".into(),
            run_dir.display().to_string(),
        ],
        RunState::New => {
            if run_dir.exists() {
                // Killed before its first checkpoint: nothing to keep, and `train`
                // wants an empty directory.
                std::fs::remove_dir_all(&run_dir)
                    .with_context(|| format!("clearing {}", run_dir.display()))?;
            }
            let mut args = vec![
                "train".to_string(),
                dir.join(BASE_FILE).display().to_string(),
                "--out".into(),
                run_dir.display().to_string(),
            ];
            let mut sets = run.overrides.clone();
            sets.push("run.quiet=true".into());
            if let Some(source) = &run.init_from {
                let path = dir.join(source).display().to_string();
                sets.push(format!("finetune.init_from={}", toml::Value::String(path)));
            }
            for set in sets {
                args.push("--set".into());
                args.push(set);
            }
            args
        }
    };
    let log = log_path(dir, run);
    let (child, log_start) = spawn(runner, &args, &log)?;
    Ok(Some(Active {
        run: 0,
        stage: Stage::Train,
        child,
        log,
        log_start,
        command: format!("dgym {}", args.join(" ")),
        started: Instant::now(),
        train_s: 0.0,
    }))
}

fn spawn_eval(dir: &Path, run: &PlannedRun, runner: &Runner) -> Result<Active> {
    let args = vec![
        "eval".to_string(),
        dir.join(&run.name).display().to_string(),
    ];
    let log = log_path(dir, run);
    let (child, log_start) = spawn(runner, &args, &log)?;
    Ok(Active {
        run: 0,
        stage: Stage::Eval,
        child,
        log,
        log_start,
        command: format!("dgym {}", args.join(" ")),
        started: Instant::now(),
        train_s: 0.0,
    })
}

fn log_path(dir: &Path, run: &PlannedRun) -> PathBuf {
    dir.join(LOG_DIR)
        .join(&run.point)
        .join(format!("seed={}.log", run.seed))
}

/// Writes `error.txt` into the run directory (created if the run never started).
fn record_failure(dir: &Path, run: &PlannedRun, command: &str, message: &str) {
    let run_dir = dir.join(&run.name);
    let _ = std::fs::create_dir_all(&run_dir);
    let text = if command.is_empty() {
        format!("{message}\n")
    } else {
        format!("command: {command}\n{message}\n")
    };
    let _ = write_atomic(&run_dir.join(ERROR_FILE), &text);
}

// ---------------------------------------------------------------------------------------
// Slurm
// ---------------------------------------------------------------------------------------

/// Quotes a string for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// `dgym sweep --emit-slurm`: prepares the sweep directory and writes a job-array script
/// whose task `i` (1..=shards) runs `dgym sweep SWEEP --shard i/shards`. `shards`
/// defaults to one task per group of runs. Returns the number of array tasks.
pub fn emit_slurm(
    sweep_file: &Path,
    options: &SweepOptions,
    script: &Path,
    shards: Option<usize>,
    runner: &Runner,
) -> Result<usize> {
    let plan = load_plan(sweep_file)?;
    let shards = shards.unwrap_or(plan.n_groups()).max(1);
    if options.shard.is_some() {
        bail!("--emit-slurm writes one task per shard; give --shards N, not --shard");
    }
    if options.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let dir = absolute(
        &options
            .out
            .clone()
            .unwrap_or_else(|| default_sweep_dir(sweep_file)),
    )?;
    prepare_dir(&dir, &plan, sweep_file)?;
    let sweep_abs = absolute(sweep_file)?;
    let exe = absolute(&runner.exe)?;
    let cwd = std::env::current_dir()?;
    let stem = sweep_file
        .file_stem()
        .map_or_else(|| "sweep".to_string(), |s| s.to_string_lossy().to_string());
    let text = format!(
        "#!/bin/bash\n\
         # Written by `dgym sweep {sweep} --emit-slurm`: a job array of {shards} tasks; task i runs\n\
         # shard i/{shards} of the sweep ({runs} runs in {groups} groups). Submit with `sbatch {script}`.\n\
         # A task that is cut short can be resubmitted: finished runs are skipped.\n\
         #SBATCH --job-name=dgym-{stem}\n\
         #SBATCH --array=1-{shards}\n\
         #SBATCH --cpus-per-task={jobs}\n\
         #SBATCH --output={out}\n\
         set -euo pipefail\n\
         cd {cwd}\n\
         exec {exe} sweep {sweep_q} --out {dir_q} --jobs {jobs} --shard \"${{SLURM_ARRAY_TASK_ID}}/{shards}\"\n",
        sweep = sweep_file.display(),
        runs = plan.runs.len(),
        groups = plan.n_groups(),
        script = script.display(),
        jobs = options.jobs,
        out = dir.join("slurm-%A_%a.out").display(),
        cwd = shell_quote(&cwd.display().to_string()),
        exe = shell_quote(&exe.display().to_string()),
        sweep_q = shell_quote(&sweep_abs.display().to_string()),
        dir_q = shell_quote(&dir.display().to_string()),
    );
    if let Some(parent) = script.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(script, text).with_context(|| format!("writing {}", script.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755));
    }
    Ok(shards)
}
