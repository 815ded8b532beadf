//! Figures for evaluation runs: PNG pictures of samples, densities, denoising
//! trajectories, noise schedules and training curves.
//!
//! Every figure is at least 600×600 pixels and labelled (title, axis labels, and a
//! legend where a panel holds several series). Text is drawn with an embedded DejaVu
//! Sans font (the `dejavu` crate, registered with plotters' `ab_glyph` backend once per
//! process), so figures render the same on a machine without any system fonts: no
//! system font lookup ever happens.
//!
//! Pictures are rendered into an RGB8 buffer and encoded as PNG by this module, so the
//! file is a PNG whatever its extension. It is written to a temporary file next to the
//! target and renamed, so a killed run never leaves half a picture behind; missing
//! parent directories are created.
//!
//! Axis ranges ignore NaN and infinite values, pad a degenerate (single-valued) range,
//! and empty input is an error that names what is empty. Scatter plots draw at most
//! [`MAX_SCATTER_POINTS`] points per series (an even stride through the rows).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Side length used by default (>= 600).
pub const FIGURE_SIZE: u32 = 800;

/// The most points one scatter series draws; larger inputs are sub-sampled with an even
/// stride through the rows.
pub const MAX_SCATTER_POINTS: usize = 5_000;

/// Smallest side length accepted for an in-memory picture
/// ([`samples_over_data_rgb`]); below it the labels no longer fit.
pub const MIN_IMAGE_SIZE: u32 = 200;

/// Largest side length accepted for an in-memory picture (keeps the buffer bounded).
pub const MAX_IMAGE_SIZE: u32 = 8_192;

/// Width of the colour bar next to density heatmaps, in pixels.
const COLOUR_BAR_WIDTH: u32 = 130;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The tab10 palette's first colours (matplotlib's defaults): distinct, colour-blind
/// friendly enough for two or three series.
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const BROWN: RGBColor = RGBColor(140, 86, 75);
const PINK: RGBColor = RGBColor(227, 119, 194);
const GREY: RGBColor = RGBColor(127, 127, 127);
const PALETTE: [RGBColor; 8] = [BLUE, ORANGE, GREEN, RED, PURPLE, BROWN, PINK, GREY];

/// The fine (minor) grid lines: barely there.
const FINE_GRID: RGBAColor = RGBAColor(0, 0, 0, 0.04);

/// Colour of heatmap cells whose value is missing (NaN, infinite or negative).
const MISSING: RGBColor = RGBColor(220, 220, 220);

const TITLE_FONT: u32 = 30;
const CAPTION_FONT: u32 = 22;
const LABEL_FONT: u32 = 16;
const TICK_FONT: u32 = 14;

/// Registers the embedded DejaVu Sans (regular, bold, oblique) under the families
/// plotters asks for, once per process.
fn ensure_fonts() -> Result<()> {
    static FONTS: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            for family in ["sans-serif", "serif", "monospace"] {
                for (style, bytes) in [
                    (FontStyle::Normal, dejavu::sans::regular()),
                    (FontStyle::Bold, dejavu::sans::bold()),
                    (FontStyle::Oblique, dejavu::sans::oblique()),
                    (FontStyle::Italic, dejavu::sans::oblique()),
                ] {
                    register_font(family, style, bytes).map_err(|_| {
                        format!(
                            "the embedded DejaVu Sans font ({}) could not be parsed",
                            style.as_str()
                        )
                    })?;
                }
            }
            Ok(())
        })
        .clone()
        .map_err(|message| anyhow!(message))
}

/// Renders a `width × height` picture on a white background into an RGB8 buffer.
fn render_rgb(
    width: u32,
    height: u32,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<Vec<u8>> {
    ensure_fonts()?;
    let len = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| anyhow!("a {width}×{height} picture is too large"))?;
    let mut buffer = vec![255u8; len];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(buffer)
}

/// Renders a picture and writes it to `path` as a PNG.
fn render_png(
    path: &Path,
    width: u32,
    height: u32,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<()> {
    let rgb = render_rgb(width, height, draw)
        .with_context(|| format!("drawing the figure {}", path.display()))?;
    write_png(path, &rgb, width, height)
}

/// Encodes an RGB8 buffer as PNG at `path` (through a temporary file and a rename).
fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: creating the directory", parent.display()))?;
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let mut bytes = Vec::with_capacity(rgb.len() / 4 + 1024);
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Best);
        encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut writer = encoder
            .write_header()
            .with_context(|| format!("{}: encoding the PNG", path.display()))?;
        writer
            .write_image_data(rgb)
            .with_context(|| format!("{}: encoding the PNG", path.display()))?;
        writer
            .finish()
            .with_context(|| format!("{}: encoding the PNG", path.display()))?;
    }
    if let Err(e) = std::fs::write(&tmp, &bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(format!(
            "{}: writing the PNG (to {})",
            path.display(),
            tmp.display()
        )));
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: moving the finished PNG into place", path.display())
    })
}

/// `[min, max]` over the finite values, or `None` when there are none.
fn finite_bounds(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// An axis range around `[lo, hi]` with 5 % margins on both sides; a degenerate range
/// is widened to `±max(0.5, 5 % of |value|)`.
fn padded_range(lo: f64, hi: f64) -> Range<f64> {
    let span = hi - lo;
    let (lo, hi) = if !span.is_finite() {
        // Both finite but the difference overflows: no margin, and halve to keep
        // the mesh arithmetic finite.
        (lo / 2.0, hi / 2.0)
    } else if span <= f64::EPSILON * lo.abs().max(hi.abs()).max(1e-300) {
        let half = (0.05 * lo.abs()).max(0.5);
        (lo - half, hi + half)
    } else {
        (lo - 0.05 * span, hi + 0.05 * span)
    };
    lo..hi
}

/// Rows `(x, y)` = first two coordinates of a row-major `n × dim` matrix (the second is
/// `0` when `dim == 1`), rows with a non-finite coordinate dropped, sub-sampled to at
/// most `max_points` rows. Errors when `values.len()` is not a multiple of `dim`.
fn xy_points(values: &[f32], dim: usize, what: &str, max_points: usize) -> Result<Vec<(f64, f64)>> {
    if dim == 0 {
        bail!("{what}: dim must be at least 1");
    }
    if !values.len().is_multiple_of(dim) {
        bail!(
            "{what}: {} values is not a whole number of rows of dim {dim}",
            values.len()
        );
    }
    let rows = values.len() / dim;
    let stride = rows.div_ceil(max_points.max(1)).max(1);
    Ok(values
        .chunks_exact(dim)
        .step_by(stride)
        .map(|row| {
            let x = f64::from(row[0]);
            let y = row.get(1).map_or(0.0, |&v| f64::from(v));
            (x, y)
        })
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect())
}

/// Axis ranges `(x, y)` around every point of `series` (each range padded).
fn scatter_ranges<'a>(
    series: impl IntoIterator<Item = &'a [(f64, f64)]> + Clone,
) -> Option<(Range<f64>, Range<f64>)> {
    let xs = finite_bounds(series.clone().into_iter().flatten().map(|p| p.0))?;
    let ys = finite_bounds(series.into_iter().flatten().map(|p| p.1))?;
    Some((padded_range(xs.0, xs.1), padded_range(ys.0, ys.1)))
}

fn check_image_size(size: u32) -> Result<()> {
    if !(MIN_IMAGE_SIZE..=MAX_IMAGE_SIZE).contains(&size) {
        bail!("image size {size} is outside [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] pixels");
    }
    Ok(())
}

/// Draws the figure title at the top and returns the area below it.
fn titled<'a>(root: &Area<'a>, title: &str, size: u32) -> Result<Area<'a>> {
    Ok(root.titled(
        title,
        ("sans-serif", size).into_font().style(FontStyle::Bold),
    )?)
}

/// The data for [`samples_over_data`]: both point sets, checked.
struct SamplesOverData {
    samples: Vec<(f64, f64)>,
    data: Vec<(f64, f64)>,
    n_samples: usize,
    n_data: usize,
}

fn samples_over_data_points(samples: &[f32], data: &[f32], dim: usize) -> Result<SamplesOverData> {
    let samples_xy = xy_points(
        samples,
        dim,
        "samples_over_data: `samples`",
        MAX_SCATTER_POINTS,
    )?;
    let data_xy = xy_points(data, dim, "samples_over_data: `data`", MAX_SCATTER_POINTS)?;
    if samples_xy.is_empty() {
        bail!(
            "samples_over_data: `samples` holds no finite points ({} values)",
            samples.len()
        );
    }
    if data_xy.is_empty() {
        bail!(
            "samples_over_data: `data` holds no finite points ({} values)",
            data.len()
        );
    }
    Ok(SamplesOverData {
        samples: samples_xy,
        data: data_xy,
        n_samples: samples.len() / dim,
        n_data: data.len() / dim,
    })
}

fn draw_samples_over_data(root: &Area<'_>, points: &SamplesOverData, title: &str) -> Result<()> {
    let (width, _) = root.dim_in_pixel();
    // Scale text with the picture so that a small TensorBoard image stays readable.
    let scale = |px: u32| (px * width.min(FIGURE_SIZE) / FIGURE_SIZE).max(10);
    let area = titled(root, title, scale(TITLE_FONT))?;
    let series = [points.data.as_slice(), points.samples.as_slice()];
    let (xr, yr) = scatter_ranges(series)
        .ok_or_else(|| anyhow!("samples_over_data: no finite points to draw"))?;
    let mut chart = ChartBuilder::on(&area)
        .margin(scale(15))
        .x_label_area_size(scale(50))
        .y_label_area_size(scale(65))
        .build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .x_desc("x[0]")
        .y_desc("x[1]")
        .light_line_style(FINE_GRID)
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .label_style(("sans-serif", scale(TICK_FONT)))
        .axis_desc_style(("sans-serif", scale(LABEL_FONT)))
        .draw()?;
    let radius = if width >= 500 { 2 } else { 1 };
    for (pts, colour, label, n) in [
        (&points.data, BLUE, "data", points.n_data),
        (&points.samples, ORANGE, "samples", points.n_samples),
    ] {
        let style = colour.mix(0.6).filled();
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, radius, style)))?
            .label(format!("{label} (n = {n})"))
            .legend(move |(x, y)| Circle::new((x, y), 5, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", scale(LABEL_FONT)))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Samples (first two coordinates) over data, two colours + legend. `samples`, `data`: row-major n×dim f32.
///
/// Writes a [`FIGURE_SIZE`]-square PNG to `path`: the data in blue beneath the samples
/// in orange, small translucent filled circles (each set sub-sampled to at most
/// [`MAX_SCATTER_POINTS`]), axes `x[0]` / `x[1]` fitted to both sets, and a legend with
/// the set sizes. With `dim == 1` the points lie on `x[1] = 0`.
///
/// # Errors
/// `dim == 0`, a slice that is not a whole number of rows, a set with no finite
/// point, or a drawing / file error (the message names `path`).
pub fn samples_over_data(
    path: &Path,
    samples: &[f32],
    data: &[f32],
    dim: usize,
    title: &str,
) -> Result<()> {
    let points = samples_over_data_points(samples, data, dim)
        .with_context(|| format!("figure {}", path.display()))?;
    render_png(path, FIGURE_SIZE, FIGURE_SIZE, |root| {
        draw_samples_over_data(root, &points, title)
    })
}

/// Same picture as an RGB8 buffer (width*height*3) for TensorBoard's add_image; returns (rgb, width, height).
///
/// The picture is `size × size` (text scaled down below [`FIGURE_SIZE`]); rows are top
/// to bottom, pixels left to right, three bytes each.
///
/// # Errors
/// `size` outside [[`MIN_IMAGE_SIZE`], [`MAX_IMAGE_SIZE`]], and the input errors of
/// [`samples_over_data`].
pub fn samples_over_data_rgb(
    samples: &[f32],
    data: &[f32],
    dim: usize,
    title: &str,
    size: u32,
) -> Result<(Vec<u8>, u32, u32)> {
    check_image_size(size).context("samples_over_data_rgb")?;
    let points = samples_over_data_points(samples, data, dim)?;
    let rgb = render_rgb(size, size, |root| {
        draw_samples_over_data(root, &points, title)
    })
    .context("samples_over_data_rgb: drawing the picture")?;
    Ok((rgb, size, size))
}

/// Viridis, linearly interpolated between nine stops; `t` is clamped to `[0, 1]`.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let lerp = |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// A density on the grid normalised to integrate to one (`p / (Σp · cell_area)`, computed
/// relative to the largest cell so huge unnormalised values do not overflow);
/// non-finite and negative cells become `None` (drawn as missing).
fn normalise_density(values: &[f64], cell_area: f64, what: &str) -> Result<Vec<Option<f64>>> {
    let valid = |v: f64| v.is_finite() && v >= 0.0;
    let max = values
        .iter()
        .copied()
        .filter(|&v| valid(v))
        .fold(0.0f64, f64::max);
    if max <= 0.0 {
        bail!(
            "density_side_by_side: the {what} density has no positive finite mass \
             (no cell is finite and positive)"
        );
    }
    // Each term is in [0, 1], so the sum is finite and at least 1.
    let total: f64 = values.iter().filter(|&&v| valid(v)).map(|&v| v / max).sum();
    let normalised: Vec<Option<f64>> = values
        .iter()
        .map(|&v| valid(v).then(|| v / max / total / cell_area))
        .collect();
    if normalised.iter().flatten().any(|p| !p.is_finite()) {
        bail!(
            "density_side_by_side: the {what} density cannot be normalised on cells of \
             area {cell_area:e}"
        );
    }
    Ok(normalised)
}

/// Draws one heatmap panel; `vmax` sets the top of the shared colour scale.
fn draw_heatmap(
    area: &Area<'_>,
    caption: &str,
    density: &[Option<f64>],
    n: usize,
    lo: f64,
    hi: f64,
    vmax: f64,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", CAPTION_FONT))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(65)
        .build_cartesian_2d(lo..hi, lo..hi)?;
    let h = (hi - lo) / n as f64;
    chart.draw_series(density.iter().enumerate().map(|(k, v)| {
        let (ix, iy) = ((k % n) as f64, (k / n) as f64);
        let colour = match v {
            Some(v) => viridis(v / vmax),
            None => MISSING,
        };
        Rectangle::new(
            [
                (lo + ix * h, lo + iy * h),
                (lo + (ix + 1.0) * h, lo + (iy + 1.0) * h),
            ],
            colour.filled(),
        )
    }))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("x[0]")
        .y_desc("x[1]")
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .label_style(("sans-serif", TICK_FONT))
        .axis_desc_style(("sans-serif", LABEL_FONT))
        .draw()?;
    Ok(())
}

/// Draws a vertical colour bar for values in `[0, vmax]`.
fn draw_colour_bar(area: &Area<'_>, vmax: f64) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        // Same caption size and label areas as the panels so the bar lines up with them.
        .caption("density", ("sans-serif", CAPTION_FONT))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(0)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..1.0, 0.0..vmax)?
        .set_secondary_coord(0.0..1.0, 0.0..vmax);
    const STEPS: usize = 128;
    chart.draw_series((0..STEPS).map(|i| {
        let (a, b) = (i as f64 / STEPS as f64, (i + 1) as f64 / STEPS as f64);
        Rectangle::new(
            [(0.0, a * vmax), (1.0, b * vmax)],
            viridis((a + b) / 2.0).filled(),
        )
    }))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .disable_y_axis()
        .draw()?;
    chart
        .configure_secondary_axes()
        .label_style(("sans-serif", TICK_FONT))
        .y_labels(8)
        .y_label_formatter(&|v| format_tick(*v))
        .draw()?;
    Ok(())
}

/// A compact tick label: plain for moderate magnitudes, scientific otherwise.
fn format_tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if (1e-2..1e4).contains(&a) {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Two heatmaps side by side on the same n×n grid over [lo, hi]^2 (row-major, x fastest): the model's normalised density and, when given, the true one. Figure ≥ 1200×600 when two panels.
///
/// Value `k = iy·n + ix` is the cell centred at `lo + (i + ½)(hi − lo)/n` on each axis
/// (the cell centres of `denoise_gym::ebm::Grid2d`). Each density is normalised to
/// integrate to one over the grid (negative, NaN and infinite cells are left out and
/// drawn light grey); both panels share one linear colour scale (viridis), shown by a
/// colour bar on the right. The figure is `FIGURE_SIZE` high and `FIGURE_SIZE` wide per
/// panel (1600×800 with the truth).
///
/// # Errors
/// `n == 0`, a slice whose length is not `n²`, `lo < hi` not finite, a density with no
/// positive finite mass, or a drawing / file error (the message names `path`).
pub fn density_side_by_side(
    path: &Path,
    model: &[f64],
    truth: Option<&[f64]>,
    n: usize,
    lo: f64,
    hi: f64,
    title: &str,
) -> Result<()> {
    let prepared = (|| -> Result<_> {
        if n == 0 {
            bail!("density_side_by_side: the grid needs n ≥ 1 cells per side");
        }
        if !(lo.is_finite() && hi.is_finite() && lo < hi && (hi - lo).is_finite()) {
            bail!("density_side_by_side: need finite lo < hi, got lo {lo}, hi {hi}");
        }
        let cells = n
            .checked_mul(n)
            .ok_or_else(|| anyhow!("density_side_by_side: n = {n} is too large"))?;
        let cell_area = ((hi - lo) / n as f64).powi(2);
        let mut panels = Vec::new();
        for (name, values) in [("model", Some(model)), ("true", truth)] {
            let Some(values) = values else { continue };
            if values.len() != cells {
                bail!(
                    "density_side_by_side: the {name} density has {} values, expected \
                     n² = {cells}",
                    values.len()
                );
            }
            panels.push((name, normalise_density(values, cell_area, name)?));
        }
        let vmax = panels
            .iter()
            .flat_map(|(_, d)| d.iter().flatten().copied())
            .fold(0.0f64, f64::max);
        // A positive total mass means a positive maximum; guard anyway.
        let vmax = if vmax > 0.0 && vmax.is_finite() {
            vmax
        } else {
            1.0
        };
        Ok((panels, vmax))
    })()
    .with_context(|| format!("figure {}", path.display()))?;
    let (panels, vmax) = prepared;
    let width = FIGURE_SIZE * panels.len() as u32;
    render_png(path, width, FIGURE_SIZE, |root| {
        let area = titled(root, title, TITLE_FONT)?;
        let (panel_area, bar_area) = area.split_horizontally(width - COLOUR_BAR_WIDTH);
        let cells = panel_area.split_evenly((1, panels.len()));
        for ((name, density), cell) in panels.iter().zip(&cells) {
            let caption = if *name == "model" {
                "model"
            } else {
                "true density"
            };
            draw_heatmap(cell, caption, density, n, lo, hi, vmax)?;
        }
        draw_colour_bar(&bar_area, vmax)
    })
}

/// The denoising trajectory: one scatter panel per state x_T, ..., x_0 (first two coords), `states[k]` row-major n×dim, labelled "t = T-k".
///
/// `T = states.len() − 1`. Panels are laid out in a near-square grid, all on the same
/// axes (fitted to every state) so the contraction towards the data is visible; each
/// state is sub-sampled so that the whole figure draws at most about 40,000 points.
/// The figure is at least [`FIGURE_SIZE`] on each side and grows with the number of
/// panels.
///
/// # Errors
/// No states, `dim == 0`, a state that is not a whole number of rows, no finite point
/// in any state, or a drawing / file error (the message names `path`).
pub fn trajectory(path: &Path, states: &[Vec<f32>], dim: usize, title: &str) -> Result<()> {
    let prepared = (|| -> Result<_> {
        if states.is_empty() {
            bail!("trajectory: no states to draw");
        }
        let per_panel = (40_000 / states.len()).clamp(500, MAX_SCATTER_POINTS);
        let points = states
            .iter()
            .enumerate()
            .map(|(k, s)| xy_points(s, dim, &format!("trajectory: states[{k}]"), per_panel))
            .collect::<Result<Vec<_>>>()?;
        let (xr, yr) = scatter_ranges(points.iter().map(Vec::as_slice)).ok_or_else(|| {
            anyhow!(
                "trajectory: none of the {} states holds a finite point",
                states.len()
            )
        })?;
        Ok((points, xr, yr))
    })()
    .with_context(|| format!("figure {}", path.display()))?;
    let (points, xr, yr) = prepared;
    let k_states = points.len();
    let cols = (k_states as f64).sqrt().ceil().max(1.0) as usize;
    let rows = k_states.div_ceil(cols);
    // Panels shrink (down to 160 px) so that long trajectories stay near 6000 px wide.
    let panel = if k_states <= 4 {
        400
    } else {
        (6_000 / cols as u32).clamp(160, 300)
    };
    let width = (cols as u32 * panel).max(FIGURE_SIZE);
    let height = (rows as u32 * panel + 50).max(FIGURE_SIZE);
    let t_max = k_states - 1;
    render_png(path, width, height, |root| {
        let area = titled(root, title, TITLE_FONT)?;
        let cells = area.split_evenly((rows, cols));
        for (k, (pts, cell)) in points.iter().zip(&cells).enumerate() {
            let mut chart = ChartBuilder::on(cell)
                .caption(format!("t = {}", t_max - k), ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(38)
                .y_label_area_size(50)
                .build_cartesian_2d(xr.clone(), yr.clone())?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(5)
                .x_desc("x[0]")
                .y_desc("x[1]")
                .light_line_style(FINE_GRID)
                .x_label_formatter(&|v| format_tick(*v))
                .y_label_formatter(&|v| format_tick(*v))
                .label_style(("sans-serif", 12))
                .axis_desc_style(("sans-serif", 13))
                .draw()?;
            let style = BLUE.mix(0.5).filled();
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 2, style)))?;
        }
        Ok(())
    })
}

/// σ_t per step t = 1..T (index t-1), line + points, log-scale y if the range spans > 2 decades.
///
/// Non-finite values are skipped. The log axis is used only when every finite value is
/// positive; beyond 30 decades (or near the ends of the `f64` range) the figure plots
/// `log10 σ_t` on a linear axis labelled in powers of ten instead. The figure is
/// [`FIGURE_SIZE`] square.
///
/// # Errors
/// No finite value, or a drawing / file error (the message names `path`).
pub fn sigma_per_step(path: &Path, sigmas: &[f64], title: &str) -> Result<()> {
    let points: Vec<(f64, f64)> = sigmas
        .iter()
        .enumerate()
        .map(|(i, &s)| ((i + 1) as f64, s))
        .filter(|(_, s)| s.is_finite())
        .collect();
    let Some((y_lo, y_hi)) = finite_bounds(points.iter().map(|p| p.1)) else {
        bail!(
            "figure {}: sigma_per_step: no finite σ among the {} values",
            path.display(),
            sigmas.len()
        );
    };
    let xr = padded_range(1.0, sigmas.len().max(1) as f64);
    // Decades spanned by the values (infinite when the ratio overflows).
    let decades = if y_lo > 0.0 {
        (y_hi / y_lo).log10()
    } else {
        0.0
    };
    render_png(path, FIGURE_SIZE, FIGURE_SIZE, |root| {
        let area = titled(root, title, TITLE_FONT)?;
        // Half a decade of margin on both ends.
        let range = (y_lo / 10f64.sqrt())..(y_hi * 10f64.sqrt());
        let range_ok = range.start > 0.0 && range.end.is_finite();
        if decades > 2.0 && decades <= MAX_LOG_AXIS_DECADES && range_ok {
            let mut chart = sigma_chart_builder(&area).build_cartesian_2d(xr, range.log_scale())?;
            chart
                .configure_mesh()
                .x_desc("step t")
                .x_label_formatter(&|v| format_tick(*v))
                .y_desc("σ_t (log scale)")
                .light_line_style(FINE_GRID)
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .label_style(("sans-serif", TICK_FONT))
                .axis_desc_style(("sans-serif", LABEL_FONT))
                .draw()?;
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
            Ok(())
        } else if decades > 2.0 {
            // Too many decades for plotters' log axis (its tick search does not end when
            // the ratio overflows): plot log10 σ on a linear axis instead.
            let logs: Vec<(f64, f64)> = points.iter().map(|&(t, s)| (t, s.log10())).collect();
            let yr = padded_range(y_lo.log10(), y_hi.log10());
            draw_sigma_linear(&area, xr, yr, &logs, "σ_t (log scale)", &|v| {
                if v.fract() == 0.0 {
                    format!("1e{v}")
                } else {
                    format!("{:.0e}", 10f64.powf(*v))
                }
            })
        } else {
            let yr = padded_range(y_lo, y_hi);
            draw_sigma_linear(&area, xr, yr, &points, "σ_t", &|v| format_tick(*v))
        }
    })
}

/// Most decades drawn on a true log axis by [`sigma_per_step`]; wider spans plot
/// `log10 σ` on a linear axis.
const MAX_LOG_AXIS_DECADES: f64 = 30.0;

fn sigma_chart_builder<'a, 'b>(area: &'a Area<'b>) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80);
    builder
}

/// The σ plot on linear axes; `points` are already in the plotted units.
fn draw_sigma_linear(
    area: &Area<'_>,
    xr: Range<f64>,
    yr: Range<f64>,
    points: &[(f64, f64)],
    y_desc: &str,
    y_format: &dyn Fn(&f64) -> String,
) -> Result<()> {
    let mut chart = sigma_chart_builder(area).build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .x_desc("step t")
        .x_label_formatter(&|v| format_tick(*v))
        .y_desc(y_desc)
        .light_line_style(FINE_GRID)
        .y_label_formatter(y_format)
        .label_style(("sans-serif", TICK_FONT))
        .axis_desc_style(("sans-serif", LABEL_FONT))
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().copied(),
        BLUE.stroke_width(2),
    ))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    Ok(())
}

/// One panel of [`training_curves`]: a column's values by phase.
struct CurvePanel {
    /// The caption and the y axis' name.
    column: String,
    /// The x axis' name.
    x_desc: String,
    /// The lines, in legend order.
    series: Vec<CurveSeries>,
}

/// Training curves from metrics.csv: one panel per requested column that exists (x = step), e.g. ["dsm/loss", "reward/return_mean", "ebm/energy_pos", "ebm/energy_neg", "ebm/L_E", "policy/loss"]; skip missing columns; error if none exist.
///
/// The file is read with `denoise_gym::log::read_metrics_csv` (header
/// `step,phase,<columns>`; an empty cell is a missing value). A requested column that is
/// absent from the header, or has no finite value, gets no panel. Within a panel each
/// phase (`pretrain`, `finetune`, ...) is its own coloured line, with a legend when
/// there are several. Panels are laid out two per row (one when there is a single
/// panel); the figure is at least [`FIGURE_SIZE`] on each side.
///
/// # Errors
/// The CSV cannot be read or parsed, none of `columns` has a value, or a drawing / file
/// error; messages name the file concerned.
pub fn training_curves(
    path: &Path,
    metrics_csv: &Path,
    columns: &[&str],
    title: &str,
) -> Result<()> {
    let (header, rows) = denoise_gym::log::read_metrics_csv(metrics_csv)
        .with_context(|| format!("figure {}: reading the training metrics", path.display()))?;
    let mut panels = Vec::new();
    for &column in columns {
        if !header.iter().any(|h| h == column) {
            continue;
        }
        let mut series: Vec<CurveSeries> = Vec::new();
        for row in &rows {
            let Some(&value) = row.values.get(column) else {
                continue;
            };
            if !value.is_finite() {
                continue;
            }
            let point = (row.step as f64, value, value, value);
            match series.iter_mut().find(|s| s.name == row.phase) {
                Some(s) => s.points.push(point),
                None => series.push(CurveSeries {
                    name: row.phase.clone(),
                    points: vec![point],
                }),
            }
        }
        if !series.is_empty() {
            panels.push(CurvePanel {
                column: column.to_string(),
                x_desc: "step".to_string(),
                series,
            });
        }
    }
    if panels.is_empty() {
        bail!(
            "figure {}: none of the requested columns {columns:?} has a value in {} \
             (its columns: {header:?})",
            path.display(),
            metrics_csv.display()
        );
    }
    let cols = if panels.len() == 1 { 1 } else { 2 };
    let rows_n = panels.len().div_ceil(cols);
    let width = (cols as u32 * 640).max(FIGURE_SIZE);
    let height = (rows_n as u32 * 420 + 50).max(FIGURE_SIZE);
    render_png(path, width, height, |root| {
        let area = titled(root, title, TITLE_FONT)?;
        let cells = area.split_evenly((rows_n, cols));
        for (panel, cell) in panels.iter().zip(&cells) {
            draw_curve_panel(cell, panel)?;
        }
        Ok(())
    })
}

/// One panel of lines, each over its translucent band `[low, high]` where it has one.
fn draw_curve_panel(area: &Area<'_>, panel: &CurvePanel) -> Result<()> {
    let finite = |p: &&(f64, f64, f64, f64)| {
        p.0.is_finite() && p.1.is_finite() && p.2.is_finite() && p.3.is_finite()
    };
    let all = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite))
    };
    let (x_lo, x_hi) = finite_bounds(all().map(|p| p.0))
        .ok_or_else(|| anyhow!("{}: no finite {}", panel.column, panel.x_desc))?;
    let (y_lo, y_hi) = finite_bounds(all().flat_map(|p| [p.2, p.3]))
        .ok_or_else(|| anyhow!("{}: no finite value", panel.column))?;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.column, ("sans-serif", CAPTION_FONT))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(padded_range(x_lo, x_hi), padded_range(y_lo, y_hi))?;
    chart
        .configure_mesh()
        .x_desc(panel.x_desc.as_str())
        .y_desc(panel.column.as_str())
        .light_line_style(FINE_GRID)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .label_style(("sans-serif", TICK_FONT))
        .axis_desc_style(("sans-serif", LABEL_FONT))
        .draw()?;
    for (i, series) in panel.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64, f64, f64)> =
            series.points.iter().filter(finite).copied().collect();
        if points.len() > 1 && points.iter().any(|p| p.2 < p.3) {
            // The band: the upper edge left to right, then the lower edge back.
            let band: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.0, p.3))
                .chain(points.iter().rev().map(|p| (p.0, p.2)))
                .collect();
            chart.draw_series(std::iter::once(Polygon::new(
                band,
                colour.mix(0.15).filled(),
            )))?;
        }
        if points.len() == 1 {
            // A lone value has no line: mark it.
            chart.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
            )?;
        }
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                colour.stroke_width(2),
            ))?
            .label(series.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
    }
    if panel.series.len() > 1 {
        draw_legend(&mut chart)?;
    }
    Ok(())
}

/// The legend of a chart's labelled series, top right on a translucent white box.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
) -> Result<()> {
    draw_legend_at(chart, SeriesLabelPosition::UpperRight, TICK_FONT)
}

/// [`draw_legend`] at `position` with labels of `font` size.
fn draw_legend_at<'a, 'b: 'a>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    position: SeriesLabelPosition,
    font: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(("sans-serif", font))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// One line of [`error_bar_lines`]: `(x position, mean, low, high)` per point.
#[derive(Debug, Clone)]
pub struct ErrorBarSeries {
    /// The legend entry.
    pub name: String,
    /// Points at category positions (indices into the x labels), with the bar's ends.
    pub points: Vec<(usize, f64, f64, f64)>,
}

/// A metric against a categorical axis: each series a line through its means with a
/// vertical error bar `[low, high]` at every point. Series are nudged apart along x so
/// that their bars do not hide each other.
///
/// # Errors
/// No series has a finite point, or a drawing / file error.
pub fn error_bar_lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    x_labels: &[String],
    y_desc: &str,
    series: &[ErrorBarSeries],
) -> Result<()> {
    let finite =
        |p: &&(usize, f64, f64, f64)| p.1.is_finite() && p.2.is_finite() && p.3.is_finite();
    let (y_lo, y_hi) = finite_bounds(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(finite))
            .flat_map(|p| [p.2, p.3]),
    )
    .ok_or_else(|| anyhow!("figure {}: no finite value to plot", path.display()))?;
    let n_x = x_labels.len().max(1);
    let width = 0.3 / series.len().max(1) as f64;
    let offset = |i: usize| (i as f64 - (series.len() as f64 - 1.0) / 2.0) * width;
    let labels: Vec<String> = x_labels.to_vec();
    render_png(path, FIGURE_SIZE + 200, FIGURE_SIZE, |root| {
        let area = titled(root, title, CAPTION_FONT)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(-0.5..(n_x as f64 - 0.5), padded_range(y_lo, y_hi))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .light_line_style(FINE_GRID)
            .x_labels(n_x * 2 + 1)
            .x_label_formatter(&|v| {
                let r = v.round();
                if (v - r).abs() < 1e-6 && r >= 0.0 {
                    labels.get(r as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format_tick(*v))
            .label_style(("sans-serif", TICK_FONT))
            .axis_desc_style(("sans-serif", LABEL_FONT))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let dx = offset(i);
            let points: Vec<(f64, f64, f64, f64)> = s
                .points
                .iter()
                .filter(finite)
                .map(|&(x, m, lo, hi)| (x as f64 + dx, m, lo, hi))
                .collect();
            let cap = 0.04;
            for &(x, _, lo, hi) in &points {
                for segment in [
                    vec![(x, lo), (x, hi)],
                    vec![(x - cap, lo), (x + cap, lo)],
                    vec![(x - cap, hi), (x + cap, hi)],
                ] {
                    chart.draw_series(std::iter::once(PathElement::new(
                        segment,
                        colour.stroke_width(2),
                    )))?;
                }
            }
            chart.draw_series(
                points
                    .iter()
                    .map(|&(x, m, _, _)| Circle::new((x, m), 4, colour.filled())),
            )?;
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(x, m, _, _)| (x, m)),
                    colour.stroke_width(2),
                ))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        draw_legend(&mut chart)?;
        Ok(())
    })
}

/// One line of [`mean_curves`]: `(x, mean, low, high)` per point, in x order.
#[derive(Debug, Clone)]
pub struct CurveSeries {
    /// The legend entry.
    pub name: String,
    /// The points; `[low, high]` is drawn as a translucent band.
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Learning curves on a numeric x axis: each series a line through its means over a
/// translucent band `[low, high]`, with a legend.
///
/// # Errors
/// No series has a finite point, or a drawing / file error.
pub fn mean_curves(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[CurveSeries],
) -> Result<()> {
    let panel = CurvePanel {
        column: y_desc.to_string(),
        x_desc: x_desc.to_string(),
        series: series.to_vec(),
    };
    render_png(path, FIGURE_SIZE + 200, FIGURE_SIZE, |root| {
        let area = titled(root, title, CAPTION_FONT)?;
        draw_curve_panel(&area, &panel)
    })
    .with_context(|| format!("figure {}", path.display()))
}

/// ROC curves, one per named method, `(false positive rate, true positive rate)` points
/// from `(0, 0)` to `(1, 1)`, with the chance diagonal. [`FIGURE_SIZE`] square.
///
/// # Errors
/// No curve, or a drawing / file error.
pub fn roc_curves(path: &Path, curves: &[(String, Vec<(f64, f64)>)], title: &str) -> Result<()> {
    if curves.is_empty() {
        bail!("figure {}: roc_curves: no curve", path.display());
    }
    render_png(path, FIGURE_SIZE, FIGURE_SIZE, |root| {
        let area = titled(root, title, CAPTION_FONT)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0f64, 0.0..1.0f64)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (inliers flagged)")
            .y_desc("true positive rate (anomalies flagged)")
            .light_line_style(FINE_GRID)
            .label_style(("sans-serif", TICK_FONT))
            .axis_desc_style(("sans-serif", LABEL_FONT))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GREY.stroke_width(1),
        ))?;
        for (i, (name, points)) in curves.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        // Lower right: the curves of good detectors fill the upper left.
        draw_legend_at(&mut chart, SeriesLabelPosition::LowerRight, LABEL_FONT)
    })
}

/// One captioned panel of [`image_grids`]: `images` row-major, each `height × width`
/// grey values (any range: each panel is scaled by its own 1st and 99th percentiles,
/// dark = high as ink on paper), `columns` images per row.
pub struct ImagePanel {
    /// The caption above the panel.
    pub caption: String,
    /// The images, `n × (height · width)` row-major.
    pub images: Vec<f32>,
}

/// Panels of small grey images side by side (e.g. generated digits beside real ones),
/// each a grid of `columns` images per row, `height × width` pixels each.
///
/// # Errors
/// An image size of 0, a panel whose buffer is not a whole number of images, no panel,
/// or a drawing / file error.
pub fn image_grids(
    path: &Path,
    panels: &[ImagePanel],
    height: usize,
    width: usize,
    columns: usize,
    title: &str,
) -> Result<()> {
    let pixels = height * width;
    if pixels == 0 || columns == 0 || panels.is_empty() {
        bail!(
            "figure {}: image_grids: needs images of at least 1×1 pixel, at least one column and one panel",
            path.display()
        );
    }
    let mut rows = 1;
    for p in panels {
        if p.images.len() % pixels != 0 || p.images.is_empty() {
            bail!(
                "figure {}: panel {:?} holds {} values, not a whole number of {height}×{width} images",
                path.display(),
                p.caption,
                p.images.len()
            );
        }
        rows = rows.max((p.images.len() / pixels).div_ceil(columns));
    }
    // Whole pixels per image pixel keep the digits crisp.
    let cell = 8usize;
    let gap = 4usize;
    let panel_w = columns * (width * cell + gap) + gap;
    let panel_h = rows * (height * cell + gap) + gap;
    let caption_h = 40usize;
    let total_w = (panels.len() * (panel_w + 20) + 20).max(600);
    let total_h = (panel_h + caption_h + 80).max(300);
    render_png(path, total_w as u32, total_h as u32, |root| {
        let area = titled(root, title, CAPTION_FONT)?;
        for (k, panel) in panels.iter().enumerate() {
            let x0 = 20 + k * (panel_w + 20);
            area.draw(&Text::new(
                panel.caption.clone(),
                (x0 as i32, 5),
                ("sans-serif", LABEL_FONT).into_font(),
            ))?;
            let mut sorted: Vec<f32> = panel
                .images
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let quantile = |q: f64| {
                sorted
                    .get(((sorted.len().saturating_sub(1)) as f64 * q) as usize)
                    .copied()
                    .unwrap_or(0.0)
            };
            let (lo, hi) = (quantile(0.01), quantile(0.99));
            let span = if hi > lo { hi - lo } else { 1.0 };
            for (i, image) in panel.images.chunks_exact(pixels).enumerate() {
                let (r, c) = (i / columns, i % columns);
                let ix = x0 + gap + c * (width * cell + gap);
                let iy = caption_h + gap + r * (height * cell + gap);
                for (p, v) in image.iter().enumerate() {
                    let t = if v.is_finite() {
                        ((v - lo) / span).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let grey = (255.0 * (1.0 - t)) as u8;
                    let (py, px) = (p / width, p % width);
                    let (x, y) = ((ix + px * cell) as i32, (iy + py * cell) as i32);
                    area.draw(&Rectangle::new(
                        [(x, y), (x + cell as i32, y + cell as i32)],
                        RGBColor(grey, grey, grey).filled(),
                    ))?;
                }
            }
        }
        Ok(())
    })
}
