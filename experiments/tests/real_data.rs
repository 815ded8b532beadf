//! Real-data runs end to end (issue 22): a labelled CSV split, standardised and selected on
//! its validation split; one-class anomaly detection on the digits with `dgym eval` and
//! `dgym anomaly`; and the errors of bad real-data input.

mod common;

use std::path::{Path, PathBuf};

use common::{dgym, stderr, stdout, train_args_for, TINY, TINY_FINETUNE};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn gcd_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/gcd-8gaussians.toml")
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Column means of a CSV of numbers with a header.
fn column_means(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|c| c.parse().unwrap()).collect())
        .collect();
    let n = rows.len() as f64;
    (0..rows[0].len())
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect()
}

/// A 30-D mixture of three correlated Gaussians far from the origin (column j has mean
/// 100 + j and scale 5 + j / 3), 300 rows, with a string label column "kind" in the middle.
fn write_mixture_csv(path: &Path) -> (Vec<f64>, Vec<f64>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let dim = 30;
    let names = ["alpha", "beta", "gamma"];
    let mut text = String::new();
    let mut header: Vec<String> = (0..dim).map(|j| format!("f{j}")).collect();
    header.insert(15, "kind".into());
    text.push_str(&header.join(","));
    text.push('\n');
    let offsets: Vec<f64> = (0..dim).map(|j| 100.0 + j as f64).collect();
    let scales: Vec<f64> = (0..dim).map(|j| 5.0 + j as f64 / 3.0).collect();
    for i in 0..300 {
        let class = i % 3;
        let shared: f64 = rng.sample(StandardNormal);
        let mut cells: Vec<String> = (0..dim)
            .map(|j| {
                let own: f64 = rng.sample(StandardNormal);
                let centre = (class as f64 - 1.0) * if j % 2 == 0 { 1.0 } else { -1.0 };
                let v = offsets[j] + scales[j] * (centre + 0.6 * shared + 0.8 * own * 0.5);
                format!("{v:.5}")
            })
            .collect();
        cells.insert(15, names[class].to_string());
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    (offsets, scales)
}

fn csv_sets(csv: &Path) -> Vec<String> {
    let mut sets: Vec<String> = TINY
        .iter()
        .chain(TINY_FINETUNE)
        .map(|s| s.to_string())
        .collect();
    sets.extend([
        "data.dataset=csv".to_string(),
        format!("data.path={}", csv.display()),
        "data.label_column=kind".into(),
        "data.validation_fraction=0.2".into(),
        "data.test_fraction=0.2".into(),
        "data.standardize=true".into(),
        "eval.select=best".into(),
        "eval.eval_every=10".into(),
        "eval.snapshot_samples=100".into(),
        // A tiny sampler's x̂_0 is clipped to 4 standard deviations, so that its
        // samples stay on the data's scale.
        "policy.clip_x0=4".into(),
    ]);
    sets
}

#[test]
fn a_labelled_30d_csv_is_split_standardised_selected_and_sampled_in_its_own_units() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mixture.csv");
    let (offsets, scales) = write_mixture_csv(&csv);
    let out = dir.path().join("run");
    let sets = csv_sets(&csv);
    let sets_ref: Vec<&str> = sets.iter().map(String::as_str).collect();
    let run = dgym(dir.path(), &train_args_for(&gcd_config(), &out, &sets_ref));
    assert!(run.status.success(), "{}", stderr(&run));

    // The split: 100 rows a class, 20 % each to test and validation, stratified.
    let stats = json(&out.join("data_stats.json"));
    assert_eq!(stats["dim"], 30);
    assert_eq!(stats["train_rows"], 180);
    assert_eq!(stats["validation_rows"], 60);
    assert_eq!(stats["test_rows"], 60);
    assert_eq!(
        stats["class_names"],
        serde_json::json!(["alpha", "beta", "gamma"])
    );
    let mean: Vec<f64> = serde_json::from_value(stats["standardizer"]["mean"].clone()).unwrap();
    for (j, m) in mean.iter().enumerate() {
        assert!(
            (m - offsets[j]).abs() < 3.0 * scales[j],
            "column {j}: mean {m}"
        );
    }

    // The selection ranks the start and every fine-tuning checkpoint on the validation
    // split and hands back the first lowest.
    let summary = json(&out.join("summary.json"));
    let selection = &summary["selection"];
    let candidates: Vec<(u64, f64)> =
        serde_json::from_value(selection["candidates"].clone()).unwrap();
    let steps: Vec<u64> = candidates.iter().map(|c| c.0).collect();
    assert_eq!(
        steps,
        vec![60, 70, 80, 90],
        "the start (step 60) and each checkpoint"
    );
    let lowest = candidates.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
    assert_eq!(selection["value"].as_f64().unwrap(), lowest);
    let first_lowest = candidates.iter().find(|c| c.1 == lowest).unwrap().0;
    assert_eq!(selection["step"].as_u64().unwrap(), first_lowest);
    let selected = json(&out.join("selected.json"));
    assert_eq!(selected["step"].as_u64().unwrap(), first_lowest);
    for key in ["eval", "eval_last", "eval_start"] {
        let e = &summary[key];
        assert!(e["mmd2_multiscale"].as_f64().unwrap().is_finite(), "{key}");
        assert_eq!(e["n_reference"], 60, "{key} is measured on the test split");
    }
    if first_lowest == 60 {
        assert_eq!(
            summary["eval"]["mmd2_multiscale"], summary["eval_start"]["mmd2_multiscale"],
            "the start handed back is evaluated as the start"
        );
    }

    // Held-out curves during fine-tuning.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    for column in [
        "eval/val_mmd2_multiscale",
        "ebm/energy_gap_heldout",
        "ebm/energy_validation",
    ] {
        assert!(header.contains(column), "{column} missing from {header}");
    }

    // Samples in the data's own units: the column means near the data's, not near 0.
    let samples = dir.path().join("samples.csv");
    let sample = dgym(
        dir.path(),
        &[
            "sample",
            out.to_str().unwrap(),
            "--n",
            "400",
            "--out",
            samples.to_str().unwrap(),
        ],
    );
    assert!(sample.status.success(), "{}", stderr(&sample));
    for (j, m) in column_means(&samples).iter().enumerate() {
        assert!(
            (m - offsets[j]).abs() < 4.0 * scales[j],
            "sample column {j}: mean {m}, data mean {}",
            offsets[j]
        );
    }

    // `dgym energy` takes points in the data's units and checks their width.
    let energies = dir.path().join("energies.csv");
    let ok = dgym(
        dir.path(),
        &[
            "energy",
            out.to_str().unwrap(),
            "--points",
            samples.to_str().unwrap(),
            "--out",
            energies.to_str().unwrap(),
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let narrow = dir.path().join("narrow.csv");
    std::fs::write(&narrow, "a,b\n1,2\n3,4\n").unwrap();
    let bad = dgym(
        dir.path(),
        &[
            "energy",
            out.to_str().unwrap(),
            "--points",
            narrow.to_str().unwrap(),
            "--out",
            energies.to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success());
    let message = stderr(&bad);
    assert!(
        message.contains("narrow.csv") && message.contains("2 columns") && message.contains("30"),
        "{message}"
    );
}

fn digits_sets(extra: &[&str]) -> Vec<String> {
    let mut sets: Vec<String> = TINY
        .iter()
        .chain(TINY_FINETUNE)
        .map(|s| s.to_string())
        .collect();
    sets.extend(
        [
            "data.dataset=digits",
            "data.validation_fraction=0.1",
            "data.test_fraction=0.2",
            "data.standardize=true",
            "data.min_std=0.1",
            "eval.anomaly_dsm_draws=2",
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string()),
    );
    sets
}

#[test]
fn one_class_digits_anomaly_detection_writes_every_method_per_outlier_class() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zero");
    let sets = digits_sets(&["data.inlier_classes=[0]", "eval.select=best"]);
    let sets_ref: Vec<&str> = sets.iter().map(String::as_str).collect();
    let run = dgym(dir.path(), &train_args_for(&gcd_config(), &out, &sets_ref));
    assert!(run.status.success(), "{}", stderr(&run));
    let eval = dgym(dir.path(), &["eval", out.to_str().unwrap()]);
    assert!(eval.status.success(), "{}", stderr(&eval));

    let selection = json(&out.join("selected.json"));
    assert!(selection["step"].as_u64().unwrap() >= 60, "{selection}");
    let report = json(&out.join("anomaly.json"));
    assert_eq!(report["protocol"], "one-class");
    // 178 zeros in the digits, 20 % of them in the test split.
    assert_eq!(report["n_inliers"], 36);
    let methods = report["methods"].as_object().unwrap();
    let names: Vec<&str> = methods.keys().map(String::as_str).collect();
    for m in ["ebm", "mahalanobis", "knn", "kde", "dsm"] {
        assert!(names.contains(&m), "{m} missing: {names:?}");
        let per_class = methods[m]["per_outlier_class"].as_object().unwrap();
        assert_eq!(per_class.len(), 9, "{m}: one entry per other digit");
        let auroc = methods[m]["auroc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auroc), "{m}: {auroc}");
    }
    // Zeros are the easiest digit to tell apart: the classical detectors find them.
    for m in ["mahalanobis", "knn", "kde"] {
        let auroc = methods[m]["auroc"].as_f64().unwrap();
        assert!(auroc > 0.9, "{m}: AUROC {auroc} on zeros against the rest");
    }
    assert!(out.join("roc.png").exists());
    assert!(out.join("digits.png").exists() && out.join("energy_extremes.png").exists());
    let flat = json(&out.join("eval.json"));
    for key in [
        "ebm_auroc",
        "mahalanobis_auroc",
        "knn_aupr",
        "kde_fpr95",
        "dsm_auroc",
    ] {
        assert!(flat[key].as_f64().is_some(), "eval.json lacks {key}");
    }
    assert_eq!(flat["mahalanobis_auroc"], methods["mahalanobis"]["auroc"]);

    // `dgym anomaly` prints the table and writes the same report again.
    let again = dgym(dir.path(), &["anomaly", out.to_str().unwrap()]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("| mahalanobis |"),
        "{}",
        stdout(&again)
    );
    assert_eq!(json(&out.join("anomaly.json")), report);

    // A CSV of the wrong width is refused, naming the file and both widths.
    let narrow = dir.path().join("narrow.csv");
    std::fs::write(&narrow, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
    let bad = dgym(
        dir.path(),
        &[
            "anomaly",
            out.to_str().unwrap(),
            "--data",
            narrow.to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success());
    let message = stderr(&bad);
    assert!(
        message.contains("narrow.csv") && message.contains("64"),
        "{message}"
    );
}

#[test]
fn the_split_is_the_same_for_every_seed_and_method() {
    let dir = tempfile::tempdir().unwrap();
    let mut stats = Vec::new();
    for (name, extra) in [
        ("a", vec!["run.seed=0"]),
        ("b", vec!["run.seed=5", "finetune.agent=dxdp"]),
    ] {
        let out = dir.path().join(name);
        let mut sets = digits_sets(&[]);
        sets.extend(extra.iter().map(|s| s.to_string()));
        sets.push("finetune.iterations=0".into());
        let sets_ref: Vec<&str> = sets.iter().map(String::as_str).collect();
        let run = dgym(dir.path(), &train_args_for(&gcd_config(), &out, &sets_ref));
        assert!(run.status.success(), "{}", stderr(&run));
        stats.push(json(&out.join("data_stats.json")));
    }
    assert_eq!(stats[0], stats[1]);
    let constant: Vec<usize> =
        serde_json::from_value(stats[0]["standardizer"]["constant_columns"].clone()).unwrap();
    assert!(
        constant.contains(&0),
        "digits' corner pixel is constant: {constant:?}"
    );
}

fn refused(dir: &Path, sets: &[String]) -> String {
    let out = dir.join("refused");
    let sets_ref: Vec<&str> = sets.iter().map(String::as_str).collect();
    let run = dgym(dir, &train_args_for(&gcd_config(), &out, &sets_ref));
    assert!(!run.status.success(), "accepted {sets:?}");
    assert!(!out.exists(), "a refused run leaves no directory");
    stderr(&run)
}

#[test]
fn bad_real_data_input_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("mixture.csv");
    write_mixture_csv(&csv);
    let with = |extra: &[&str]| -> Vec<String> {
        let mut sets = csv_sets(&csv);
        sets.retain(|s| !s.starts_with("data.label_column"));
        sets.extend(extra.iter().map(|s| s.to_string()));
        sets
    };
    let message = refused(dir.path(), &with(&["data.label_column=species"]));
    assert!(
        message.contains("mixture.csv") && message.contains("species") && message.contains("kind"),
        "{message}"
    );

    let holes = dir.path().join("holes.csv");
    std::fs::write(&holes, "x,y,label\n1,2,a\n3,4,\n5,6,b\n").unwrap();
    let mut sets = with(&["data.label_column=label"]);
    sets.retain(|s| !s.starts_with("data.path"));
    sets.push(format!("data.path={}", holes.display()));
    let message = refused(dir.path(), &sets);
    assert!(
        message.contains("holes.csv") && message.contains("line 3"),
        "{message}"
    );

    let all = digits_sets(&["data.inlier_classes=[0,1,2,3,4,5,6,7,8,9]"]);
    let message = refused(dir.path(), &all);
    assert!(message.contains("covers every class"), "{message}");

    let unknown = digits_sets(&["data.inlier_classes=[12]"]);
    assert!(refused(dir.path(), &unknown).contains("class 12"));

    let small = digits_sets(&["data.inlier_classes=[3]", "data.test_fraction=0.02"]);
    let message = refused(dir.path(), &small);
    assert!(message.contains("at least 5"), "{message}");

    let no_validation = digits_sets(&["eval.select=best", "data.validation_fraction=0"]);
    assert!(refused(dir.path(), &no_validation).contains("validation_fraction"));

    let plain = dir.path().join("plain.csv");
    let rows: String = (0..100).map(|i| format!("{i},{}\n", i % 7)).collect();
    std::fs::write(&plain, rows).unwrap();
    let mut unlabelled = with(&["data.inlier_classes=[1]"]);
    unlabelled.retain(|s| !s.starts_with("data.path"));
    unlabelled.push(format!("data.path={}", plain.display()));
    let message = refused(dir.path(), &unlabelled);
    assert!(message.contains("no labels"), "{message}");
}
