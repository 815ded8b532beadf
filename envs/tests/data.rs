//! Integration tests of `denoise_gym_envs::data`.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use denoise_gym_envs::data::{
    toy_dataset, Checkerboard, DataError, Dataset, GaussianMixture, Rings, TabularDataset,
    TOY_DATASETS,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn rows(points: &[f32], dim: usize) -> impl Iterator<Item = &[f32]> {
    points.chunks_exact(dim)
}

fn mean_of(points: &[f32], dim: usize) -> Vec<f64> {
    let n = points.len() / dim;
    let mut m = vec![0.0; dim];
    for r in rows(points, dim) {
        for (mi, &x) in m.iter_mut().zip(r) {
            *mi += f64::from(x);
        }
    }
    m.iter().map(|v| v / n as f64).collect()
}

// ----------------------------------------------------------------------------------------
// Toy sets
// ----------------------------------------------------------------------------------------

#[test]
fn every_toy_set_returns_exactly_n_finite_rows_of_dim_2() {
    assert_eq!(TOY_DATASETS.len(), 9);
    for &name in TOY_DATASETS {
        let ds = toy_dataset(name).expect("known name");
        assert_eq!(ds.name(), name);
        assert_eq!(ds.dim(), 2, "{name}");
        for n in [1usize, 2, 3, 7, 256] {
            let x = ds.sample(n, &mut rng(n as u64));
            assert_eq!(x.len(), 2 * n, "{name} with n = {n}");
            assert!(x.iter().all(|v| v.is_finite()), "{name} with n = {n}");
        }
        assert!(ds.sample(0, &mut rng(0)).is_empty(), "{name}");
    }
}

#[test]
fn toy_sets_are_deterministic_given_the_seed() {
    for &name in TOY_DATASETS {
        let ds = toy_dataset(name).expect("known name");
        for n in [1usize, 7, 256] {
            let a = ds.sample(n, &mut rng(42));
            let b = ds.sample(n, &mut rng(42));
            assert_eq!(
                a, b,
                "{name} with n = {n}: same seed must give the same points"
            );
        }
        let a = ds.sample(64, &mut rng(1));
        let c = ds.sample(64, &mut rng(2));
        assert_ne!(a, c, "{name}: different seeds should give different points");
    }
}

#[test]
fn unknown_toy_name_lists_the_known_ones() {
    let err = toy_dataset("9gaussians")
        .err()
        .expect("unknown name must fail");
    assert!(matches!(err, DataError::UnknownDataset { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("9gaussians"), "{msg}");
    for name in TOY_DATASETS {
        assert!(msg.contains(name), "{msg} should list {name}");
    }
}

/// E|c + σz| for |c| = r, z ~ N(0, I₂), by quadrature on a fine grid; also E|c + σz|².
fn rice_moments(r: f64, sigma: f64) -> (f64, f64) {
    let h = 0.01;
    let mut m1 = 0.0;
    let mut total = 0.0;
    let k = (8.0 / h) as i64;
    for i in -k..=k {
        let z1 = i as f64 * h;
        for j in -k..=k {
            let z2 = j as f64 * h;
            let w = (-(z1 * z1 + z2 * z2) / 2.0).exp() / (2.0 * PI) * h * h;
            let d = ((r + sigma * z1).powi(2) + (sigma * z2).powi(2)).sqrt();
            m1 += w * d;
            total += w;
        }
    }
    (m1 / total, r * r + 2.0 * sigma * sigma)
}

#[test]
fn eight_gaussians_moments_match_the_law() {
    let ds = GaussianMixture::eight_gaussians();
    let r = 4.0 / 1.414;
    let sigma = 0.5 / 1.414;
    assert_eq!(ds.n_components(), 8);
    for m in ds.mode_centres() {
        assert!(((m[0] * m[0] + m[1] * m[1]).sqrt() - r).abs() < 1e-12);
    }
    assert!(ds.stds().iter().all(|&s| (s - sigma).abs() < 1e-12));

    let n = 20_000;
    let x = ds.sample(n, &mut rng(7));
    // Each coordinate has variance r²/2 + σ² (centres average cos² = 1/2).
    let se = ((r * r / 2.0 + sigma * sigma) / n as f64).sqrt();
    for (i, m) in mean_of(&x, 2).iter().enumerate() {
        assert!(
            m.abs() < 5.0 * se,
            "coordinate {i} mean {m}, tolerance {}",
            5.0 * se
        );
    }
    let (expected, second) = rice_moments(r, sigma);
    let sd = (second - expected * expected).sqrt();
    let mean_dist = rows(&x, 2)
        .map(|p| f64::from(p[0]).hypot(f64::from(p[1])))
        .sum::<f64>()
        / n as f64;
    let tol = 5.0 * sd / (n as f64).sqrt();
    assert!(
        (mean_dist - expected).abs() < tol,
        "mean distance {mean_dist}, expected {expected} ± {tol}"
    );
    // The law's mean distance is close to, but above, the centre radius 4/1.414.
    assert!((expected - r).abs() < 0.05);
}

#[test]
fn twenty_five_gaussians_points_lie_near_a_centre() {
    let ds = GaussianMixture::twenty_five_gaussians();
    let sigma = 0.1 / 2.828;
    assert_eq!(ds.n_components(), 25);
    let n = 5000;
    let x = ds.sample(n, &mut rng(3));
    let mut hits = [0usize; 25];
    let mut beyond_4 = 0;
    let mut sum_sq = 0.0;
    for p in rows(&x, 2) {
        let (k, d2) = ds
            .mode_centres()
            .iter()
            .map(|c| (f64::from(p[0]) - c[0]).powi(2) + (f64::from(p[1]) - c[1]).powi(2))
            .enumerate()
            .fold(
                (0, f64::INFINITY),
                |best, (k, d2)| if d2 < best.1 { (k, d2) } else { best },
            );
        hits[k] += 1;
        let d = d2.sqrt();
        assert!(
            d < 6.0 * sigma,
            "point {p:?} is {d} from the nearest centre"
        );
        if d > 4.0 * sigma {
            beyond_4 += 1;
        }
        sum_sq += d2 / (sigma * sigma);
    }
    // P(|z| > 4) = e^-8 ≈ 3.4e-4 in 2-D: about 1.7 of 5000 points.
    assert!(beyond_4 <= 10, "{beyond_4} points beyond 4σ");
    // |x - c|²/σ² is χ²₂: mean 2, standard deviation 2.
    let mean_sq = sum_sq / n as f64;
    assert!(
        (mean_sq - 2.0).abs() < 5.0 * 2.0 / (n as f64).sqrt(),
        "{mean_sq}"
    );
    assert!(hits.iter().all(|&h| h > 100), "{hits:?}");
}

#[test]
fn eight_gaussians_log_density_integrates_to_one() {
    let ds = GaussianMixture::eight_gaussians();
    let h = 0.02f64;
    let k = (12.0 / h).round() as usize;
    let mut grid = Vec::with_capacity(2 * k * k);
    for i in 0..k {
        for j in 0..k {
            grid.push((-6.0 + (i as f64 + 0.5) * h) as f32);
            grid.push((-6.0 + (j as f64 + 0.5) * h) as f32);
        }
    }
    let logp = ds.log_density(&grid).expect("mixture density is known");
    assert_eq!(logp.len(), k * k);
    let integral: f64 = logp.iter().map(|l| l.exp()).sum::<f64>() * h * h;
    assert!((integral - 1.0).abs() < 1e-2, "integral {integral}");
}

#[test]
fn single_component_log_density_is_the_gaussian_closed_form() {
    let mu = [1.0, -2.0, 0.5];
    let s = 0.7f64;
    let ds = GaussianMixture::new("one", vec![mu.to_vec()], vec![s], vec![3.0]).expect("valid");
    assert_eq!(ds.dim(), 3);
    assert_eq!(ds.weights(), &[1.0]);
    let pts: Vec<f32> = vec![1.0, -2.0, 0.5, 0.0, 0.0, 0.0, 2.5, -1.25, 3.0];
    let logp = ds.log_density(&pts).expect("known");
    for (p, l) in rows(&pts, 3).zip(&logp) {
        let sq: f64 = p
            .iter()
            .zip(mu)
            .map(|(&a, b)| (f64::from(a) - b).powi(2))
            .sum();
        let expected = -1.5 * (2.0 * PI * s * s).ln() - sq / (2.0 * s * s);
        assert!(
            (l - expected).abs() < 1e-10 * expected.abs().max(1.0),
            "{l} vs {expected}"
        );
    }
    // A row length that is not a multiple of the dimension has no density.
    assert!(ds.log_density(&pts[..4]).is_none());
}

#[test]
fn two_component_log_density_is_log_sum_of_weighted_terms() {
    let ds = GaussianMixture::new(
        "two",
        vec![vec![-1.0], vec![2.0]],
        vec![0.5, 1.5],
        vec![1.0, 3.0],
    )
    .expect("valid");
    let normal =
        |x: f64, m: f64, s: f64| (-(x - m).powi(2) / (2.0 * s * s)).exp() / (s * (2.0 * PI).sqrt());
    for x in [-3.0f32, -1.0, 0.3, 2.0, 40.0] {
        let l = ds.log_density(&[x]).expect("known")[0];
        let xf = f64::from(x);
        let expected = (0.25 * normal(xf, -1.0, 0.5) + 0.75 * normal(xf, 2.0, 1.5)).ln();
        assert!(
            (l - expected).abs() < 1e-9 * expected.abs().max(1.0),
            "x = {x}: {l} vs {expected}"
        );
    }
    // Far in the tail the density underflows in f64, but log-sum-exp stays finite.
    let far = ds.log_density(&[1e4]).expect("known")[0];
    assert!(far.is_finite() && far < -1e7, "{far}");
    // Sampling follows the weights: P(x > 0.5) = 0.25·Φ(-3) + 0.75·Φ(1) ≈ 0.63135.
    let n = 20_000;
    let x = ds.sample(n, &mut rng(11));
    let right = x.iter().filter(|&&v| v > 0.5).count() as f64 / n as f64;
    let p = 0.25 * 0.001_349_9 + 0.75 * 0.841_344_7;
    let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
    assert!((right - p).abs() < tol, "{right} vs {p} ± {tol}");
}

#[test]
fn mixture_constructor_rejects_bad_parameters() {
    let bad = [
        GaussianMixture::new("a", vec![], vec![], vec![]),
        GaussianMixture::new("b", vec![vec![0.0]], vec![0.0], vec![1.0]),
        GaussianMixture::new("c", vec![vec![0.0]], vec![1.0, 1.0], vec![1.0]),
        GaussianMixture::new(
            "d",
            vec![vec![0.0], vec![0.0, 1.0]],
            vec![1.0; 2],
            vec![1.0; 2],
        ),
        GaussianMixture::new("e", vec![vec![f64::NAN]], vec![1.0], vec![1.0]),
        GaussianMixture::new("f", vec![vec![0.0]], vec![1.0], vec![-1.0]),
        GaussianMixture::new("g", vec![vec![0.0]], vec![1.0], vec![0.0]),
        GaussianMixture::new("h", vec![vec![]], vec![1.0], vec![1.0]),
        GaussianMixture::gmm(0, 4, 1.0, 0.1, 0),
        GaussianMixture::gmm(2, 0, 1.0, 0.1, 0),
        GaussianMixture::gmm(2, 4, f64::INFINITY, 0.1, 0),
        GaussianMixture::gmm(2, 4, 1.0, -0.1, 0),
    ];
    for (i, r) in bad.into_iter().enumerate() {
        match r {
            Err(DataError::InvalidParameter { .. }) => {}
            other => panic!("case {i}: expected InvalidParameter, got {other:?}"),
        }
    }
    let msg = GaussianMixture::gmm(0, 4, 1.0, 0.1, 0)
        .err()
        .map(|e| e.to_string());
    assert!(msg.as_deref().is_some_and(|m| m.contains("dim")), "{msg:?}");
}

#[test]
fn gmm_centres_lie_on_the_sphere_and_sample_mean_matches() {
    let (dim, k, scale, std) = (5, 6, 3.0, 0.2);
    let ds = GaussianMixture::gmm(dim, k, scale, std, 17).expect("valid");
    assert_eq!(ds.dim(), dim);
    assert_eq!(ds.n_components(), k);
    for c in ds.mode_centres() {
        let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - scale).abs() < 1e-9, "{norm}");
    }
    // Same seed, same centres; another seed, other centres.
    let again = GaussianMixture::gmm(dim, k, scale, std, 17).expect("valid");
    assert_eq!(ds.mode_centres(), again.mode_centres());
    let other = GaussianMixture::gmm(dim, k, scale, std, 18).expect("valid");
    assert_ne!(ds.mode_centres(), other.mode_centres());

    let n = 40_000;
    let x = ds.sample(n, &mut rng(5));
    assert_eq!(x.len(), n * dim);
    let sample_mean = mean_of(&x, dim);
    for d in 0..dim {
        let cs: Vec<f64> = ds.mode_centres().iter().map(|c| c[d]).collect();
        let cm = cs.iter().sum::<f64>() / k as f64;
        let cvar = cs.iter().map(|c| (c - cm).powi(2)).sum::<f64>() / k as f64;
        let se = ((cvar + std * std) / n as f64).sqrt();
        assert!(
            (sample_mean[d] - cm).abs() < 5.0 * se,
            "coordinate {d}: {} vs {cm} ± {}",
            sample_mean[d],
            5.0 * se
        );
    }
}

#[test]
fn checkerboard_points_lie_on_the_black_squares() {
    let x = Checkerboard.sample(10_000, &mut rng(9));
    let mut squares = std::collections::BTreeMap::new();
    for p in rows(&x, 2) {
        assert!(
            (-4.0..4.0).contains(&p[0]) && (-4.0..4.0).contains(&p[1]),
            "{p:?}"
        );
        // x₁ ∈ [-2, 2), x₂ = u − 2b + (⌊x₁⌋ mod 2): ⌊x₂⌋ ≡ ⌊x₁⌋ (mod 2); points are 2·(x₁, x₂).
        let a = (p[0] / 2.0).floor() as i32;
        let b = (p[1] / 2.0).floor() as i32;
        assert_eq!((a + b).rem_euclid(2), 0, "{p:?} is on a white square");
        *squares.entry((a, b)).or_insert(0usize) += 1;
    }
    // All 8 black squares are used, evenly.
    assert_eq!(squares.len(), 8, "{squares:?}");
    assert!(
        squares.values().all(|&c| (1000..1500).contains(&c)),
        "{squares:?}"
    );
}

#[test]
fn rings_put_a_quarter_of_the_points_on_each_ring() {
    let n = 401;
    let x = Rings.sample(n, &mut rng(4));
    let radii = [3.0, 2.25, 1.5, 0.75];
    let mut counts = [0usize; 4];
    for p in rows(&x, 2) {
        let r = f64::from(p[0]).hypot(f64::from(p[1]));
        let (k, dist) = radii.iter().map(|c| (r - c).abs()).enumerate().fold(
            (0, f64::INFINITY),
            |b, (k, d)| if d < b.1 { (k, d) } else { b },
        );
        assert!(dist < 0.4, "radius {r}");
        counts[k] += 1;
    }
    assert_eq!(counts, [100, 100, 100, 101]);
}

// ----------------------------------------------------------------------------------------
// Tables
// ----------------------------------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

fn load_err(path: &Path, drop_last: bool) -> DataError {
    match TabularDataset::from_csv(path, drop_last) {
        Ok(t) => panic!("{} should not load, got {t:?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn csv_with_and_without_header_load_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with = write(dir.path(), "with.csv", "x, y ,z\n1,2,3\n 4.5 ,-5,6e-1\n");
    let without = write(dir.path(), "without.csv", "1,2,3\n\n4.5,-5,0.6\n");
    let a = TabularDataset::from_csv(&with, false).expect("loads");
    let b = TabularDataset::from_csv(&without, false).expect("loads");
    assert_eq!(a.dim(), 3);
    assert_eq!(a.len(), 2);
    assert!(!a.is_empty());
    assert_eq!(a.points(), &[1.0, 2.0, 3.0, 4.5, -5.0, 0.6]);
    assert_eq!(a.points(), b.points());
    assert_eq!(a.name(), "with");
    assert_eq!(a.labels(), None);
    assert_eq!(a.row(1), Some(&[4.5f32, -5.0, 0.6][..]));
    assert_eq!(a.row(2), None);
}

#[test]
fn csv_header_detection_uses_the_first_line_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A first line of numbers is data, so a later word is an error, not a header.
    let p = write(dir.path(), "late_header.csv", "1,2\nx,y\n");
    let msg = load_err(&p, false).to_string();
    assert!(msg.contains("late_header.csv line 2, column 1"), "{msg}");
    assert!(msg.contains("\"x\""), "{msg}");
    // A single non-numeric cell makes the first line a header.
    let p = write(dir.path(), "partial.csv", "1,b\n3,4\n");
    let t = TabularDataset::from_csv(&p, false).expect("loads");
    assert_eq!(t.points(), &[3.0, 4.0]);
}

#[test]
fn csv_drop_last_column_and_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        dir.path(),
        "iris.csv",
        "a,b,species\n1,2,setosa\n3,4,virginica\n",
    );
    let t = TabularDataset::from_csv(&p, true).expect("loads");
    assert_eq!(t.dim(), 2);
    assert_eq!(t.points(), &[1.0, 2.0, 3.0, 4.0]);
    // Without dropping, the label column must be numeric.
    let msg = load_err(&p, false).to_string();
    assert!(msg.contains("iris.csv line 2, column 3"), "{msg}");

    let p = write(dir.path(), "lab.csv", "0.5,1\n-0.5,0\n2,1\n");
    let t = TabularDataset::from_csv_labelled(&p).expect("loads");
    assert_eq!(t.dim(), 1);
    assert_eq!(t.labels(), Some(&[1u32, 0, 1][..]));
    let ones = t.filter_labels(&[1]).expect("some rows");
    assert_eq!(ones.points(), &[0.5, 2.0]);
    assert!(matches!(
        t.filter_labels(&[7]),
        Err(DataError::NoRows { .. })
    ));

    let p = write(dir.path(), "badlab.csv", "0.5,1\n-0.5,-2\n");
    let err = TabularDataset::from_csv_labelled(&p).expect_err("bad label");
    assert!(
        matches!(
            err,
            DataError::BadLabel {
                line: 2,
                column: 2,
                ..
            }
        ),
        "{err:?}"
    );

    let p = write(dir.path(), "one_col.csv", "1\n2\n");
    assert!(matches!(
        load_err(&p, true),
        DataError::InvalidParameter { .. }
    ));
}

#[test]
fn bad_csv_files_name_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, &str)] = &[
        (
            "word.csv",
            "a,b\n1,2\n3,abc\n",
            "word.csv line 3, column 2: expected a finite number, found \"abc\"",
        ),
        (
            "nan.csv",
            "a,b\n1,2\n\n3,4\nNaN,1\n",
            "nan.csv line 5, column 1",
        ),
        ("inf.csv", "1,2\n3,inf\n", "inf.csv line 2, column 2"),
        (
            "neginf.csv",
            "1,2\n3,-infinity\n",
            "neginf.csv line 2, column 2",
        ),
        (
            "ragged.csv",
            "a,b\n1,2\n3,4,5\n",
            "ragged.csv line 3: row has 3 columns, expected 2",
        ),
        (
            "short.csv",
            "1,2,3\n4,5\n",
            "short.csv line 2: row has 2 columns, expected 3",
        ),
        ("header_only.csv", "a,b\n", "header_only.csv"),
        ("empty.csv", "", "empty.csv"),
    ];
    for (name, text, expected) in cases {
        let p = write(dir.path(), name, text);
        let err = load_err(&p, false);
        let msg = err.to_string();
        assert!(
            msg.contains(expected),
            "{name}: {msg:?} should contain {expected:?}"
        );
        match *name {
            "word.csv" => assert!(matches!(
                err,
                DataError::NotANumber {
                    line: 3,
                    column: 2,
                    ..
                }
            )),
            "nan.csv" => assert!(matches!(
                err,
                DataError::NotFinite {
                    line: 5,
                    column: 1,
                    ..
                }
            )),
            "inf.csv" | "neginf.csv" => {
                assert!(matches!(
                    err,
                    DataError::NotFinite {
                        line: 2,
                        column: 2,
                        ..
                    }
                ))
            }
            "ragged.csv" => assert!(matches!(
                err,
                DataError::RaggedRow {
                    line: 3,
                    found: 3,
                    expected: 2,
                    ..
                }
            )),
            "short.csv" => assert!(matches!(
                err,
                DataError::RaggedRow {
                    line: 2,
                    found: 2,
                    expected: 3,
                    ..
                }
            )),
            _ => assert!(matches!(err, DataError::NoRows { .. }), "{name}: {err:?}"),
        }
    }
    let missing = dir.path().join("missing.csv");
    let err = load_err(&missing, false);
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.csv"), "{err}");
}

#[test]
fn from_points_validates_and_samples_rows_of_the_table() {
    assert!(matches!(
        TabularDataset::from_points("t", 0, vec![1.0]),
        Err(DataError::InvalidParameter { .. })
    ));
    assert!(matches!(
        TabularDataset::from_points("t", 2, vec![1.0, 2.0, 3.0]),
        Err(DataError::InvalidParameter { .. })
    ));
    assert!(matches!(
        TabularDataset::from_points("t", 2, vec![]),
        Err(DataError::NoRows { .. })
    ));
    assert!(matches!(
        TabularDataset::from_points("t", 1, vec![f32::NAN]),
        Err(DataError::InvalidParameter { .. })
    ));
    let t =
        TabularDataset::from_points("t", 2, vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0]).expect("valid");
    assert!(matches!(
        t.clone().with_labels(vec![0]),
        Err(DataError::InvalidParameter { .. })
    ));
    assert_eq!(t.name(), "t");
    let x = t.sample(3000, &mut rng(8));
    assert_eq!(x.len(), 6000);
    let mut counts = [0usize; 3];
    for p in rows(&x, 2) {
        let i = (p[0] / 10.0) as usize;
        assert_eq!(p, t.row(i).expect("a row of the table"));
        counts[i] += 1;
    }
    assert!(
        counts.iter().all(|&c| (900..1100).contains(&c)),
        "{counts:?}"
    );
    assert_eq!(t.sample(5, &mut rng(1)), t.sample(5, &mut rng(1)));
}

#[test]
fn digits_are_complete_and_scaled() {
    let d = TabularDataset::digits().expect("embedded digits load");
    assert_eq!(d.name(), "digits");
    assert_eq!(d.len(), 1797);
    assert_eq!(d.dim(), 64);
    assert_eq!(d.points().len(), 1797 * 64);
    assert!(d.points().iter().all(|v| (-1.0..=1.0).contains(v)));
    // Both ends of the range occur (pixels 0 and 16).
    assert!(d.points().contains(&-1.0));
    assert!(d.points().contains(&1.0));
    // Pixels are integers 0..16 scaled as x/8 - 1.
    assert!(d.points().iter().all(|&v| ((v + 1.0) * 8.0).fract() == 0.0));
    let labels = d.labels().expect("digits have labels");
    assert_eq!(labels.len(), 1797);
    let mut counts = [0usize; 10];
    for &l in labels {
        assert!(l < 10, "label {l}");
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c > 150), "{counts:?}");
    // The first image of the file is a zero.
    assert_eq!(labels[0], 0);
    assert_eq!(d.row(0).map(|r| r[2]), Some(5.0 / 8.0 - 1.0));

    let some = TabularDataset::digits_with_labels(&[3, 8]).expect("some digits");
    assert_eq!(some.len(), counts[3] + counts[8]);
    assert!(some
        .labels()
        .is_some_and(|l| l.iter().all(|&v| v == 3 || v == 8)));
    let x = some.sample(10, &mut rng(0));
    assert_eq!(x.len(), 640);
    assert!(matches!(
        TabularDataset::digits_with_labels(&[10]),
        Err(DataError::NoRows { .. })
    ));
}
