//! Store tests: API behaviour, quota and retention, recovery from damaged files and index,
//! a property-based model check, and kill -9 in the middle of writes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;

const INIT_A: &[u8] = b"ftyp....moov camera A, 1920x1080 H.264";
const INIT_B: &[u8] = b"ftyp....moov camera B, 1280x720 H.265";

fn opts(quota_bytes: u64) -> StoreOptions {
    StoreOptions {
        quota_bytes,
        retention: Duration::from_secs(3600),
        cache_capacity: 1024 * 1024,
    }
}

fn open(dir: &Path, o: StoreOptions) -> (Store, OpenReport) {
    Store::open(dir, o).expect("open store")
}

/// Deterministic bytes for a segment, so content can be checked after a crash.
fn content(start_ms: i64, len: usize) -> Bytes {
    let mut x = (start_ms as u64) ^ 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

fn seg(init: InitId, start_ms: i64, dur_ms: i64, len: usize) -> NewSegment {
    NewSegment {
        init,
        start_ms,
        end_ms: start_ms + dur_ms,
        video_frames: 60,
        audio_frames: 94,
        bytes: content(start_ms, len),
    }
}

fn starts(v: &[SegmentMeta]) -> Vec<i64> {
    v.iter().map(|m| m.start_ms).collect()
}

/// All segments of all cameras the store knows, by (camera, start).
fn listing(store: &Store) -> Vec<SegmentMeta> {
    let mut out = Vec::new();
    let cameras: Vec<String> = store.lock_state().cameras.keys().cloned().collect();
    for c in cameras {
        out.extend(store.segments(&c, i64::MIN, i64::MAX).unwrap());
    }
    out
}

/// Segment files on disk as records parsed from their names, plus any other file names.
fn files_on_disk(dir: &Path) -> (BTreeSet<(String, i64, u64)>, Vec<String>) {
    let mut segs = BTreeSet::new();
    let mut other = Vec::new();
    let Ok(cams) = fs::read_dir(dir.join("segments")) else {
        return (segs, other);
    };
    for cam in cams {
        let cam = cam.unwrap();
        let camera = cam.file_name().into_string().unwrap();
        for f in fs::read_dir(cam.path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            match files::parse_segment_file_name(&camera, &name) {
                Some(m) => {
                    assert_eq!(f.metadata().unwrap().len(), m.bytes, "{name}");
                    segs.insert((camera.clone(), m.start_ms, m.bytes));
                }
                None => other.push(name),
            }
        }
    }
    (segs, other)
}

/// The index and the files agree, used bytes are their sum, and every byte is the one written.
fn assert_consistent(store: &Store) {
    let listed = listing(store);
    let (on_disk, other) = files_on_disk(store.dir());
    let indexed: BTreeSet<_> = listed
        .iter()
        .map(|m| (m.camera.clone(), m.start_ms, m.bytes))
        .collect();
    assert_eq!(indexed, on_disk, "index and files disagree");
    assert!(
        other.iter().all(|n| n.starts_with("init-")),
        "unexpected files: {other:?}"
    );
    let used: u64 = listed.iter().map(|m| m.bytes).sum();
    let usage = store.usage();
    assert_eq!(usage.used_bytes, used);
    assert!(usage.used_bytes <= usage.quota_bytes);
    for m in &listed {
        assert_eq!(
            store.read_segment(m).unwrap(),
            content(m.start_ms, m.bytes as usize),
            "{m:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// API behaviour

#[test]
fn put_and_read_back_across_cameras() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert!(report.is_clean(), "{report:?}");
    let a = store.put_init("front", INIT_A).unwrap();
    let b = store.put_init("back_yard-2", INIT_B).unwrap();
    for i in 0..5 {
        store
            .put_segment("front", seg(a, 1000 + i * 2000, 2000, 3000))
            .unwrap();
        store
            .put_segment("back_yard-2", seg(b, 1500 + i * 2000, 2000, 4000))
            .unwrap();
    }
    let front = store.segments("front", i64::MIN, i64::MAX).unwrap();
    assert_eq!(starts(&front), vec![1000, 3000, 5000, 7000, 9000]);
    assert!(front
        .iter()
        .all(|m| m.camera == "front" && m.init == a && m.bytes == 3000));
    let back = store.segments("back_yard-2", i64::MIN, i64::MAX).unwrap();
    assert_eq!(starts(&back), vec![1500, 3500, 5500, 7500, 9500]);
    assert_eq!(store.read_init("front", a).unwrap(), INIT_A);
    assert_eq!(store.read_init("back_yard-2", b).unwrap(), INIT_B);
    assert_eq!(store.segment("front", 3000).unwrap().unwrap(), front[1]);
    assert_eq!(store.segment("front", 3001).unwrap(), None);
    let (file, len) = store.open_segment(&front[2]).unwrap();
    assert_eq!(len, 3000);
    drop(file);
    assert!(store.segments("side", 0, 100).unwrap().is_empty());
    assert_consistent(&store);
    let u = store.usage();
    assert_eq!(u.used_bytes, 5 * 3000 + 5 * 4000);
    assert_eq!(u.oldest_ms, Some(1000));
    assert_eq!(
        u.cameras["front"],
        CameraUsage {
            first_ms: 1000,
            last_ms: 11000,
            segments: 5,
            bytes: 15000
        }
    );
    assert_eq!(u.init_bytes, (INIT_A.len() + INIT_B.len()) as u64);
}

#[test]
fn range_query_returns_overlapping_segments_in_start_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(10 << 20));
    let a = store.put_init("cam", INIT_A).unwrap();
    // [0,2000) [2000,4000) [4000,6000), then a long one [10000,20000) and a short one inside.
    for (start, dur) in [
        (0, 2000),
        (2000, 2000),
        (4000, 2000),
        (10_000, 10_000),
        (12_000, 500),
    ] {
        store.put_segment("cam", seg(a, start, dur, 100)).unwrap();
    }
    let q = |from, to| starts(&store.segments("cam", from, to).unwrap());
    assert_eq!(q(0, 2000), vec![0]);
    assert_eq!(q(1999, 2001), vec![0, 2000]);
    assert_eq!(q(2000, 4000), vec![2000]);
    assert_eq!(q(6000, 10_000), Vec::<i64>::new());
    // The long segment starts well before `from` and must still be found.
    assert_eq!(q(15_000, 16_000), vec![10_000]);
    assert_eq!(q(12_100, 12_200), vec![10_000, 12_000]);
    assert_eq!(q(-100, 1), vec![0]);
    assert_eq!(q(5, 5), Vec::<i64>::new());
    assert_eq!(q(5, 4), Vec::<i64>::new());
}

#[test]
fn quota_eviction_keeps_used_under_quota_and_evicts_oldest_first_across_cameras() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(10_000));
    let a = store.put_init("a", INIT_A).unwrap();
    let b = store.put_init("b", INIT_B).unwrap();
    // Interleaved starts: a at 0, 2000, 4000…; b at 1000, 3000, 5000…
    for i in 0..10 {
        let (cam, init) = if i % 2 == 0 { ("a", a) } else { ("b", b) };
        store
            .put_segment(cam, seg(init, i * 1000, 1000, 3000))
            .unwrap();
        assert!(store.usage().used_bytes <= 10_000);
    }
    // 3 segments of 3000 fit; the newest three survive, whichever camera they belong to.
    let all: Vec<i64> = {
        let mut v = starts(&listing(&store));
        v.sort();
        v
    };
    assert_eq!(all, vec![7000, 8000, 9000]);
    assert_consistent(&store);
    // A bigger segment evicts as many as needed.
    store.put_segment("a", seg(a, 10_000, 1000, 7000)).unwrap();
    let mut all = starts(&listing(&store));
    all.sort();
    assert_eq!(all, vec![9000, 10_000]);
    assert_consistent(&store);
}

#[test]
fn segment_larger_than_quota_is_refused_and_handed_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(1000));
    let a = store.put_init("cam", INIT_A).unwrap();
    store.put_segment("cam", seg(a, 0, 1000, 600)).unwrap();
    let big = seg(a, 1000, 1000, 1001);
    let err = store.put_segment("cam", big.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                len: 1001,
                quota_bytes: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_no_room());
    assert_eq!(err.into_segment(), Some(big));
    // Nothing was evicted for it.
    assert_eq!(starts(&listing(&store)), vec![0]);
    assert_consistent(&store);
}

#[test]
fn reject_new_policy_refuses_when_full_and_keeps_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(1000));
    assert_eq!(store.when_full(), WhenFull::EvictOldest);
    store.set_when_full(WhenFull::RejectNew);
    let a = store.put_init("cam", INIT_A).unwrap();
    store.put_segment("cam", seg(a, 0, 1000, 600)).unwrap();
    let next = seg(a, 1000, 1000, 600);
    let err = store.put_segment("cam", next.clone()).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Full {
                used_bytes: 600,
                quota_bytes: 1000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.into_segment(), Some(next));
    assert_eq!(starts(&listing(&store)), vec![0]);
}

#[test]
fn retention_evicts_expired_segments_and_unreferenced_inits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(
        dir.path(),
        StoreOptions {
            retention: Duration::from_secs(10),
            ..opts(10 << 20)
        },
    );
    let old_init = store.put_init("cam", INIT_A).unwrap();
    for i in 0..5 {
        store
            .put_segment("cam", seg(old_init, i * 2000, 2000, 100))
            .unwrap();
    }
    // The camera's parameters change: a new init, used from 10 s on.
    std::thread::sleep(Duration::from_millis(5)); // distinct last-put times
    let new_init = store.put_init("cam", INIT_B).unwrap();
    for i in 5..10 {
        store
            .put_segment("cam", seg(new_init, i * 2000, 2000, 100))
            .unwrap();
    }
    // now = 17 s, retention 10 s: cutoff 7 s. Segments ending before 7000 go: [0,2000)
    // [2000,4000) [4000,6000). [6000,8000) ends after the cutoff and stays.
    assert_eq!(store.enforce_retention(17_000).unwrap(), 3);
    // The old init is still referenced.
    assert_eq!(store.read_init("cam", old_init).unwrap(), INIT_A);
    assert_eq!(
        starts(&listing(&store)),
        vec![6000, 8000, 10_000, 12_000, 14_000, 16_000, 18_000]
    );
    // Everything of the old init expires: its file goes too, the current init stays.
    assert_eq!(store.enforce_retention(31_000).unwrap(), 7);
    assert!(matches!(
        store.read_init("cam", old_init),
        Err(StoreError::UnknownInit { .. })
    ));
    assert_eq!(store.read_init("cam", new_init).unwrap(), INIT_B);
    assert!(listing(&store).is_empty());
    // A put with the current init still works; with the removed one it is refused.
    store
        .put_segment("cam", seg(new_init, 40_000, 2000, 100))
        .unwrap();
    let err = store
        .put_segment("cam", seg(old_init, 42_000, 2000, 100))
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownInit { .. }), "{err}");
    assert_consistent(&store);
    // Again after reopening: the init index agrees.
    drop(store);
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(store.usage().init_bytes, INIT_B.len() as u64);
}

#[test]
fn init_dedup_returns_same_id_and_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(10 << 20));
    let a1 = store.put_init("cam", INIT_A).unwrap();
    let written = store.usage().written_total_bytes;
    let a2 = store.put_init("cam", INIT_A).unwrap();
    assert_eq!(a1, a2);
    assert_eq!(a1, InitId::of(INIT_A));
    assert_eq!(
        store.usage().written_total_bytes,
        written,
        "no second write"
    );
    let b = store.put_init("cam", INIT_B).unwrap();
    assert_ne!(a1, b);
    // The same bytes for another camera get the same id, stored in that camera's directory.
    assert_eq!(store.put_init("other", INIT_A).unwrap(), a1);
    let init_files: Vec<_> = fs::read_dir(dir.path().join("segments/cam"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(init_files.len(), 2, "{init_files:?}");
    // Survives reopen.
    drop(store);
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(store.put_init("cam", INIT_A).unwrap(), a1);
    assert_eq!(
        store.usage().written_total_bytes,
        written + (INIT_B.len() + INIT_A.len()) as u64
    );
}

#[test]
fn init_id_parses_and_prints_as_lowercase_hex() {
    let id = InitId::of(INIT_A);
    let s = id.to_string();
    assert_eq!(s.len(), 16);
    assert_eq!(s.parse::<InitId>(), Ok(id));
    assert_eq!(s.to_uppercase().parse::<InitId>(), Err(ParseInitIdError));
    assert_eq!("abc".parse::<InitId>(), Err(ParseInitIdError));
    assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{s}\""));
    assert_eq!(
        serde_json::from_str::<InitId>(&format!("\"{s}\"")).unwrap(),
        id
    );
}

#[test]
fn put_segment_refuses_unknown_init_duplicates_and_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(10 << 20));
    let a = store.put_init("cam", INIT_A).unwrap();
    let err = store
        .put_segment("cam", seg(InitId::of(b"nope"), 0, 1000, 10))
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownInit { .. }), "{err}");
    // An init of another camera is unknown to this one.
    let err = store.put_segment("other", seg(a, 0, 1000, 10)).unwrap_err();
    assert!(matches!(err, StoreError::UnknownInit { .. }), "{err}");
    store.put_segment("cam", seg(a, 0, 1000, 10)).unwrap();
    let err = store.put_segment("cam", seg(a, 0, 2000, 20)).unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate { start_ms: 0, .. }),
        "{err}"
    );
    let err = store.put_segment("cam", seg(a, 5000, 0, 10)).unwrap_err();
    assert!(matches!(err, StoreError::InvalidSegment { .. }), "{err}");
    let err = store.put_segment("cam", seg(a, 5000, 1000, 0)).unwrap_err();
    assert!(matches!(err, StoreError::InvalidSegment { .. }), "{err}");
    let err = store.put_init("cam", b"").unwrap_err();
    assert!(matches!(err, StoreError::InvalidInit { .. }), "{err}");
    assert_eq!(listing(&store).len(), 1);
    assert_consistent(&store);
}

#[test]
fn invalid_camera_ids_are_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(10 << 20));
    for bad in ["", "../etc", "a/b", ".", "x".repeat(33).as_str()] {
        assert!(matches!(
            store.put_init(bad, INIT_A),
            Err(StoreError::InvalidCamera { .. })
        ));
        assert!(matches!(
            store.segments(bad, 0, 1),
            Err(StoreError::InvalidCamera { .. })
        ));
    }
    let meta = SegmentMeta {
        camera: "../../x".into(),
        start_ms: 0,
        end_ms: 1,
        init: InitId::of(b""),
        video_frames: 0,
        audio_frames: 0,
        bytes: 1,
    };
    assert!(matches!(
        store.read_segment(&meta),
        Err(StoreError::InvalidCamera { .. })
    ));
}

#[test]
fn reading_an_evicted_segment_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(1000));
    let a = store.put_init("cam", INIT_A).unwrap();
    let first = store.put_segment("cam", seg(a, 0, 1000, 800)).unwrap();
    // An open handle survives eviction (streaming a clip while the buffer rolls).
    let (mut handle, _) = store.open_segment(&first).unwrap();
    store.put_segment("cam", seg(a, 1000, 1000, 800)).unwrap();
    let err = store.read_segment(&first).unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { start_ms: 0, .. }),
        "{err}"
    );
    let mut buf = Vec::new();
    handle.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, content(0, 800));
}

#[test]
fn usage_counters_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(5000));
    let a = store.put_init("cam", INIT_A).unwrap();
    for i in 0..4 {
        store
            .put_segment("cam", seg(a, i * 1000, 1000, 2000))
            .unwrap();
    }
    let u = store.usage();
    let expected_written = 4 * 2000 + INIT_A.len() as u64;
    assert_eq!(
        u.written_total_bytes, expected_written,
        "evicted bytes were still written"
    );
    assert_eq!(u.written_today_bytes, expected_written);
    assert_eq!(u.used_bytes, 4000);
    drop(store);
    let (store, report) = open(dir.path(), opts(5000));
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.used_bytes, 4000);
    let u2 = store.usage();
    assert_eq!(u2.written_total_bytes, expected_written);
    assert_eq!(u2.written_today_bytes, expected_written);
    assert_eq!(u2.used_bytes, 4000);
    assert_eq!(u2.cameras, u.cameras);
}

#[test]
fn remove_camera_drops_its_segments_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(10 << 20));
    let a = store.put_init("a", INIT_A).unwrap();
    let b = store.put_init("b", INIT_B).unwrap();
    for i in 0..3 {
        store.put_segment("a", seg(a, i * 1000, 1000, 100)).unwrap();
        store.put_segment("b", seg(b, i * 1000, 1000, 100)).unwrap();
    }
    assert_eq!(store.remove_camera("a").unwrap(), 3);
    assert!(!dir.path().join("segments/a").exists());
    assert!(store.segments("a", i64::MIN, i64::MAX).unwrap().is_empty());
    assert_eq!(listing(&store).len(), 3);
    assert_eq!(store.usage().used_bytes, 300);
    assert_consistent(&store);
    drop(store);
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(listing(&store).len(), 3);
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(1000));
    let err = Store::open(dir.path(), opts(1000)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(store);
    open(dir.path(), opts(1000));
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<StoreError>();
}

#[test]
fn concurrent_writers_keep_accounting_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path(), opts(60_000));
    let store = Arc::new(store);
    let cams = ["c0", "c1", "c2", "c3"];
    let inits: Vec<InitId> = cams
        .iter()
        .map(|c| store.put_init(c, c.as_bytes()).unwrap())
        .collect();
    let threads: Vec<_> = cams
        .iter()
        .zip(inits)
        .enumerate()
        .map(|(n, (cam, init))| {
            let store = Arc::clone(&store);
            let cam = cam.to_string();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let start = i * 100 + n as i64;
                    store
                        .put_segment(&cam, seg(init, start, 100, 2000 + 100 * n))
                        .unwrap();
                    assert!(store.usage().used_bytes <= 60_000);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_consistent(&store);
    let store = Arc::into_inner(store).unwrap();
    drop(store);
    let (store, report) = open(dir.path(), opts(60_000));
    assert!(report.is_clean(), "{report:?}");
    assert_consistent(&store);
}

// ---------------------------------------------------------------------------------------------
// Recovery

/// A store with a few segments on two cameras, closed. Returns the listing.
fn populated(dir: &Path) -> Vec<SegmentMeta> {
    let (store, _) = open(dir, opts(10 << 20));
    let a = store.put_init("a", INIT_A).unwrap();
    let b = store.put_init("b", INIT_B).unwrap();
    for i in 0..20 {
        store
            .put_segment("a", seg(a, i * 2000, 2000, 1000 + i as usize))
            .unwrap();
        store
            .put_segment("b", seg(b, i * 2000 + 7, 2000, 2000 + i as usize))
            .unwrap();
    }
    let l = listing(&store);
    assert_eq!(l.len(), 40);
    l
}

/// Reopens after damage to the index and checks nothing was lost.
fn reopen_expecting(dir: &Path, expected: &[SegmentMeta]) -> OpenReport {
    let (store, report) = open(dir, opts(10 << 20));
    assert_eq!(listing(&store), expected, "{report:?}");
    assert_consistent(&store);
    // The inits came back too, and the store takes new segments.
    let a = InitId::of(INIT_A);
    assert_eq!(store.read_init("a", a).unwrap(), INIT_A);
    store.put_segment("a", seg(a, 1_000_000, 2000, 10)).unwrap();
    drop(store);
    // And the rebuilt index is a good one.
    let (store, again) = open(dir, opts(10 << 20));
    assert!(again.is_clean(), "{again:?}");
    assert_eq!(listing(&store).len(), expected.len() + 1);
    report
}

fn assert_moved_aside(dir: &Path, report: &OpenReport) {
    let moved = report
        .index_moved_to
        .as_ref()
        .unwrap_or_else(|| panic!("index not moved aside: {report:?}"));
    assert!(moved.exists());
    assert!(moved
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("index.broken-"));
    assert_eq!(moved.parent().unwrap(), dir);
    assert!(report.index_problem.is_some());
    assert_eq!(report.orphans_indexed, 40);
}

#[test]
fn deleted_index_is_rebuilt_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    fs::remove_dir_all(dir.path().join("index")).unwrap();
    let report = reopen_expecting(dir.path(), &expected);
    assert_eq!(report.orphans_indexed, 40);
    assert_eq!(report.inits_indexed, 2);
    assert_eq!(report.index_moved_to, None);
}

#[test]
fn garbage_over_sled_db_file_is_moved_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    let db = dir.path().join("index/db");
    let len = fs::metadata(&db).unwrap().len() as usize;
    fs::write(&db, vec![0xAB; len]).unwrap();
    let report = reopen_expecting(dir.path(), &expected);
    assert_moved_aside(dir.path(), &report);
}

#[test]
fn truncated_sled_db_file_is_moved_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("index/db"))
        .unwrap();
    f.set_len(100).unwrap();
    drop(f);
    let report = reopen_expecting(dir.path(), &expected);
    assert_moved_aside(dir.path(), &report);
}

#[test]
fn garbage_sled_conf_file_is_moved_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    fs::write(dir.path().join("index/conf"), b"\x00\x01garbage\xff").unwrap();
    let report = reopen_expecting(dir.path(), &expected);
    assert_moved_aside(dir.path(), &report);
}

#[test]
fn sled_blobs_dir_replaced_by_a_file_is_moved_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    let blobs = dir.path().join("index/blobs");
    fs::remove_dir_all(&blobs).unwrap();
    fs::write(&blobs, b"x").unwrap();
    let report = reopen_expecting(dir.path(), &expected);
    assert_moved_aside(dir.path(), &report);
}

#[test]
fn every_sled_file_scribbled_over_is_moved_aside_and_rebuilt() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    let mut sled_files = Vec::new();
    walk(&dir.path().join("index"), &mut sled_files);
    assert!(!sled_files.is_empty());
    for f in sled_files {
        fs::write(&f, b"this is not a sled database").unwrap();
    }
    let report = reopen_expecting(dir.path(), &expected);
    assert_moved_aside(dir.path(), &report);
}

#[test]
fn random_byte_flips_in_sled_db_never_panic_nor_lose_segments() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        let expected = populated(dir.path());
        let db = dir.path().join("index/db");
        let len = fs::metadata(&db).unwrap().len();
        let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // From a few light flips to heavy damage, so both sled's error and panic paths run.
        for _ in 0..(1 + seed % 4) * 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.seek(SeekFrom::Start(x % len)).unwrap();
            f.write_all(&vec![(x >> 40) as u8; 8 << (seed % 4)])
                .unwrap();
        }
        drop(f);
        let report = reopen_expecting(dir.path(), &expected);
        eprintln!("seed {seed}: {report:?}");
    }
}

#[test]
fn sled_panicking_on_a_damaged_db_is_caught_and_the_index_rebuilt() {
    // sled 0.34 panics while recovering some damaged logs. A log that big needs more records
    // than our 40 segments: fill another tree, as the outbox or audit log would.
    let mut panics = 0;
    for seed in 1..=4u64 {
        let dir = tempfile::tempdir().unwrap();
        let expected = populated(dir.path());
        {
            let (store, _) = open(dir.path(), opts(10 << 20));
            let other = store.db().open_tree("other-module").unwrap();
            for i in 0..5000u64 {
                other.insert(i.to_be_bytes(), vec![7u8; 40]).unwrap();
                if i % 100 == 0 {
                    store.db().flush().unwrap();
                }
            }
        }
        let db = dir.path().join("index/db");
        let len = fs::metadata(&db).unwrap().len();
        let mut f = fs::OpenOptions::new().write(true).open(&db).unwrap();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f.seek(SeekFrom::Start(x % len)).unwrap();
            f.write_all(&[(x >> 40) as u8; 16]).unwrap();
        }
        drop(f);
        let report = reopen_expecting(dir.path(), &expected);
        if report
            .index_problem
            .as_deref()
            .is_some_and(|p| p.contains("panicked"))
        {
            assert!(report.index_moved_to.is_some(), "{report:?}");
            panics += 1;
        }
    }
    assert!(
        panics > 0,
        "no seed made sled panic; the panic path went untested"
    );
}

#[test]
fn moved_aside_names_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    let mut moved = BTreeSet::new();
    for round in 0..3 {
        fs::write(dir.path().join("index/db"), b"garbage").unwrap();
        let (store, report) = open(dir.path(), opts(10 << 20));
        assert_eq!(listing(&store), expected);
        let to = report.index_moved_to.clone();
        assert!(moved.insert(to.unwrap_or_else(|| panic!("round {round}: {report:?}"))));
    }
}

#[test]
fn orphan_file_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = populated(dir.path());
    // A segment renamed into place whose index entry was never flushed.
    let meta = SegmentMeta {
        camera: "b".into(),
        start_ms: 500_000,
        end_ms: 502_000,
        init: InitId::of(INIT_B),
        video_frames: 60,
        audio_frames: 94,
        bytes: 777,
    };
    fs::write(
        dir.path()
            .join("segments/b")
            .join(files::segment_file_name(&meta)),
        content(500_000, 777),
    )
    .unwrap();
    expected.push(meta);
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert_eq!(report.orphans_indexed, 1, "{report:?}");
    assert_eq!(listing(&store), expected);
    assert_consistent(&store);
}

#[test]
fn orphan_file_of_a_new_camera_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    let cam = dir.path().join("segments/new_cam");
    fs::create_dir(&cam).unwrap();
    let init = InitId::of(INIT_A);
    fs::write(cam.join(files::init_file_name(init)), INIT_A).unwrap();
    let meta = SegmentMeta {
        camera: "new_cam".into(),
        start_ms: 3,
        end_ms: 4,
        init,
        video_frames: 1,
        audio_frames: 0,
        bytes: 5,
    };
    fs::write(cam.join(files::segment_file_name(&meta)), content(3, 5)).unwrap();
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert_eq!(
        (report.orphans_indexed, report.inits_indexed),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(store.segments("new_cam", 0, 10).unwrap(), vec![meta]);
    assert_eq!(listing(&store).len(), expected.len() + 1);
    assert_eq!(report.segments_without_init, 0);
}

#[test]
fn missing_file_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = populated(dir.path());
    let gone = expected.remove(3);
    fs::remove_file(
        dir.path()
            .join("segments/a")
            .join(files::segment_file_name(&gone)),
    )
    .unwrap();
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert_eq!(report.missing_dropped, 1, "{report:?}");
    assert_eq!(listing(&store), expected);
    assert_eq!(store.segment("a", gone.start_ms).unwrap(), None);
    assert_consistent(&store);
}

#[test]
fn truncated_segment_file_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = populated(dir.path());
    let cut = expected.remove(5);
    let path = dir
        .path()
        .join("segments")
        .join(&cut.camera)
        .join(files::segment_file_name(&cut));
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut.bytes / 2)
        .unwrap();
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert_eq!(
        (report.bad_files_removed, report.missing_dropped),
        (1, 1),
        "{report:?}"
    );
    assert!(!path.exists());
    assert_eq!(listing(&store), expected);
    assert_consistent(&store);
}

#[test]
fn truncated_segment_file_is_dropped_even_when_the_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = populated(dir.path());
    let cut = expected.remove(0);
    let path = dir
        .path()
        .join("segments")
        .join(&cut.camera)
        .join(files::segment_file_name(&cut));
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1)
        .unwrap();
    fs::remove_dir_all(dir.path().join("index")).unwrap();
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert_eq!(
        (report.bad_files_removed, report.orphans_indexed),
        (1, 39),
        "{report:?}"
    );
    assert_eq!(listing(&store), expected);
}

#[test]
fn leftover_temp_and_stray_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    let cam = dir.path().join("segments/a");
    fs::write(cam.join(".99_100_0000000000000000_1_0_5.m4s.tmp"), b"half").unwrap();
    fs::write(cam.join(".init-0000000000000000.mp4.tmp"), b"").unwrap();
    fs::write(cam.join("notes.txt"), b"?").unwrap();
    fs::write(
        cam.join(format!("1_2_{}_1_0_0.m4s", InitId::of(INIT_A))),
        b"",
    )
    .unwrap();
    // An init file whose bytes do not match its id.
    fs::write(
        cam.join(files::init_file_name(InitId::of(b"other"))),
        b"tampered",
    )
    .unwrap();
    // Directories we do not own are left alone.
    fs::create_dir(dir.path().join("segments/not a camera")).unwrap();
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert_eq!(report.temp_files_removed, 2, "{report:?}");
    assert_eq!(report.bad_files_removed, 3, "{report:?}");
    assert_eq!(listing(&store), expected);
    assert!(dir.path().join("segments/not a camera").exists());
    let names: BTreeSet<String> = fs::read_dir(&cam)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 21, "{names:?}");
}

#[test]
fn index_entry_disagreeing_with_its_file_is_rewritten_from_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let expected = populated(dir.path());
    {
        let (store, _) = open(dir.path(), opts(10 << 20));
        let mut wrong = expected[0].clone();
        wrong.end_ms += 5;
        wrong.video_frames = 1;
        store
            .trees
            .segments
            .insert(
                index::segment_key(&wrong.camera, wrong.start_ms),
                &index::segment_value(&wrong)[..],
            )
            .unwrap();
        store
            .trees
            .segments
            .insert(index::segment_key("a", 123_456), b"garbage".as_slice())
            .unwrap();
        store.db.flush().unwrap();
    }
    let (store, report) = open(dir.path(), opts(10 << 20));
    assert_eq!(report.entries_fixed, 1, "{report:?}");
    assert_eq!(report.bad_entries_dropped, 1, "{report:?}");
    assert_eq!(listing(&store), expected);
}

#[test]
fn disk_full_is_reported_with_the_segment_and_leaves_no_temp_file() {
    // Needs a small filesystem: a tmpfs, which needs root (CI and the dev machines run as root).
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "cannot mount a 6 MiB tmpfs for the disk-full test: run the tests as root"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let dir = mnt.join("store");
    // The quota is larger than the disk: the disk fills first.
    let (store, _) = open(&dir, opts(100 << 20));
    let a = store.put_init("cam", INIT_A).unwrap();
    let mut stored = 0;
    let err = loop {
        match store.put_segment("cam", seg(a, stored * 2000, 2000, 512 * 1024)) {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 100, "the tmpfs never filled");
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(err.is_no_room());
    assert_eq!(
        err.into_segment(),
        Some(seg(a, stored * 2000, 2000, 512 * 1024))
    );
    let (_, other) = files_on_disk(&dir);
    assert!(other.iter().all(|n| !n.ends_with(".tmp")), "{other:?}");
    assert_eq!(listing(&store).len() as i64, stored);
    assert_consistent(&store);
    // Still usable: free space through retention, then write again.
    let r = store
        .enforce_retention(stored * 2000 + 3_600_000 - 3 * 2000)
        .unwrap();
    assert!(r > 0);
    store
        .put_segment("cam", seg(a, stored * 2000, 2000, 512 * 1024))
        .unwrap();
    assert_consistent(&store);
    drop(store);
    let (store, report) = open(&dir, opts(100 << 20));
    assert_eq!(report.temp_files_removed, 0);
    assert_consistent(&store);
}

// ---------------------------------------------------------------------------------------------
// Property-based model check

mod model {
    use super::*;
    use proptest::prelude::*;

    const QUOTA: u64 = 10_000;
    const RETENTION_MS: i64 = 10_000;
    const CAMERAS: [&str; 3] = ["a", "b", "c"];

    #[derive(Debug, Clone)]
    enum Op {
        Put {
            cam: usize,
            start: i64,
            dur: i64,
            len: usize,
        },
        Retention {
            now: i64,
        },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..CAMERAS.len(), 0..200i64, 1..5000i64, 1..4000usize)
                .prop_map(|(cam, s, dur, len)| Op::Put { cam, start: s * 250, dur, len }),
            // Rarely larger than the quota.
            1 => (0..CAMERAS.len(), 0..200i64).prop_map(|(cam, s)| Op::Put {
                cam,
                start: s * 250,
                dur: 100,
                len: QUOTA as usize + 1,
            }),
            2 => (0..70_000i64).prop_map(|now| Op::Retention { now }),
            1 => Just(Op::Reopen),
        ]
    }

    /// The model: a list of (camera, start, end, len).
    #[derive(Default, Debug)]
    struct Model(Vec<(usize, i64, i64, u64)>);

    impl Model {
        fn used(&self) -> u64 {
            self.0.iter().map(|s| s.3).sum()
        }

        /// What the store should answer to a put.
        fn put(&mut self, cam: usize, start: i64, end: i64, len: u64) -> Result<(), &'static str> {
            if len > QUOTA {
                return Err("too large");
            }
            if self.0.iter().any(|s| s.0 == cam && s.1 == start) {
                return Err("duplicate");
            }
            while self.used() + len > QUOTA {
                // Oldest start first; ties to the camera whose id sorts first.
                let i = (0..self.0.len())
                    .min_by_key(|&i| (self.0[i].1, CAMERAS[self.0[i].0]))
                    .unwrap();
                self.0.remove(i);
            }
            self.0.push((cam, start, end, len));
            Ok(())
        }

        fn retention(&mut self, now: i64) {
            self.0.retain(|s| s.2 >= now - RETENTION_MS);
        }

        fn listing(&self, cam: usize) -> Vec<(i64, i64, u64)> {
            let mut v: Vec<_> = self
                .0
                .iter()
                .filter(|s| s.0 == cam)
                .map(|s| (s.1, s.2, s.3))
                .collect();
            v.sort();
            v
        }
    }

    fn model_opts() -> StoreOptions {
        StoreOptions {
            retention: Duration::from_millis(RETENTION_MS as u64),
            ..opts(QUOTA)
        }
    }

    fn open_with_inits(dir: &Path) -> (Store, Vec<InitId>) {
        let (store, _) = open(dir, model_opts());
        let inits = CAMERAS
            .iter()
            .map(|c| store.put_init(c, c.as_bytes()).unwrap())
            .collect();
        (store, inits)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, mut inits) = open_with_inits(dir.path());
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Put { cam, start, dur, len } => {
                        let got = store.put_segment(CAMERAS[cam], seg(inits[cam], start, dur, len));
                        let want = model.put(cam, start, start + dur, len as u64);
                        match (&got, want) {
                            (Ok(_), Ok(())) => {}
                            (Err(StoreError::TooLarge { .. }), Err("too large")) => {}
                            (Err(StoreError::Duplicate { .. }), Err("duplicate")) => {}
                            (got, want) => prop_assert!(false, "store {got:?}, model {want:?}"),
                        }
                    }
                    Op::Retention { now } => {
                        store.enforce_retention(now).unwrap();
                        model.retention(now);
                    }
                    Op::Reopen => {
                        drop(store);
                        (store, inits) = open_with_inits(dir.path());
                    }
                }
                for (i, cam) in CAMERAS.iter().enumerate() {
                    let got: Vec<_> = store
                        .segments(cam, i64::MIN, i64::MAX)
                        .unwrap()
                        .into_iter()
                        .map(|m| (m.start_ms, m.end_ms, m.bytes))
                        .collect();
                    prop_assert_eq!(got, model.listing(i), "camera {}", cam);
                }
                let usage = store.usage();
                prop_assert_eq!(usage.used_bytes, model.used());
                prop_assert!(usage.used_bytes <= QUOTA);
            }
            assert_consistent(&store);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// kill -9 in the middle of writes

/// Set in the environment of the child process of [`kill9_mid_write_loses_nothing_acknowledged`]:
/// the store directory it writes to.
const KILL9_CHILD_ENV: &str = "PORCHLIGHT_STORE_KILL9_CHILD_DIR";
const KILL9_CAMERAS: [&str; 3] = ["k0", "k1", "k2"];
const KILL9_QUOTA: u64 = 4 << 20;

/// The child's segment length for a start time: 1 byte to ~300 KiB, so kills land in all parts
/// of a write.
fn kill9_len(start_ms: i64) -> usize {
    1 + (content(start_ms, 8)[0] as usize) * 1200
}

/// Not a test of its own: the body of the child process of the kill -9 test. Without the
/// environment variable it does nothing.
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(KILL9_CHILD_ENV) else {
        return;
    };
    let (store, _) = Store::open(Path::new(&dir), opts(KILL9_QUOTA)).expect("child: open");
    let inits: Vec<InitId> = KILL9_CAMERAS
        .iter()
        .map(|c| store.put_init(c, c.as_bytes()).expect("child: put_init"))
        .collect();
    // Continue after the newest segment on disk: start times stay unique across runs.
    let mut next = listing(&store)
        .iter()
        .map(|m| m.start_ms)
        .max()
        .unwrap_or(1_000_000)
        + 1000;
    let mut out = std::io::stdout();
    for i in 0.. {
        let cam = i % KILL9_CAMERAS.len();
        let start = next;
        next += 1000;
        let s = NewSegment {
            bytes: content(start, kill9_len(start)),
            ..seg(inits[cam], start, 1000, 1)
        };
        store
            .put_segment(KILL9_CAMERAS[cam], s)
            .expect("child: put_segment");
        writeln!(out, "ack {} {start}", KILL9_CAMERAS[cam]).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill9_mid_write_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill9 seed {seed}");
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut recovered = OpenReport::default();
    for round in 0..10 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store::tests::kill9_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL9_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acks = Arc::clone(&acks);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("ack ") {
                        let (cam, start) = rest.split_once(' ').unwrap();
                        acks.lock()
                            .unwrap()
                            .push((cam.to_string(), start.parse::<i64>().unwrap()));
                    }
                }
            })
        };
        // Let it get going, then kill it at a random moment.
        let deadline = Instant::now() + Duration::from_secs(20);
        while acks.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rand(250)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let round_acks = std::mem::take(&mut *acks.lock().unwrap());
        assert!(
            !round_acks.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        acked.extend(round_acks);

        let (store, report) = Store::open(dir.path(), opts(KILL9_QUOTA)).unwrap();
        assert_eq!(report.index_moved_to, None, "round {round}: {report:?}");
        recovered.temp_files_removed += report.temp_files_removed;
        recovered.orphans_indexed += report.orphans_indexed;
        recovered.missing_dropped += report.missing_dropped;
        assert_consistent(&store);
        // Eviction is oldest first and start times only grow, so every acknowledged segment
        // at or after the oldest one present must be present, with its bytes.
        let present = listing(&store);
        let oldest = present.iter().map(|m| m.start_ms).min().unwrap();
        for (cam, start) in &acked {
            if *start >= oldest {
                let m = store
                    .segment(cam, *start)
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged {cam}/{start} lost"));
                assert_eq!(m.bytes as usize, kill9_len(*start));
                assert_eq!(
                    store.read_segment(&m).unwrap(),
                    content(*start, m.bytes as usize)
                );
            }
        }
    }
    let unique: BTreeSet<_> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "start times reused across runs");
    eprintln!(
        "kill9: {} acknowledged; recovery removed {} temp files, indexed {} orphans, dropped {} entries",
        acked.len(),
        recovered.temp_files_removed,
        recovered.orphans_indexed,
        recovered.missing_dropped
    );
}
