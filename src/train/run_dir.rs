//! The files of a run directory: `config.toml`, `run.json`, TensorBoard event files,
//! `metrics.csv`, `checkpoints/{last,step_NNNNNNN}.safetensors`, and `summary.json`,
//! written last: its presence means the run finished.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The directory.
    pub root: PathBuf,
}

impl RunDir {
    /// Wraps an existing or future run directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `config.toml`, the resolved config as run.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `run.json`: command lines, versions, seed, device, start times.
    pub fn run_json(&self) -> PathBuf {
        self.root.join("run.json")
    }
    /// `metrics.csv`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }
    /// `summary.json`.
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `checkpoints/last.safetensors`.
    pub fn last_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("last.safetensors")
    }
    /// `checkpoints/step_NNNNNNN.safetensors`.
    pub fn numbered_checkpoint(&self, step: u64) -> PathBuf {
        self.checkpoints()
            .join(format!("step_{step:07}.safetensors"))
    }

    /// Checks that the directory does not exist or is empty, as a new run needs.
    pub fn check_vacant(&self) -> Result<()> {
        let dir = &self.root;
        let busy = dir.exists()
            && std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .next()
                .is_some();
        if busy {
            return Err(Error::InvalidArgument(format!(
                "{} exists and is not empty: choose another --out, or continue it with --resume {}",
                dir.display(),
                dir.display()
            )));
        }
        Ok(())
    }

    /// The text of `config.toml`, with an error that says this is no run directory when
    /// it is missing.
    pub fn read_config_text(&self) -> Result<String> {
        let path = self.config();
        if !path.exists() {
            return Err(Error::InvalidArgument(format!(
                "{} is not a run directory: it has no config.toml",
                self.root.display()
            )));
        }
        std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
    }

    /// The numbered checkpoints, newest first.
    pub fn numbered_checkpoints(&self) -> Vec<(u64, PathBuf)> {
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(self.checkpoints())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                let step = name
                    .strip_prefix("step_")?
                    .strip_suffix(".safetensors")?
                    .parse()
                    .ok()?;
                Some((step, entry.path()))
            })
            .collect();
        found.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
        found
    }

    /// Reads the newest verified checkpoint: `last.safetensors`, or when that is missing
    /// or damaged the newest intact `step_NNNNNNN.safetensors`, with a warning on stderr
    /// naming both. Returns the checkpoint and its file.
    pub fn load_latest_checkpoint(&self) -> Result<(Checkpoint, PathBuf)> {
        let last = self.last_checkpoint();
        let error = if last.exists() {
            match Checkpoint::load(&last) {
                Ok(checkpoint) => return Ok((checkpoint, last)),
                Err(error) => error,
            }
        } else {
            Error::checkpoint(
                &last,
                format!(
                    "run directory {} has no checkpoint ({} is missing)",
                    self.root.display(),
                    last.display()
                ),
            )
        };
        for (_, path) in self.numbered_checkpoints() {
            if let Ok(checkpoint) = Checkpoint::load(&path) {
                eprintln!(
                    "warning: {error}; using {}, the newest intact checkpoint",
                    path.display()
                );
                return Ok((checkpoint, path));
            }
        }
        Err(error)
    }

    /// Takes the run directory's lock (`run.lock`, an OS file lock, so a killed process
    /// releases it): one writer at a time. A second writer gets an error naming the
    /// holder's PID. Held until the returned guard is dropped.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.root.join("run.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(Error::InvalidArgument(format!(
                    "run directory {} is in use by another process (pid {}, {})",
                    self.root.display(),
                    if holder.is_empty() { "unknown" } else { holder },
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        use std::io::Write;
        file.set_len(0)
            .and_then(|_| write!(file, "{}", std::process::id()))
            .and_then(|_| file.flush())
            .map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { _file: file })
    }

    /// Writes `checkpoint` as `last.safetensors`, and first as `step_NNNNNNN.safetensors`
    /// when `numbered_step` is given.
    pub fn save_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        numbered_step: Option<u64>,
    ) -> Result<()> {
        if let Some(step) = numbered_step {
            checkpoint.save(&self.numbered_checkpoint(step))?;
        }
        checkpoint.save(&self.last_checkpoint())
    }

    /// Adds this invocation (command line, start time, the step it resumed from) to
    /// `run.json`, keeping the earlier ones.
    pub fn record_invocation(&self, seed: u64, resumed_from: Option<u64>) -> Result<()> {
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let path = self.run_json();
        let earlier = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("invocations").cloned())
                .and_then(|v| v.as_array().cloned())
                .ok_or(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(_) => Err(()),
        };
        let mut invocations = earlier.unwrap_or_else(|()| {
            // Kept beside the new file rather than overwritten: it is the run's history.
            let kept = self.root.join("run.json.damaged");
            let _ = std::fs::rename(&path, &kept);
            eprintln!(
                "warning: {} was unreadable; kept as {} and started anew",
                path.display(),
                kept.display()
            );
            Vec::new()
        });
        invocations.push(json!({
            "command_line": std::env::args().collect::<Vec<_>>(),
            "start_time_unix": started,
            "resumed_from_step": resumed_from,
        }));
        let value = json!({
            "crate_version": env!("CARGO_PKG_VERSION"),
            "git_commit": git_commit,
            "seed": seed,
            "device": if cfg!(feature = "cuda") { "cuda" } else { "cpu" },
            "build_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "invocations": invocations,
        });
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| Error::InvalidArgument(format!("run.json: {e}")))?;
        crate::io::write_atomic(&path, text.as_bytes())
    }
}

/// The lock of a run directory ([`RunDir::lock`]), released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Picks `runs/<stem>`, or `runs/<stem>-2`, ... when taken.
pub fn default_run_dir(config_path: Option<&Path>) -> PathBuf {
    let stem = config_path
        .and_then(|p| p.file_stem())
        .map_or_else(|| "run".to_string(), |s| s.to_string_lossy().to_string());
    let base = PathBuf::from("runs");
    let mut candidate = base.join(&stem);
    let mut k = 2;
    while candidate.exists() {
        candidate = base.join(format!("{stem}-{k}"));
        k += 1;
    }
    candidate
}
