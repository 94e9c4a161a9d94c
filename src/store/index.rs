//! Key and value encodings of the store's sled trees.
//!
//! All integers are big-endian; signed ones have their sign bit flipped first so that the
//! byte order of keys equals the numeric order (a range scan over a camera's keys returns its
//! segments by start time, including times before 1970). Camera ids never contain `0x00`, so
//! `camera ++ 0x00` is an exact prefix for one camera.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `store.segments` | camera, `0x00`, start_ms (8) | version `1`, end_ms (8), init (8), video_frames (4), audio_frames (4), len (8) |
//! | `store.inits` | camera, `0x00`, init (8) | version `1`, len (8), last_put_ms (8) |
//! | `store.counters` | `"total"` or `"day"` + UTC day number (8) | bytes written (8) |
//! | `store.meta` | `"format"` | format version (4) |

use super::{InitId, SegmentMeta};

/// Tree of segment records.
pub(super) const SEGMENTS_TREE: &str = "store.segments";
/// Tree of init segment records.
pub(super) const INITS_TREE: &str = "store.inits";
/// Tree of write counters (flash wear).
pub(super) const COUNTERS_TREE: &str = "store.counters";
/// Tree holding the format version; its absence in an existing database means sled lost data.
pub(super) const META_TREE: &str = "store.meta";
/// Key of the format version in [`META_TREE`].
pub(super) const FORMAT_KEY: &[u8] = b"format";
/// The format version this build reads and writes.
pub(super) const FORMAT_VERSION: u32 = 1;

const VALUE_VERSION: u8 = 1;
const SEGMENT_VALUE_LEN: usize = 1 + 8 + 8 + 4 + 4 + 8;
const INIT_VALUE_LEN: usize = 1 + 8 + 8;
const TOTAL_KEY: &[u8] = b"total";
const DAY_PREFIX: &[u8] = b"day";
const MS_PER_DAY: i64 = 86_400_000;

/// Order-preserving encoding of an `i64`.
fn ord_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ord_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// `camera ++ 0x00`: the prefix of all of a camera's keys.
pub(super) fn camera_prefix(camera: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(camera.len() + 9);
    k.extend_from_slice(camera.as_bytes());
    k.push(0);
    k
}

/// Key of a camera's segment starting at `start_ms`.
pub(super) fn segment_key(camera: &str, start_ms: i64) -> Vec<u8> {
    let mut k = camera_prefix(camera);
    k.extend_from_slice(&ord_i64(start_ms));
    k
}

/// Splits a key into camera and trailing 8 bytes.
fn split_key(key: &[u8]) -> Option<(String, [u8; 8])> {
    let sep = key.iter().position(|&b| b == 0)?;
    let camera = std::str::from_utf8(&key[..sep]).ok()?;
    let tail: [u8; 8] = key[sep + 1..].try_into().ok()?;
    super::files::is_valid_camera(camera).then(|| (camera.to_owned(), tail))
}

/// The value of a segment record.
pub(super) fn segment_value(meta: &SegmentMeta) -> [u8; SEGMENT_VALUE_LEN] {
    let mut v = [0u8; SEGMENT_VALUE_LEN];
    v[0] = VALUE_VERSION;
    v[1..9].copy_from_slice(&meta.end_ms.to_be_bytes());
    v[9..17].copy_from_slice(meta.init.as_bytes());
    v[17..21].copy_from_slice(&meta.video_frames.to_be_bytes());
    v[21..25].copy_from_slice(&meta.audio_frames.to_be_bytes());
    v[25..33].copy_from_slice(&meta.bytes.to_be_bytes());
    v
}

/// Decodes a segment record; `None` for anything malformed (it is then dropped and the
/// segment re-indexed from its file).
pub(super) fn decode_segment(key: &[u8], value: &[u8]) -> Option<SegmentMeta> {
    let (camera, start) = split_key(key)?;
    let v: &[u8; SEGMENT_VALUE_LEN] = value.try_into().ok()?;
    if v[0] != VALUE_VERSION {
        return None;
    }
    let meta = SegmentMeta {
        camera,
        start_ms: from_ord_i64(start),
        end_ms: i64::from_be_bytes(v[1..9].try_into().ok()?),
        init: InitId(v[9..17].try_into().ok()?),
        video_frames: u32::from_be_bytes(v[17..21].try_into().ok()?),
        audio_frames: u32::from_be_bytes(v[21..25].try_into().ok()?),
        bytes: u64::from_be_bytes(v[25..33].try_into().ok()?),
    };
    (meta.end_ms > meta.start_ms && meta.bytes > 0).then_some(meta)
}

/// Key of a camera's init segment.
pub(super) fn init_key(camera: &str, init: InitId) -> Vec<u8> {
    let mut k = camera_prefix(camera);
    k.extend_from_slice(init.as_bytes());
    k
}

/// An init segment's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InitRecord {
    /// Size of the file.
    pub len: u64,
    /// When it was last put (UTC ms); the newest init of a camera is kept even unreferenced.
    pub last_put_ms: i64,
}

pub(super) fn init_value(r: InitRecord) -> [u8; INIT_VALUE_LEN] {
    let mut v = [0u8; INIT_VALUE_LEN];
    v[0] = VALUE_VERSION;
    v[1..9].copy_from_slice(&r.len.to_be_bytes());
    v[9..17].copy_from_slice(&r.last_put_ms.to_be_bytes());
    v
}

/// Decodes an init record; `None` for anything malformed.
pub(super) fn decode_init(key: &[u8], value: &[u8]) -> Option<(String, InitId, InitRecord)> {
    let (camera, id) = split_key(key)?;
    let v: &[u8; INIT_VALUE_LEN] = value.try_into().ok()?;
    if v[0] != VALUE_VERSION {
        return None;
    }
    let r = InitRecord {
        len: u64::from_be_bytes(v[1..9].try_into().ok()?),
        last_put_ms: i64::from_be_bytes(v[9..17].try_into().ok()?),
    };
    Some((camera, InitId(id), r))
}

/// UTC day number (days since 1970-01-01) of a time.
pub(super) fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(MS_PER_DAY)
}

/// Counter key of the total bytes written.
pub(super) fn total_key() -> &'static [u8] {
    TOTAL_KEY
}

/// Counter key of the bytes written on one UTC day.
pub(super) fn day_key(day: i64) -> Vec<u8> {
    let mut k = DAY_PREFIX.to_vec();
    k.extend_from_slice(&ord_i64(day));
    k
}

/// The day of a day key, if it is one.
#[cfg(test)]
fn decode_day_key(key: &[u8]) -> Option<i64> {
    let tail: [u8; 8] = key.strip_prefix(DAY_PREFIX)?.try_into().ok()?;
    Some(from_ord_i64(tail))
}

/// Adds `n` to a counter value (missing or malformed counts as 0, saturating).
pub(super) fn add_counter(old: Option<&[u8]>, n: u64) -> [u8; 8] {
    decode_counter(old).saturating_add(n).to_be_bytes()
}

/// Decodes a counter value (missing or malformed counts as 0).
pub(super) fn decode_counter(v: Option<&[u8]>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(camera: &str, start_ms: i64) -> SegmentMeta {
        SegmentMeta {
            camera: camera.into(),
            start_ms,
            end_ms: start_ms + 2000,
            init: InitId::of(b"i"),
            video_frames: 60,
            audio_frames: 0,
            bytes: 1_000_000,
        }
    }

    #[test]
    fn segment_keys_sort_by_camera_then_start_including_negative() {
        let mut keys: Vec<(Vec<u8>, (&str, i64))> = [
            ("cam", i64::MIN),
            ("cam", -1),
            ("cam", 0),
            ("cam", 1),
            ("cam", 1_700_000_000_000),
            ("cam", i64::MAX),
            ("cam2", -5),
            ("cam2", 7),
            ("ca", 9),
        ]
        .into_iter()
        .map(|(c, s)| (segment_key(c, s), (c, s)))
        .collect();
        keys.sort();
        let order: Vec<_> = keys.into_iter().map(|(_, cs)| cs).collect();
        assert_eq!(
            order,
            vec![
                ("ca", 9),
                ("cam", i64::MIN),
                ("cam", -1),
                ("cam", 0),
                ("cam", 1),
                ("cam", 1_700_000_000_000),
                ("cam", i64::MAX),
                ("cam2", -5),
                ("cam2", 7),
            ]
        );
    }

    #[test]
    fn camera_prefix_does_not_match_longer_camera() {
        assert!(!segment_key("cam2", 0).starts_with(&camera_prefix("cam")));
        assert!(segment_key("cam", 0).starts_with(&camera_prefix("cam")));
    }

    #[test]
    fn segment_record_round_trips() {
        let m = meta("front", -42);
        let key = segment_key("front", -42);
        assert_eq!(decode_segment(&key, &segment_value(&m)), Some(m));
    }

    #[test]
    fn malformed_segment_records_decode_to_none() {
        let m = meta("front", 5);
        let key = segment_key("front", 5);
        let good = segment_value(&m);
        let mut wrong_version = good;
        wrong_version[0] = 9;
        let mut zero_len = good;
        zero_len[25..33].fill(0);
        assert_eq!(decode_segment(&key, &good[..10]), None);
        assert_eq!(decode_segment(&key, &wrong_version), None);
        assert_eq!(decode_segment(&key, &zero_len), None);
        assert_eq!(decode_segment(&key[..key.len() - 1], &good), None);
        assert_eq!(decode_segment(b"no separator", &good), None);
        assert_eq!(decode_segment(b"bad/cam\0\0\0\0\0\0\0\0\0", &good), None);
    }

    #[test]
    fn init_record_round_trips() {
        let id = InitId::of(b"x");
        let r = InitRecord {
            len: 1100,
            last_put_ms: 1_700_000_000_000,
        };
        assert_eq!(
            decode_init(&init_key("c", id), &init_value(r)),
            Some(("c".to_string(), id, r))
        );
    }

    #[test]
    fn day_keys_round_trip_and_days_are_utc() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399_999), 0);
        assert_eq!(utc_day(86_400_000), 1);
        assert_eq!(utc_day(-1), -1);
        assert_eq!(decode_day_key(&day_key(19_000)), Some(19_000));
        assert_eq!(decode_day_key(total_key()), None);
    }

    #[test]
    fn counters_add_and_tolerate_garbage() {
        assert_eq!(decode_counter(Some(&add_counter(None, 5))), 5);
        assert_eq!(
            decode_counter(Some(&add_counter(Some(&7u64.to_be_bytes()), 5))),
            12
        );
        assert_eq!(decode_counter(Some(b"xyz")), 0);
        assert_eq!(
            decode_counter(Some(&add_counter(Some(&u64::MAX.to_be_bytes()), 5))),
            u64::MAX
        );
    }
}
