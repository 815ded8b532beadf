//! Durable file writes: a file written whole goes to a temporary file beside it, is
//! fsynced, and is renamed into place (then the directory is fsynced), so that a reader,
//! a crash or a full disk never leaves half a file under the final name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The temporary file [`write_atomic`] writes before renaming it to `path`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync
/// of the directory. On error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    injected_fault(path).map_err(|e| Error::io(path, e))?;
    let temporary = temporary_path(path);
    let written = File::create(&temporary)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| Error::io(&temporary, e));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    if let Err(e) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(Error::io(path, e));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Fsyncs a directory so that a rename into it survives a power loss. Best effort: some
/// file systems refuse to open a directory for syncing, and the rename itself is atomic.
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// The environment variable of the write-fault hook: `DGYM_FAIL_WRITE=NAME:N` makes the
/// `N`-th write (1-based, counted per process) to a file whose name contains `NAME`
/// fail with "No space left on device", as a full disk would. For fault tests only:
/// every durable write of a run (checkpoints, `metrics.csv` rows, event records, the
/// files written whole) passes through [`injected_fault`].
pub const FAULT_HOOK: &str = "DGYM_FAIL_WRITE";

/// The write-fault hook ([`FAULT_HOOK`]): an error when this write to `path` is the one
/// chosen to fail, else `Ok`.
pub fn injected_fault(path: &Path) -> std::io::Result<()> {
    static HOOK: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let hook = HOOK.get_or_init(|| {
        let value = std::env::var(FAULT_HOOK).ok()?;
        let (name, n) = value.rsplit_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    });
    let Some((name, n)) = hook else {
        return Ok(());
    };
    let matches = path
        .file_name()
        .is_some_and(|f| f.to_string_lossy().contains(name.as_str()));
    if matches && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        return Err(std::io::Error::from_raw_os_error(28));
    }
    Ok(())
}
