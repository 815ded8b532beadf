//! Figures: every function writes a PNG of the promised size whose title really shows
//! (text drawn with the embedded font), and bad input is an error that names the
//! problem.

use std::path::Path;

use denoise_gym_experiments::plots::{
    density_side_by_side, samples_over_data, samples_over_data_rgb, sigma_per_step,
    training_curves, trajectory, FIGURE_SIZE,
};

/// The default figure is large enough to read.
const _: () = assert!(FIGURE_SIZE >= 600);

/// Decodes a PNG into `(rgb, width, height)`.
fn decode(path: &Path) -> (Vec<u8>, u32, u32) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(file).read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG image data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (buf, info.width, info.height)
}

/// Pixels whose every channel is below 100 (text is black) in rows `rows` of the middle
/// third of the columns (the title is centred; legends sit at the right).
fn dark_pixels_in_title_band(rgb: &[u8], width: u32, rows: std::ops::Range<u32>) -> usize {
    let (x0, x1) = (width / 3, 2 * width / 3);
    let mut count = 0;
    for y in rows {
        for x in x0..x1 {
            let i = 3 * (y as usize * width as usize + x as usize);
            if rgb[i..i + 3].iter().all(|&c| c < 100) {
                count += 1;
            }
        }
    }
    count
}

/// Pixels close to `colour` (each channel within 40).
fn pixels_near(rgb: &[u8], colour: [u8; 3]) -> usize {
    rgb.chunks_exact(3)
        .filter(|p| (0..3).all(|c| (i16::from(p[c]) - i16::from(colour[c])).abs() < 40))
        .count()
}

fn assert_title_renders(rgb: &[u8], width: u32) {
    let dark = dark_pixels_in_title_band(rgb, width, 0..34);
    assert!(
        dark > 80,
        "the title band holds only {dark} dark pixels: the embedded font did not render"
    );
}

/// `n` points of a 2-ring mixture in `dim` dimensions, deterministic.
fn rings(n: usize, dim: usize, radius: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * dim);
    for i in 0..n {
        let angle = i as f32 * 2.399_963; // golden angle
        let r = if i % 2 == 0 { radius } else { radius / 2.0 };
        let wobble = ((i * 7919) % 101) as f32 / 101.0 * 0.2;
        out.push((r + wobble) * angle.cos());
        if dim > 1 {
            out.push((r + wobble) * angle.sin());
        }
        for k in 2..dim {
            out.push(k as f32);
        }
    }
    out
}

#[test]
fn samples_over_data_writes_a_labelled_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("samples.png");
    let samples = rings(2_000, 3, 2.0);
    let data = rings(3_000, 3, 2.2);
    samples_over_data(&path, &samples, &data, 3, "Samples over data").unwrap();
    let (rgb, w, h) = decode(&path);
    assert_eq!((w, h), (FIGURE_SIZE, FIGURE_SIZE));
    assert_title_renders(&rgb, w);
    // Both series show: blue data, orange samples (blended over white).
    assert!(pixels_near(&rgb, [31, 119, 180]) + pixels_near(&rgb, [98, 160, 204]) > 500);
    assert!(pixels_near(&rgb, [255, 127, 14]) + pixels_near(&rgb, [255, 165, 110]) > 500);
    // Nothing but the figure is left in the directory (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("samples.png")]);
}

#[test]
fn samples_over_data_handles_large_input_dim_one_and_non_finite_rows() {
    let dir = tempfile::tempdir().unwrap();
    // 200k points are sub-sampled; a NaN row is skipped.
    let mut samples = rings(200_000, 2, 1.0);
    samples[0] = f32::NAN;
    samples[3] = f32::INFINITY;
    let data = rings(50_000, 2, 1.0);
    let path = dir.path().join("big.png");
    samples_over_data(&path, &samples, &data, 2, "big").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    // dim = 1: points on a line; a single point (degenerate range) is padded.
    let path = dir.path().join("line.png");
    samples_over_data(&path, &[0.5, 1.0, 2.0], &[1.0], 1, "1-D").unwrap();
    assert_eq!(decode(&path).2, FIGURE_SIZE);
    // Any extension: the file is still a PNG, and missing parents are created.
    let path = dir.path().join("nested/deeper/figure.out");
    samples_over_data(&path, &[0.0, 0.0], &[0.0, 0.0], 2, "one point each").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
}

#[test]
fn samples_over_data_rgb_is_a_titled_rgb8_buffer() {
    let samples = rings(500, 2, 2.0);
    let data = rings(500, 2, 2.0);
    let (rgb, w, h) = samples_over_data_rgb(&samples, &data, 2, "TensorBoard", 600).unwrap();
    assert_eq!((w, h), (600, 600));
    assert_eq!(rgb.len(), (w * h * 3) as usize);
    assert_title_renders(&rgb, w);
    // Control: with a blank title the same band is white, so the dark pixels above are
    // the title's glyphs.
    let (blank, w, _) = samples_over_data_rgb(&samples, &data, 2, " ", 600).unwrap();
    assert_eq!(dark_pixels_in_title_band(&blank, w, 0..34), 0);
    // A smaller picture for TensorBoard still renders.
    let (small, w, h) = samples_over_data_rgb(&samples, &data, 2, "small", 256).unwrap();
    assert_eq!(small.len(), (w * h * 3) as usize);
    let err = samples_over_data_rgb(&samples, &data, 2, "x", 10).unwrap_err();
    assert!(format!("{err:#}").contains("size 10"), "{err:#}");
}

#[test]
fn samples_over_data_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let data = rings(10, 2, 1.0);
    let msg = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());

    let m = msg(samples_over_data(&path, &[], &data, 2, "t"));
    assert!(m.contains("`samples` holds no finite points"), "{m}");
    assert!(m.contains("bad.png"), "{m}");
    let m = msg(samples_over_data(&path, &data, &[], 2, "t"));
    assert!(m.contains("`data` holds no finite points"), "{m}");
    let m = msg(samples_over_data(&path, &[f32::NAN; 4], &data, 2, "t"));
    assert!(m.contains("no finite points"), "{m}");
    let m = msg(samples_over_data(&path, &data[..5], &data, 2, "t"));
    assert!(m.contains("not a whole number of rows"), "{m}");
    let m = msg(samples_over_data(&path, &data, &data, 0, "t"));
    assert!(m.contains("dim must be at least 1"), "{m}");
    assert!(!path.exists());

    // A file where a directory should be: the error names the path.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let target = blocker.join("fig.png");
    let m = msg(samples_over_data(&target, &data, &data, 2, "t"));
    assert!(m.contains(&blocker.display().to_string()), "{m}");

    let err = samples_over_data_rgb(&[], &data, 2, "t", 600).unwrap_err();
    assert!(format!("{err:#}").contains("`samples`"), "{err:#}");
}

/// An unnormalised Gaussian bump on the `n × n` cell centres over `[lo, hi]²`.
fn bump(n: usize, lo: f64, hi: f64, cx: f64, scale: f64) -> Vec<f64> {
    let h = (hi - lo) / n as f64;
    let mut out = Vec::with_capacity(n * n);
    for iy in 0..n {
        for ix in 0..n {
            let x = lo + (ix as f64 + 0.5) * h;
            let y = lo + (iy as f64 + 0.5) * h;
            out.push(scale * (-((x - cx).powi(2) + y * y) / 2.0).exp());
        }
    }
    out
}

#[test]
fn density_side_by_side_draws_one_or_two_panels() {
    let dir = tempfile::tempdir().unwrap();
    let (n, lo, hi) = (60, -4.0, 4.0);
    let model = bump(n, lo, hi, 1.0, 7.0);
    let truth = bump(n, lo, hi, -1.0, 0.01);

    let path = dir.path().join("density2.png");
    density_side_by_side(&path, &model, Some(&truth), n, lo, hi, "Model vs truth").unwrap();
    let (rgb, w, h) = decode(&path);
    assert!(w >= 1200 && h >= 600, "{w}×{h}");
    assert_eq!((w, h), (2 * FIGURE_SIZE, FIGURE_SIZE));
    assert_title_renders(&rgb, w);
    // Viridis ends: the dark purple background and the yellow peak both show.
    assert!(pixels_near(&rgb, [68, 1, 84]) > 10_000);
    assert!(pixels_near(&rgb, [240, 229, 40]) > 20);

    // One panel, with some NaN / negative cells drawn as missing.
    let mut model = model;
    model[0] = f64::NAN;
    model[1] = -1.0;
    model[2] = f64::INFINITY;
    let path = dir.path().join("density1.png");
    density_side_by_side(&path, &model, None, n, lo, hi, "Model only").unwrap();
    let (rgb, w, h) = decode(&path);
    assert_eq!((w, h), (FIGURE_SIZE, FIGURE_SIZE));
    assert_title_renders(&rgb, w);

    // n = 1 works.
    let path = dir.path().join("density_n1.png");
    density_side_by_side(&path, &[3.0], Some(&[1.0]), 1, 0.0, 1.0, "one cell").unwrap();
    assert_eq!(decode(&path).1, 2 * FIGURE_SIZE);
}

#[test]
fn density_side_by_side_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let good = vec![1.0; 16];
    let msg = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());

    let m = msg(density_side_by_side(
        &path,
        &good[..15],
        None,
        4,
        0.0,
        1.0,
        "t",
    ));
    assert!(
        m.contains("model density has 15 values, expected n² = 16"),
        "{m}"
    );
    let m = msg(density_side_by_side(
        &path,
        &good,
        Some(&good[..3]),
        4,
        0.0,
        1.0,
        "t",
    ));
    assert!(m.contains("true density has 3 values"), "{m}");
    let m = msg(density_side_by_side(&path, &[], None, 0, 0.0, 1.0, "t"));
    assert!(m.contains("n ≥ 1"), "{m}");
    let m = msg(density_side_by_side(&path, &good, None, 4, 1.0, 1.0, "t"));
    assert!(m.contains("lo < hi"), "{m}");
    let m = msg(density_side_by_side(
        &path,
        &good,
        None,
        4,
        0.0,
        f64::NAN,
        "t",
    ));
    assert!(m.contains("lo < hi"), "{m}");
    let m = msg(density_side_by_side(
        &path, &[0.0; 16], None, 4, 0.0, 1.0, "t",
    ));
    assert!(
        m.contains("model density has no positive finite mass"),
        "{m}"
    );
    let m = msg(density_side_by_side(
        &path,
        &good,
        Some(&[f64::NAN; 16]),
        4,
        0.0,
        1.0,
        "t",
    ));
    assert!(
        m.contains("true density has no positive finite mass"),
        "{m}"
    );
    assert!(m.contains("bad.png"), "{m}");
    assert!(!path.exists());
}

#[test]
fn trajectory_draws_one_panel_per_state() {
    let dir = tempfile::tempdir().unwrap();
    // x_T (wide noise) ... x_0 (rings), dim 3.
    let states: Vec<Vec<f32>> = (0..6)
        .map(|k| {
            let spread = 1.0 + (5 - k) as f32;
            rings(1_000, 3, 2.0).iter().map(|v| v * spread).collect()
        })
        .collect();
    let path = dir.path().join("trajectory.png");
    trajectory(&path, &states, 3, "Denoising trajectory").unwrap();
    let (rgb, w, h) = decode(&path);
    assert!(w >= 600 && h >= 600, "{w}×{h}");
    assert_title_renders(&rgb, w);
    assert!(pixels_near(&rgb, [31, 119, 180]) + pixels_near(&rgb, [143, 187, 217]) > 1_000);

    // A single state, and many states.
    let path = dir.path().join("one.png");
    trajectory(&path, &states[..1], 3, "x_0 only").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    let many: Vec<Vec<f32>> = (0..21).map(|_| rings(300, 2, 1.0)).collect();
    let path = dir.path().join("many.png");
    trajectory(&path, &many, 2, "T = 20").unwrap();
    let (rgb, w, h) = decode(&path);
    assert!(w >= 600 && h >= 600);
    assert_title_renders(&rgb, w);

    // An empty state among others is an empty panel; no points at all is an error.
    let path = dir.path().join("partly_empty.png");
    trajectory(&path, &[vec![], vec![0.0, 1.0]], 2, "t").unwrap();
    let msg = |r: anyhow::Result<()>| format!("{:#}", r.unwrap_err());
    let bad = dir.path().join("bad.png");
    let m = msg(trajectory(&bad, &[], 2, "t"));
    assert!(m.contains("no states"), "{m}");
    let m = msg(trajectory(&bad, &[vec![], vec![f32::NAN, 0.0]], 2, "t"));
    assert!(
        m.contains("none of the 2 states holds a finite point"),
        "{m}"
    );
    let m = msg(trajectory(&bad, &[vec![0.0; 4], vec![0.0; 3]], 2, "t"));
    assert!(m.contains("states[1]"), "{m}");
    assert!(m.contains("bad.png"), "{m}");
}

#[test]
fn sigma_per_step_linear_and_log() {
    let dir = tempfile::tempdir().unwrap();
    // Spans 4 decades: log axis.
    let sigmas: Vec<f64> = (1..=50)
        .map(|t| 1e-3 * 10f64.powf(t as f64 / 12.5))
        .collect();
    let path = dir.path().join("sigma_log.png");
    sigma_per_step(&path, &sigmas, "σ_t (vp schedule)").unwrap();
    let (rgb, w, h) = decode(&path);
    assert_eq!((w, h), (FIGURE_SIZE, FIGURE_SIZE));
    assert_title_renders(&rgb, w);
    assert!(pixels_near(&rgb, [31, 119, 180]) > 300);

    // Narrow range, with a NaN and a non-positive value: linear axis.
    let path = dir.path().join("sigma_lin.png");
    sigma_per_step(&path, &[0.5, f64::NAN, 0.7, 0.0, 0.9], "linear").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    // One step, constant value.
    let path = dir.path().join("sigma_one.png");
    sigma_per_step(&path, &[0.1], "one").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);

    let bad = dir.path().join("bad.png");
    let err = sigma_per_step(&bad, &[], "t").unwrap_err();
    assert!(format!("{err:#}").contains("no finite σ"), "{err:#}");
    let err = sigma_per_step(&bad, &[f64::NAN, f64::INFINITY], "t").unwrap_err();
    assert!(
        format!("{err:#}").contains("no finite σ among the 2 values"),
        "{err:#}"
    );
}

fn write_metrics(dir: &Path) -> std::path::PathBuf {
    let mut text = String::from("step,phase,dsm/loss,ebm/L_E,policy/loss,empty/col\n");
    for step in 0..300u64 {
        let (phase, loss, l_e, policy) = if step < 200 {
            (
                "pretrain",
                format!("{}", 1.0 / (1.0 + step as f64)),
                String::new(),
                String::new(),
            )
        } else {
            (
                "finetune",
                String::new(),
                format!("{}", (step as f64 / 10.0).sin()),
                format!("{}", -(step as f64)),
            )
        };
        text.push_str(&format!("{step},{phase},{loss},{l_e},{policy},\n"));
    }
    let path = dir.join("metrics.csv");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn training_curves_one_panel_per_existing_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_metrics(dir.path());
    let path = dir.path().join("curves.png");
    training_curves(
        &path,
        &csv,
        &[
            "dsm/loss",
            "reward/return_mean",
            "ebm/energy_pos",
            "ebm/energy_neg",
            "ebm/L_E",
            "policy/loss",
            "empty/col",
        ],
        "Training",
    )
    .unwrap();
    let (rgb, w, h) = decode(&path);
    assert!(w >= 600 && h >= 600, "{w}×{h}");
    assert_title_renders(&rgb, w);
    assert!(pixels_near(&rgb, [31, 119, 180]) > 200);

    // A column logged in two phases gets two coloured lines (and a legend).
    let two = dir.path().join("two_phases.csv");
    std::fs::write(
        &two,
        "step,phase,dsm/loss\n0,pretrain,1.0\n1,pretrain,0.5\n2,finetune,0.7\n3,finetune,0.2\n",
    )
    .unwrap();
    let path = dir.path().join("two_phases.png");
    training_curves(&path, &two, &["dsm/loss"], "phases").unwrap();
    let (rgb, w, h) = decode(&path);
    assert_eq!((w, h), (FIGURE_SIZE, FIGURE_SIZE));
    assert!(pixels_near(&rgb, [31, 119, 180]) > 50);
    assert!(pixels_near(&rgb, [255, 127, 14]) > 50);
}

#[test]
fn training_curves_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_metrics(dir.path());
    let path = dir.path().join("curves.png");
    let err = training_curves(&path, &csv, &["reward/return_mean", "empty/col"], "t").unwrap_err();
    let m = format!("{err:#}");
    assert!(m.contains("none of the requested columns"), "{m}");
    assert!(m.contains("reward/return_mean"), "{m}");
    assert!(m.contains("metrics.csv"), "{m}");
    let err = training_curves(&path, &csv, &[], "t").unwrap_err();
    assert!(format!("{err:#}").contains("none of the requested columns"));

    let missing = dir.path().join("nope.csv");
    let err = training_curves(&path, &missing, &["dsm/loss"], "t").unwrap_err();
    assert!(format!("{err:#}").contains("nope.csv"), "{err:#}");
    assert!(!path.exists());
}

#[test]
fn extreme_but_finite_values_still_render() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("extreme.png");
    let samples = [f32::MAX, -f32::MAX, 1e-30, 0.0];
    let data = [f32::MIN_POSITIVE, 1.0, -1e30, 1e30];
    samples_over_data(&path, &samples, &data, 2, "extreme").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    let path = dir.path().join("sigma_extreme.png");
    sigma_per_step(&path, &[1e-300, 1.0, 1e300], "extreme σ").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    for (i, sigmas) in [[1e290, 1e308], [5e-324, 1e-300], [f64::MIN_POSITIVE, 1.0]]
        .iter()
        .enumerate()
    {
        let path = dir.path().join(format!("sigma_edge{i}.png"));
        sigma_per_step(&path, sigmas, "edge").unwrap();
        assert_eq!(decode(&path).1, FIGURE_SIZE);
    }
    let path = dir.path().join("sigma_huge_linear.png");
    sigma_per_step(&path, &[-f64::MAX, f64::MAX], "huge").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    let path = dir.path().join("density_tiny_box.png");
    density_side_by_side(&path, &[1.0, 2.0, 3.0, 1e300], None, 2, 1e-9, 2e-9, "tiny").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    let err =
        density_side_by_side(&path, &[1.0], None, 1, -f64::MAX, f64::MAX, "wide").unwrap_err();
    assert!(format!("{err:#}").contains("lo < hi"), "{err:#}");
    let path = dir.path().join("trajectory_extreme.png");
    trajectory(
        &path,
        &[vec![f32::MAX, f32::MIN], vec![0.0, 0.0]],
        2,
        "extreme",
    )
    .unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
    let csv = dir.path().join("extreme.csv");
    std::fs::write(
        &csv,
        "step,phase,a\n0,p,-1e308\n18446744073709551615,p,1e308\n",
    )
    .unwrap();
    let path = dir.path().join("curves_extreme.png");
    training_curves(&path, &csv, &["a"], "extreme").unwrap();
    assert_eq!(decode(&path).1, FIGURE_SIZE);
}
