//! Keys that moved: configs, `--set` overrides, sweep files, sweep plans and run
//! directories written before the one-section-per-component layout still load. An old key
//! is renamed to its new place with a warning that names both; an old key beside its new
//! one is an error, since the two could disagree.

use std::collections::BTreeSet;
use std::sync::Mutex;

use denoise_gym::Error;

/// `(old key, new key)`: PPO's settings moved from `[agent]` to `[ppo]`, the baseline's
/// choice to `[finetune]` beside the agent's and the reward's, and the value baseline's
/// network to `[value_baseline]`.
pub const RENAMED_KEYS: &[(&str, &str)] = &[
    ("agent.ppo_clip", "ppo.clip"),
    ("agent.ppo_epochs", "ppo.epochs"),
    ("agent.ppo_minibatch_size", "ppo.minibatch_size"),
    ("agent.ppo_target_kl", "ppo.target_kl"),
    ("agent.baseline", "finetune.baseline"),
    ("agent.value_hidden", "value_baseline.hidden"),
    ("agent.value_depth", "value_baseline.depth"),
    (
        "agent.value_time_embed_dim",
        "value_baseline.time_embed_dim",
    ),
    ("agent.value_lr", "value_baseline.lr"),
    ("agent.value_steps", "value_baseline.steps"),
];

/// The new name of a dotted key that moved, `None` for a current key.
pub fn renamed(key: &str) -> Option<&'static str> {
    RENAMED_KEYS
        .iter()
        .find(|(old, _)| *old == key)
        .map(|(_, new)| *new)
}

/// Prints `warning: {where_}: key {old} is now {new}` on stderr, once per process for
/// each message (a run's config is read several times by one command).
pub fn warn_renamed(where_: &str, old: &str, new: &str) {
    static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let message = format!("{where_}: key {old} is now {new}; the old name still works");
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.insert(message.clone()) {
        eprintln!("warning: {message}");
    }
}

/// A `--set key=value` with a moved key rewritten to its new name (warning once).
pub fn migrate_override(assignment: &str) -> String {
    let Some((key, value)) = assignment.split_once('=') else {
        return assignment.to_string();
    };
    match renamed(key.trim()) {
        Some(new) => {
            warn_renamed(&format!("--set {assignment}"), key.trim(), new);
            format!("{new}={value}")
        }
        None => assignment.to_string(),
    }
}

/// Moves every old key of a parsed config to its new place, warning once per key;
/// `Ok(false)` when nothing moved. `file` labels the messages.
pub fn migrate_table(table: &mut toml::Table, file: &str) -> Result<bool, Error> {
    let mut moved = false;
    for (old, new) in RENAMED_KEYS {
        let (old_section, old_key) = old.split_once('.').unwrap_or(("", old));
        let Some(value) = table
            .get_mut(old_section)
            .and_then(toml::Value::as_table_mut)
            .and_then(|section| section.remove(old_key))
        else {
            continue;
        };
        let (new_section, new_key) = new.split_once('.').unwrap_or(("", new));
        let section = table
            .entry(new_section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section) = section.as_table_mut() else {
            return Err(Error::config(
                format!("{file}, key {new_section}"),
                "expected a table",
            ));
        };
        if section.contains_key(new_key) {
            return Err(Error::config(
                format!("{file}, key {old}"),
                format!("the old name of {new}, which is set too; keep {new} only"),
            ));
        }
        section.insert(new_key.to_string(), value);
        warn_renamed(file, old, new);
        moved = true;
    }
    Ok(moved)
}

/// Config text with old keys moved, or `None` when it has none (the text is then parsed
/// as it is, so that errors keep their line numbers). Text that does not parse is left to
/// the caller's parser to report.
pub fn migrate_text(text: &str, file: &str) -> Result<Option<String>, Error> {
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return Ok(None);
    };
    if !migrate_table(&mut table, file)? {
        return Ok(None);
    }
    toml::to_string(&table)
        .map(Some)
        .map_err(|e| Error::config(file, e.to_string()))
}
