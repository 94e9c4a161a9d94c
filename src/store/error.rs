//! The store's one error type.
//!
//! Every variant carries the context needed to find the problem on disk (camera id, path,
//! start time). The variants for "no room" hand the segment back ([`StoreError::TooLarge`],
//! [`StoreError::Full`], [`StoreError::DiskFull`]) so the caller still owns its bytes on the
//! error path, for example to keep them in the in-memory pre-roll.

use std::io;
use std::path::PathBuf;

use super::{InitId, NewSegment};

/// Everything that can go wrong in the segment store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A camera id outside `[A-Za-z0-9_-]{1,32}`. Config validates ids first; the store checks
    /// again because the id becomes a directory name.
    #[error("invalid camera id {camera:?}: expected 1 to 32 characters of [A-Za-z0-9_-]")]
    InvalidCamera {
        /// The rejected id.
        camera: String,
    },

    /// Segment metadata the store cannot keep (empty payload, end not after start).
    #[error("camera {camera}: invalid segment starting at {start_ms}: {reason}")]
    InvalidSegment {
        /// Camera the segment was for.
        camera: String,
        /// Its start, UTC milliseconds.
        start_ms: i64,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An init segment the store cannot keep (empty).
    #[error("camera {camera}: invalid init segment: {reason}")]
    InvalidInit {
        /// Camera the init segment was for.
        camera: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The init segment named by a segment (or asked for by `read_init`) is not stored for this
    /// camera: call [`Store::put_init`](super::Store::put_init) first.
    #[error("camera {camera}: init segment {init} is not stored")]
    UnknownInit {
        /// Camera asked about.
        camera: String,
        /// The init id that was not found.
        init: InitId,
    },

    /// Two different init segments of one camera share the 64-bit id prefix of their sha256.
    /// Never seen in practice; reported rather than silently serving the wrong bytes.
    #[error("camera {camera}: init id {init} collides with different bytes in {path}")]
    InitCollision {
        /// Camera of the init segment.
        camera: String,
        /// The colliding id.
        init: InitId,
        /// The stored file holding the other bytes.
        path: PathBuf,
    },

    /// A segment with the same camera and start time is already stored (or being written).
    #[error("camera {camera}: a segment starting at {start_ms} is already stored")]
    Duplicate {
        /// Camera of the segment.
        camera: String,
        /// Its start, UTC milliseconds.
        start_ms: i64,
    },

    /// The segment alone is larger than the whole quota, so no eviction can make room. The
    /// segment is handed back.
    #[error(
        "camera {camera}: segment of {len} bytes starting at {start_ms} is larger than the \
         whole quota of {quota_bytes} bytes"
    )]
    TooLarge {
        /// Camera of the segment.
        camera: String,
        /// Its start, UTC milliseconds.
        start_ms: i64,
        /// Its size in bytes.
        len: u64,
        /// The configured quota.
        quota_bytes: u64,
        /// The refused segment, handed back.
        segment: Box<NewSegment>,
    },

    /// The quota is reached and the [`WhenFull`](super::WhenFull) policy (or segments still
    /// being written by other threads) leaves no room. The segment is handed back.
    #[error(
        "camera {camera}: no room for a segment of {len} bytes starting at {start_ms} \
         ({used_bytes} of {quota_bytes} bytes used)"
    )]
    Full {
        /// Camera of the segment.
        camera: String,
        /// Its start, UTC milliseconds.
        start_ms: i64,
        /// Its size in bytes.
        len: u64,
        /// Bytes in use (stored plus being written) when the segment was refused.
        used_bytes: u64,
        /// The configured quota.
        quota_bytes: u64,
        /// The refused segment, handed back.
        segment: Box<NewSegment>,
    },

    /// The filesystem is full (`ENOSPC` or `EDQUOT`) although the quota was not reached: the
    /// quota is larger than the disk, or something else filled it. The temp file was removed and
    /// the store stays usable. The segment (if the failed write was one) is handed back.
    #[error("camera {camera}: disk full writing {path}: {source}")]
    DiskFull {
        /// Camera being written.
        camera: String,
        /// The file that could not be written.
        path: PathBuf,
        /// The refused segment, handed back; `None` when an init segment was being written.
        segment: Option<Box<NewSegment>>,
        /// The underlying error.
        source: io::Error,
    },

    /// No segment of this camera starts at this time (evicted, removed or never stored).
    #[error("camera {camera}: no segment starting at {start_ms}")]
    NotFound {
        /// Camera asked about.
        camera: String,
        /// Start asked about, UTC milliseconds.
        start_ms: i64,
    },

    /// A stored file does not match its index entry (for example a different size).
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },

    /// Another process (or another `Store` in this one) holds the store's directory.
    #[error("store {path} is in use by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The index was written by a newer Porchlight: refuse it rather than move it aside.
    #[error("index {path} has format version {found}; this build reads version {supported}")]
    UnsupportedFormat {
        /// The index directory.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// A filesystem operation failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done ("create", "fsync", "rename", …).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The sled index failed.
    #[error("index: {context}")]
    Index {
        /// What was being done, with the key's camera and time where there is one.
        context: String,
        /// The underlying error.
        source: sled::Error,
    },
}

impl StoreError {
    /// Takes back the segment from an error that carries one ([`StoreError::TooLarge`],
    /// [`StoreError::Full`], [`StoreError::DiskFull`]).
    pub fn into_segment(self) -> Option<NewSegment> {
        match self {
            StoreError::TooLarge { segment, .. } | StoreError::Full { segment, .. } => {
                Some(*segment)
            }
            StoreError::DiskFull { segment, .. } => segment.map(|s| *s),
            _ => None,
        }
    }

    /// Whether the error means "no room" (quota or disk), as opposed to a fault.
    pub fn is_no_room(&self) -> bool {
        matches!(
            self,
            StoreError::TooLarge { .. } | StoreError::Full { .. } | StoreError::DiskFull { .. }
        )
    }
}

/// Shorthand for a sled error with context.
pub(super) fn index_err(context: impl Into<String>) -> impl FnOnce(sled::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Index { context, source }
}

/// Shorthand for an I/O error with the operation and path.
pub(super) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}
