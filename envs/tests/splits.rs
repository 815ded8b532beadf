//! Label columns by name or index, train/validation/test splits and the standardiser.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use denoise_gym_envs::data::{
    DataError, Dataset, LabelColumn, Splits, Standardizer, TabularDataset,
};
use serde::Deserialize;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    path
}

fn load(path: &Path, label: LabelColumn) -> (TabularDataset, Vec<String>) {
    match TabularDataset::from_csv_with_label_column(path, &label) {
        Ok(x) => x,
        Err(e) => panic!("{} with {label:?} should load: {e}", path.display()),
    }
}

fn load_err(path: &Path, label: LabelColumn) -> DataError {
    match TabularDataset::from_csv_with_label_column(path, &label) {
        Ok(t) => panic!(
            "{} with {label:?} should not load, got {t:?}",
            path.display()
        ),
        Err(e) => e,
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ----------------------------------------------------------------------------------------
// Label columns
// ----------------------------------------------------------------------------------------

const IRIS: &str = "a, species ,b\n1,setosa,2\n3,virginica,4\n5,setosa,6\n";

#[test]
fn label_column_by_name_is_removed_from_the_features() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "iris.csv", IRIS);
    let (t, classes) = load(&p, LabelColumn::Name("species".into()));
    assert_eq!(t.name(), "iris");
    assert_eq!(t.dim(), 2);
    assert_eq!(t.points(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(t.labels(), Some(&[0u32, 1, 0][..]));
    assert_eq!(classes, names(&["setosa", "virginica"]));
}

#[test]
fn label_column_by_positive_and_negative_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "iris.csv", IRIS);
    let by_name = load(&p, LabelColumn::Name("species".into()));
    let by_index = load(&p, LabelColumn::Index(1));
    let by_negative = load(&p, LabelColumn::Index(-2));
    for (t, classes) in [&by_index, &by_negative] {
        assert_eq!(t.points(), by_name.0.points());
        assert_eq!(t.labels(), by_name.0.labels());
        assert_eq!(classes, &by_name.1);
    }

    // First and last columns, without a header.
    let p = write(dir.path(), "first.csv", "2,0.5,-1\n0,1.5,7\n2,2.5,9\n");
    let (t, classes) = load(&p, LabelColumn::Index(0));
    assert_eq!(t.dim(), 2);
    assert_eq!(t.points(), &[0.5, -1.0, 1.5, 7.0, 2.5, 9.0]);
    assert_eq!(t.labels(), Some(&[2u32, 0, 2][..]));
    assert_eq!(classes, names(&["0", "2"]));
    let (last, classes) = load(&p, LabelColumn::Index(-1));
    assert_eq!(last.points(), &[2.0, 0.5, 0.0, 1.5, 2.0, 2.5]);
    // "-1" is not a non-negative integer, so the labels are strings.
    assert_eq!(classes, names(&["-1", "7", "9"]));
    assert_eq!(last.labels(), Some(&[0u32, 1, 2][..]));
    let (same_first, _) = load(&p, LabelColumn::Index(-3));
    assert_eq!(same_first.points(), t.points());
    assert_eq!(same_first.labels(), t.labels());
}

#[test]
fn string_labels_are_numbered_in_sorted_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        dir.path(),
        "s.csv",
        "x,y\n1,zeta\n2,alpha\n3,mid\n4,alpha\n5,zeta\n",
    );
    let (t, classes) = load(&p, LabelColumn::Name("y".into()));
    assert_eq!(classes, names(&["alpha", "mid", "zeta"]));
    assert_eq!(t.labels(), Some(&[2u32, 0, 1, 0, 2][..]));
    assert_eq!(t.points(), &[1.0, 2.0, 3.0, 4.0, 5.0]);

    // One non-integer makes every label a string, sorted as text.
    let p = write(dir.path(), "mixed.csv", "1,10\n2,9\n3,x\n4,-1\n");
    let (t, classes) = load(&p, LabelColumn::Index(-1));
    assert_eq!(classes, names(&["-1", "10", "9", "x"]));
    assert_eq!(t.labels(), Some(&[1u32, 2, 3, 0][..]));
}

#[test]
fn integer_labels_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        dir.path(),
        "ints.csv",
        "f,label\n0.5,7\n1.5,3\n2.5,7\n3.5,0\n4.5,3.0\n",
    );
    let (t, classes) = load(&p, LabelColumn::Name("label".into()));
    assert_eq!(t.labels(), Some(&[7u32, 3, 7, 0, 3][..]));
    assert_eq!(classes, names(&["0", "3", "7"]));
    assert_eq!(t.points(), &[0.5, 1.5, 2.5, 3.5, 4.5]);
}

#[test]
fn label_column_deserialises_untagged() {
    use serde::de::value::{Error, I64Deserializer, StrDeserializer};
    let index = LabelColumn::deserialize(I64Deserializer::<Error>::new(-1)).expect("integer");
    assert_eq!(index, LabelColumn::Index(-1));
    let name = LabelColumn::deserialize(StrDeserializer::<Error>::new("species")).expect("string");
    assert_eq!(name, LabelColumn::Name("species".into()));
}

#[test]
fn label_column_errors_name_the_file_and_what_was_expected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let iris = write(dir.path(), "iris.csv", IRIS);

    let err = load_err(&iris, LabelColumn::Name("class".into()));
    assert!(
        matches!(err, DataError::UnknownLabelColumn { line: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in ["iris.csv line 1", "\"class\"", "a, species, b"] {
        assert!(msg.contains(part), "{msg:?} should contain {part:?}");
    }

    let bare = write(dir.path(), "bare.csv", "1,2,0\n3,4,1\n");
    let err = load_err(&bare, LabelColumn::Name("species".into()));
    assert!(
        matches!(err, DataError::NoHeader { line: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in ["bare.csv line 1", "expected a header", "\"species\""] {
        assert!(msg.contains(part), "{msg:?} should contain {part:?}");
    }

    for index in [3, -4, i64::MAX, i64::MIN] {
        let err = load_err(&bare, LabelColumn::Index(index));
        assert!(
            matches!(err, DataError::LabelColumnOutOfRange { columns: 3, .. }),
            "{index}: {err:?}"
        );
        let msg = err.to_string();
        for part in ["bare.csv", &format!("index {index}"), "3 columns"] {
            assert!(msg.contains(part), "{msg:?} should contain {part:?}");
        }
    }

    let empty = write(dir.path(), "empty_label.csv", "x,y\n1,a\n2,\n");
    let err = load_err(&empty, LabelColumn::Name("y".into()));
    assert!(
        matches!(
            err,
            DataError::EmptyLabel {
                line: 3,
                column: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("empty_label.csv line 3, column 2"), "{msg}");
    assert!(msg.contains("expected a class label"), "{msg}");

    let only = write(dir.path(), "only.csv", "species\nsetosa\nvirginica\n");
    for label in [LabelColumn::Name("species".into()), LabelColumn::Index(0)] {
        let err = load_err(&only, label.clone());
        assert!(
            matches!(err, DataError::OnlyLabelColumn { column: 1, .. }),
            "{label:?}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("only.csv line 1"), "{msg}");
        assert!(
            msg.contains("expected at least one feature column"),
            "{msg}"
        );
    }

    // Feature columns must still be numbers, reported at their place in the file.
    let word = write(dir.path(), "word.csv", "x,y,z\n1,a,2\n3,b,oops\n");
    let err = load_err(&word, LabelColumn::Name("y".into()));
    assert!(
        matches!(
            err,
            DataError::NotANumber {
                line: 3,
                column: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("word.csv line 3, column 3"),
        "{err}"
    );

    let ragged = write(dir.path(), "ragged.csv", "x,y\n1,a\n2,b,3\n");
    let err = load_err(&ragged, LabelColumn::Index(1));
    assert!(
        matches!(err, DataError::RaggedRow { line: 3, .. }),
        "{err:?}"
    );

    let header_only = write(dir.path(), "header_only.csv", "x,y\n");
    let err = load_err(&header_only, LabelColumn::Name("y".into()));
    assert!(matches!(err, DataError::NoRows { .. }), "{err:?}");
}

// ----------------------------------------------------------------------------------------
// Splits
// ----------------------------------------------------------------------------------------

/// Rows `[i, -i]` with the given class sizes: class `c` of `sizes` has label `labels[c]`.
fn labelled(sizes: &[(u32, usize)]) -> TabularDataset {
    let mut points = Vec::new();
    let mut labels = Vec::new();
    // Interleave the classes so that a class's rows are not contiguous.
    let mut left: Vec<(u32, usize)> = sizes.to_vec();
    let mut i = 0.0f32;
    while left.iter().any(|&(_, n)| n > 0) {
        for (label, n) in &mut left {
            if *n > 0 {
                points.extend_from_slice(&[i, -i]);
                labels.push(*label);
                *n -= 1;
                i += 1.0;
            }
        }
    }
    TabularDataset::from_points("t", 2, points)
        .and_then(|t| t.with_labels(labels))
        .expect("valid table")
}

fn class_counts(t: Option<&TabularDataset>) -> BTreeMap<u32, usize> {
    let mut counts = BTreeMap::new();
    if let Some(labels) = t.and_then(|t| t.labels()) {
        for &l in labels {
            *counts.entry(l).or_insert(0) += 1;
        }
    }
    counts
}

/// Every row of a table with its label, as sortable bits.
fn row_multiset(t: &TabularDataset) -> Vec<(Vec<u32>, Option<u32>)> {
    let mut rows: Vec<_> = (0..t.len())
        .map(|i| {
            let row = t.row(i).expect("row").iter().map(|v| v.to_bits()).collect();
            (row, t.labels().map(|l| l[i]))
        })
        .collect();
    rows.sort();
    rows
}

fn parts(s: &Splits) -> Vec<&TabularDataset> {
    std::iter::once(&s.train)
        .chain(s.validation.as_ref())
        .chain(s.test.as_ref())
        .collect()
}

#[test]
fn stratified_split_sizes_are_the_rounded_counts_per_class() {
    let t = labelled(&[(5, 1), (0, 10), (2, 3), (1, 7)]);
    let s = t.split(0.2, 0.3, 1).expect("valid split");
    // n = 10: test round(3) = 3, validation round(2) = 2; n = 7: 2 and round(1.4) = 1;
    // n = 3: round(0.9) = 1 and round(0.6) = 1; n = 1: 0 and 0.
    let expect = |v: &[(u32, usize)]| v.iter().copied().collect::<BTreeMap<_, _>>();
    assert_eq!(
        class_counts(s.test.as_ref()),
        expect(&[(0, 3), (1, 2), (2, 1)])
    );
    assert_eq!(
        class_counts(s.validation.as_ref()),
        expect(&[(0, 2), (1, 1), (2, 1)])
    );
    assert_eq!(
        class_counts(Some(&s.train)),
        expect(&[(0, 5), (1, 4), (2, 1), (5, 1)])
    );
    assert_eq!(s.train.name(), "t/train");
    assert_eq!(
        s.validation.as_ref().map(|v| v.name()),
        Some("t/validation")
    );
    assert_eq!(s.test.as_ref().map(|v| v.name()), Some("t/test"));
}

#[test]
fn splits_are_disjoint_cover_the_table_and_keep_row_order() {
    let t = labelled(&[(0, 13), (1, 8), (2, 21)]);
    let s = t.split(0.25, 0.15, 9).expect("valid split");
    let mut all: Vec<_> = parts(&s).into_iter().flat_map(row_multiset).collect();
    all.sort();
    assert_eq!(all, row_multiset(&t), "the splits must partition the rows");
    for part in parts(&s) {
        assert_eq!(part.dim(), 2);
        // Rows are [i, -i] in table order, so the first coordinate must increase.
        let firsts: Vec<f32> = (0..part.len())
            .map(|i| part.row(i).expect("row")[0])
            .collect();
        assert!(
            firsts.windows(2).all(|w| w[0] < w[1]),
            "{}: {firsts:?}",
            part.name()
        );
        // Labels travel with their rows.
        for (i, &x) in firsts.iter().enumerate() {
            let original = t.labels().expect("labels")[x as usize];
            assert_eq!(part.labels().map(|l| l[i]), Some(original));
        }
    }
}

#[test]
fn unlabelled_split_uses_all_rows_and_zero_fraction_gives_none() {
    let points: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let t = TabularDataset::from_points("u", 1, points).expect("valid");
    let s = t.split(0.25, 0.1, 3).expect("valid split");
    assert_eq!(s.test.as_ref().map(|t| t.len()), Some(2));
    assert_eq!(s.validation.as_ref().map(|t| t.len()), Some(5));
    assert_eq!(s.train.len(), 13);
    assert!(parts(&s).iter().all(|p| p.labels().is_none()));
    let mut all: Vec<_> = parts(&s).into_iter().flat_map(row_multiset).collect();
    all.sort();
    assert_eq!(all, row_multiset(&t));

    let s = t.split(0.0, 0.5, 3).expect("valid split");
    assert!(s.validation.is_none());
    assert_eq!(s.test.as_ref().map(|t| t.len()), Some(10));
    let s = t.split(0.0, 0.0, 3).expect("valid split");
    assert!(s.validation.is_none() && s.test.is_none());
    assert_eq!(s.train.points(), t.points());
}

#[test]
fn split_depends_only_on_the_seed() {
    let t = labelled(&[(0, 30), (1, 25)]);
    let a = t.split(0.2, 0.2, 42).expect("valid");
    let b = t.split(0.2, 0.2, 42).expect("valid");
    for (x, y) in parts(&a).into_iter().zip(parts(&b)) {
        assert_eq!(x.points(), y.points());
        assert_eq!(x.labels(), y.labels());
    }
    let c = t.split(0.2, 0.2, 43).expect("valid");
    assert_ne!(a.train.points(), c.train.points());
    assert_ne!(
        a.test.as_ref().map(|t| t.points()),
        c.test.as_ref().map(|t| t.points())
    );
    // Same sizes either way.
    assert_eq!(a.train.len(), c.train.len());
}

#[test]
fn digits_split_is_stratified() {
    let d = TabularDataset::digits().expect("digits");
    let s = d.split(0.2, 0.2, 0).expect("valid split");
    let total = class_counts(Some(&d));
    assert_eq!(total.len(), 10);
    let train = class_counts(Some(&s.train));
    let validation = class_counts(s.validation.as_ref());
    let test = class_counts(s.test.as_ref());
    for (label, &n) in &total {
        let r = (n as f64 * 0.2).round() as usize;
        assert_eq!(test.get(label), Some(&r), "test, class {label}");
        assert_eq!(validation.get(label), Some(&r), "validation, class {label}");
        assert_eq!(train.get(label), Some(&(n - 2 * r)), "train, class {label}");
    }
    assert_eq!(
        s.train.len() + s.validation.map_or(0, |t| t.len()) + s.test.map_or(0, |t| t.len()),
        1797
    );
}

#[test]
fn bad_fractions_are_rejected_by_name() {
    let t = labelled(&[(0, 10)]);
    let cases: &[(f64, f64, &str)] = &[
        (f64::NAN, 0.1, "data.validation_fraction"),
        (-0.1, 0.1, "data.validation_fraction"),
        (f64::INFINITY, 0.1, "data.validation_fraction"),
        (0.1, f64::NAN, "data.test_fraction"),
        (0.1, -0.5, "data.test_fraction"),
        (0.5, 0.5, "data.validation_fraction + data.test_fraction"),
        (0.0, 1.0, "data.test_fraction"),
        (0.7, 0.6, "data.test_fraction"),
    ];
    for &(v, te, name) in cases {
        let err = t.split(v, te, 0).expect_err("bad fractions");
        assert!(matches!(err, DataError::InvalidParameter { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(name),
            "({v}, {te}): {msg:?} should name {name}"
        );
        assert!(msg.contains("expected"), "{msg}");
    }
}

#[test]
fn empty_splits_are_errors_naming_the_split_and_sizes() {
    let t = TabularDataset::from_points("three", 1, vec![1.0, 2.0, 3.0]).expect("valid");
    // round(3 · 0.1) = 0 test rows.
    let err = t.split(0.0, 0.1, 0).expect_err("empty test split");
    assert!(
        matches!(err, DataError::EmptySplit { split: "test", .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        "\"three\"",
        "3 rows",
        "test split",
        "train 3, validation 0, test 0",
    ] {
        assert!(msg.contains(part), "{msg:?} should contain {part:?}");
    }
    let err = t.split(0.1, 0.0, 0).expect_err("empty validation split");
    assert!(
        matches!(
            err,
            DataError::EmptySplit {
                split: "validation",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("validation split"), "{err}");

    // n = 2: round(2 · 0.5) = 1 test row, round(2 · 0.25) = round(0.5) = 1 validation row.
    let two = TabularDataset::from_points("two", 1, vec![1.0, 2.0]).expect("valid");
    let err = two.split(0.25, 0.5, 0).expect_err("empty train split");
    assert!(
        matches!(err, DataError::EmptySplit { split: "train", .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("train split"), "{msg}");
    assert!(msg.contains("train 0, validation 1, test 1"), "{msg}");
}

#[test]
fn filter_labels_and_map_points() {
    let t = labelled(&[(0, 3), (1, 2), (2, 2)]);
    let some = t.filter_labels(&[2, 0]).expect("some rows");
    // The kept rows are exactly the rows of classes 0 and 2, in the table's order.
    let labels = t.labels().expect("labels");
    let expected: Vec<f32> = (0..t.len())
        .filter(|&i| labels[i] != 1)
        .flat_map(|i| t.row(i).expect("row").to_vec())
        .collect();
    assert_eq!(some.points(), expected.as_slice());
    assert!(some
        .labels()
        .is_some_and(|l| l.len() == 5 && l.iter().all(|&v| v == 0 || v == 2)));
    assert!(matches!(
        t.filter_labels(&[9]),
        Err(DataError::NoRows { .. })
    ));

    let doubled = t
        .map_points(|row| {
            row[0] *= 2.0;
            row.swap(0, 1);
        })
        .expect("finite");
    assert_eq!(doubled.len(), t.len());
    assert_eq!(doubled.labels(), t.labels());
    assert_eq!(doubled.name(), t.name());
    for i in 0..t.len() {
        let (a, b) = (t.row(i).expect("row"), doubled.row(i).expect("row"));
        assert_eq!(b, &[a[1], 2.0 * a[0]]);
    }
    assert!(matches!(
        t.map_points(|row| row[1] = f32::NAN),
        Err(DataError::InvalidParameter { .. })
    ));
}

// ----------------------------------------------------------------------------------------
// Standardiser
// ----------------------------------------------------------------------------------------

fn column_stats(t: &TabularDataset) -> Vec<(f64, f64)> {
    let n = t.len() as f64;
    (0..t.dim())
        .map(|j| {
            let col: Vec<f64> = (0..t.len())
                .map(|i| f64::from(t.row(i).expect("row")[j]))
                .collect();
            let m = col.iter().sum::<f64>() / n;
            let v = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
            (m, v.sqrt())
        })
        .collect()
}

#[test]
fn standardiser_round_trip_returns_the_points() {
    let d = TabularDataset::digits().expect("digits");
    let s = d.split(0.0, 0.2, 5).expect("split");
    let z = Standardizer::fit(&s.train, 0.0).expect("fit");
    assert_eq!(z.dim(), 64);
    let test = s.test.expect("test split");
    let mut points = test.points().to_vec();
    z.apply(&mut points).expect("apply");
    assert_ne!(points, test.points());
    z.invert(&mut points).expect("invert");
    for (a, b) in points.iter().zip(test.points()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn fitted_split_has_zero_mean_and_unit_std_and_constant_columns_are_zero() {
    let d = TabularDataset::digits().expect("digits");
    let s = d.split(0.2, 0.2, 11).expect("split");
    let z = Standardizer::fit(&s.train, 0.0).expect("fit");
    // Digits have always-blank border pixels, column 0 among them.
    assert!(z.constant_columns.contains(&0), "{:?}", z.constant_columns);
    assert!(z.constant_columns.windows(2).all(|w| w[0] < w[1]));
    let raw = column_stats(&s.train);
    for (j, &(_, std)) in raw.iter().enumerate() {
        assert_eq!(
            z.constant_columns.contains(&j),
            std == 0.0,
            "column {j} (std {std})"
        );
    }
    let out = z.apply_table(&s.train).expect("apply");
    assert_eq!(out.labels(), s.train.labels());
    assert_eq!(out.name(), s.train.name());
    for (j, &(m, sd)) in column_stats(&out).iter().enumerate() {
        if z.constant_columns.contains(&j) {
            assert!(
                (0..out.len()).all(|i| out.row(i).expect("row")[j] == 0.0),
                "constant column {j} must be exactly 0"
            );
            assert_eq!(z.scale[j], 1.0);
        } else {
            assert!(m.abs() < 1e-5, "column {j} mean {m}");
            assert!((sd - 1.0).abs() < 1e-4, "column {j} std {sd}");
        }
    }
    // A constant column keeps the raw offset of any other value.
    let j = z.constant_columns[0];
    let mut row: Vec<f32> = vec![0.0; 64];
    row[j] = (z.mean[j] + 0.75) as f32;
    z.apply(&mut row).expect("apply");
    assert!((row[j] - 0.75).abs() < 1e-6, "{}", row[j]);
}

#[test]
fn min_std_raises_small_scales_only() {
    // Column 0: std 0.01; column 1: std 2; column 2: constant 1000.5.
    let points = vec![
        0.99, -2.0, 1000.5, //
        1.01, 2.0, 1000.5, //
        0.99, -2.0, 1000.5, //
        1.01, 2.0, 1000.5,
    ];
    let t = TabularDataset::from_points("small", 3, points).expect("valid");
    let loose = Standardizer::fit(&t, 0.0).expect("fit");
    assert!((loose.scale[0] - 0.01).abs() < 1e-6, "{:?}", loose.scale);
    assert!((loose.scale[1] - 2.0).abs() < 1e-12, "{:?}", loose.scale);
    assert_eq!(loose.constant_columns, vec![2]);
    assert_eq!(loose.mean[2], 1000.5);

    let floored = Standardizer::fit(&t, 0.1).expect("fit");
    assert_eq!(floored.scale[0], 0.1);
    assert!((floored.scale[1] - 2.0).abs() < 1e-12);
    assert_eq!(floored.scale[2], 1.0);
    assert_eq!(floored.constant_columns, vec![2]);
    assert_eq!(floored.min_std, 0.1);
    let out = floored.apply_table(&t).expect("apply");
    assert!((out.row(1).expect("row")[0] - 0.1).abs() < 1e-4);

    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        let err = Standardizer::fit(&t, bad).expect_err("bad min_std");
        assert!(matches!(err, DataError::InvalidParameter { .. }), "{err:?}");
        assert!(err.to_string().contains("data.min_std"), "{err}");
    }
}

#[test]
fn wrong_widths_are_errors() {
    let t = TabularDataset::from_points("w", 2, vec![1.0, 2.0, 3.0, 5.0]).expect("valid");
    let z = Standardizer::fit(&t, 0.0).expect("fit");
    assert_eq!(z.dim(), 2);
    let mut odd = vec![0.0f32; 5];
    for err in [
        z.apply(&mut odd).expect_err("5 values"),
        z.invert(&mut odd).expect_err("5 values"),
    ] {
        assert!(
            matches!(err, DataError::RowWidth { dim: 2, len: 5 }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "expected rows of 2 values, got a buffer of 5"
        );
    }
    assert_eq!(
        odd,
        vec![0.0; 5],
        "a failed call must leave the buffer alone"
    );
    let mut empty: Vec<f32> = Vec::new();
    z.apply(&mut empty).expect("no rows is fine");

    let wide = TabularDataset::from_points("wide", 3, vec![1.0, 2.0, 3.0]).expect("valid");
    let err = z.apply_table(&wide).expect_err("3 columns");
    let msg = err.to_string();
    assert!(
        msg.contains("rows of 2 values") && msg.contains("\"wide\""),
        "{msg}"
    );

    // Unusable parameters (e.g. from a file) are errors, not panics.
    let broken = Standardizer {
        mean: vec![0.0, 0.0],
        scale: vec![1.0],
        constant_columns: vec![],
        min_std: 0.0,
    };
    assert!(matches!(
        broken.apply(&mut [0.0, 0.0]),
        Err(DataError::InvalidParameter { .. })
    ));
    let none = Standardizer {
        mean: vec![],
        scale: vec![],
        constant_columns: vec![],
        min_std: 0.0,
    };
    assert!(matches!(
        none.apply(&mut [0.0]),
        Err(DataError::RowWidth { dim: 0, len: 1 })
    ));
}
