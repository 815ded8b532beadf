//! Configuration machinery: TOML files parsed with serde (unknown keys rejected, every
//! field defaulted), `--set section.key=value` overrides, and rendering a resolved config
//! with each field's one-line doc.
//!
//! Concrete configs declare their sections with [`config_section!`](crate::config_section), which keeps each
//! field's default and doc comment next to its declaration and makes the docs available
//! at run time (for `dgym config`).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// A config section whose fields carry one-line docs at run time.
pub trait Documented {
    /// `(field, doc)` for every field, in declaration order.
    fn field_docs() -> Vec<(&'static str, String)>;
}

/// Declares a config section: a struct whose every field has a default and a doc comment,
/// deserialised with unknown keys rejected and missing keys defaulted.
///
/// ```
/// denoise_gym::config_section! {
///     /// Optimiser settings.
///     pub struct Example {
///         /// Learning rate.
///         pub lr: f64 = 1e-3,
///     }
/// }
/// assert_eq!(Example::default().lr, 1e-3);
/// ```
#[macro_export]
macro_rules! config_section {
    (
        $(#[doc = $section_doc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                pub $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[doc = $section_doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }
        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }
        impl $crate::config::Documented for $name {
            fn field_docs() -> Vec<(&'static str, String)> {
                vec![$(
                    (stringify!($field), {
                        let lines: &[&str] = &[$($doc),*];
                        lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")
                    }),
                )*]
            }
        }
    };
}

/// A section's name, doc and field docs, for [`render_documented`].
pub struct SectionDocs {
    /// The TOML table name.
    pub name: String,
    /// One line about the section.
    pub doc: String,
    /// `(field, doc)` pairs.
    pub fields: Vec<(&'static str, String)>,
}

/// The largest config file [`load`] reads: a shipped config is a few kB, and a parser
/// handed a 50 MB line holds about ten times that in memory.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads a config from `path` (or the defaults when `None`) and applies `overrides`
/// (`section.key=value`, the value in TOML syntax, bare words taken as strings).
/// Errors name the file with line and column, or the overridden key.
pub fn load<C: DeserializeOwned + Serialize + Default>(
    path: Option<&Path>,
    overrides: &[String],
) -> Result<C> {
    let config: C = match path {
        Some(path) => parse(&path.display().to_string(), &read_text(path)?)?,
        None => C::default(),
    };
    apply_overrides(config, overrides)
}

/// The text of a config file, refused when larger than [`MAX_CONFIG_BYTES`].
pub fn read_text(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(Error::config(
            path.display().to_string(),
            format!("{size} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Parses config text; errors name `file` with line and column.
pub fn parse<C: DeserializeOwned>(file: &str, text: &str) -> Result<C> {
    toml::from_str(text)
        .map_err(|e| Error::config(file, e.to_string().trim_end().replace('\n', "\n    ")))
}

/// Applies `section.key=value` overrides to a config.
pub fn apply_overrides<C: DeserializeOwned + Serialize>(
    config: C,
    overrides: &[String],
) -> Result<C> {
    if overrides.is_empty() {
        return Ok(config);
    }
    let mut value = toml::Value::try_from(&config)
        .map_err(|e| Error::InvalidArgument(format!("config does not serialise: {e}")))?;
    for assignment in overrides {
        let location = format!("--set {assignment}");
        let (key, raw) = assignment
            .split_once('=')
            .ok_or_else(|| Error::config(&location, "expected section.key=value"))?;
        let key = key.trim();
        let parsed = parse_value(raw.trim());
        let inserted = set_path(
            &mut value,
            &key.split('.').collect::<Vec<_>>(),
            parsed,
            &location,
        )?;
        let resolved = C::deserialize(value.clone()).map_err(|e| match &inserted {
            // The key was absent: an unset optional field, or a key the section lacks.
            Some(known) => Error::config(
                &location,
                format!("unknown key `{key}`; known here: {known}"),
            ),
            None => Error::config(&location, e.to_string()),
        })?;
        value =
            toml::Value::try_from(resolved).map_err(|e| Error::config(&location, e.to_string()))?;
    }
    C::deserialize(value).map_err(|e| Error::config("--set", e.to_string()))
}

/// Sets `parts` to `new`. A key its section lacks is inserted (optional fields that are
/// unset do not appear in the serialised config), and the keys the section does have
/// are returned so that the caller can report an unknown key should the result not
/// deserialise.
fn set_path(
    value: &mut toml::Value,
    parts: &[&str],
    new: toml::Value,
    location: &str,
) -> Result<Option<String>> {
    set_path_at(value, parts, 0, new, location)
}

fn set_path_at(
    value: &mut toml::Value,
    parts: &[&str],
    depth: usize,
    new: toml::Value,
    location: &str,
) -> Result<Option<String>> {
    let key = parts[..=depth].join(".");
    let table = value.as_table_mut().ok_or_else(|| {
        Error::config(
            location,
            format!("`{}` is not a section", parts[..depth].join(".")),
        )
    })?;
    let known = table.keys().cloned().collect::<Vec<_>>().join(", ");
    let is_leaf = depth + 1 == parts.len();
    if is_leaf && !table.contains_key(parts[depth]) {
        table.insert(parts[depth].to_string(), new);
        return Ok(Some(known));
    }
    let Some(entry) = table.get_mut(parts[depth]) else {
        return Err(Error::config(
            location,
            format!("unknown key `{key}`; known here: {known}"),
        ));
    };
    if depth + 1 < parts.len() {
        return set_path_at(entry, parts, depth + 1, new, location);
    }
    if entry.is_table() {
        return Err(Error::config(
            location,
            format!("`{key}` is a section, not a key"),
        ));
    }
    *entry = new;
    Ok(None)
}

fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Renders a resolved config as TOML with each section's and field's doc as a comment.
pub fn render_documented<C: Serialize>(config: &C, sections: &[SectionDocs]) -> Result<String> {
    let value = toml::Value::try_from(config)
        .map_err(|e| Error::InvalidArgument(format!("config does not serialise: {e}")))?;
    let mut out = String::new();
    for section in sections {
        let Some(table) = value.get(&section.name).and_then(|v| v.as_table()) else {
            continue;
        };
        out.push_str(&format!("# {}\n[{}]\n", section.doc, section.name));
        for (field, doc) in &section.fields {
            match table.get(*field) {
                Some(v) => out.push_str(&format!("# {doc}\n{field} = {v}\n")),
                // An optional key that is not set serialises to nothing; it is listed
                // commented out so that every key can be found here.
                None => out.push_str(&format!("# {doc}\n# {field} = (not set)\n")),
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// Serialises a config to TOML text.
pub fn to_toml<C: Serialize>(config: &C) -> Result<String> {
    toml::to_string_pretty(config)
        .map_err(|e| Error::InvalidArgument(format!("config does not serialise: {e}")))
}
