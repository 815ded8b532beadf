//! Config machinery: unknown keys, types, overrides and docs.

use denoise_gym::config::{apply_overrides, load, render_documented, SectionDocs};
use denoise_gym::config_section;
use serde::{Deserialize, Serialize};

config_section! {
    /// A test section.
    pub struct Inner {
        /// Number of steps.
        pub n_steps: usize = 4,
        /// A learning rate.
        pub lr: f64 = 1e-3,
        /// A name.
        pub name: String = "x".to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Top {
    inner: Inner,
}

fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn missing_fields_take_defaults() {
    let (_d, path) = write("[inner]\nlr = 0.5\n");
    let c: Top = load(Some(&path), &[]).unwrap();
    assert_eq!(c.inner.lr, 0.5);
    assert_eq!(c.inner.n_steps, 4);
}

#[test]
fn unknown_keys_wrong_types_and_bad_syntax_name_the_file_and_key() {
    let (_d, path) = write("[inner]\nn_stepz = 3\n");
    let err = load::<Top>(Some(&path), &[]).unwrap_err().to_string();
    assert!(err.contains("c.toml") && err.contains("n_stepz"), "{err}");
    let (_d, path) = write("[inner]\nn_steps = \"four\"\n");
    let err = load::<Top>(Some(&path), &[]).unwrap_err().to_string();
    assert!(err.contains("c.toml") && err.contains("line 2"), "{err}");
    let (_d, path) = write("[inner\n");
    let err = load::<Top>(Some(&path), &[]).unwrap_err().to_string();
    assert!(err.contains("c.toml") && err.contains("line 1"), "{err}");
    let err = load::<Top>(Some(std::path::Path::new("/no/such.toml")), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("/no/such.toml"), "{err}");
}

#[test]
fn overrides_set_typed_values_and_reject_unknown_keys() {
    let set = |s: &[&str]| {
        apply_overrides(
            Top::default(),
            &s.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        )
    };
    let c = set(&["inner.n_steps=9", "inner.lr=1", "inner.name=abc"]).unwrap();
    assert_eq!(
        (c.inner.n_steps, c.inner.lr, c.inner.name.as_str()),
        (9, 1.0, "abc")
    );
    let err = set(&["inner.widht=3"]).unwrap_err().to_string();
    assert!(
        err.contains("inner.widht") && err.contains("n_steps"),
        "{err}"
    );
    let err = set(&["inner.n_steps=abc"]).unwrap_err().to_string();
    assert!(err.contains("--set inner.n_steps=abc"), "{err}");
    assert!(set(&["inner"]).is_err());
    assert!(set(&["inner=3"]).is_err());
}

#[test]
fn rendering_shows_every_field_with_its_doc() {
    use denoise_gym::config::Documented;
    let text = render_documented(
        &Top::default(),
        &[SectionDocs {
            name: "inner".to_string(),
            doc: "A test section.".to_string(),
            fields: Inner::field_docs(),
        }],
    )
    .unwrap();
    assert!(text.contains("# A test section.\n[inner]"));
    assert!(text.contains("# Number of steps.\nn_steps = 4"));
    assert!(text.contains("# A learning rate.\nlr = 0.001"));
    let parsed: Top = toml::from_str(&text).unwrap();
    assert_eq!(parsed, Top::default());
}
