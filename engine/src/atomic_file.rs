//! Atomic, confined output files. Every file cellm writes (a converted model, a report, app
//! settings and chats) goes to a temporary file in the same folder, is synced, renamed over the
//! target and the folder synced: a reader sees the old file or the new one, never a torn one,
//! even after a kill -9. Temporary files are recorded here so a SIGINT/SIGTERM handler (the
//! binary installs one) can remove them before the process exits.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files being written now, removed by [`remove_temp_files`].
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Records a temporary file that [`remove_temp_files`] must delete if the process is stopped.
pub fn register_temp(path: &Path) {
    if let Ok(mut t) = TEMPS.lock() {
        t.push(path.to_path_buf());
    }
}

/// Forgets a temporary file (renamed into place or removed).
pub fn unregister_temp(path: &Path) {
    if let Ok(mut t) = TEMPS.lock()
        && let Some(i) = t.iter().position(|p| p == path)
    {
        t.swap_remove(i);
    }
}

/// Removes every registered temporary file; for a signal handler thread before it exits.
pub fn remove_temp_files() {
    if let Ok(mut t) = TEMPS.lock() {
        for p in t.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `<name>.tmp-<pid>-<n>` next to `path`.
pub fn temp_path_for(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

/// Syncs the folder holding `path`, making a rename into it durable; best effort (not every
/// platform can open a folder).
pub fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is a folder, not a file",
            path.display()
        )));
    }
    let tmp = temp_path_for(path);
    register_temp(&tmp);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    unregister_temp(&tmp);
    result?;
    sync_parent_dir(path);
    Ok(())
}

/// Refuses an output path that names one of `inputs` (after resolving symlinks and `..`):
/// writing a report over the model it describes must not be one typo away.
pub fn check_not_input(output: &Path, inputs: &[&Path]) -> Result<(), String> {
    let Ok(out) = output.canonicalize() else {
        return Ok(()); // a new file cannot be an existing input
    };
    for input in inputs {
        if input.canonicalize().is_ok_and(|i| i == out) {
            return Err(format!(
                "refusing to write {}: it is an input of this command",
                output.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(check_not_input(&p, &[&p]).is_err());
        assert!(check_not_input(&dir.path().join("new"), &[&p]).is_ok());
        assert!(write_atomic(dir.path(), b"x").is_err());
    }
}
