//! Opening the store: scan the files, open (or move aside and recreate) the sled index, and
//! reconcile the two. See "Recovery" in the [module doc](super).
//!
//! The files are the truth about which segments exist; the index is the truth about nothing
//! but is needed to answer range queries quickly. So the scan of the files comes first and
//! never depends on the index, and everything the index says is checked against it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{index_err, io_err};
use super::files::{self, is_temp_name, parse_init_file_name, parse_segment_file_name};
use super::index::{self, InitRecord};
use super::{CameraState, InitId, InitState, OpenReport, SegmentMeta, State, StoreError, Trees};

/// What the directory scan found: every valid segment and init file.
#[derive(Debug, Default)]
pub(super) struct FileScan {
    /// Valid segment files by (camera, start_ms).
    pub segments: HashMap<(String, i64), SegmentMeta>,
    /// Valid init files by (camera, id); `last_put_ms` is the file's mtime.
    pub inits: HashMap<(String, InitId), InitRecord>,
}

/// Scans `segments/`: removes temp files and files that are not valid segments or inits
/// (unparseable name, empty, size not the one in the name, init bytes not matching their id)
/// and returns the rest. Directories whose name is not a camera id, and subdirectories of
/// camera directories, are left alone.
pub(super) fn scan_files(
    segments_dir: &Path,
    report: &mut OpenReport,
) -> Result<FileScan, StoreError> {
    let mut scan = FileScan::default();
    let cameras = fs::read_dir(segments_dir).map_err(io_err("list", segments_dir))?;
    for entry in cameras {
        let entry = entry.map_err(io_err("list", segments_dir))?;
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io_err("stat", &path))?.is_dir();
        let camera = match entry.file_name().into_string() {
            Ok(c) if is_dir && files::is_valid_camera(&c) => c,
            _ => {
                tracing::warn!(path = %path.display(), "Leaving an unexpected entry in the segments directory alone.");
                continue;
            }
        };
        scan_camera_dir(&camera, &path, &mut scan, report)?;
    }
    Ok(scan)
}

fn scan_camera_dir(
    camera: &str,
    dir: &Path,
    scan: &mut FileScan,
    report: &mut OpenReport,
) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let md = entry.metadata().map_err(io_err("stat", &path))?;
        if md.is_dir() {
            tracing::warn!(path = %path.display(), "Leaving an unexpected directory alone.");
            continue;
        }
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        if is_temp_name(name) {
            remove(&path)?;
            report.temp_files_removed += 1;
            tracing::info!(path = %path.display(), "Removed a temp file left by an interrupted write.");
            continue;
        }
        if let Some(meta) = parse_segment_file_name(camera, name) {
            if md.len() == meta.bytes {
                scan.segments
                    .insert((camera.to_owned(), meta.start_ms), meta);
            } else {
                remove(&path)?;
                report.bad_files_removed += 1;
                tracing::warn!(
                    path = %path.display(), expected = meta.bytes, found = md.len(),
                    "Removed a segment file whose size is not the one in its name."
                );
            }
            continue;
        }
        if let Some(id) = parse_init_file_name(name) {
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            if !bytes.is_empty() && InitId::of(&bytes) == id {
                let last_put_ms = md
                    .modified()
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .map_or(0, |t| t.as_millisecond());
                scan.inits.insert(
                    (camera.to_owned(), id),
                    InitRecord {
                        len: bytes.len() as u64,
                        last_put_ms,
                    },
                );
            } else {
                remove(&path)?;
                report.bad_files_removed += 1;
                tracing::warn!(path = %path.display(), "Removed an init file whose bytes do not match its id.");
            }
            continue;
        }
        remove(&path)?;
        report.bad_files_removed += 1;
        tracing::warn!(path = %path.display(), "Removed a file that is not a segment, an init segment or a temp file.");
    }
    Ok(())
}

fn remove(path: &Path) -> Result<(), StoreError> {
    files::remove_if_exists(path).map_err(io_err("remove", path))
}

/// Why loading the index failed.
pub(super) enum LoadFailure {
    /// The index is damaged: move it aside and rebuild from the files.
    Corrupt(String),
    /// Something moving the index aside would not fix (permissions, a full or read-only disk,
    /// a newer format): report it.
    Fatal(StoreError),
}

/// Sorts a sled error into "damaged index" and "everything else".
fn classify(context: &str, e: sled::Error) -> LoadFailure {
    let fatal = match &e {
        sled::Error::Io(io) => {
            matches!(
                io.kind(),
                io::ErrorKind::PermissionDenied
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::StorageFull
                    | io::ErrorKind::OutOfMemory
            ) || matches!(
                io.raw_os_error(),
                Some(
                    libc::EACCES
                        | libc::EPERM
                        | libc::EROFS
                        | libc::ENOSPC
                        | libc::EDQUOT
                        | libc::ENOMEM
                )
            ) || is_lock_error(&e)
        }
        _ => false,
    };
    if fatal {
        LoadFailure::Fatal(index_err(context)(e))
    } else {
        LoadFailure::Corrupt(format!("{context}: {e}"))
    }
}

/// sled reports a held `flock` on its `db` file as a generic I/O error with this text.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens sled at `path`. A lock still held by a `Store` of this process that was just dropped
/// (sled's threads release it a moment later) is waited for, up to two seconds; the store's own
/// `LOCK` file already excludes other processes.
fn open_sled(path: &Path, cache_capacity: u64) -> Result<sled::Db, LoadFailure> {
    let mut tries = 0;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) && tries < 40 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(classify("open", e)),
        }
    }
}

/// The index, opened and reconciled with the files.
pub(super) struct Loaded {
    pub db: sled::Db,
    pub trees: Trees,
    pub state: State,
    pub report: OpenReport,
}

/// Opens the index at `index_dir` and reconciles it with `files`, catching sled's panics on
/// damaged data.
pub(super) fn load(
    index_dir: &Path,
    cache_capacity: u64,
    files: &FileScan,
) -> Result<Loaded, LoadFailure> {
    match panic::catch_unwind(AssertUnwindSafe(|| {
        load_inner(index_dir, cache_capacity, files)
    })) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(LoadFailure::Corrupt(format!("sled panicked: {msg}")))
        }
    }
}

fn load_inner(
    index_dir: &Path,
    cache_capacity: u64,
    files: &FileScan,
) -> Result<Loaded, LoadFailure> {
    let existed = index_dir.join("db").exists() || index_dir.join("conf").exists();
    let db = open_sled(index_dir, cache_capacity)?;
    let open_tree = |name: &str| db.open_tree(name).map_err(|e| classify(name, e));
    let trees = Trees {
        segments: open_tree(index::SEGMENTS_TREE)?,
        inits: open_tree(index::INITS_TREE)?,
        counters: open_tree(index::COUNTERS_TREE)?,
        meta: open_tree(index::META_TREE)?,
    };
    match trees
        .meta
        .get(index::FORMAT_KEY)
        .map_err(|e| classify("read format", e))?
    {
        Some(v) => match <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes) {
            Ok(index::FORMAT_VERSION) => {}
            Ok(found) if found > index::FORMAT_VERSION => {
                return Err(LoadFailure::Fatal(StoreError::UnsupportedFormat {
                    path: index_dir.to_owned(),
                    found,
                    supported: index::FORMAT_VERSION,
                }))
            }
            _ => return Err(LoadFailure::Corrupt("malformed format record".into())),
        },
        // sled opens some damaged files as an empty database rather than failing.
        None if existed => {
            return Err(LoadFailure::Corrupt(
                "the database exists but has lost the store's format record".into(),
            ))
        }
        None => {
            trees
                .meta
                .insert(index::FORMAT_KEY, &index::FORMAT_VERSION.to_be_bytes())
                .map_err(|e| classify("write format", e))?;
        }
    }
    let mut report = OpenReport::default();
    let state = reconcile(&trees, files, &mut report)?;
    db.flush().map_err(|e| classify("flush", e))?;
    Ok(Loaded {
        db,
        trees,
        state,
        report,
    })
}

/// Makes the index agree with the files and builds the in-memory accounting.
fn reconcile(
    trees: &Trees,
    files: &FileScan,
    report: &mut OpenReport,
) -> Result<State, LoadFailure> {
    let mut cameras: BTreeMap<String, CameraState> = BTreeMap::new();

    // Inits: entries without a valid file are dropped; files without an entry are added.
    let mut inits_seen = HashMap::new();
    let mut batch = sled::Batch::default();
    for kv in trees.inits.iter() {
        let (k, v) = kv.map_err(|e| classify("scan inits", e))?;
        match index::decode_init(&k, &v) {
            Some((camera, id, rec)) => match files.inits.get(&(camera.clone(), id)) {
                Some(f) if f.len == rec.len => {
                    inits_seen.insert((camera, id), rec);
                }
                _ => {
                    batch.remove(k);
                    report.inits_dropped += 1;
                }
            },
            None => {
                batch.remove(k);
                report.bad_entries_dropped += 1;
            }
        }
    }
    for (key, rec) in &files.inits {
        if !inits_seen.contains_key(key) {
            batch.insert(index::init_key(&key.0, key.1), &index::init_value(*rec)[..]);
            inits_seen.insert(key.clone(), *rec);
            report.inits_indexed += 1;
        }
    }
    trees
        .inits
        .apply_batch(batch)
        .map_err(|e| classify("fix inits", e))?;
    for ((camera, id), rec) in inits_seen {
        cameras.entry(camera).or_default().inits.insert(
            id,
            InitState {
                len: rec.len,
                refs: 0,
                last_put_ms: rec.last_put_ms,
            },
        );
    }

    // Segments: an entry is kept when a valid file has the same record; an entry that differs
    // from the file's name is rewritten from the name; the rest are dropped. Files without an
    // entry (orphans: killed between the rename and the index flush) are added.
    let mut kept: Vec<SegmentMeta> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut batch = sled::Batch::default();
    for kv in trees.segments.iter() {
        let (k, v) = kv.map_err(|e| classify("scan segments", e))?;
        let Some(meta) = index::decode_segment(&k, &v) else {
            batch.remove(k);
            report.bad_entries_dropped += 1;
            continue;
        };
        let key = (meta.camera.clone(), meta.start_ms);
        match files.segments.get(&key) {
            Some(f) if *f == meta => kept.push(meta),
            Some(f) => {
                batch.insert(k, &index::segment_value(f)[..]);
                report.entries_fixed += 1;
                kept.push(f.clone());
            }
            None => {
                batch.remove(k);
                report.missing_dropped += 1;
                continue;
            }
        }
        seen.insert(key);
    }
    for (key, meta) in &files.segments {
        if !seen.contains(key) {
            batch.insert(
                index::segment_key(&meta.camera, meta.start_ms),
                &index::segment_value(meta)[..],
            );
            report.orphans_indexed += 1;
            kept.push(meta.clone());
        }
    }
    trees
        .segments
        .apply_batch(batch)
        .map_err(|e| classify("fix segments", e))?;

    let mut state = State::default();
    for meta in kept {
        let cam = cameras.entry(meta.camera.clone()).or_default();
        cam.add_segment(&meta);
        match cam.inits.get_mut(&meta.init) {
            Some(init) => init.refs += 1,
            None => report.segments_without_init += 1,
        }
        state.used_bytes += meta.bytes;
        report.segments += 1;
    }
    report.used_bytes = state.used_bytes;
    state.cameras = cameras;
    Ok(state)
}

/// Moves a damaged index directory aside to `index.broken-<UTC time>[-n]` next to it and makes
/// the rename durable. Returns the new path.
pub(super) fn move_aside(index_dir: &Path) -> Result<PathBuf, StoreError> {
    let parent = index_dir.parent().unwrap_or(Path::new("."));
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let base = format!("index.broken-{stamp}");
    let mut target = parent.join(&base);
    let mut n = 1;
    while target.exists() {
        target = parent.join(format!("{base}-{n}"));
        n += 1;
    }
    fs::rename(index_dir, &target).map_err(io_err("move aside", index_dir))?;
    files::fsync_dir(parent).map_err(io_err("fsync", parent))?;
    Ok(target)
}
