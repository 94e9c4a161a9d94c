//! Segment and init files: names, durable writes, directory fsyncs.
//!
//! The file name of a segment carries its whole index record, so the index can always be
//! rebuilt from a directory listing plus one `stat` per file:
//!
//! ```text
//! segments/<camera>/<start_ms>_<end_ms>_<init>_<video_frames>_<audio_frames>_<len>.m4s
//! segments/<camera>/init-<init>.mp4
//! segments/<camera>/.<final name>.tmp        (being written; removed on open)
//! ```
//!
//! Numbers are decimal in canonical form (no `+`, no leading zeros), `<init>` is 16 lowercase
//! hex digits. `_` separates fields so that times before 1970 (negative) still parse.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{InitId, SegmentMeta};

/// Extension of segment files.
const SEGMENT_EXT: &str = ".m4s";
/// Prefix and extension of init files.
const INIT_PREFIX: &str = "init-";
const INIT_EXT: &str = ".mp4";
/// Temp files are hidden and end in `.tmp`.
const TEMP_PREFIX: &str = ".";
const TEMP_EXT: &str = ".tmp";

/// Whether `camera` is a valid camera id: `[A-Za-z0-9_-]{1,32}`.
pub(super) fn is_valid_camera(camera: &str) -> bool {
    (1..=32).contains(&camera.len())
        && camera
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The file name of a segment.
pub(super) fn segment_file_name(meta: &SegmentMeta) -> String {
    format!(
        "{}_{}_{}_{}_{}_{}{SEGMENT_EXT}",
        meta.start_ms, meta.end_ms, meta.init, meta.video_frames, meta.audio_frames, meta.bytes
    )
}

/// Parses a segment file name back into its record. `None` unless the name is exactly what
/// [`segment_file_name`] writes for a valid segment (end after start, non-empty).
pub(super) fn parse_segment_file_name(camera: &str, name: &str) -> Option<SegmentMeta> {
    let stem = name.strip_suffix(SEGMENT_EXT)?;
    let mut fields = stem.split('_');
    let start_ms: i64 = fields.next()?.parse().ok()?;
    let end_ms: i64 = fields.next()?.parse().ok()?;
    let init: InitId = fields.next()?.parse().ok()?;
    let video_frames: u32 = fields.next()?.parse().ok()?;
    let audio_frames: u32 = fields.next()?.parse().ok()?;
    let len: u64 = fields.next()?.parse().ok()?;
    if fields.next().is_some() || end_ms <= start_ms || len == 0 {
        return None;
    }
    let meta = SegmentMeta {
        camera: camera.to_owned(),
        start_ms,
        end_ms,
        init,
        video_frames,
        audio_frames,
        bytes: len,
    };
    // Only the canonical spelling: "+5" or "05" would alias another file's key.
    (segment_file_name(&meta) == name).then_some(meta)
}

/// The file name of an init segment.
pub(super) fn init_file_name(init: InitId) -> String {
    format!("{INIT_PREFIX}{init}{INIT_EXT}")
}

/// Parses an init file name.
pub(super) fn parse_init_file_name(name: &str) -> Option<InitId> {
    name.strip_prefix(INIT_PREFIX)?
        .strip_suffix(INIT_EXT)?
        .parse()
        .ok()
}

/// Whether `name` is one of our temp files.
pub(super) fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_EXT)
}

/// The temp name under which `final_name` is written.
fn temp_name(final_name: &str) -> String {
    format!("{TEMP_PREFIX}{final_name}{TEMP_EXT}")
}

/// Whether an I/O error means the filesystem is out of space (or the user's disk quota).
pub(super) fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// A failed file operation: what, on which path, why.
#[derive(Debug)]
pub(super) struct FileError {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl FileError {
    fn new<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
        move |source| FileError {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes `bytes` to `dir/final_name` so that the file either exists complete and durable or
/// not at all ([`crate::fsutil::write_atomic`]: `dir/.final_name.tmp`, fsync, rename, fsync
/// `dir`). On error nothing is left behind. Returns the final path.
pub(super) fn write_durably(
    dir: &Path,
    final_name: &str,
    bytes: &[u8],
) -> Result<PathBuf, FileError> {
    let path = dir.join(final_name);
    debug_assert_eq!(
        crate::fsutil::temp_path(&path),
        dir.join(temp_name(final_name))
    );
    crate::fsutil::write_atomic(&path, bytes, 0o600).map_err(|e| FileError {
        op: e.step,
        path: e.path,
        source: e.source,
    })?;
    Ok(path)
}

/// fsyncs a directory, making creations, renames and removals in it durable.
pub(super) fn fsync_dir(dir: &Path) -> io::Result<()> {
    crate::fsutil::sync_dir(dir)
}

/// Creates `parent/name` if missing and makes its creation durable (fsync of `parent`).
pub(super) fn ensure_dir(parent: &Path, name: &str) -> Result<PathBuf, FileError> {
    let dir = parent.join(name);
    match fs::create_dir(&dir) {
        Ok(()) => {
            fsync_dir(parent).map_err(FileError::new("fsync", parent))?;
            Ok(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(FileError {
            op: "create directory",
            path: dir,
            source: e,
        }),
    }
}

/// Removes a file; a file already gone is not an error.
pub(super) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(start_ms: i64, end_ms: i64) -> SegmentMeta {
        SegmentMeta {
            camera: "cam".into(),
            start_ms,
            end_ms,
            init: InitId::of(b"init"),
            video_frames: 60,
            audio_frames: 94,
            bytes: 1234,
        }
    }

    #[test]
    fn segment_file_name_round_trips_including_negative_times() {
        for (start, end) in [
            (0, 1),
            (1_700_000_000_000, 1_700_000_002_000),
            (-5000, -3000),
            (-1, 1),
        ] {
            let m = meta(start, end);
            let name = segment_file_name(&m);
            assert_eq!(parse_segment_file_name("cam", &name), Some(m), "{name}");
        }
    }

    #[test]
    fn segment_file_name_rejects_non_canonical_and_garbage() {
        let init = InitId::of(b"init");
        for name in [
            format!("+5_10_{init}_1_0_10.m4s"),
            format!("05_10_{init}_1_0_10.m4s"),
            format!("5_10_{init}_1_0_10.mp4"),
            format!("5_10_{init}_1_0_0.m4s"),
            format!("10_10_{init}_1_0_10.m4s"),
            format!("10_5_{init}_1_0_10.m4s"),
            format!("5_10_{init}_1_0_10_7.m4s"),
            format!("5_10_{init}_1_0.m4s"),
            "5_10_ZZ_1_0_10.m4s".to_string(),
            format!("5_10_{}_1_0_10.m4s", init.to_string().to_uppercase()),
            ".m4s".to_string(),
            "".to_string(),
        ] {
            assert_eq!(parse_segment_file_name("cam", &name), None, "{name}");
        }
    }

    #[test]
    fn init_file_name_round_trips() {
        let id = InitId::of(b"ftyp moov");
        assert_eq!(parse_init_file_name(&init_file_name(id)), Some(id));
        assert_eq!(parse_init_file_name("init-xyz.mp4"), None);
        assert_eq!(parse_init_file_name(&format!("init-{id}.mp4.tmp")), None);
    }

    #[test]
    fn camera_ids_are_checked() {
        for ok in ["a", "front_door", "Cam-01", &"x".repeat(32)] {
            assert!(is_valid_camera(ok), "{ok}");
        }
        for bad in ["", "..", "a/b", "a b", "é", &"x".repeat(33), "a\0b"] {
            assert!(!is_valid_camera(bad), "{bad:?}");
        }
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name(&temp_name("1_2_x.m4s")));
        assert!(!is_temp_name("1_2_x.m4s"));
    }

    #[test]
    fn write_durably_leaves_only_the_final_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_durably(dir.path(), "a.m4s", b"hello").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["a.m4s"]);
    }

    #[test]
    fn write_durably_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_durably(&dir.path().join("missing"), "a.m4s", b"x").unwrap_err();
        assert_eq!(err.op, "create");
    }
}
