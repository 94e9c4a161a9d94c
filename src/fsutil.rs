//! Durable file writes, in one place.
//!
//! Leaf layer: imports nothing of this crate. [`write_atomic`] is the only way the box writes
//! a file that must be either complete or absent after a crash (segments, the API token, the
//! web password, identity files): write a temporary file beside the target (created new, with
//! its final mode, so a secret is never briefly world-readable), fsync it, rename it over the
//! target, fsync the directory. The rename is atomic on POSIX filesystems; the two fsyncs make
//! the content and the name durable, in that order (ext4 `data=ordered` alone does not promise
//! the directory entry).
//!
//! On failure the temporary file is removed. If only the final directory fsync fails, the
//! target is removed as well, so "error" always means "not written" (the store relies on it:
//! an error hands the segment back to its caller).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A failed step of a durable write: which step, on which path, why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {}: {source}", path.display())]
pub struct WriteError {
    /// `create`, `write`, `fsync`, `rename` or `fsync directory`.
    pub step: &'static str,
    /// The file or directory the step was about.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

fn step<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError {
        step,
        path: path.to_owned(),
        source,
    }
}

/// The temporary name used for `path`: `.{name}.tmp` in the same directory (hidden, so a
/// directory scan that looks for final names never mistakes it for one).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` with permissions `mode`, durably and atomically (see the module
/// doc). An existing file at `path` is replaced.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(step("create", &tmp))?;
        f.write_all(bytes).map_err(step("write", &tmp))?;
        // sync_all rather than sync_data: the size and the inode must be durable before the
        // name points at them.
        f.sync_all().map_err(step("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(step("rename", &tmp))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = sync_dir(dir) {
        // The rename may or may not be durable; take it back so the error is the truth.
        let _ = fs::remove_file(path);
        return Err(WriteError {
            step: "fsync directory",
            path: dir.to_owned(),
            source: e,
        });
    }
    Ok(())
}

/// fsyncs a directory, making creations, renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents with mode 0700 (directories holding secrets).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_with_the_mode_and_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"]);
    }

    #[test]
    fn a_stale_temp_file_from_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(temp_path(&p), b"half").unwrap();
        write_atomic(&p, b"whole", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"whole");
        assert!(!temp_path(&p).exists());
    }

    #[test]
    fn a_failed_write_names_the_step_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-dir").join("f");
        let e = write_atomic(&p, b"x", 0o600).unwrap_err();
        assert_eq!(e.step, "create");
        assert!(e.to_string().contains("missing-dir"), "{e}");
        assert!(!p.exists());
    }

    #[test]
    fn private_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        create_private_dir(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
