//! What a config may name: every registered method, data set, agent, baseline and reward
//! with its one-line doc, and the config sections of the components a program adds. The
//! device-independent half of [`crate::registry::Registry`], filled by it, read by config
//! validation, `dgym config` and the sweeps.

use std::rc::Rc;

use denoise_gym::config::{Documented, SectionDocs};
use denoise_gym::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a component is, and so which config key chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComponentKind {
    /// `run.method`: what a run trains.
    Method,
    /// `data.dataset`: the expert data.
    Dataset,
    /// `finetune.agent`: the fine-tuning algorithm.
    Agent,
    /// `finetune.baseline`: a score-function agent's baseline.
    Baseline,
    /// `finetune.reward`: what the agent maximises.
    Reward,
}

impl ComponentKind {
    /// Every kind, in config order.
    pub const ALL: [ComponentKind; 5] = [
        ComponentKind::Method,
        ComponentKind::Dataset,
        ComponentKind::Agent,
        ComponentKind::Baseline,
        ComponentKind::Reward,
    ];

    /// The config key that names a component of this kind.
    pub fn key(self) -> &'static str {
        match self {
            ComponentKind::Method => "run.method",
            ComponentKind::Dataset => "data.dataset",
            ComponentKind::Agent => "finetune.agent",
            ComponentKind::Baseline => "finetune.baseline",
            ComponentKind::Reward => "finetune.reward",
        }
    }

    /// The word for it in messages.
    pub fn noun(self) -> &'static str {
        match self {
            ComponentKind::Method => "method",
            ComponentKind::Dataset => "data set",
            ComponentKind::Agent => "agent",
            ComponentKind::Baseline => "baseline",
            ComponentKind::Reward => "reward",
        }
    }
}

/// A config type a registered component reads from its own section: every field
/// defaulted and documented (declare it with `denoise_gym::config_section!`).
pub trait SectionConfig: Documented + Serialize + DeserializeOwned + Default + 'static {}

impl<T: Documented + Serialize + DeserializeOwned + Default + 'static> SectionConfig for T {}

/// A registered component's own config section.
#[derive(Clone)]
pub struct SectionSpec {
    /// The TOML table name (the component's name).
    pub name: String,
    /// One line about the section.
    pub doc: String,
    /// `(field, doc)` for every field.
    pub fields: Vec<(&'static str, String)>,
    /// The section with every default.
    pub defaults: toml::Value,
    /// Deserialises a section into its type and back, every default filled in; the
    /// error is serde's.
    resolve: Rc<dyn Fn(toml::Value) -> Result<toml::Value, String>>,
}

impl SectionSpec {
    /// The section `[name]` of type `C`.
    pub fn of<C: SectionConfig>(name: &str, doc: &str) -> Result<Self, Error> {
        let defaults = toml::Value::try_from(C::default()).map_err(|e| {
            Error::InvalidArgument(format!("section [{name}]: defaults do not serialise: {e}"))
        })?;
        Ok(Self {
            name: name.to_string(),
            doc: doc.to_string(),
            fields: C::field_docs(),
            defaults,
            resolve: Rc::new(|value| {
                let config = C::deserialize(value).map_err(|e| e.to_string())?;
                toml::Value::try_from(config).map_err(|e| e.to_string())
            }),
        })
    }

    /// A section's TOML with every default filled in, checked against the type: unknown
    /// keys and wrong types are errors.
    pub fn resolve(&self, value: &toml::Value) -> Result<toml::Value, String> {
        (self.resolve)(value.clone())
    }
}

/// One registered component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// What it is.
    pub kind: ComponentKind,
    /// The name a config gives.
    pub name: String,
    /// One line about it.
    pub doc: String,
    /// Its own section: `Some(name)` for the section of that name.
    pub section: Option<String>,
}

/// The built-in config sections, which no registered component may take.
pub const BUILTIN_SECTIONS: &[&str] = &[
    "run",
    "data",
    "policy",
    "pretrain",
    "finetune",
    "agent",
    "value_baseline",
    "ppo",
    "dxdp",
    "reward",
    "eval",
    "ddaebm",
];

/// Every registered component, and the sections of those that are not built in.
#[derive(Clone, Default)]
pub struct Catalog {
    components: Vec<ComponentInfo>,
    sections: Vec<SectionSpec>,
}

impl Catalog {
    /// Adds a component (with its section when it has one of its own); a name taken in
    /// its kind, or a section taken by another component or built in, is an error.
    pub fn add(
        &mut self,
        kind: ComponentKind,
        name: &str,
        doc: &str,
        section: Option<SectionSpec>,
    ) -> Result<(), Error> {
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Error::InvalidArgument(format!(
                "a {} is registered under the name {name:?}: a name is one word",
                kind.noun()
            )));
        }
        if self.find(kind, name).is_some() {
            return Err(Error::InvalidArgument(format!(
                "the {} {name:?} is registered twice",
                kind.noun()
            )));
        }
        let section_name = section.as_ref().map(|s| s.name.clone());
        if let Some(section) = section {
            if BUILTIN_SECTIONS.contains(&section.name.as_str())
                || self.sections.iter().any(|s| s.name == section.name)
            {
                return Err(Error::InvalidArgument(format!(
                    "the {} {name:?} asks for the config section [{}], which is taken; register it under another name",
                    kind.noun(),
                    section.name
                )));
            }
            self.sections.push(section);
        }
        self.components.push(ComponentInfo {
            kind,
            name: name.to_string(),
            doc: doc.to_string(),
            section: section_name,
        });
        Ok(())
    }

    /// Records that a built-in component reads the built-in section `section`.
    pub fn add_builtin(
        &mut self,
        kind: ComponentKind,
        name: &str,
        doc: &str,
        section: Option<&str>,
    ) -> Result<(), Error> {
        self.add(kind, name, doc, None)?;
        if let Some(last) = self.components.last_mut() {
            last.section = section.map(str::to_string);
        }
        Ok(())
    }

    /// The component `name` of `kind`.
    pub fn find(&self, kind: ComponentKind, name: &str) -> Option<&ComponentInfo> {
        self.components
            .iter()
            .find(|c| c.kind == kind && c.name == name)
    }

    /// The names of `kind`, in registration order.
    pub fn names(&self, kind: ComponentKind) -> Vec<&str> {
        self.components
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// Every component.
    pub fn components(&self) -> &[ComponentInfo] {
        &self.components
    }

    /// The sections of registered components that are not built in.
    pub fn sections(&self) -> &[SectionSpec] {
        &self.sections
    }

    /// The section `name` of a registered component.
    pub fn section(&self, name: &str) -> Option<&SectionSpec> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// An error unless `name` is registered as a `kind`; `at` names the file and key.
    pub fn check(&self, kind: ComponentKind, name: &str, at: &str) -> Result<(), Error> {
        if self.find(kind, name).is_some() {
            return Ok(());
        }
        Err(Error::config(
            at,
            format!(
                "unknown {} {name:?}; expected one of {}",
                kind.noun(),
                self.names(kind).join(", ")
            ),
        ))
    }

    /// The registered components' sections as `dgym config` documents them.
    pub fn section_docs(&self) -> Vec<SectionDocs> {
        self.sections
            .iter()
            .map(|s| SectionDocs {
                name: s.name.clone(),
                doc: s.doc.clone(),
                fields: s.fields.clone(),
            })
            .collect()
    }
}
