//! Property-based fuzzing (proptest, stable toolchain) of every reader of user input:
//! the config parser with `--set`, CSV data files, sweep files, `eval.json` files, and
//! checkpoints with random truncations and bit flips. Each property is "an error or the
//! right result, never a panic". Case counts keep the whole file near a minute in CI;
//! `PROPTEST_CASES` raises them for a longer hunt, and a failing case is saved under
//! `proptest-regressions/` to be replayed first on every later run.

use std::path::{Path, PathBuf};

use denoise_gym::checkpoint::Checkpoint;
use denoise_gym_envs::TabularDataset;
use denoise_gym_experiments::builtin;
use denoise_gym_experiments::commands::compare::compare_runs;
use denoise_gym_experiments::commands::sweep::load_plan;
use denoise_gym_experiments::commands::sweep::plan::config_keys;
use denoise_gym_experiments::config::TrainConfig;
use proptest::prelude::*;

fn config_text() -> &'static str {
    include_str!("../configs/gcd-8gaussians.toml")
}

/// Values a careless or hostile user types after `key=`.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("9223372036854775807".to_string()),
        Just("18446744073709551615".to_string()),
        Just("1e308".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        "[a-z_\\.\"\\[\\]{}=,0-9 -]{0,24}",
    ]
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(10_000))]

    /// Any `--set key=value` on a shipped config: parsed and validated, or an error that
    /// names the override or the key; never a panic, and never accepted with a value
    /// the validation rules refuse (checked on the result by validating it again).
    #[test]
    fn set_overrides_never_panic(
        key_index in 0usize..400,
        garbage_key in "[a-z_\\.]{1,20}",
        value in hostile_value(),
        use_known in any::<bool>(),
    ) {
        let keys = config_keys(&builtin::catalog().unwrap());
        let key = if use_known { keys[key_index % keys.len()].clone() } else { garbage_key };
        let set = format!("{key}={value}");
        let catalog = builtin::catalog().unwrap();
        match TrainConfig::from_toml_str("fuzz.toml", config_text(), std::slice::from_ref(&set), &catalog) {
            Ok(config) => prop_assert!(config.validate_with("again", &catalog).is_ok()),
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(!message.is_empty());
            }
        }
    }

    /// Random TOML-ish text as a whole config file.
    #[test]
    fn config_files_never_panic(lines in proptest::collection::vec("[a-z_\\[\\]\\.=\" 0-9-]{0,40}", 0..12)) {
        let text = lines.join("\n");
        let _ = TrainConfig::from_toml_str("fuzz.toml", &text, &[], &builtin::catalog().unwrap());
    }
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

proptest! {
    #![proptest_config(cases(4_000))]

    /// CSV data files: random cells, ragged rows, headers, non-UTF-8 bytes.
    #[test]
    fn csv_data_files_never_panic(
        rows in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![
                "-?[0-9]{0,4}(\\.[0-9]{0,3})?",
                Just("nan".to_string()),
                Just("inf".to_string()),
                "[a-z\"]{0,3}",
            ], 0..5),
            0..8,
        ),
        raw in proptest::collection::vec(any::<u8>(), 0..64),
        use_raw in any::<bool>(),
        drop_last in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = if use_raw {
            raw
        } else {
            rows.iter().map(|r| r.join(",")).collect::<Vec<_>>().join("\n").into_bytes()
        };
        let path = write_temp(dir.path(), "data.csv", &bytes);
        if let Ok(data) = TabularDataset::from_csv(&path, drop_last) {
            use denoise_gym_envs::Dataset;
            prop_assert!(data.dim() >= 1);
        }
    }

    /// Sweep files: random keys, tables and values.
    #[test]
    fn sweep_files_never_panic(
        lines in proptest::collection::vec(prop_oneof![
            "[a-z_\\.\"]{0,12} = [\\[\\]0-9a-z\", .]{0,20}",
            Just("[grid]".to_string()),
            Just("[zip]".to_string()),
            Just("[set]".to_string()),
            Just("[plot]".to_string()),
            Just("seeds = [0, 1]".to_string()),
            Just("base = \"base.toml\"".to_string()),
            Just("\"policy.n_steps\" = [2, 4]".to_string()),
            Just("\"finetune.init_from\" = [\"@x=1\"]".to_string()),
        ], 0..10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        write_temp(dir.path(), "base.toml", config_text().as_bytes());
        let path = write_temp(dir.path(), "sweep.toml", lines.join("\n").as_bytes());
        let _ = load_plan(&path, &builtin::catalog().unwrap());
    }

    /// `eval.json` files of any shape, read by `dgym compare`.
    #[test]
    fn eval_json_files_never_panic(
        text in prop_oneof![
            "[\\[\\]{}\":,0-9a-z .-]{0,60}",
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("{\"swd\": \"x\"}".to_string()),
            Just("{\"swd\": 1e999}".to_string()),
        ],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        write_temp(&run, "eval.json", text.as_bytes());
        if let Ok((markdown, _)) = compare_runs(&[run]) {
            prop_assert!(markdown.contains('|'));
        }
    }
}

fn a_checkpoint() -> Vec<u8> {
    use denoise_gym::nn::{Activation, Mlp};
    let dev = dfdx::tensor::Cpu::default();
    let mlp = Mlp::new(
        &dev,
        3,
        8,
        2,
        2,
        Activation::Silu,
        &mut denoise_gym::rng::seeded(3, 0),
    );
    let mut c = Checkpoint::new();
    c.put_model("net", &mlp);
    c.metadata.insert("iteration".into(), "7".into());
    c.metadata.insert("rng".into(), "{\"seed\": [1, 2]}".into());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    c.save(&path).unwrap();
    std::fs::read(&path).unwrap()
}

proptest! {
    #![proptest_config(cases(20_000))]

    /// A checkpoint cut short or with flipped bits loads as exactly the checkpoint that was
    /// written, or is an error: never different numbers, never a panic.
    #[test]
    fn damaged_checkpoints_are_errors_or_the_original(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let good = a_checkpoint();
        let mut bytes = good.clone();
        for (at, bit) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        let dir = tempfile::tempdir().unwrap();
        let original = write_temp(dir.path(), "good.safetensors", &good);
        let damaged = write_temp(dir.path(), "bad.safetensors", &bytes);
        if let Ok(loaded) = Checkpoint::load(&damaged) {
            prop_assert_eq!(loaded, Checkpoint::load(&original).unwrap());
        }
    }
}

/// Cases found by hand or by earlier hunts, replayed as plain tests.
#[test]
fn regression_cases_give_clear_errors() {
    let long_key = format!("{}=1", "a".repeat(10_000_000));
    let nested = format!("policy.hidden={}", "[".repeat(5_000));
    for set in [
        "policy.hidden=9223372036854775807",
        "pretrain.batch_size=1000000000",
        "eval.n_samples=9223372036854775807",
        "policy.n_steps=9223372036854775807",
        "agent.grad_clip=nan",
        "agent.clip_advantages=-inf",
        "agent.velocity_scale_value=inf",
        long_key.as_str(),
        nested.as_str(),
    ] {
        let err = TrainConfig::from_toml_str(
            "fuzz.toml",
            config_text(),
            &[set.to_string()],
            &builtin::catalog().unwrap(),
        )
        .err()
        .unwrap_or_else(|| panic!("{} accepted", &set[..set.len().min(60)]));
        let message = format!("{err:#}");
        assert!(message.len() < 2_000, "an error of {} bytes", message.len());
    }
    let ddaebm = include_str!("../configs/ddaebm-25gaussians.toml");
    for set in [
        "ddaebm.hidden=9223372036854775807",
        "ddaebm.batch_size=1000000000000",
    ] {
        let err = TrainConfig::from_toml_str(
            "fuzz.toml",
            ddaebm,
            &[set.to_string()],
            &builtin::catalog().unwrap(),
        );
        assert!(
            format!("{:#}", err.unwrap_err()).contains("memory"),
            "{set}"
        );
    }
}
