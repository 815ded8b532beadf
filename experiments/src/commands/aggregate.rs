//! `dgym aggregate`: a sweep's metrics over seeds, per grid point.
//!
//! For each metric, one row per grid point: mean, sample standard deviation, the number
//! of seeds with a value, and a 95 % confidence interval of the mean (Student t with
//! n − 1 degrees of freedom). Runs that failed, have not finished, or finished without
//! the metric are counted and shown, never silently left out of `n`. Written as
//! `aggregate.md` and `aggregate.csv` in the sweep directory, with a PNG of one metric
//! against one axis (one line per value of another axis, 95 % CI error bars).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::commands::sweep::dir::{read_json_object, read_plan, run_state, RunState, ERROR_FILE};
use crate::commands::sweep::plan::{Plan, PlannedRun, PlotSpec};

/// `t_{0.975, ν}` for ν = 1..=30 (two-sided 95 %).
const T_975: [f64; 30] = [
    12.706_204_736,
    4.302_652_730,
    3.182_446_305,
    2.776_445_105,
    2.570_581_836,
    2.446_911_851,
    2.364_624_252,
    2.306_004_135,
    2.262_157_163,
    2.228_138_852,
    2.200_985_160,
    2.178_812_830,
    2.160_368_656,
    2.144_786_688,
    2.131_449_546,
    2.119_905_299,
    2.109_815_578,
    2.100_922_040,
    2.093_024_054,
    2.085_963_447,
    2.079_613_845,
    2.073_873_068,
    2.068_657_610,
    2.063_898_562,
    2.059_538_553,
    2.055_529_439,
    2.051_830_516,
    2.048_407_142,
    2.045_229_642,
    2.042_272_456,
];

/// The standard normal's 0.975 quantile.
const Z_975: f64 = 1.959_963_985;

/// The 0.975 quantile of Student's t with `dof` degrees of freedom (`dof >= 1`): the
/// table above up to 30, beyond it the Cornish-Fisher expansion in 1/ν (error < 1e-5).
pub fn t_quantile_975(dof: usize) -> f64 {
    if dof == 0 {
        return f64::INFINITY;
    }
    if dof <= T_975.len() {
        return T_975[dof - 1];
    }
    let z = Z_975;
    let v = dof as f64;
    z + (z.powi(3) + z) / (4.0 * v)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * v.powi(3))
}

/// Mean, spread and confidence interval of one grid point's values over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedStats {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator: an estimate of the spread
    /// between seeds, not the spread of these few); `None` for a single value.
    pub std: Option<f64>,
    /// 95 % confidence interval of the mean, `mean ± t_{0.975, n−1} std / √n`; `None`
    /// for a single value.
    pub ci95: Option<(f64, f64)>,
}

/// The statistics of `values`, `None` when there are none.
pub fn seed_stats(values: &[f64]) -> Option<SeedStats> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Some(SeedStats {
            n,
            mean,
            std: None,
            ci95: None,
        });
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let half = t_quantile_975(n - 1) * std / (n as f64).sqrt();
    Some(SeedStats {
        n,
        mean,
        std: Some(std),
        ci95: Some((mean - half, mean + half)),
    })
}

/// Overrides of the sweep file's metrics and plot.
#[derive(Debug, Clone, Default)]
pub struct AggregateOptions {
    /// The plotted metric (added to the tables when the sweep does not list it).
    pub metric: Option<String>,
    /// The plot's x axis.
    pub x: Option<String>,
    /// The plot's line axis.
    pub lines: Option<String>,
}

/// One grid point's figures for one metric.
#[derive(Debug, Clone)]
pub struct PointRow {
    /// The grid point's name.
    pub point: String,
    /// The axis labels.
    pub labels: Vec<String>,
    /// Runs (seeds) planned.
    pub n_runs: usize,
    /// Runs that failed.
    pub n_failed: usize,
    /// Runs not finished (not run yet, or interrupted).
    pub n_missing: usize,
    /// Finished runs whose `eval.json` has no such metric.
    pub n_without: usize,
    /// The statistics over the values there are.
    pub stats: Option<SeedStats>,
}

impl PointRow {
    /// `3/3`, `2/3, 1 failed`, ...
    pub fn n_text(&self) -> String {
        let mut text = format!("{}/{}", self.stats.as_ref().map_or(0, |s| s.n), self.n_runs);
        for (count, what) in [
            (self.n_failed, "failed"),
            (self.n_missing, "not finished"),
            (self.n_without, "without this metric"),
        ] {
            if count > 0 {
                text.push_str(&format!(", {count} {what}"));
            }
        }
        text
    }
}

/// Per grid point, the figures of `metric` over the seeds.
pub fn metric_rows(dir: &Path, plan: &Plan, metric: &str) -> Vec<PointRow> {
    let mut rows: Vec<PointRow> = Vec::new();
    let mut values: Vec<Vec<f64>> = Vec::new();
    for run in &plan.runs {
        let index = match rows.iter().position(|r| r.point == run.point) {
            Some(i) => i,
            None => {
                rows.push(PointRow {
                    point: run.point.clone(),
                    labels: run.labels.clone(),
                    n_runs: 0,
                    n_failed: 0,
                    n_missing: 0,
                    n_without: 0,
                    stats: None,
                });
                values.push(Vec::new());
                rows.len() - 1
            }
        };
        let row = &mut rows[index];
        row.n_runs += 1;
        let run_dir = dir.join(&run.name);
        if run_state(&run_dir) == RunState::Done {
            match read_json_object(&run_dir.join("eval.json"))
                .and_then(|e| e.get(metric).and_then(serde_json::Value::as_f64))
            {
                Some(v) if v.is_finite() => values[index].push(v),
                _ => row.n_without += 1,
            }
        } else if run_dir.join(ERROR_FILE).exists() {
            row.n_failed += 1;
        } else {
            let eval = run_dir.join("eval.json");
            if eval.exists() && read_json_object(&eval).is_none() {
                eprintln!(
                    "warning: {} is unreadable (not a JSON object): the run counts as not finished; `dgym eval {}` writes it again",
                    eval.display(),
                    run_dir.display()
                );
            }
            row.n_missing += 1;
        }
    }
    for (row, v) in rows.iter_mut().zip(&values) {
        row.stats = seed_stats(v);
    }
    rows
}

/// What [`aggregate`] wrote.
#[derive(Debug, Clone)]
pub struct Aggregated {
    /// The Markdown tables.
    pub markdown: String,
    /// `aggregate.md`.
    pub markdown_path: PathBuf,
    /// `aggregate.csv`.
    pub csv_path: PathBuf,
    /// The plot, when the sweep has an axis to plot against.
    pub plot_path: Option<PathBuf>,
}

fn fmt(v: f64) -> String {
    format!("{v:.4}")
}

/// `dgym aggregate SWEEP_DIR`: tables (Markdown, CSV) and a plot of a sweep directory.
pub fn aggregate(dir: &Path, options: &AggregateOptions) -> Result<Aggregated> {
    let plan = read_plan(dir)?;
    let mut metrics = plan.metrics.clone();
    if let Some(m) = &options.metric {
        if !metrics.contains(m) {
            metrics.push(m.clone());
        }
    }
    let axis_names: Vec<&str> = plan.axes.iter().map(|a| a.name.as_str()).collect();
    let mut markdown = format!("# Sweep {}\n\n", plan.sweep_file);
    let mut csv = String::from("metric,point,");
    for name in &axis_names {
        csv.push_str(&format!("{name},"));
    }
    csv.push_str("n,n_runs,n_failed,n_not_finished,n_without_metric,mean,std,ci95_lo,ci95_hi\n");
    for metric in &metrics {
        let rows = metric_rows(dir, &plan, metric);
        markdown.push_str(&format!("## {metric}\n\n| "));
        for name in &axis_names {
            markdown.push_str(&format!("{name} | "));
        }
        markdown.push_str("n | mean | std | 95% CI |\n|");
        markdown.push_str(&"---|".repeat(axis_names.len() + 4));
        markdown.push('\n');
        for row in &rows {
            let (mean, std, ci) = match &row.stats {
                None => ("—".to_string(), "—".to_string(), "—".to_string()),
                Some(s) => (
                    fmt(s.mean),
                    s.std.map_or_else(|| "—".to_string(), fmt),
                    s.ci95.map_or_else(
                        || "—".to_string(),
                        |(lo, hi)| format!("[{}, {}]", fmt(lo), fmt(hi)),
                    ),
                ),
            };
            markdown.push_str("| ");
            for label in &row.labels {
                markdown.push_str(&format!("{label} | "));
            }
            markdown.push_str(&format!("{} | {mean} | {std} | {ci} |\n", row.n_text()));
            let stats = row.stats.as_ref();
            let cells = [
                stats.map_or(0, |s| s.n).to_string(),
                row.n_runs.to_string(),
                row.n_failed.to_string(),
                row.n_missing.to_string(),
                row.n_without.to_string(),
                stats.map_or_else(String::new, |s| s.mean.to_string()),
                stats
                    .and_then(|s| s.std)
                    .map_or_else(String::new, |v| v.to_string()),
                stats
                    .and_then(|s| s.ci95)
                    .map_or_else(String::new, |c| c.0.to_string()),
                stats
                    .and_then(|s| s.ci95)
                    .map_or_else(String::new, |c| c.1.to_string()),
            ];
            csv.push_str(&format!("{},{},", csv_quote(metric), csv_quote(&row.point)));
            for label in &row.labels {
                csv.push_str(&format!("{},", csv_quote(label)));
            }
            csv.push_str(&cells.join(","));
            csv.push('\n');
        }
        markdown.push('\n');
    }
    if metrics.len() > 1 {
        markdown.push_str(&wide_table(dir, &plan, &metrics));
    }
    let plot_path = match plot_spec(&plan, options)? {
        Some(spec) => {
            let path = dir.join(format!(
                "{}_vs_{}.png",
                spec.metric.replace('/', "_"),
                spec.x
            ));
            if plot(&path, dir, &plan, &spec)? {
                markdown.push_str(&format!(
                    "![{} against {}]({})\n",
                    spec.metric,
                    spec.x,
                    path.file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default()
                ));
                Some(path)
            } else {
                markdown.push_str(&format!(
                    "(no plot: no run has a value of {} yet)\n",
                    spec.metric
                ));
                None
            }
        }
        None => None,
    };
    let curves_csv = match &plan.curves {
        Some(spec) => {
            let (section, curves_csv) =
                curves_section(dir, &plan, &spec.metrics, spec.target.as_deref())?;
            markdown.push_str(&section);
            Some(curves_csv)
        }
        None => None,
    };
    let markdown_path = dir.join("aggregate.md");
    let csv_path = dir.join("aggregate.csv");
    let curves_path = dir.join("curves.csv");
    let outputs = [(&markdown_path, &markdown), (&csv_path, &csv)]
        .into_iter()
        .chain(curves_csv.as_ref().map(|text| (&curves_path, text)));
    for (path, text) in outputs {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(Aggregated {
        markdown,
        markdown_path,
        csv_path,
        plot_path,
    })
}

/// A finished run's value of `metric` in its `eval.json`.
fn run_value(dir: &Path, run: &PlannedRun, metric: &str) -> Option<f64> {
    let run_dir = dir.join(&run.name);
    if run_state(&run_dir) != RunState::Done {
        return None;
    }
    read_json_object(&run_dir.join("eval.json"))
        .and_then(|e| e.get(metric).and_then(serde_json::Value::as_f64))
        .filter(|v| v.is_finite())
}

/// Every metric side by side, `mean ± std` over seeds per grid point, and a last row
/// with the mean over the grid points: each seed's values averaged over the points
/// (only seeds with a value at every point count), then mean ± std of those averages
/// over the seeds, as the one-class anomaly literature reports "the mean over the ten
/// classes".
fn wide_table(dir: &Path, plan: &Plan, metrics: &[String]) -> String {
    let mut points: Vec<(&str, &[String])> = Vec::new();
    for run in &plan.runs {
        if !points.iter().any(|(p, _)| *p == run.point) {
            points.push((&run.point, &run.labels));
        }
    }
    let axis_names: Vec<&str> = plan.axes.iter().map(|a| a.name.as_str()).collect();
    let mut out = String::from(
        "## All metrics (mean ± std over seeds; last row: mean over the grid points)\n\n| ",
    );
    for name in &axis_names {
        out.push_str(&format!("{name} | "));
    }
    for m in metrics {
        out.push_str(&format!("{m} | "));
    }
    out.push_str("\n|");
    out.push_str(&"---|".repeat(axis_names.len() + metrics.len()));
    out.push('\n');
    let cell = |values: &[f64]| match seed_stats(values) {
        None => "—".to_string(),
        Some(s) => match s.std {
            Some(std) => format!("{} ± {}", fmt(s.mean), fmt(std)),
            None => fmt(s.mean),
        },
    };
    for (point, labels) in &points {
        out.push_str("| ");
        for label in labels.iter() {
            out.push_str(&format!("{label} | "));
        }
        for m in metrics {
            let values: Vec<f64> = plan
                .runs
                .iter()
                .filter(|r| r.point == *point)
                .filter_map(|r| run_value(dir, r, m))
                .collect();
            out.push_str(&format!("{} | ", cell(&values)));
        }
        out.push('\n');
    }
    out.push_str("| ");
    for (i, _) in axis_names.iter().enumerate() {
        out.push_str(if i == 0 { "**mean** | " } else { " | " });
    }
    for m in metrics {
        let per_seed: Vec<f64> = plan
            .seeds
            .iter()
            .filter_map(|&seed| {
                let values: Vec<Option<f64>> = points
                    .iter()
                    .map(|(point, _)| {
                        plan.runs
                            .iter()
                            .find(|r| r.point == *point && r.seed == seed)
                            .and_then(|r| run_value(dir, r, m))
                    })
                    .collect();
                let values: Option<Vec<f64>> = values.into_iter().collect();
                values.map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
            })
            .collect();
        out.push_str(&format!("**{}** | ", cell(&per_seed)));
    }
    out.push_str("\n\n");
    out
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The plot to draw: the options over the sweep file's `[plot]`, else the first metric
/// against the first axis with the second axis as lines; `None` without axes.
fn plot_spec(plan: &Plan, options: &AggregateOptions) -> Result<Option<PlotSpec>> {
    let default = plan.plot.clone().or_else(|| {
        plan.axes.first().map(|a| PlotSpec {
            metric: plan.metrics[0].clone(),
            x: a.name.clone(),
            lines: plan.axes.get(1).map(|b| b.name.clone()),
        })
    });
    let Some(mut spec) = default.or_else(|| {
        options.x.clone().map(|x| PlotSpec {
            metric: plan.metrics[0].clone(),
            x,
            lines: None,
        })
    }) else {
        if options.x.is_some() || options.lines.is_some() {
            bail!("the sweep has no axes to plot against");
        }
        return Ok(None);
    };
    if let Some(m) = &options.metric {
        spec.metric = m.clone();
    }
    if let Some(x) = &options.x {
        spec.x = x.clone();
        if spec.lines.as_deref() == Some(x.as_str()) {
            spec.lines = None;
        }
    }
    if let Some(l) = &options.lines {
        spec.lines = Some(l.clone());
    }
    plan.axis_index(&spec.x, "--x")?;
    if let Some(l) = &spec.lines {
        plan.axis_index(l, "--lines")?;
        if *l == spec.x {
            bail!("--lines {l}: the line axis must differ from the x axis");
        }
    }
    Ok(Some(spec))
}

/// Draws `spec.metric` against `spec.x`: one line per value of `spec.lines` (and of any
/// other axis), points at the mean, error bars the 95 % CI. `false` when there is
/// nothing to draw yet.
fn plot(path: &Path, dir: &Path, plan: &Plan, spec: &PlotSpec) -> Result<bool> {
    let x = plan.axis_index(&spec.x, "plot x")?;
    let rows = metric_rows(dir, plan, &spec.metric);
    let mut series: Vec<crate::plots::ErrorBarSeries> = Vec::new();
    for row in &rows {
        // The line axis names the series first; any further axis splits them too.
        let mut name: Vec<String> = plan
            .axes
            .iter()
            .zip(&row.labels)
            .enumerate()
            .filter(|(i, _)| *i != x)
            .map(|(_, (a, l))| format!("{}={l}", a.name))
            .collect();
        if let Some(lines) = &spec.lines {
            let prefix = format!("{lines}=");
            name.sort_by_key(|n| !n.starts_with(&prefix));
        }
        let name = if name.is_empty() {
            spec.metric.clone()
        } else {
            name.join(",")
        };
        let position = plan.axes[x]
            .labels
            .iter()
            .position(|l| *l == row.labels[x])
            .unwrap_or(0);
        let s = match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s,
            None => {
                series.push(crate::plots::ErrorBarSeries {
                    name,
                    points: Vec::new(),
                });
                series.last_mut().expect("just pushed")
            }
        };
        if let Some(stats) = &row.stats {
            let (lo, hi) = stats.ci95.unwrap_or((stats.mean, stats.mean));
            s.points.push((position, stats.mean, lo, hi));
        }
    }
    series.retain(|s| !s.points.is_empty());
    if series.is_empty() {
        return Ok(false);
    }
    crate::plots::error_bar_lines(
        path,
        &format!(
            "{} against {} (mean over seeds, 95% CI)",
            spec.metric, spec.x
        ),
        &spec.x,
        &plan.axes[x].labels,
        &spec.metric,
        &series,
    )?;
    Ok(true)
}

/// One evaluated iteration of a grid point's learning curve.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// Fine-tuning iterations done (0: the sampler fine-tuning started from).
    pub iteration: u64,
    /// Environment episodes spent by then: `iteration × batch_size × n_critic` (the
    /// rollout, and the `n_critic − 1` fresh batches of policy samples the EBM's later
    /// updates draw).
    pub episodes: f64,
    /// The metric over the seeds that evaluated this iteration.
    pub stats: SeedStats,
}

/// A grid point's learning curve of one metric, mean over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The grid point.
    pub point: String,
    /// Finished runs that contributed.
    pub n_runs: usize,
    /// The points, by iteration.
    pub points: Vec<CurvePoint>,
}

/// What one finished run contributes to each metric's curve: `(iteration, episodes,
/// value)` rows per metric, its files read once,
/// from the start sampler's evaluation (`summary.json`'s `eval_start`, iteration 0), the
/// evaluations during fine-tuning and the end-of-run evaluation (`metrics.csv`'s `eval`
/// row, kept where no evaluation during fine-tuning fell on the last iteration). A run
/// that did not fine-tune contributes nothing.
fn run_curves(run_dir: &Path, metrics: &[String]) -> Result<Vec<Vec<(u64, f64, f64)>>> {
    let config_path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", config_path.display()))?;
    let section = |name: &str| config.get(name).and_then(toml::Value::as_table);
    let int = |table: &str, key: &str| -> Result<i64> {
        section(table)
            .and_then(|t| t.get(key))
            .and_then(toml::Value::as_integer)
            .filter(|v| *v >= 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: {table}.{key} is missing or not a non-negative integer",
                    config_path.display()
                )
            })
    };
    let iterations = int("finetune", "iterations")?;
    if iterations == 0 {
        return Ok(vec![Vec::new(); metrics.len()]);
    }
    let batch_size = int("finetune", "batch_size")?;
    let n_critic = int("finetune", "n_critic")?;
    let from_other_run = section("finetune")
        .and_then(|t| t.get("init_from"))
        .and_then(toml::Value::as_str)
        .is_some_and(|s| !s.is_empty());
    // Fine-tuning's global steps continue those of the pretraining in the same run.
    let offset = if from_other_run {
        0
    } else {
        int("pretrain", "iterations")?
    };
    let episodes_per_iteration = (batch_size * n_critic) as f64;
    let csv = run_dir.join("metrics.csv");
    let (_, rows) = denoise_gym::log::read_metrics_csv(&csv)
        .with_context(|| format!("reading {}", csv.display()))?;
    let summary = read_json_object(&run_dir.join("summary.json"));
    let mut curves = Vec::with_capacity(metrics.len());
    for metric in metrics {
        // `swd` is the `eval/swd` column; a name with a group (`policy/kl_reference`) is
        // the column itself. `eval_start` holds the evaluation's keys without the group.
        let column = if metric.contains('/') {
            metric.to_string()
        } else {
            format!("eval/{metric}")
        };
        let start_key = column.strip_prefix("eval/").unwrap_or(&column);
        let mut points = Vec::new();
        if let Some(start) = summary.as_ref().and_then(|s| {
            s.get("eval_start")
                .and_then(|e| e.get(start_key))
                .and_then(serde_json::Value::as_f64)
        }) {
            points.push((0, 0.0, start));
        }
        for row in rows
            .iter()
            .filter(|r| r.phase == "finetune" || r.phase == "eval")
        {
            let Some(&value) = row.values.get(&column) else {
                continue;
            };
            let iteration = row.step as i64 - offset;
            if !(0..=iterations).contains(&iteration) {
                bail!(
                    "{}: step {} of phase {} is outside fine-tuning (steps {}..={} by {})",
                    csv.display(),
                    row.step,
                    row.phase,
                    offset + 1,
                    offset + iterations,
                    config_path.display()
                );
            }
            let iteration = iteration as u64;
            // The end-of-run evaluation repeats the last iteration's step when an
            // evaluation during fine-tuning fell on it: keep the first.
            if value.is_finite() && points.last().is_none_or(|p| p.0 != iteration) {
                points.push((iteration, iteration as f64 * episodes_per_iteration, value));
            }
        }
        curves.push(points);
    }
    Ok(curves)
}

/// Per metric, per grid point, the learning curve over the finished seeds: a point
/// wherever at least one seed evaluated, with the seeds that did. Each run's files are
/// read once for all the metrics.
pub fn metric_curves(dir: &Path, plan: &Plan, metrics: &[String]) -> Result<Vec<Vec<Curve>>> {
    type ByIteration = std::collections::BTreeMap<u64, (f64, Vec<f64>)>;
    let mut points: Vec<String> = Vec::new();
    let mut n_runs: Vec<usize> = Vec::new();
    // values[metric][point]
    let mut values: Vec<Vec<ByIteration>> = vec![Vec::new(); metrics.len()];
    for run in &plan.runs {
        let index = match points.iter().position(|p| *p == run.point) {
            Some(i) => i,
            None => {
                points.push(run.point.clone());
                n_runs.push(0);
                for per_point in &mut values {
                    per_point.push(ByIteration::new());
                }
                points.len() - 1
            }
        };
        let run_dir = dir.join(&run.name);
        if run_state(&run_dir) != RunState::Done {
            continue;
        }
        n_runs[index] += 1;
        for (per_point, curve) in values.iter_mut().zip(run_curves(&run_dir, metrics)?) {
            for (iteration, episodes, value) in curve {
                per_point[index]
                    .entry(iteration)
                    .or_insert_with(|| (episodes, Vec::new()))
                    .1
                    .push(value);
            }
        }
    }
    Ok(values
        .into_iter()
        .map(|per_point| {
            per_point
                .into_iter()
                .zip(points.iter().zip(&n_runs))
                .map(|(by_iteration, (point, &n_runs))| Curve {
                    point: point.clone(),
                    n_runs,
                    points: by_iteration
                        .into_iter()
                        .filter_map(|(iteration, (episodes, v))| {
                            seed_stats(&v).map(|stats| CurvePoint {
                                iteration,
                                episodes,
                                stats,
                            })
                        })
                        .collect(),
                })
                .collect()
        })
        .collect())
}

/// Evaluations a curve's "final" value and its "reached" test average over: single
/// evaluations of a few thousand samples are too noisy to compare agents by.
const CURVE_WINDOW: usize = 3;

/// The mean of the curve's evaluations over the last fifth of its iterations (at least
/// [`CURVE_WINDOW`] of them): what it settles at.
fn final_mean(curve: &Curve) -> Option<f64> {
    let last = curve.points.last()?.iteration;
    let settled: Vec<f64> = curve
        .points
        .iter()
        .rev()
        .enumerate()
        .take_while(|(i, p)| *i < CURVE_WINDOW || p.iteration as f64 >= 0.8 * last as f64)
        .map(|(_, p)| p.stats.mean)
        .collect();
    Some(settled.iter().sum::<f64>() / settled.len() as f64)
}

/// The first point from which the mean of [`CURVE_WINDOW`] consecutive evaluations is
/// at most `target` (lower is better, as for SWD and MMD²): reached and held, not one
/// lucky draw. A point with fewer than [`CURVE_WINDOW`] evaluations left cannot qualify.
fn first_reaching(curve: &Curve, target: f64) -> Option<&CurvePoint> {
    curve.points.windows(CURVE_WINDOW).find_map(|window| {
        let mean = window.iter().map(|p| p.stats.mean).sum::<f64>() / window.len() as f64;
        (mean <= target).then(|| &window[0])
    })
}

/// Draws `curves_<metric>.png` per metric and returns the Markdown section (settled
/// values, and the episodes each point needs to reach the target point's settled value)
/// and the text of `curves.csv`.
fn curves_section(
    dir: &Path,
    plan: &Plan,
    metrics: &[String],
    target: Option<&str>,
) -> Result<(String, String)> {
    let mut markdown = String::from("## Learning curves\n\n");
    let mut csv = String::from("metric,point,iteration,episodes,n,mean,std\n");
    for (metric, curves) in metrics.iter().zip(metric_curves(dir, plan, metrics)?) {
        for curve in &curves {
            for p in &curve.points {
                csv.push_str(&format!(
                    "{metric},{},{},{},{},{},{}\n",
                    csv_quote(&curve.point),
                    p.iteration,
                    p.episodes,
                    p.stats.n,
                    p.stats.mean,
                    p.stats.std.map_or(String::new(), |s| s.to_string())
                ));
            }
        }
        if curves.iter().all(|c| c.points.is_empty()) {
            eprintln!(
                "warning: [curves] {metric}: no finished run has a value of it (is the name \
                 an eval.json key such as swd, or a metrics.csv column such as \
                 policy/kl_reference?)"
            );
        }
        let target_point = target.map(str::to_string).unwrap_or_else(|| {
            curves
                .iter()
                .find(|c| !c.points.is_empty())
                .map(|c| c.point.clone())
                .unwrap_or_default()
        });
        let target = curves
            .iter()
            .find(|c| c.point == target_point)
            .and_then(final_mean);
        markdown.push_str(&format!(
            "### {metric}\n\n\"settled\": the mean of the evaluations over the last fifth of the \
             iterations (at least {CURVE_WINDOW}); \"reached\": the first evaluation from which the \
             mean of {CURVE_WINDOW} consecutive ones is at most the target (lower is better).\n\n\
             | point | runs | start | last (mean ± std over seeds) | settled | episodes | episodes to reach {target_point}'s settled value{} |\n|---|---|---|---|---|---|---|\n",
            target.map_or(String::new(), |t| format!(" ({})", fmt(t)))
        ));
        for curve in &curves {
            let start = curve
                .points
                .first()
                .filter(|p| p.iteration == 0)
                .map_or("—".to_string(), |p| fmt(p.stats.mean));
            let (last, at) =
                curve
                    .points
                    .last()
                    .map_or(("—".to_string(), "—".to_string()), |p| {
                        (
                            format!(
                                "{} ± {}",
                                fmt(p.stats.mean),
                                p.stats.std.map_or("—".to_string(), fmt)
                            ),
                            format!("{}", p.episodes),
                        )
                    });
            let settled = final_mean(curve).map_or("—".to_string(), fmt);
            let reach = match target.filter(|_| !curve.points.is_empty()) {
                None => "—".to_string(),
                Some(t) => first_reaching(curve, t).map_or("never".to_string(), |p| {
                    format!("{} (iteration {})", p.episodes, p.iteration)
                }),
            };
            markdown.push_str(&format!(
                "| {} | {} | {start} | {last} | {settled} | {at} | {reach} |\n",
                curve.point, curve.n_runs
            ));
        }
        markdown.push('\n');
        let series: Vec<crate::plots::CurveSeries> = curves
            .iter()
            .filter(|c| !c.points.is_empty())
            .map(|c| crate::plots::CurveSeries {
                name: c.point.clone(),
                points: c
                    .points
                    .iter()
                    .map(|p| {
                        let std = p.stats.std.unwrap_or(0.0);
                        (
                            p.episodes,
                            p.stats.mean,
                            p.stats.mean - std,
                            p.stats.mean + std,
                        )
                    })
                    .collect(),
            })
            .collect();
        if !series.is_empty() {
            let file_name = format!("curves_{}.png", metric.replace('/', "_"));
            let png = dir.join(&file_name);
            crate::plots::mean_curves(
                &png,
                &format!("{metric} during fine-tuning (mean over seeds, band ± 1 std)"),
                "environment episodes",
                metric,
                &series,
            )?;
            markdown.push_str(&format!("![{metric}]({file_name})\n\n"));
        }
    }
    Ok((markdown, csv))
}
