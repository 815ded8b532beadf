//! The sweep file: its keys, axes and seeds, expanded into planned runs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::config::TrainConfig;

/// Metrics aggregated when the sweep file names none.
pub(super) const DEFAULT_METRICS: &[&str] = &["swd", "mmd2"];

/// Top-level keys of a sweep file.
pub(super) const SWEEP_KEYS: &[&str] = &[
    "base", "set", "seeds", "metrics", "grid", "zip", "plot", "curves",
];

/// Prefix of a `finetune.init_from` value that names a sibling grid point.
pub(super) const SIBLING_PREFIX: char = '@';

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

/// The learning curves `dgym aggregate` draws (a sweep's `[curves]` table): each
/// metric's value during training (the `eval/<metric>` column of `metrics.csv`) against
/// the environment episodes spent, mean over seeds, one line per grid point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvesSpec {
    /// The metrics: `swd`, `mmd2`, ... (the `eval/<metric>` columns, logged every
    /// `eval.eval_every`), or any `metrics.csv` column by its full name
    /// (`policy/kl_reference`).
    pub metrics: Vec<String>,
    /// The grid point whose final mean is the target of the "episodes to reach" table
    /// (`None`: the first point).
    pub target: Option<String>,
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
    /// The learning curves of `dgym aggregate` (absent in plans written before them).
    #[serde(default)]
    pub curves: Option<CurvesSpec>,
}

impl Plan {
    /// The plan with config keys that moved since it was written (docs: compat) under
    /// their new names, and its base config in today's layout, so that a sweep directory
    /// written before a key moved still resumes.
    pub fn migrated(mut self) -> Result<Self> {
        let rename = |assignment: &str| match assignment.split_once('=') {
            Some((key, value)) => match crate::compat::renamed(key) {
                Some(new) => format!("{new}={value}"),
                None => assignment.to_string(),
            },
            None => assignment.to_string(),
        };
        for axis in &mut self.axes {
            for key in &mut axis.keys {
                if let Some(new) = crate::compat::renamed(key) {
                    *key = new.to_string();
                }
            }
        }
        for run in &mut self.runs {
            run.overrides = run.overrides.iter().map(|o| rename(o)).collect();
        }
        if crate::compat::migrate_text(&self.base_config, "the stored plan")?.is_some() {
            let base = TrainConfig::parse_text("the stored plan's base config", &self.base_config)?;
            self.base_config = denoise_gym::config::to_toml(&base)?;
        }
        Ok(self)
    }

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
pub(super) fn suggestion<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
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
pub fn config_keys(catalog: &Catalog) -> Vec<String> {
    let mut keys: Vec<String> = TrainConfig::section_docs_with(catalog)
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

/// Checks that `key` is a config field; `where_` says where it appeared. Returns the
/// key's current name: an old one (docs: compat) is renamed, with a warning.
pub(super) fn check_key(key: &str, known: &[String], file: &str, where_: &str) -> Result<String> {
    if let Some(new) = crate::compat::renamed(key) {
        crate::compat::warn_renamed(&format!("{file}, {where_}"), key, new);
        return Ok(new.to_string());
    }
    if key == "run.seed" {
        bail!("{file}, {where_}: run.seed is set by `seeds = [...]`, not as a config key");
    }
    if !known.iter().any(|k| k == key) {
        bail!(
            "{file}, {where_}: unknown config key {key:?}{}",
            suggestion(key, known.iter().map(String::as_str))
        );
    }
    Ok(key.to_string())
}

/// The paths (segments) of a table's entries in file order, descending into tables
/// unless `leaf` says a table is itself an entry. TOML's own parser sorts keys; the
/// order of axes matters (run names, the order runs start), so it is read from the
/// document.
pub(super) fn ordered_paths(
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

pub(super) fn get_path<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut value = table.get(first)?;
    for segment in rest {
        value = value.as_table()?.get(segment)?;
    }
    Some(value)
}

/// `n_steps` of `policy.n_steps`: an axis's default name.
pub(super) fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// The label of a value in run names: strings bare, `/` (a path separator) replaced.
pub(super) fn value_label(value: &toml::Value) -> String {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.replace(['/', '\\'], "_")
}

pub(super) fn check_label(label: &str, file: &str, where_: &str) -> Result<()> {
    if label.is_empty() || label == "." || label == ".." {
        bail!("{file}, {where_}: {label:?} cannot name a run directory; give labels = [...]");
    }
    Ok(())
}

/// An axis value: a scalar or an array (e.g. `betas`), never a table.
pub(super) fn check_value(value: &toml::Value, file: &str, where_: &str) -> Result<String> {
    if value.is_table() {
        bail!("{file}, {where_}: a value cannot be a table");
    }
    Ok(value.to_string())
}

/// The table `name` of a sweep file, parsed and as a document (for its key order).
pub(super) fn section<'a>(
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
pub fn load_plan(sweep_file: &Path, catalog: &Catalog) -> Result<Plan> {
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
    let known = config_keys(catalog);

    // The base config, then `[set]`.
    let base_dir = sweep_file.parent().unwrap_or(Path::new("."));
    let mut base: TrainConfig = match table.get("base") {
        None => TrainConfig::default(),
        Some(toml::Value::String(path)) => {
            let path = base_dir.join(path);
            TrainConfig::load(Some(&path), &[], catalog)
                .with_context(|| format!("{file}, key base: the base config {}", path.display()))?
        }
        Some(toml::Value::Table(inline)) => {
            let mut inline = inline.clone();
            crate::compat::migrate_table(&mut inline, &format!("{file}, [base]"))?;
            TrainConfig::deserialize(toml::Value::Table(inline))
                .map_err(|e| anyhow!("{file}, [base]: {}", e.to_string().trim_end()))?
        }
        Some(_) => bail!("{file}, key base: expected a config path (string) or a [base] table"),
    };
    if let Some((set, doc_set)) = section(&table, &document, "set", &file)? {
        let mut overrides = Vec::new();
        for path in ordered_paths(doc_set, &[], &|_| false) {
            let written = path.join(".");
            let key = check_key(&written, &known, &file, "[set]")?;
            let value = get_path(set, &path).ok_or_else(|| anyhow!("{file}, [set]: {written}"))?;
            overrides.push(format!(
                "{key}={}",
                check_value(value, &file, &format!("[set] {key}"))?
            ));
        }
        base = denoise_gym::config::apply_overrides(base, &overrides)
            .with_context(|| format!("{file}, [set]"))?;
    }
    let base_file = format!("{file} (base config)");
    base.resolve_sections(&|_| base_file.clone(), catalog)?;
    base.validate_with(&base_file, catalog)?;
    let base_config = denoise_gym::config::to_toml(&base)?;

    // Axes: [grid] entries, then [[zip]] groups.
    let mut axes: Vec<Axis> = Vec::new();
    if let Some((grid, doc_grid)) = section(&table, &document, "grid", &file)? {
        let is_spec = |t: &dyn toml_edit::TableLike| t.contains_key("values");
        for path in ordered_paths(doc_grid, &[], &is_spec) {
            let written = path.join(".");
            let where_ = format!("[grid] {written}");
            let key = check_key(&written, &known, &file, &where_)?;
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
                // The name as written: a sweep directory from before a key moved keeps
                // its run names.
                name: name.unwrap_or_else(|| last_segment(&written).to_string()),
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
            let mut written_keys = Vec::new();
            let mut columns: Vec<Vec<toml::Value>> = Vec::new();
            for path in ordered_paths(doc_zip, &[], &|_| false) {
                let key = path.join(".");
                if key == "name" || key == "labels" {
                    continue;
                }
                let where_ = format!("{where_zip}, {key}");
                written_keys.push(key.clone());
                let key = check_key(&key, &known, &file, &where_)?;
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
                None => written_keys
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
        curves: None,
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
    plan.curves = match table.get("curves") {
        None => None,
        Some(toml::Value::Table(c)) => {
            for k in c.keys() {
                if !["metrics", "target"].contains(&k.as_str()) {
                    bail!("{file}, [curves]: unknown key {k:?}; curves have metrics, target");
                }
            }
            let metrics = match c.get("metrics") {
                Some(toml::Value::Array(values)) if !values.is_empty() => values
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            anyhow!("{file}, [curves] metrics: {v} is not a metric name")
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
                _ => bail!(
                    "{file}, [curves] metrics: expected a non-empty array of metric names \
                     (swd, mmd2, ...: the eval/<metric> columns of metrics.csv)"
                ),
            };
            let target = match c.get("target") {
                None => None,
                Some(toml::Value::String(t)) => Some(t.clone()),
                Some(_) => bail!("{file}, [curves] target: expected a grid point's name"),
            };
            Some(CurvesSpec { metrics, target })
        }
        Some(_) => bail!("{file}, key curves: expected a [curves] table"),
    };
    plan.runs = expand(&plan, &base, &file, catalog)?;
    if let Some(target) = plan.curves.as_ref().and_then(|c| c.target.as_ref()) {
        if !plan.runs.iter().any(|r| r.point == *target) {
            let mut points: Vec<&str> = plan.runs.iter().map(|r| r.point.as_str()).collect();
            points.dedup();
            bail!("{file}, [curves] target: {target:?} is not a grid point; the points are {points:?}");
        }
    }
    Ok(plan)
}

pub(super) fn read_labels(
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

pub(super) fn check_unique_labels(labels: &[String], file: &str, where_: &str) -> Result<()> {
    for (i, label) in labels.iter().enumerate() {
        check_label(label, file, where_)?;
        if labels[..i].contains(label) {
            bail!("{file}, {where_}: the value {label:?} appears twice");
        }
    }
    Ok(())
}

/// The name of a grid point.
pub(super) fn point_name(axes: &[Axis], positions: &[usize]) -> String {
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
pub(super) fn run_name(point: &str, seed: u64) -> String {
    format!("{point}/seed={seed}")
}

/// Parses `@axis=label[,axis=label...]` into `(axis index, label index)` pairs.
pub(super) fn parse_sibling(
    reference: &str,
    axes: &[Axis],
    where_: &str,
) -> Result<Vec<(usize, usize)>> {
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
pub(super) fn expand(
    plan: &Plan,
    base: &TrainConfig,
    file: &str,
    catalog: &Catalog,
) -> Result<Vec<PlannedRun>> {
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
            config.validate_with(&format!("{file} (run {run})"), catalog)?;
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
