//! Segment store: GOP-aligned fMP4 segments in files, indexed in sled, kept under a byte quota
//! and a time retention, recovered after kill -9 or a damaged index.
//!
//! The API is synchronous (blocking file I/O and fsyncs); the daemon calls it from
//! `spawn_blocking` or a dedicated thread. [`Store`] is `Send + Sync`; share it as
//! `Arc<Store>`. Writers of different cameras run their file writes and fsyncs in parallel;
//! only the bookkeeping (reservation, eviction, index insert) is serialised.
//!
//! # Why files plus an index
//!
//! Measured before any code (sled 0.34.7, a ring of 256 KiB values): sled as a blob store grew
//! without bound and wrote 3.2x the video bytes. So video bytes never go into sled values: each
//! segment is one file, written once and never rewritten, and sled holds a ~60-byte record per
//! segment. sled's `cache_capacity` is set explicitly ([`StoreOptions::cache_capacity`]; its
//! default is 1 GiB). Other modules (outbox, audit, consent) open their own trees in the same
//! database through [`Store::db`].
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/LOCK                                   flock held while a Store is open
//! <dir>/index/                                 the sled database (all trees of the daemon)
//! <dir>/index.broken-<YYYYMMDDTHHMMSSZ>[-n]/   a damaged index, moved aside (kept for forensics)
//! <dir>/segments/<camera>/<start_ms>_<end_ms>_<init>_<video_frames>_<audio_frames>_<len>.m4s
//! <dir>/segments/<camera>/init-<init>.mp4      init segment (ftyp+moov), content-addressed
//! <dir>/segments/<camera>/.<name>.tmp          a file being written
//! ```
//!
//! A segment file is one `moof`+`mdat` fragment; its name carries its whole index record (see
//! `files.rs` for the exact grammar; `_` separates fields so negative times parse), so the index
//! can be rebuilt from a directory listing. `<init>` is [`InitId`]: the first 8 bytes of the
//! sha256 of the init segment, 16 lowercase hex digits. Camera ids are `[A-Za-z0-9_-]{1,32}`
//! (checked again here because they become directory names).
//!
//! # Records and key encoding
//!
//! Trees (details and byte layouts in `index.rs`):
//! - `store.segments`: key `camera ++ 0x00 ++ start_ms`, value end_ms, init, frame counts, size.
//!   `start_ms` is big-endian with the sign bit flipped, so the byte order of keys is (camera,
//!   start) order and a range scan returns a camera's segments by start time. Camera ids never
//!   contain `0x00`, so `camera ++ 0x00` is an exact per-camera prefix.
//! - `store.inits`: key `camera ++ 0x00 ++ init`, value len and the time it was last put.
//! - `store.counters`: bytes written in total and per UTC day (the flash-wear figure).
//! - `store.meta`: the format version. An index that exists but lacks it has lost data (sled
//!   opens some damaged files as an empty database) and is treated as damaged.
//!
//! # Invariants
//!
//! 1. Every index entry names a file whose name encodes the same record and whose size is the
//!    record's size, [`SegmentMeta::bytes`] (after [`Store::open`]; during an eviction the file goes first, so a
//!    reader may briefly get [`StoreError::NotFound`]).
//! 2. `used_bytes` (the sum of indexed segment sizes) plus the bytes being written is at most
//!    `quota_bytes`. The quota counts segment bytes only: init files (~1 KiB per camera
//!    parameter set) and the index are outside it, so the configured quota must leave headroom.
//! 3. A segment is acknowledged (`put_segment` returns `Ok`) only after its file and its index
//!    entry are durable. Nothing acknowledged is lost by kill -9, or by power loss on a disk
//!    that honours fsync, except by eviction or retention.
//! 4. A `.tmp` file exists only while it is being written.
//! 5. An init file is removed only when no segment refers to it and it is not the camera's most
//!    recently put init (so an init put just before its first segment is never removed under
//!    it). `put_segment` refuses an init the store does not hold.
//!
//! # Order of writes and fsyncs
//!
//! [`Store::put_segment`]:
//! 1. Under the lock: check the init and duplicates; evict oldest segments until the new one
//!    fits ([`WhenFull`]); reserve its bytes.
//! 2. Write `.<name>.tmp`, fsync it, rename it to `<name>`, fsync the camera directory (a new
//!    camera directory is itself fsynced into `segments/` when created).
//! 3. Under the lock: insert the index entry, add the write counters.
//! 4. `Db::flush` (sled fsyncs its log). Only now is the segment acknowledged.
//!
//! Killed before the rename: a temp file, removed on open. Between the rename and the flush: a
//! complete file without an entry, indexed on open from its name (the write was not
//! acknowledged, but the bytes are good). After the flush: durable.
//!
//! Eviction removes the file first and the entry second, and does not flush (the next put's
//! flush carries it). Killed in between: an entry without a file, dropped on open. After a
//! power loss that undoes an unlink: the file is indexed again and evicted again later.
//!
//! [`Store::put_init`] writes the init file the same way, then its index entry, then flushes.
//!
//! # Recovery (on every open)
//!
//! 1. Take `<dir>/LOCK` (`flock`); a second opener gets [`StoreError::Locked`].
//! 2. Scan `segments/` (never depends on the index): remove temp files; remove files whose
//!    name does not parse, whose size differs from the `len` in their name (truncated), and
//!    init files whose bytes do not hash to their id.
//! 3. Open sled, catching its panics. If it fails for a reason other than permissions, a full
//!    or read-only disk, or a newer format, or the format record is missing from an existing
//!    database, or reading the trees fails: move `index/` aside to `index.broken-<time>` and
//!    start a new one. Never a panic, never a crash loop: the rebuilt index comes from the
//!    files alone. (The other modules' trees start empty then; the moved-aside copy keeps them.)
//! 4. Reconcile: entries without a valid file are dropped; entries that disagree with their
//!    file's name are rewritten from it; files without an entry are indexed. Same for inits.
//! 5. Recompute used bytes and per-camera accounting from the result; flush.
//!
//! [`OpenReport`] says what each step did.
//!
//! # When full
//!
//! An explicit policy, [`WhenFull`], set with [`Store::set_when_full`].
//! [`WhenFull::EvictOldest`] (the default): before writing, delete the oldest segments (by
//! start time, across all cameras; ties go to the camera id that sorts first) until the new
//! segment fits. [`WhenFull::RejectNew`]: keep what is stored and refuse the new segment with
//! [`StoreError::Full`]. Either way a segment larger than the whole quota is refused with
//! [`StoreError::TooLarge`], and a full filesystem (quota larger than the free space) with
//! [`StoreError::DiskFull`]; all three hand the segment back. [`Store::enforce_retention`]
//! separately deletes segments that ended before `now - retention`.
//!
//! # Flash wear
//!
//! 4 Mbit/s is 0.5 MB/s, 43.2 GB per camera per day (15.8 TB per year). Quota and retention
//! bound what is *kept*, not what is *written*: the write volume is bitrate x time x cameras.
//! A 64 GB card rated for ~1,000 program/erase cycles takes ~64 TB, about four years of one
//! continuous 4 Mbit/s camera or one year of four. The levers are which stream is recorded
//! (a 512 kbit/s substream is 5.4 GB/day) and how many cameras record continuously;
//! [`Usage::written_today_bytes`] shows the figure in `status`.
//!
//! Write amplification (bytes reaching the disk per video byte), target at most 1.1: a 1 MB
//! segment (2 s GOP at 4 Mbit/s) costs its bytes once, plus file metadata (inode, directory
//! entry, bitmaps and their ext4 journal copies, roughly 16-24 KiB), plus one sled flush that
//! appends the ~60-byte record to sled's log (a few KiB). That is about 1.03. Nothing is
//! rewritten or compacted: eviction is an unlink, which touches metadata only. (sled as a blob
//! store measured 3.2.) Smaller segments raise the ratio, since the per-file cost is fixed:
//! a 128 KB substream segment is about 1.1-1.2, so substreams should put several GOPs into
//! one segment.
//!
//! A first measurement (ext4 on an x86_64 VM, release build, one camera, 200 puts): the
//! process's own writes (`write_bytes` in `/proc/self/io`: file data plus sled, without the
//! ext4 journal) were 1.008x the video bytes at 1 MB segments and 1.036x at 128 KiB; the
//! whole device, journal included, 1.03x at 1 MB in a quiet run. sled's own file, unlike with
//! video values, stays bounded: about 2.5 MB throughout 30,000 puts into a 64-segment ring.
//! Re-measure in the project's benchmark and on the target's SD card.

mod error;
mod files;
mod index;
mod recover;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use sha2::Digest;

pub use error::StoreError;
use error::{index_err, io_err};
use files::FileError;

/// sled cache size used when none is configured: small, because the index is small and the
/// appliance has little memory (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// How many segments one retention batch removes under the lock before letting writers in.
const RETENTION_BATCH: usize = 256;

/// Per-day write counters older than this many days are pruned by retention.
const COUNTER_DAYS_KEPT: i64 = 400;

/// What [`Store::put_segment`] does when the new segment does not fit under the quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segments (by start time, across all cameras) until it fits. A rolling
    /// buffer: the newest video always gets in.
    #[default]
    EvictOldest,
    /// Keep what is stored and refuse the new segment with [`StoreError::Full`].
    RejectNew,
}

/// How to open a [`Store`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most bytes of segment files kept (init files and the index are extra).
    pub quota_bytes: u64,
    /// Segments that ended longer ago than this are removed by [`Store::enforce_retention`].
    pub retention: Duration,
    /// sled's page cache size in bytes, e.g. [`DEFAULT_CACHE_CAPACITY`].
    pub cache_capacity: u64,
}

impl StoreOptions {
    /// Options with the given quota and retention and [`DEFAULT_CACHE_CAPACITY`].
    pub fn new(quota_bytes: u64, retention: Duration) -> Self {
        StoreOptions {
            quota_bytes,
            retention,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// Id of an init segment: the first 8 bytes of its sha256. Displayed as 16 lowercase hex
/// digits, which is also how it appears in file names and JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InitId([u8; 8]);

impl InitId {
    /// The id of these init segment bytes.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = sha2::Sha256::digest(bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        InitId(id)
    }

    /// The raw 8 bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for InitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for InitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InitId({self})")
    }
}

/// Error parsing an [`InitId`]: not 16 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("init id must be 16 lowercase hex digits")]
pub struct ParseInitIdError;

impl FromStr for InitId {
    type Err = ParseInitIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0u8; 8];
        if s.len() != 16 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ParseInitIdError);
        }
        hex::decode_to_slice(s, &mut id).map_err(|_| ParseInitIdError)?;
        Ok(InitId(id))
    }
}

impl serde::Serialize for InitId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for InitId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A segment to store: one GOP-aligned fMP4 fragment (`moof`+`mdat`).
#[derive(Clone, PartialEq, Eq)]
pub struct NewSegment {
    /// The init segment it decodes with, from [`Store::put_init`].
    pub init: InitId,
    /// Wall-clock start, UTC milliseconds.
    pub start_ms: i64,
    /// Wall-clock end (exclusive), UTC milliseconds; must be after `start_ms`.
    pub end_ms: i64,
    /// Video frames in the fragment.
    pub video_frames: u32,
    /// Audio frames (AAC access units) in the fragment.
    pub audio_frames: u32,
    /// The fragment bytes; must not be empty.
    pub bytes: Bytes,
}

impl fmt::Debug for NewSegment {
    // Not derived: a megabyte of video in an error log helps no one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSegment")
            .field("init", &self.init)
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("video_frames", &self.video_frames)
            .field("audio_frames", &self.audio_frames)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A stored segment's record. Segments cover `[start_ms, end_ms)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SegmentMeta {
    /// Camera id.
    pub camera: String,
    /// Wall-clock start, UTC milliseconds; unique per camera.
    pub start_ms: i64,
    /// Wall-clock end (exclusive), UTC milliseconds.
    pub end_ms: i64,
    /// The init segment it decodes with.
    pub init: InitId,
    /// Video frames in the fragment.
    pub video_frames: u32,
    /// Audio frames in the fragment.
    pub audio_frames: u32,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// What [`Store::open`] found and did. All zero and `None` after a clean shutdown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Temp files of interrupted writes, removed.
    pub temp_files_removed: u64,
    /// Files removed because their name did not parse, their size differed from the one in
    /// their name (truncated), or (init files) their bytes did not match their id.
    pub bad_files_removed: u64,
    /// Segment files without an index entry (written but not acknowledged), indexed.
    pub orphans_indexed: u64,
    /// Index entries whose file was missing or removed as bad, dropped.
    pub missing_dropped: u64,
    /// Index entries that disagreed with their file's name, rewritten from it.
    pub entries_fixed: u64,
    /// Index entries that could not be decoded, dropped.
    pub bad_entries_dropped: u64,
    /// Init files without an index entry, indexed.
    pub inits_indexed: u64,
    /// Init entries whose file was missing, dropped.
    pub inits_dropped: u64,
    /// Segments whose init file is missing (kept, but not playable without it).
    pub segments_without_init: u64,
    /// Where a damaged index was moved before being rebuilt from the files.
    pub index_moved_to: Option<PathBuf>,
    /// Why the index was considered damaged.
    pub index_problem: Option<String>,
    /// Segments stored after recovery.
    pub segments: u64,
    /// Segment bytes stored after recovery.
    pub used_bytes: u64,
}

impl OpenReport {
    /// Whether recovery had nothing to do (the last run shut down cleanly or was killed
    /// between operations).
    pub fn is_clean(&self) -> bool {
        self.temp_files_removed == 0
            && self.bad_files_removed == 0
            && self.orphans_indexed == 0
            && self.missing_dropped == 0
            && self.entries_fixed == 0
            && self.bad_entries_dropped == 0
            && self.inits_indexed == 0
            && self.inits_dropped == 0
            && self.index_moved_to.is_none()
    }
}

/// What one [`Store::enforce_retention`] pass removed (logged; the count of segments is
/// returned).
#[derive(Clone, Copy, Debug, Default)]
struct RetentionReport {
    segments: usize,
    bytes: u64,
    inits: usize,
}

/// Storage figures for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Bytes of stored segments.
    pub used_bytes: u64,
    /// The quota they are kept under.
    pub quota_bytes: u64,
    /// Bytes of init files (outside the quota).
    pub init_bytes: u64,
    /// Start of the oldest stored segment, UTC ms.
    pub oldest_ms: Option<i64>,
    /// Per camera, for cameras with at least one segment.
    pub cameras: BTreeMap<String, CameraUsage>,
    /// Bytes of segment and init files written today (UTC day): the flash-wear figure.
    pub written_today_bytes: u64,
    /// Bytes of segment and init files written since the index was created.
    pub written_total_bytes: u64,
}

/// One camera's share of [`Usage`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CameraUsage {
    /// Start of its oldest segment, UTC ms.
    pub first_ms: i64,
    /// End of its newest segment (by start), UTC ms.
    pub last_ms: i64,
    /// Number of segments.
    pub segments: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The store's sled trees.
struct Trees {
    segments: sled::Tree,
    inits: sled::Tree,
    counters: sled::Tree,
    meta: sled::Tree,
}

/// In-memory accounting, rebuilt on open. Guarded by [`Store::state`].
#[derive(Debug, Default)]
struct State {
    /// The policy when full.
    when_full: WhenFull,
    /// Sum of indexed segment sizes.
    used_bytes: u64,
    /// Bytes of segments being written (reserved, not yet indexed).
    reserved_bytes: u64,
    /// (camera, start) of segments being written, for duplicate checks.
    in_flight: HashSet<(String, i64)>,
    /// Per camera.
    cameras: BTreeMap<String, CameraState>,
}

#[derive(Debug, Default)]
struct CameraState {
    segments: u64,
    bytes: u64,
    /// Longest `end - start` seen: bounds how far before `from` a range scan must start.
    /// Never lowered on eviction (a bound is enough).
    max_duration_ms: i64,
    inits: BTreeMap<InitId, InitState>,
}

impl CameraState {
    fn add_segment(&mut self, meta: &SegmentMeta) {
        self.segments += 1;
        self.bytes += meta.bytes;
        self.max_duration_ms = self
            .max_duration_ms
            .max(meta.end_ms.saturating_sub(meta.start_ms));
    }
}

#[derive(Debug, Clone, Copy)]
struct InitState {
    len: u64,
    /// Segments referring to it, including ones being written.
    refs: u64,
    last_put_ms: i64,
}

/// The segment store. See the [module doc](self).
pub struct Store {
    // Drop order matters: the trees and the database close before the directory lock goes.
    trees: Trees,
    db: sled::Db,
    state: Mutex<State>,
    opts: StoreOptions,
    dir: PathBuf,
    segments_dir: PathBuf,
    _lock: File,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store under `dir`, recovering from whatever a crash or a
    /// damaged index left behind (see "Recovery" in the module doc).
    ///
    /// Fails without touching anything if another `Store` holds `dir`
    /// ([`StoreError::Locked`]), and on I/O errors that recovery cannot fix (permissions, a
    /// read-only or full disk). A damaged index is never an error: it is moved aside and rebuilt.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<(Store, OpenReport), StoreError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock = lock_dir(dir)?;
        let segments_dir = files::ensure_dir(dir, "segments").map_err(file_err)?;
        let index_dir = dir.join("index");

        let mut scan_report = OpenReport::default();
        let scan = recover::scan_files(&segments_dir, &mut scan_report)?;

        let (loaded, moved) = match recover::load(&index_dir, opts.cache_capacity, &scan) {
            Ok(loaded) => (loaded, None),
            Err(recover::LoadFailure::Fatal(e)) => return Err(e),
            Err(recover::LoadFailure::Corrupt(problem)) => {
                let moved_to = if index_dir.exists() {
                    Some(recover::move_aside(&index_dir)?)
                } else {
                    None
                };
                tracing::error!(
                    problem = %problem,
                    moved_to = ?moved_to,
                    "The segment index is damaged; moved it aside and rebuilding it from the segment files."
                );
                match recover::load(&index_dir, opts.cache_capacity, &scan) {
                    Ok(loaded) => (loaded, Some((moved_to, problem))),
                    Err(recover::LoadFailure::Fatal(e)) => return Err(e),
                    Err(recover::LoadFailure::Corrupt(again)) => {
                        return Err(StoreError::Corrupt {
                            path: index_dir,
                            reason: format!("a freshly created index failed too: {again}"),
                        })
                    }
                }
            }
        };
        let recover::Loaded {
            db,
            trees,
            state,
            mut report,
        } = loaded;
        report.temp_files_removed = scan_report.temp_files_removed;
        report.bad_files_removed = scan_report.bad_files_removed;
        if let Some((moved_to, problem)) = moved {
            report.index_moved_to = moved_to;
            report.index_problem = Some(problem);
        }
        if !report.is_clean() {
            tracing::warn!(report = ?report, "Recovered the segment store.");
        }
        let store = Store {
            trees,
            db,
            state: Mutex::new(state),
            opts,
            dir: dir.to_owned(),
            segments_dir,
            _lock: lock,
        };
        Ok((store, report))
    }

    /// The sled database, for other modules' trees (outbox, audit, consent). The store's own
    /// trees are named `store.*`; leave them alone.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Sets what [`Store::put_segment`] does when a segment does not fit (default
    /// [`WhenFull::EvictOldest`]). Not persisted: set it after each open.
    pub fn set_when_full(&self, policy: WhenFull) {
        self.lock_state().when_full = policy;
    }

    /// The current policy when full.
    pub fn when_full(&self) -> WhenFull {
        self.lock_state().when_full
    }

    /// Makes everything written so far durable (sled flush). `put_segment` and `put_init`
    /// already flush before returning; this is for shutdown and for other modules' trees.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(index_err("flush"))
    }

    /// Stores an init segment (`ftyp`+`moov`) for `camera` and returns its content-addressed
    /// id. Putting the same bytes again returns the same id without writing, and marks it the
    /// camera's current init (which retention keeps even while no segment refers to it).
    pub fn put_init(&self, camera: &str, bytes: &[u8]) -> Result<InitId, StoreError> {
        check_camera(camera)?;
        if bytes.is_empty() {
            return Err(StoreError::InvalidInit {
                camera: camera.to_owned(),
                reason: "empty",
            });
        }
        let id = InitId::of(bytes);
        let now = crate::clock::now_ms();
        let mut st = self.lock_state();
        let path = self
            .segments_dir
            .join(camera)
            .join(files::init_file_name(id));
        let known = st
            .cameras
            .get(camera)
            .is_some_and(|c| c.inits.contains_key(&id));
        if known {
            match fs::read(&path) {
                Ok(stored) if stored == bytes => {
                    self.touch_init(&mut st, camera, id, now);
                    return Ok(id);
                }
                Ok(_) => {
                    return Err(StoreError::InitCollision {
                        camera: camera.to_owned(),
                        init: id,
                        path,
                    })
                }
                // Lost behind our back: write it again below.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("read", path)(e)),
            }
        }
        let dir = files::ensure_dir(&self.segments_dir, camera).map_err(file_err)?;
        files::write_durably(&dir, &files::init_file_name(id), bytes).map_err(|e| {
            if files::is_disk_full(&e.source) {
                StoreError::DiskFull {
                    camera: camera.to_owned(),
                    path: e.path,
                    segment: None,
                    source: e.source,
                }
            } else {
                file_err(e)
            }
        })?;
        let len = bytes.len() as u64;
        self.trees
            .inits
            .insert(
                index::init_key(camera, id),
                &index::init_value(index::InitRecord {
                    len,
                    last_put_ms: now,
                })[..],
            )
            .map_err(index_err(format!("insert init {camera}/{id}")))?;
        self.count_written(len, now);
        let init = st
            .cameras
            .entry(camera.to_owned())
            .or_default()
            .inits
            .entry(id)
            .or_insert(InitState {
                len,
                refs: 0,
                last_put_ms: now,
            });
        init.len = len;
        init.last_put_ms = now;
        drop(st);
        self.db
            .flush()
            .map_err(index_err(format!("flush after init {camera}/{id}")))?;
        Ok(id)
    }

    /// Stores a segment and returns its record once it is durable (the acknowledgement; see
    /// "Order of writes and fsyncs" in the module doc).
    ///
    /// Makes room first according to the [`WhenFull`] policy ([`Store::set_when_full`]).
    /// Refuses a segment larger than the whole quota ([`StoreError::TooLarge`]), an init not
    /// stored for this camera ([`StoreError::UnknownInit`]) and a second segment with the same
    /// start ([`StoreError::Duplicate`]). On a full disk returns [`StoreError::DiskFull`] with the
    /// segment, leaving no temp file behind. On an error after the file was written (index
    /// flush) the segment may or may not survive a crash; it was not acknowledged.
    pub fn put_segment(&self, camera: &str, seg: NewSegment) -> Result<SegmentMeta, StoreError> {
        check_camera(camera)?;
        let invalid = |reason| StoreError::InvalidSegment {
            camera: camera.to_owned(),
            start_ms: seg.start_ms,
            reason,
        };
        if seg.bytes.is_empty() {
            return Err(invalid("empty"));
        }
        if seg.end_ms <= seg.start_ms {
            return Err(invalid("end_ms must be after start_ms"));
        }
        let len = seg.bytes.len() as u64;
        let quota_bytes = self.opts.quota_bytes;
        if len > quota_bytes {
            return Err(StoreError::TooLarge {
                camera: camera.to_owned(),
                start_ms: seg.start_ms,
                len,
                quota_bytes,
                segment: Box::new(seg),
            });
        }
        let meta = SegmentMeta {
            camera: camera.to_owned(),
            start_ms: seg.start_ms,
            end_ms: seg.end_ms,
            init: seg.init,
            video_frames: seg.video_frames,
            audio_frames: seg.audio_frames,
            bytes: len,
        };
        let key = index::segment_key(camera, seg.start_ms);
        let flight = (camera.to_owned(), seg.start_ms);

        // 1. Reserve room.
        {
            let mut st = self.lock_state();
            if !st
                .cameras
                .get(camera)
                .is_some_and(|c| c.inits.contains_key(&seg.init))
            {
                return Err(StoreError::UnknownInit {
                    camera: camera.to_owned(),
                    init: seg.init,
                });
            }
            let stored = self
                .trees
                .segments
                .contains_key(&key)
                .map_err(index_err(format!("look up {camera}/{}", seg.start_ms)))?;
            if stored || st.in_flight.contains(&flight) {
                return Err(StoreError::Duplicate {
                    camera: camera.to_owned(),
                    start_ms: seg.start_ms,
                });
            }
            while st.used_bytes + st.reserved_bytes + len > quota_bytes {
                let evicted = match st.when_full {
                    WhenFull::EvictOldest => self.evict_oldest(&mut st)?,
                    WhenFull::RejectNew => None,
                };
                if evicted.is_none() {
                    return Err(StoreError::Full {
                        camera: camera.to_owned(),
                        start_ms: seg.start_ms,
                        len,
                        used_bytes: st.used_bytes + st.reserved_bytes,
                        quota_bytes,
                        segment: Box::new(seg),
                    });
                }
            }
            st.reserved_bytes += len;
            st.in_flight.insert(flight.clone());
            if let Some(init) = st.init_mut(camera, seg.init) {
                init.refs += 1; // pins the init while the file is written
            }
        }

        // 2. Write the file (outside the lock: other cameras' writes proceed meanwhile).
        let name = files::segment_file_name(&meta);
        let written = files::ensure_dir(&self.segments_dir, camera)
            .and_then(|dir| files::write_durably(&dir, &name, &seg.bytes));
        let path = match written {
            Ok(path) => path,
            Err(e) => {
                self.unreserve(&flight, &meta);
                return Err(if files::is_disk_full(&e.source) {
                    tracing::warn!(camera, path = %e.path.display(), "Disk full writing a segment.");
                    StoreError::DiskFull {
                        camera: camera.to_owned(),
                        path: e.path,
                        segment: Some(Box::new(seg)),
                        source: e.source,
                    }
                } else {
                    file_err(e)
                });
            }
        };

        // 3. Index it.
        {
            let mut st = self.lock_state();
            st.reserved_bytes = st.reserved_bytes.saturating_sub(len);
            st.in_flight.remove(&flight);
            if let Err(e) = self
                .trees
                .segments
                .insert(&key, &index::segment_value(&meta)[..])
            {
                if let Some(init) = st.init_mut(camera, meta.init) {
                    init.refs = init.refs.saturating_sub(1);
                }
                drop(st);
                let _ = files::remove_if_exists(&path);
                return Err(index_err(format!("insert {camera}/{}", meta.start_ms))(e));
            }
            st.used_bytes += len;
            st.cameras
                .entry(camera.to_owned())
                .or_default()
                .add_segment(&meta);
            self.count_written(len, crate::clock::now_ms());
        }

        // 4. Make the entry durable. Only now is the segment acknowledged.
        self.db
            .flush()
            .map_err(index_err(format!("flush after {camera}/{}", meta.start_ms)))?;
        Ok(meta)
    }

    /// The segments of `camera` overlapping `[from_ms, to_ms)`, ordered by start. A segment
    /// overlaps when `start_ms < to_ms && end_ms > from_ms`.
    pub fn segments(
        &self,
        camera: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SegmentMeta>, StoreError> {
        check_camera(camera)?;
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let Some(max_duration_ms) = self
            .lock_state()
            .cameras
            .get(camera)
            .map(|c| c.max_duration_ms)
        else {
            return Ok(Vec::new());
        };
        let lo = index::segment_key(camera, from_ms.saturating_sub(max_duration_ms));
        let hi = index::segment_key(camera, to_ms);
        let mut out = Vec::new();
        for kv in self.trees.segments.range(lo..hi) {
            let (k, v) = kv.map_err(index_err(format!("scan {camera}")))?;
            match index::decode_segment(&k, &v) {
                Some(meta) if meta.end_ms > from_ms => out.push(meta),
                Some(_) => {}
                None => tracing::warn!(camera, "Skipping an undecodable index entry."),
            }
        }
        Ok(out)
    }

    /// The record of `camera`'s segment starting at `start_ms`, if stored.
    pub fn segment(&self, camera: &str, start_ms: i64) -> Result<Option<SegmentMeta>, StoreError> {
        check_camera(camera)?;
        let key = index::segment_key(camera, start_ms);
        let v = self
            .trees
            .segments
            .get(&key)
            .map_err(index_err(format!("get {camera}/{start_ms}")))?;
        Ok(v.and_then(|v| index::decode_segment(&key, &v)))
    }

    /// Opens a segment's file for streaming; returns it with its length. The handle stays
    /// readable even if the segment is evicted meanwhile.
    pub fn open_segment(&self, meta: &SegmentMeta) -> Result<(File, u64), StoreError> {
        check_camera(&meta.camera)?;
        let path = self.segment_path(meta);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound {
                    camera: meta.camera.clone(),
                    start_ms: meta.start_ms,
                }
            } else {
                io_err("open", &path)(e)
            }
        })?;
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        if len != meta.bytes {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("{len} bytes, expected {}", meta.bytes),
            });
        }
        Ok((file, len))
    }

    /// Reads a whole segment.
    pub fn read_segment(&self, meta: &SegmentMeta) -> Result<Vec<u8>, StoreError> {
        let (mut file, len) = self.open_segment(meta)?;
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut buf)
            .map_err(io_err("read", self.segment_path(meta)))?;
        if buf.len() as u64 != meta.bytes {
            return Err(StoreError::Corrupt {
                path: self.segment_path(meta),
                reason: format!("read {} bytes, expected {}", buf.len(), meta.bytes),
            });
        }
        Ok(buf)
    }

    /// Reads a camera's init segment, checking it against its id.
    pub fn read_init(&self, camera: &str, init: InitId) -> Result<Vec<u8>, StoreError> {
        check_camera(camera)?;
        let path = self
            .segments_dir
            .join(camera)
            .join(files::init_file_name(init));
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::UnknownInit {
                    camera: camera.to_owned(),
                    init,
                }
            } else {
                io_err("read", &path)(e)
            }
        })?;
        if InitId::of(&bytes) != init {
            return Err(StoreError::Corrupt {
                path,
                reason: "bytes do not match the init id".into(),
            });
        }
        Ok(bytes)
    }

    /// Removes segments that ended before `now_ms - retention`, then init segments no segment
    /// refers to (except each camera's most recently put one), then write counters older than
    /// 400 days; then flushes. Works in batches so writers are not held up for long. Returns
    /// the number of segments removed.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, StoreError> {
        let retention_ms = i64::try_from(self.opts.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(retention_ms);
        let mut report = RetentionReport::default();
        let cameras: Vec<String> = self.lock_state().cameras.keys().cloned().collect();
        for camera in &cameras {
            loop {
                let mut st = self.lock_state();
                let lo = index::segment_key(camera, i64::MIN);
                let hi = index::segment_key(camera, cutoff);
                let mut batch = Vec::new();
                for kv in self.trees.segments.range(lo..hi) {
                    let (k, v) = kv.map_err(index_err(format!("scan {camera}")))?;
                    // Segments start in order but may (rarely) end out of order: check each.
                    if let Some(meta) = index::decode_segment(&k, &v).filter(|m| m.end_ms < cutoff)
                    {
                        batch.push(meta);
                        if batch.len() == RETENTION_BATCH {
                            break;
                        }
                    }
                }
                for meta in &batch {
                    self.remove_segment(&mut st, meta)?;
                    report.segments += 1;
                    report.bytes += meta.bytes;
                }
                if batch.len() < RETENTION_BATCH {
                    break;
                }
            }
        }

        {
            let mut st = self.lock_state();
            let mut victims = Vec::new();
            for (camera, cam) in &st.cameras {
                let newest = cam.inits.values().map(|i| i.last_put_ms).max();
                for (id, init) in &cam.inits {
                    if init.refs == 0 && Some(init.last_put_ms) < newest {
                        victims.push((camera.clone(), *id));
                    }
                }
            }
            for (camera, id) in victims {
                self.remove_init(&mut st, &camera, id)?;
                report.inits += 1;
            }
            st.cameras
                .retain(|_, c| c.segments > 0 || !c.inits.is_empty());
        }

        let oldest_day = index::utc_day(now_ms).saturating_sub(COUNTER_DAYS_KEPT);
        let mut old_days = sled::Batch::default();
        for kv in self
            .trees
            .counters
            .range(index::day_key(i64::MIN)..index::day_key(oldest_day))
        {
            let (k, _) = kv.map_err(index_err("scan counters"))?;
            old_days.remove(k);
        }
        self.trees
            .counters
            .apply_batch(old_days)
            .map_err(index_err("prune counters"))?;

        self.db
            .flush()
            .map_err(index_err("flush after retention"))?;
        if report.segments > 0 || report.inits > 0 {
            tracing::info!(
                segments = report.segments,
                bytes = report.bytes,
                inits = report.inits,
                "Removed video past its retention."
            );
        }
        Ok(report.segments)
    }

    /// Removes all of a camera's segments and init segments and its directory; returns how
    /// many segments were removed. Stop the camera's ingest first: a segment being written
    /// meanwhile may survive.
    pub fn remove_camera(&self, camera: &str) -> Result<usize, StoreError> {
        check_camera(camera)?;
        let mut st = self.lock_state();
        let mut metas = Vec::new();
        for kv in self
            .trees
            .segments
            .scan_prefix(index::camera_prefix(camera))
        {
            let (k, v) = kv.map_err(index_err(format!("scan {camera}")))?;
            match index::decode_segment(&k, &v) {
                Some(meta) => metas.push(meta),
                None => {
                    self.trees
                        .segments
                        .remove(&k)
                        .map_err(index_err(format!("remove from {camera}")))?;
                }
            }
        }
        for meta in &metas {
            self.remove_segment(&mut st, meta)?;
        }
        let inits: Vec<InitId> = st
            .cameras
            .get(camera)
            .map(|c| c.inits.keys().copied().collect())
            .unwrap_or_default();
        for id in inits {
            self.remove_init(&mut st, camera, id)?;
        }
        st.cameras.remove(camera);
        drop(st);
        let dir = self.segments_dir.join(camera);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove directory", dir)(e)),
        }
        files::fsync_dir(&self.segments_dir).map_err(io_err("fsync", &self.segments_dir))?;
        self.db
            .flush()
            .map_err(index_err(format!("flush after removing {camera}")))?;
        tracing::info!(camera, segments = metas.len(), "Removed a camera's video.");
        Ok(metas.len())
    }

    /// Storage figures: bytes used against the quota, per-camera spans, and bytes written
    /// today and in total (the flash-wear figure).
    ///
    /// Infallible for the callers' sake (`status` must answer): the byte counts come from
    /// memory; if the index cannot be read, the spans and write counters it would give are
    /// left out (a camera missing from `cameras`, a counter of 0) and a warning is logged.
    pub fn usage(&self) -> Usage {
        let (used_bytes, init_bytes, counts) = {
            let st = self.lock_state();
            let init_bytes = st
                .cameras
                .values()
                .flat_map(|c| c.inits.values())
                .map(|i| i.len)
                .sum::<u64>();
            let counts: Vec<(String, u64, u64)> = st
                .cameras
                .iter()
                .filter(|(_, c)| c.segments > 0)
                .map(|(name, c)| (name.clone(), c.segments, c.bytes))
                .collect();
            (st.used_bytes, init_bytes, counts)
        };
        let mut cameras = BTreeMap::new();
        for (camera, segments, bytes) in counts {
            match self.span(&camera) {
                Ok(Some((first_ms, last_ms))) => {
                    cameras.insert(
                        camera,
                        CameraUsage {
                            first_ms,
                            last_ms,
                            segments,
                            bytes,
                        },
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(camera, error = %error, "Could not read a camera's span.")
                }
            }
        }
        let counter = |key: &[u8]| match self.trees.counters.get(key) {
            Ok(v) => index::decode_counter(v.as_deref()),
            Err(error) => {
                tracing::warn!(error = %error, "Could not read the write counters.");
                0
            }
        };
        Usage {
            used_bytes,
            quota_bytes: self.opts.quota_bytes,
            init_bytes,
            oldest_ms: cameras.values().map(|c| c.first_ms).min(),
            cameras,
            written_today_bytes: counter(&index::day_key(index::utc_day(crate::clock::now_ms()))),
            written_total_bytes: counter(index::total_key()),
        }
    }

    // ---- internals ----

    /// Start of a camera's first segment and end of its last (by start).
    fn span(&self, camera: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let mut iter = self
            .trees
            .segments
            .scan_prefix(index::camera_prefix(camera));
        let decode = |kv: Option<sled::Result<(sled::IVec, sled::IVec)>>| {
            kv.transpose()
                .map(|kv| kv.and_then(|(k, v)| index::decode_segment(&k, &v)))
                .map_err(index_err(format!("scan {camera}")))
        };
        let Some(first) = decode(iter.next())? else {
            return Ok(None);
        };
        let last_end = decode(iter.next_back())?.map_or(first.end_ms, |l| l.end_ms);
        Ok(Some((first.start_ms, last_end)))
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one ever did, the accounting is still
        // the best we have, and open() recomputes it from disk anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a segment's file is (for references that are read later, e.g. clip chunks in the
    /// outbox). The file may be evicted at any time after this returns.
    pub fn segment_file(&self, meta: &SegmentMeta) -> PathBuf {
        self.segment_path(meta)
    }

    fn segment_path(&self, meta: &SegmentMeta) -> PathBuf {
        self.segments_dir
            .join(&meta.camera)
            .join(files::segment_file_name(meta))
    }

    /// Evicts the oldest segment across all cameras; `None` if there is none.
    fn evict_oldest(&self, st: &mut State) -> Result<Option<SegmentMeta>, StoreError> {
        let mut oldest: Option<SegmentMeta> = None;
        for (camera, cam) in &st.cameras {
            if cam.segments == 0 {
                continue;
            }
            let first = self
                .trees
                .segments
                .scan_prefix(index::camera_prefix(camera))
                .find_map(|kv| match kv {
                    Ok((k, v)) => index::decode_segment(&k, &v).map(Ok),
                    Err(e) => Some(Err(e)),
                })
                .transpose()
                .map_err(index_err(format!("scan {camera}")))?;
            if let Some(m) = first {
                if oldest.as_ref().is_none_or(|o| m.start_ms < o.start_ms) {
                    oldest = Some(m);
                }
            }
        }
        if let Some(meta) = &oldest {
            self.remove_segment(st, meta)?;
            tracing::debug!(camera = %meta.camera, start_ms = meta.start_ms, "Evicted the oldest segment to make room.");
        }
        Ok(oldest)
    }

    /// Removes one segment: file first, then index entry (not flushed), then accounting.
    fn remove_segment(&self, st: &mut State, meta: &SegmentMeta) -> Result<(), StoreError> {
        let path = self.segment_path(meta);
        files::remove_if_exists(&path).map_err(io_err("remove", &path))?;
        self.trees
            .segments
            .remove(index::segment_key(&meta.camera, meta.start_ms))
            .map_err(index_err(format!(
                "remove {}/{}",
                meta.camera, meta.start_ms
            )))?;
        st.used_bytes = st.used_bytes.saturating_sub(meta.bytes);
        if let Some(cam) = st.cameras.get_mut(&meta.camera) {
            cam.segments = cam.segments.saturating_sub(1);
            cam.bytes = cam.bytes.saturating_sub(meta.bytes);
            if let Some(init) = cam.inits.get_mut(&meta.init) {
                init.refs = init.refs.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Removes one init segment: file, index entry, accounting.
    fn remove_init(&self, st: &mut State, camera: &str, id: InitId) -> Result<(), StoreError> {
        let path = self
            .segments_dir
            .join(camera)
            .join(files::init_file_name(id));
        files::remove_if_exists(&path).map_err(io_err("remove", &path))?;
        self.trees
            .inits
            .remove(index::init_key(camera, id))
            .map_err(index_err(format!("remove init {camera}/{id}")))?;
        if let Some(cam) = st.cameras.get_mut(camera) {
            cam.inits.remove(&id);
        }
        Ok(())
    }

    /// Marks an init as put now (not flushed: losing this only makes retention keep a
    /// different init for a while).
    fn touch_init(&self, st: &mut State, camera: &str, id: InitId, now: i64) {
        if let Some(init) = st.init_mut(camera, id) {
            init.last_put_ms = now;
            let rec = index::InitRecord {
                len: init.len,
                last_put_ms: now,
            };
            if let Err(error) = self
                .trees
                .inits
                .insert(index::init_key(camera, id), &index::init_value(rec)[..])
            {
                tracing::warn!(camera, init = %id, error = %error, "Could not record an init segment's use.");
            }
        }
    }

    /// Undoes a reservation after a failed write.
    fn unreserve(&self, flight: &(String, i64), meta: &SegmentMeta) {
        let mut st = self.lock_state();
        st.reserved_bytes = st.reserved_bytes.saturating_sub(meta.bytes);
        st.in_flight.remove(flight);
        if let Some(init) = st.init_mut(&meta.camera, meta.init) {
            init.refs = init.refs.saturating_sub(1);
        }
    }

    /// Adds to the write counters (total and today's). A failure is logged, not returned: the
    /// counters are a statistic and must not fail a write.
    fn count_written(&self, n: u64, now_ms: i64) {
        let day = index::day_key(index::utc_day(now_ms));
        for key in [index::total_key(), day.as_slice()] {
            let r = self
                .trees
                .counters
                .update_and_fetch(key, |old| Some(index::add_counter(old, n).to_vec()));
            if let Err(error) = r {
                tracing::warn!(error = %error, "Could not update the write counters.");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(error) = self.db.flush() {
            tracing::warn!(error = %error, "Could not flush the index on close.");
        }
    }
}

impl State {
    fn init_mut(&mut self, camera: &str, id: InitId) -> Option<&mut InitState> {
        self.cameras.get_mut(camera)?.inits.get_mut(&id)
    }
}

fn check_camera(camera: &str) -> Result<(), StoreError> {
    if files::is_valid_camera(camera) {
        Ok(())
    } else {
        Err(StoreError::InvalidCamera {
            camera: camera.to_owned(),
        })
    }
}

fn file_err(e: FileError) -> StoreError {
    StoreError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    }
}

/// Takes an exclusive `flock` on `dir/LOCK`, held as long as the returned file is open (the
/// kernel drops it when the process dies, so kill -9 never leaves a stale lock).
///
/// A lock that stays busy for two seconds means another `Store` holds the directory. The wait
/// covers a `Store` of this process that was just dropped while another thread forked a child:
/// until the child execs, its copy of the descriptor still holds the lock.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: flock on a valid, owned file descriptor; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        let source = io::Error::last_os_error();
        if source.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_err("lock", path)(source));
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Locked { path, source });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
