//! ISO BMFF (ISO/IEC 14496-12) box writing and reading for our own files.
//!
//! # What we write
//!
//! **Init segment** ([`init_segment`]): `ftyp` + `moov`.
//!
//! ```text
//! ftyp  major isom, minor 0x200, compatible isom iso6 mp41 (+ avc1 for H.264)
//! moov
//!   mvhd            timescale 1000, duration 0 (fragmented), next_track_ID
//!   trak            one per track: video id 1, audio id 2
//!     tkhd          flags enabled|in_movie, width/height as 16.16 (video)
//!     mdia
//!       mdhd        the track's timescale (90 kHz video, sample rate audio), language und
//!       hdlr        vide | soun
//!       minf
//!         vmhd|smhd
//!         dinf/dref one self-contained `url `
//!         stbl      stsd (the sample entry retina built, verbatim) + empty stts stsc stsz stco
//!   mvex
//!     trex          one per track, all defaults zero: every fragment says everything itself
//! ```
//!
//! **Fragment** ([`fragment`]): `moof` + one `mdat`.
//!
//! ```text
//! moof
//!   mfhd            sequence_number
//!   traf            one per track with at least one sample, in the order given
//!     tfhd          default-base-is-moof (0x020000): offsets count from the moof's first byte
//!     tfdt          version 1 (64-bit base media decode time)
//!     trun          flags 0x000701: data_offset + per-sample duration, size, flags
//! mdat              the samples of the first traf, then those of the second, ...
//! ```
//!
//! Per-sample flags cost 4 bytes a sample but keep the writer oblivious of GOP structure, so the
//! same function serves whole-GOP segments and one-frame live fragments that may start anywhere.
//! Sync samples carry `0x02000000` (depends on nothing), others `0x01010000` (depends on others,
//! non-sync). No `ctts`: cameras send no B-frames, so presentation time equals decode time.
//!
//! There is no `hvc1` brand in the MP4 registry, so H.265 files carry only the generic brands.
//!
//! Sizes: a fragment's size is computed before writing, so each fragment is exactly one
//! allocation. Boxes are written with a placeholder size that is patched when the box closes.
//!
//! # What we read
//!
//! [`parse_init`] and [`parse_fragment`] read back **our own** output (export reads segment files
//! from disk, which may be truncated or damaged). They are strict: any inconsistency is an
//! [`Mp4Error`], never a panic, and no allocation is sized from an unchecked count. Box size 0
//! ("extends to the end of the file") is rejected: we never write it, and a zero-filled tail left
//! by a torn write would otherwise parse as one box. Size 1 (64-bit `largesize`) is understood.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Range;

use bytes::{BufMut, Bytes};

use super::{Frame, StreamInfo, TrackInfo, TrackKind};

/// Track id of the video track in everything we write.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the audio track in everything we write.
pub const AUDIO_TRACK_ID: u32 = 2;
/// Timescale of `mvhd` and `tkhd` durations (milliseconds).
pub const MOVIE_TIMESCALE: u32 = 1000;

/// `trun` sample flags of a sync sample: `sample_depends_on = 2` (independent).
pub const SAMPLE_FLAGS_SYNC: u32 = 0x0200_0000;
/// `trun` sample flags of a non-sync sample: `sample_depends_on = 1`, `sample_is_non_sync_sample`.
pub const SAMPLE_FLAGS_NON_SYNC: u32 = 0x0101_0000;
/// The `sample_is_non_sync_sample` bit of the sample flags.
pub const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

/// The largest fragment [`fragment`] writes: `trun` data offsets are signed 32-bit.
pub const MAX_FRAGMENT_BYTES: u64 = i32::MAX as u64;

// Fixed sizes of the fragment boxes, for sizing the output before writing it.
const MFHD_LEN: usize = 16;
const TFHD_LEN: usize = 16;
const TFDT_LEN: usize = 20;
const TRUN_FIXED_LEN: usize = 20;
const TRUN_PER_SAMPLE: usize = 12;
const TRAF_FIXED_LEN: usize = 8 + TFHD_LEN + TFDT_LEN + TRUN_FIXED_LEN;

// tfhd / trun flags (ISO/IEC 14496-12 8.8.7, 8.8.8).
const TFHD_BASE_DATA_OFFSET: u32 = 0x00_0001;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x00_0002;
const TFHD_DEFAULT_DURATION: u32 = 0x00_0008;
const TFHD_DEFAULT_SIZE: u32 = 0x00_0010;
const TFHD_DEFAULT_FLAGS: u32 = 0x00_0020;
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
const TRUN_DATA_OFFSET: u32 = 0x00_0001;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x00_0004;
const TRUN_DURATION: u32 = 0x00_0100;
const TRUN_SIZE: u32 = 0x00_0200;
const TRUN_FLAGS: u32 = 0x00_0400;
const TRUN_CTO: u32 = 0x00_0800;

/// The track id we use for a track kind.
pub const fn track_id(kind: TrackKind) -> u32 {
    match kind {
        TrackKind::Video => VIDEO_TRACK_ID,
        TrackKind::Audio => AUDIO_TRACK_ID,
    }
}

/// A box type such as `moov`, printed as text when it is printable ASCII.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FourCc(pub [u8; 4]);

impl fmt::Display for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            for b in self.0 {
                write!(f, "{}", char::from(b))?;
            }
            Ok(())
        } else {
            write!(f, "0x{}", hex::encode(self.0))
        }
    }
}

impl fmt::Debug for FourCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FourCc({self})")
    }
}

/// Errors of the box writer and of the readers of our own files. Offsets are byte offsets from
/// the start of the buffer given to the reader.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Mp4Error {
    /// The data ended inside a box header or a box's fields.
    #[error("truncated {box_type} at offset {offset}: need {needed} more bytes")]
    Truncated {
        /// The box being read (or the box whose header was cut).
        box_type: FourCc,
        /// Where the missing bytes should have been.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },
    /// A box declares a size that cannot be right: 0, smaller than its header, or larger than
    /// what contains it.
    #[error("box {box_type} at offset {offset} has impossible size {size} (room: {room})")]
    BadBoxSize {
        /// Type of the offending box (as far as it could be read).
        box_type: FourCc,
        /// Offset of the box header.
        offset: usize,
        /// The declared size.
        size: u64,
        /// The bytes available for it.
        room: usize,
    },
    /// A required box is absent.
    #[error("missing {box_type} box in {parent}")]
    MissingBox {
        /// The box that was expected.
        box_type: FourCc,
        /// The box that should have contained it (`file` for top level).
        parent: FourCc,
    },
    /// A top-level box is not the one our files have at that place.
    #[error("expected {expected} at offset {offset}, found {found}")]
    UnexpectedBox {
        /// What our writer puts there.
        expected: FourCc,
        /// What was there.
        found: FourCc,
        /// Offset of the found box.
        offset: usize,
    },
    /// Bytes follow the last box of a fragment.
    #[error("{len} unexpected bytes after the fragment at offset {offset}")]
    TrailingData {
        /// Where the extra data starts.
        offset: usize,
        /// How many bytes follow.
        len: usize,
    },
    /// A field has a value we do not write and do not read (version, handler, flags).
    #[error("unsupported {what} {value:#x} in {box_type}")]
    Unsupported {
        /// The box holding the field.
        box_type: FourCc,
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A track's `mdhd` timescale is zero.
    #[error("track {track_id} has timescale 0")]
    ZeroTimescale {
        /// The track.
        track_id: u32,
    },
    /// Two `trak` boxes of an init segment share a track id.
    #[error("duplicate track id {track_id}")]
    DuplicateTrack {
        /// The repeated id.
        track_id: u32,
    },
    /// A `trun` sample lacks a duration or size and the `tfhd` gives no default.
    #[error("track {track_id} sample {sample}: no {field} and no default")]
    MissingSampleField {
        /// The track.
        track_id: u32,
        /// Index of the sample within its track fragment.
        sample: usize,
        /// `duration` or `size`.
        field: &'static str,
    },
    /// A sample's bytes lie (partly) outside the `mdat` payload.
    #[error("track {track_id} sample {sample} at {offset}+{size} lies outside mdat {mdat:?}")]
    SampleOutOfRange {
        /// The track.
        track_id: u32,
        /// Index of the sample within its track fragment.
        sample: usize,
        /// Computed offset of the sample (may be negative when the data offset is bogus).
        offset: i64,
        /// Declared size.
        size: u32,
        /// The `mdat` payload range.
        mdat: Range<usize>,
    },
    /// Decode times overflow 64 bits.
    #[error("track {track_id}: decode time overflows")]
    TimeOverflow {
        /// The track.
        track_id: u32,
    },
    /// The fragment to write would exceed [`MAX_FRAGMENT_BYTES`] (or a sample exceeds 4 GiB).
    #[error("fragment of {bytes} bytes is too large to write")]
    FragmentTooLarge {
        /// The size it would have had.
        bytes: u64,
    },
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Writes a box whose body `body` appends; its size is patched afterwards.
#[inline]
pub(crate) fn write_box(buf: &mut Vec<u8>, box_type: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.put_u32(0);
    buf.extend_from_slice(box_type);
    body(buf);
    let size = buf.len() - start;
    // Every box we build is bounded far below 4 GiB (fragments by MAX_FRAGMENT_BYTES, whose
    // mdat header is written separately; moov by export's sample limit), so this cannot fail.
    let size = u32::try_from(size).expect("box sizes are bounded below 4 GiB by the callers");
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Writes a full box (version + flags, then `body`).
#[inline]
pub(crate) fn write_full_box(
    buf: &mut Vec<u8>,
    box_type: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    write_box(buf, box_type, |buf| {
        buf.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        body(buf);
    });
}

/// Which brand set a `ftyp` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// Init segment of a fragmented file (`iso6`: `tfdt`, default-base-is-moof).
    Fragmented,
    /// A progressive file from export.
    Progressive,
}

/// Writes `ftyp`. `video_entry` is the video sample entry (its type picks `avc1`).
pub(crate) fn write_ftyp(buf: &mut Vec<u8>, kind: FileKind, video_entry: &[u8]) {
    write_box(buf, b"ftyp", |buf| {
        buf.extend_from_slice(b"isom");
        buf.put_u32(0x200);
        buf.extend_from_slice(b"isom");
        buf.extend_from_slice(match kind {
            FileKind::Fragmented => b"iso6",
            FileKind::Progressive => b"iso2",
        });
        if video_entry.get(4..8) == Some(b"avc1") {
            buf.extend_from_slice(b"avc1");
        }
        buf.extend_from_slice(b"mp41");
    });
}

const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn put_matrix(buf: &mut Vec<u8>) {
    for v in UNITY_MATRIX {
        buf.put_u32(v);
    }
}

/// Writes `mvhd` (version 1 only when the duration needs it).
pub(crate) fn write_mvhd(buf: &mut Vec<u8>, duration_ms: u64, next_track_id: u32) {
    let v1 = duration_ms > u64::from(u32::MAX);
    write_full_box(buf, b"mvhd", u8::from(v1), 0, |buf| {
        if v1 {
            buf.put_u64(0); // creation_time
            buf.put_u64(0); // modification_time
            buf.put_u32(MOVIE_TIMESCALE);
            buf.put_u64(duration_ms);
        } else {
            buf.put_u32(0);
            buf.put_u32(0);
            buf.put_u32(MOVIE_TIMESCALE);
            buf.put_u32(duration_ms as u32);
        }
        buf.put_u32(0x0001_0000); // rate 1.0
        buf.put_u16(0x0100); // volume 1.0
        buf.put_bytes(0, 10); // reserved
        put_matrix(buf);
        buf.put_bytes(0, 24); // pre_defined
        buf.put_u32(next_track_id);
    });
}

/// What a `trak` needs besides its sample tables.
pub(crate) struct TrakParams<'a> {
    pub track_id: u32,
    pub kind: TrackKind,
    pub timescale: u32,
    pub width: u32,
    pub height: u32,
    pub sample_entry: &'a [u8],
    /// Duration in the track's timescale (`mdhd`).
    pub media_duration: u64,
    /// Duration in [`MOVIE_TIMESCALE`] (`tkhd`).
    pub movie_duration: u64,
}

/// 16.16 fixed point of a pixel dimension (saturating: no camera is 65536 pixels wide).
fn fixed_16_16(v: u32) -> u32 {
    v.min(0xffff) << 16
}

/// Writes a `trak`; `tables` appends the sample tables after `stsd`.
pub(crate) fn write_trak(buf: &mut Vec<u8>, p: &TrakParams<'_>, tables: impl FnOnce(&mut Vec<u8>)) {
    write_box(buf, b"trak", |buf| {
        let v1 = p.movie_duration > u64::from(u32::MAX);
        write_full_box(buf, b"tkhd", u8::from(v1), 0x3, |buf| {
            if v1 {
                buf.put_u64(0);
                buf.put_u64(0);
                buf.put_u32(p.track_id);
                buf.put_u32(0);
                buf.put_u64(p.movie_duration);
            } else {
                buf.put_u32(0);
                buf.put_u32(0);
                buf.put_u32(p.track_id);
                buf.put_u32(0);
                buf.put_u32(p.movie_duration as u32);
            }
            buf.put_bytes(0, 8); // reserved
            buf.put_u16(0); // layer
            buf.put_u16(match p.kind {
                TrackKind::Video => 0,
                TrackKind::Audio => 1,
            }); // alternate_group
            buf.put_u16(match p.kind {
                TrackKind::Video => 0,
                TrackKind::Audio => 0x0100,
            }); // volume
            buf.put_u16(0); // reserved
            put_matrix(buf);
            buf.put_u32(fixed_16_16(p.width));
            buf.put_u32(fixed_16_16(p.height));
        });
        write_box(buf, b"mdia", |buf| {
            let v1 = p.media_duration > u64::from(u32::MAX);
            write_full_box(buf, b"mdhd", u8::from(v1), 0, |buf| {
                if v1 {
                    buf.put_u64(0);
                    buf.put_u64(0);
                    buf.put_u32(p.timescale);
                    buf.put_u64(p.media_duration);
                } else {
                    buf.put_u32(0);
                    buf.put_u32(0);
                    buf.put_u32(p.timescale);
                    buf.put_u32(p.media_duration as u32);
                }
                buf.put_u16(0x55c4); // language "und"
                buf.put_u16(0); // pre_defined
            });
            write_full_box(buf, b"hdlr", 0, 0, |buf| {
                buf.put_u32(0); // pre_defined
                let (handler, name): (&[u8; 4], &[u8]) = match p.kind {
                    TrackKind::Video => (b"vide", b"VideoHandler\0"),
                    TrackKind::Audio => (b"soun", b"SoundHandler\0"),
                };
                buf.extend_from_slice(handler);
                buf.put_bytes(0, 12); // reserved
                buf.extend_from_slice(name);
            });
            write_box(buf, b"minf", |buf| {
                match p.kind {
                    TrackKind::Video => write_full_box(buf, b"vmhd", 0, 1, |buf| {
                        buf.put_bytes(0, 8); // graphicsmode + opcolor
                    }),
                    TrackKind::Audio => write_full_box(buf, b"smhd", 0, 0, |buf| {
                        buf.put_u32(0); // balance + reserved
                    }),
                }
                write_box(buf, b"dinf", |buf| {
                    write_full_box(buf, b"dref", 0, 0, |buf| {
                        buf.put_u32(1);
                        // flags 1: the media data is in this file.
                        write_full_box(buf, b"url ", 0, 1, |_| {});
                    });
                });
                write_box(buf, b"stbl", |buf| {
                    write_full_box(buf, b"stsd", 0, 0, |buf| {
                        buf.put_u32(1);
                        buf.extend_from_slice(p.sample_entry);
                    });
                    tables(buf);
                });
            });
        });
    });
}

/// The tracks of a stream in track-id order, with their ids.
fn stream_tracks(info: &StreamInfo) -> impl Iterator<Item = (u32, &TrackInfo)> {
    std::iter::once((VIDEO_TRACK_ID, &info.video))
        .chain(info.audio.as_ref().map(|a| (AUDIO_TRACK_ID, a)))
}

/// Builds the init segment (`ftyp` + `moov` with `mvex`) for a stream.
///
/// The video track gets id [`VIDEO_TRACK_ID`], the audio track (if any) [`AUDIO_TRACK_ID`];
/// the sample entries are copied verbatim into `stsd`.
pub fn init_segment(info: &StreamInfo) -> Bytes {
    let entries: usize = stream_tracks(info).map(|(_, t)| t.sample_entry.len()).sum();
    let mut buf = Vec::with_capacity(1024 + entries);
    write_ftyp(&mut buf, FileKind::Fragmented, &info.video.sample_entry);
    write_box(&mut buf, b"moov", |buf| {
        let next_track_id = if info.audio.is_some() {
            AUDIO_TRACK_ID + 1
        } else {
            VIDEO_TRACK_ID + 1
        };
        write_mvhd(buf, 0, next_track_id);
        for (id, t) in stream_tracks(info) {
            let kind = if id == VIDEO_TRACK_ID {
                TrackKind::Video
            } else {
                TrackKind::Audio
            };
            let params = TrakParams {
                track_id: id,
                kind,
                timescale: t.timescale,
                width: t.width,
                height: t.height,
                sample_entry: &t.sample_entry,
                media_duration: 0,
                movie_duration: 0,
            };
            write_trak(buf, &params, |buf| {
                write_full_box(buf, b"stts", 0, 0, |buf| buf.put_u32(0));
                write_full_box(buf, b"stsc", 0, 0, |buf| buf.put_u32(0));
                write_full_box(buf, b"stsz", 0, 0, |buf| buf.put_u64(0));
                write_full_box(buf, b"stco", 0, 0, |buf| buf.put_u32(0));
            });
        }
        write_box(buf, b"mvex", |buf| {
            for (id, _) in stream_tracks(info) {
                write_full_box(buf, b"trex", 0, 0, |buf| {
                    buf.put_u32(id);
                    buf.put_u32(1); // default_sample_description_index
                    buf.put_u32(0); // default_sample_duration
                    buf.put_u32(0); // default_sample_size
                    buf.put_u32(0); // default_sample_flags
                });
            }
        });
    });
    Bytes::from(buf)
}

/// The samples of one track in one fragment.
///
/// `F` is [`Frame`] or anything that borrows as one (`Arc<Frame>` for the live feed), so a
/// fragment can be written from frames held elsewhere without copying them.
#[derive(Debug)]
pub struct TrackRun<'a, F = Frame> {
    /// Track id ([`track_id`] of the frames' kind for our files).
    pub track_id: u32,
    /// Decode time of the first frame, in the track's timescale (`tfdt`).
    pub base_decode_time: u64,
    /// The frames, in decode order, with their durations filled in. May be empty (the track is
    /// then left out of the fragment).
    pub frames: &'a [F],
}

impl<'a, F: Borrow<Frame>> TrackRun<'a, F> {
    /// A run for our track id of `kind`.
    pub fn new(kind: TrackKind, base_decode_time: u64, frames: &'a [F]) -> Self {
        TrackRun {
            track_id: track_id(kind),
            base_decode_time,
            frames,
        }
    }
}

/// Writes one fragment: `moof` (sequence number `sequence`, one `traf` per non-empty run) and
/// one `mdat` holding the runs' samples in order.
///
/// Durations are taken from the frames as they are (0 is written as 0; the segmenter fills
/// them). Fails only when the fragment would exceed [`MAX_FRAGMENT_BYTES`].
pub fn fragment<F: Borrow<Frame>>(
    sequence: u32,
    runs: &[TrackRun<'_, F>],
) -> Result<Bytes, Mp4Error> {
    // Pass 1: sizes, so the output is one exact allocation and data offsets are known.
    let mut moof_len = 8 + MFHD_LEN;
    let mut payload: u64 = 0;
    for run in runs.iter().filter(|r| !r.frames.is_empty()) {
        moof_len += TRAF_FIXED_LEN + TRUN_PER_SAMPLE * run.frames.len();
        for f in run.frames {
            let len = f.borrow().data.len() as u64;
            if len > u64::from(u32::MAX) {
                return Err(Mp4Error::FragmentTooLarge { bytes: len });
            }
            payload += len;
        }
    }
    let total = moof_len as u64 + 8 + payload;
    if total > MAX_FRAGMENT_BYTES {
        return Err(Mp4Error::FragmentTooLarge { bytes: total });
    }
    let mut buf = Vec::with_capacity(total as usize);

    // Pass 2: moof.
    write_box(&mut buf, b"moof", |buf| {
        write_full_box(buf, b"mfhd", 0, 0, |buf| buf.put_u32(sequence));
        // Samples start after the moof and the 8-byte mdat header.
        let mut data_offset = moof_len + 8;
        for run in runs.iter().filter(|r| !r.frames.is_empty()) {
            write_box(buf, b"traf", |buf| {
                write_full_box(buf, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |buf| {
                    buf.put_u32(run.track_id);
                });
                write_full_box(buf, b"tfdt", 1, 0, |buf| buf.put_u64(run.base_decode_time));
                let flags = TRUN_DATA_OFFSET | TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS;
                write_full_box(buf, b"trun", 0, flags, |buf| {
                    buf.put_u32(run.frames.len() as u32);
                    // Fits: the whole fragment is at most i32::MAX bytes (checked above).
                    buf.put_i32(data_offset as i32);
                    for f in run.frames {
                        let f = f.borrow();
                        buf.put_u32(f.duration);
                        buf.put_u32(f.data.len() as u32);
                        buf.put_u32(if f.is_key {
                            SAMPLE_FLAGS_SYNC
                        } else {
                            SAMPLE_FLAGS_NON_SYNC
                        });
                        data_offset += f.data.len();
                    }
                });
            });
        }
    });
    debug_assert_eq!(buf.len(), moof_len);

    // mdat (its size fits 32 bits: the fragment is below 2 GiB).
    buf.put_u32((8 + payload) as u32);
    buf.extend_from_slice(b"mdat");
    for run in runs {
        for f in run.frames {
            buf.extend_from_slice(&f.borrow().data);
        }
    }
    debug_assert_eq!(buf.len() as u64, total);
    Ok(Bytes::from(buf))
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// One box found by [`Boxes`]. Offsets are absolute in the buffer the reader started from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawBox<'a> {
    pub box_type: FourCc,
    /// Offset of the box header.
    pub start: usize,
    /// Offset of the body.
    pub body_start: usize,
    pub body: &'a [u8],
}

impl RawBox<'_> {
    pub(crate) fn end(&self) -> usize {
        self.body_start + self.body.len()
    }
}

/// Iterates over the boxes in `data` (a box body or a whole file). Stops after the first error.
pub(crate) struct Boxes<'a> {
    data: &'a [u8],
    pos: usize,
    /// Absolute offset of `data[0]`.
    base: usize,
    /// The containing box, for error messages.
    parent: FourCc,
}

impl<'a> Boxes<'a> {
    pub(crate) fn new(data: &'a [u8], base: usize, parent: FourCc) -> Self {
        Boxes {
            data,
            pos: 0,
            base,
            parent,
        }
    }

    pub(crate) fn of(b: &RawBox<'a>) -> Self {
        Boxes::new(b.body, b.body_start, b.box_type)
    }

    fn read_one(&mut self) -> Result<RawBox<'a>, Mp4Error> {
        let rest = &self.data[self.pos..];
        let offset = self.base + self.pos;
        if rest.len() < 8 {
            return Err(Mp4Error::Truncated {
                box_type: self.parent,
                offset,
                needed: 8 - rest.len(),
            });
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let box_type = FourCc([rest[4], rest[5], rest[6], rest[7]]);
        let (size, header) = match size32 {
            1 => {
                let Some(large) = rest.get(8..16) else {
                    return Err(Mp4Error::Truncated {
                        box_type,
                        offset,
                        needed: 16 - rest.len(),
                    });
                };
                let mut b = [0u8; 8];
                b.copy_from_slice(large);
                (u64::from_be_bytes(b), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header as u64 || size > rest.len() as u64 {
            return Err(Mp4Error::BadBoxSize {
                box_type,
                offset,
                size,
                room: rest.len(),
            });
        }
        let size = size as usize;
        self.pos += size;
        Ok(RawBox {
            box_type,
            start: offset,
            body_start: offset + header,
            body: &rest[header..size],
        })
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = Result<RawBox<'a>, Mp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let r = self.read_one();
        if r.is_err() {
            self.pos = self.data.len();
        }
        Some(r)
    }
}

/// The first child of type `box_type`, if any (errors in earlier siblings propagate).
fn find_child<'a>(parent: &RawBox<'a>, box_type: &[u8; 4]) -> Result<Option<RawBox<'a>>, Mp4Error> {
    for b in Boxes::of(parent) {
        let b = b?;
        if &b.box_type.0 == box_type {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

/// The first child of type `box_type`, or [`Mp4Error::MissingBox`].
pub(crate) fn child<'a>(parent: &RawBox<'a>, box_type: &[u8; 4]) -> Result<RawBox<'a>, Mp4Error> {
    find_child(parent, box_type)?.ok_or(Mp4Error::MissingBox {
        box_type: FourCc(*box_type),
        parent: parent.box_type,
    })
}

/// Big-endian field reader over one box body.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
    box_type: FourCc,
}

impl<'a> Cursor<'a> {
    fn new(b: &RawBox<'a>) -> Self {
        Cursor {
            data: b.body,
            pos: 0,
            base: b.body_start,
            box_type: b.box_type,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Mp4Error> {
        let rest = &self.data[self.pos..];
        if rest.len() < n {
            return Err(Mp4Error::Truncated {
                box_type: self.box_type,
                offset: self.base + self.pos,
                needed: n - rest.len(),
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn skip(&mut self, n: usize) -> Result<(), Mp4Error> {
        self.take(n).map(|_| ())
    }

    fn u32(&mut self) -> Result<u32, Mp4Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, Mp4Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn four_cc(&mut self) -> Result<FourCc, Mp4Error> {
        let b = self.take(4)?;
        Ok(FourCc([b[0], b[1], b[2], b[3]]))
    }

    /// Version and flags of a full box.
    fn version_flags(&mut self) -> Result<(u8, u32), Mp4Error> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    /// A field that is 32 bits in version 0 and 64 bits in version 1.
    fn u32_or_u64(&mut self, version: u8) -> Result<u64, Mp4Error> {
        match version {
            0 => self.u32().map(u64::from),
            1 => self.u64(),
            v => Err(Mp4Error::Unsupported {
                box_type: self.box_type,
                what: "version",
                value: u64::from(v),
            }),
        }
    }
}

/// One track of an init segment, as [`parse_init`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitTrack {
    /// `tkhd` track id.
    pub track_id: u32,
    /// From the `hdlr` handler type (`vide` or `soun`).
    pub kind: TrackKind,
    /// `mdhd` timescale (never 0).
    pub timescale: u32,
    /// The first `stsd` sample entry, the whole box.
    pub sample_entry: Vec<u8>,
    /// `tkhd` width in whole pixels.
    pub width: u32,
    /// `tkhd` height in whole pixels.
    pub height: u32,
}

/// What [`parse_init`] finds in an init segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitInfo {
    /// The tracks in `moov` order.
    pub tracks: Vec<InitTrack>,
}

impl InitInfo {
    /// The track with id `track_id`.
    pub fn track(&self, track_id: u32) -> Option<&InitTrack> {
        self.tracks.iter().find(|t| t.track_id == track_id)
    }
}

/// Reads the track list of an init segment we wrote (`ftyp`? + `moov`; other top-level boxes
/// are skipped).
pub fn parse_init(data: &[u8]) -> Result<InitInfo, Mp4Error> {
    let file = FourCc(*b"file");
    let mut moov = None;
    for b in Boxes::new(data, 0, file) {
        let b = b?;
        if &b.box_type.0 == b"moov" {
            moov = Some(b);
            break;
        }
    }
    let moov = moov.ok_or(Mp4Error::MissingBox {
        box_type: FourCc(*b"moov"),
        parent: file,
    })?;
    let mut tracks: Vec<InitTrack> = Vec::new();
    for trak in Boxes::of(&moov) {
        let trak = trak?;
        if &trak.box_type.0 != b"trak" {
            continue;
        }
        let t = parse_trak(&trak)?;
        if tracks.iter().any(|o| o.track_id == t.track_id) {
            return Err(Mp4Error::DuplicateTrack {
                track_id: t.track_id,
            });
        }
        tracks.push(t);
    }
    Ok(InitInfo { tracks })
}

fn parse_trak(trak: &RawBox<'_>) -> Result<InitTrack, Mp4Error> {
    let tkhd = child(trak, b"tkhd")?;
    let mut c = Cursor::new(&tkhd);
    let (version, _) = c.version_flags()?;
    c.u32_or_u64(version)?; // creation_time
    c.u32_or_u64(version)?; // modification_time
    let track_id = c.u32()?;
    c.skip(4)?; // reserved
    c.u32_or_u64(version)?; // duration
    c.skip(8 + 2 + 2 + 2 + 2 + 36)?; // reserved, layer, alternate_group, volume, reserved, matrix
    let width = c.u32()? >> 16;
    let height = c.u32()? >> 16;

    let mdia = child(trak, b"mdia")?;
    let mdhd = child(&mdia, b"mdhd")?;
    let mut c = Cursor::new(&mdhd);
    let (version, _) = c.version_flags()?;
    c.u32_or_u64(version)?;
    c.u32_or_u64(version)?;
    let timescale = c.u32()?;
    if timescale == 0 {
        return Err(Mp4Error::ZeroTimescale { track_id });
    }

    let hdlr = child(&mdia, b"hdlr")?;
    let mut c = Cursor::new(&hdlr);
    c.version_flags()?;
    c.skip(4)?; // pre_defined
    let handler = c.four_cc()?;
    let kind = match &handler.0 {
        b"vide" => TrackKind::Video,
        b"soun" => TrackKind::Audio,
        _ => {
            return Err(Mp4Error::Unsupported {
                box_type: hdlr.box_type,
                what: "handler",
                value: u64::from(u32::from_be_bytes(handler.0)),
            })
        }
    };

    let minf = child(&mdia, b"minf")?;
    let stbl = child(&minf, b"stbl")?;
    let stsd = child(&stbl, b"stsd")?;
    let mut c = Cursor::new(&stsd);
    c.version_flags()?;
    let count = c.u32()?;
    let entries = &stsd.body[c.pos..];
    let first = Boxes::new(entries, stsd.body_start + c.pos, stsd.box_type).next();
    let entry = match (count, first) {
        (1.., Some(entry)) => entry?,
        _ => {
            return Err(Mp4Error::MissingBox {
                box_type: FourCc(*b"entr"),
                parent: stsd.box_type,
            })
        }
    };
    let rel = entry.start - stsd.body_start;
    let sample_entry = stsd.body[rel..rel + (entry.end() - entry.start)].to_vec();
    Ok(InitTrack {
        track_id,
        kind,
        timescale,
        sample_entry,
        width,
        height,
    })
}

/// One sample of a parsed fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleRef {
    /// Decode time in the track's timescale (`tfdt` plus the durations before it).
    pub decode_time: u64,
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Size in bytes.
    pub size: u32,
    /// The `trun` sample flags.
    pub flags: u32,
    /// Offset of the sample's first byte in the fragment buffer (always inside the `mdat`).
    pub offset: usize,
}

impl SampleRef {
    /// True for a sync sample (keyframe; every audio frame).
    pub fn is_sync(&self) -> bool {
        self.flags & SAMPLE_IS_NON_SYNC == 0
    }

    /// The sample's bytes within the fragment buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.size as usize
    }
}

/// The samples of one `traf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackFragment {
    /// `tfhd` track id.
    pub track_id: u32,
    /// `tfdt` base media decode time.
    pub base_decode_time: u64,
    /// The samples of all `trun`s in order.
    pub samples: Vec<SampleRef>,
}

/// A fragment read back by [`parse_fragment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFragment {
    /// `mfhd` sequence number.
    pub sequence: u32,
    /// One entry per `traf`, in file order.
    pub tracks: Vec<TrackFragment>,
    /// The `mdat` payload within the buffer.
    pub mdat: Range<usize>,
}

/// Reads a fragment we wrote: exactly one `moof` followed by exactly one `mdat`, nothing else.
///
/// Every sample's byte range is checked to lie inside the `mdat` payload. Besides what
/// [`fragment`] writes, the general `tfhd`/`trun` forms (defaults in `tfhd`, several `trun`s,
/// first-sample flags, explicit base data offset) are understood; composition offsets other
/// than zero are rejected since nothing we write has them.
pub fn parse_fragment(data: &[u8]) -> Result<ParsedFragment, Mp4Error> {
    let mut top = Boxes::new(data, 0, FourCc(*b"file"));
    let missing = |t: &[u8; 4]| Mp4Error::MissingBox {
        box_type: FourCc(*t),
        parent: FourCc(*b"file"),
    };
    let moof = top.next().ok_or_else(|| missing(b"moof"))??;
    expect_type(&moof, b"moof")?;
    let mdat = top.next().ok_or_else(|| missing(b"mdat"))??;
    expect_type(&mdat, b"mdat")?;
    if mdat.end() != data.len() {
        return Err(Mp4Error::TrailingData {
            offset: mdat.end(),
            len: data.len() - mdat.end(),
        });
    }
    let mdat_range = mdat.body_start..mdat.end();

    let mfhd = child(&moof, b"mfhd")?;
    let mut c = Cursor::new(&mfhd);
    c.version_flags()?;
    let sequence = c.u32()?;

    let mut tracks = Vec::new();
    // Where the data of the previous traf ended, for trafs without an explicit base.
    let mut prev_traf_end = moof.start as i64;
    for traf in Boxes::of(&moof) {
        let traf = traf?;
        if &traf.box_type.0 != b"traf" {
            continue;
        }
        let (t, end) = parse_traf(&traf, moof.start, prev_traf_end, &mdat_range)?;
        prev_traf_end = end;
        tracks.push(t);
    }
    Ok(ParsedFragment {
        sequence,
        tracks,
        mdat: mdat_range,
    })
}

fn expect_type(b: &RawBox<'_>, t: &[u8; 4]) -> Result<(), Mp4Error> {
    if &b.box_type.0 == t {
        Ok(())
    } else {
        Err(Mp4Error::UnexpectedBox {
            expected: FourCc(*t),
            found: b.box_type,
            offset: b.start,
        })
    }
}

/// Parses one `traf`; returns it and the offset where its data ended.
fn parse_traf(
    traf: &RawBox<'_>,
    moof_start: usize,
    prev_traf_end: i64,
    mdat: &Range<usize>,
) -> Result<(TrackFragment, i64), Mp4Error> {
    let tfhd = child(traf, b"tfhd")?;
    let mut c = Cursor::new(&tfhd);
    let (_, tf_flags) = c.version_flags()?;
    let track_id = c.u32()?;
    let base = if tf_flags & TFHD_BASE_DATA_OFFSET != 0 {
        let offset = c.u64()?;
        i64::try_from(offset).map_err(|_| Mp4Error::Unsupported {
            box_type: tfhd.box_type,
            what: "base_data_offset",
            value: offset,
        })?
    } else if tf_flags & TFHD_DEFAULT_BASE_IS_MOOF != 0 {
        moof_start as i64
    } else {
        prev_traf_end
    };
    if tf_flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        let index = c.u32()?;
        if index != 1 {
            return Err(Mp4Error::Unsupported {
                box_type: tfhd.box_type,
                what: "sample_description_index",
                value: u64::from(index),
            });
        }
    }
    let default_duration = (tf_flags & TFHD_DEFAULT_DURATION != 0)
        .then(|| c.u32())
        .transpose()?;
    let default_size = (tf_flags & TFHD_DEFAULT_SIZE != 0)
        .then(|| c.u32())
        .transpose()?;
    let default_flags = (tf_flags & TFHD_DEFAULT_FLAGS != 0)
        .then(|| c.u32())
        .transpose()?
        .unwrap_or(0);

    let tfdt = child(traf, b"tfdt")?;
    let mut c = Cursor::new(&tfdt);
    let (version, _) = c.version_flags()?;
    let base_decode_time = c.u32_or_u64(version)?;

    let mut samples = Vec::new();
    let mut decode_time = base_decode_time;
    let mut next_offset = base;
    let mut first_run = true;
    for trun in Boxes::of(traf) {
        let trun = trun?;
        if &trun.box_type.0 != b"trun" {
            continue;
        }
        let mut c = Cursor::new(&trun);
        let (version, flags) = c.version_flags()?;
        let count = c.u32()? as usize;
        let data_offset = (flags & TRUN_DATA_OFFSET != 0)
            .then(|| c.u32())
            .transpose()?;
        let first_flags = (flags & TRUN_FIRST_SAMPLE_FLAGS != 0)
            .then(|| c.u32())
            .transpose()?;
        let per_sample =
            4 * (flags & (TRUN_DURATION | TRUN_SIZE | TRUN_FLAGS | TRUN_CTO)).count_ones() as usize;
        // Bound the count by the bytes present before allocating anything from it.
        let needed = count.saturating_mul(per_sample);
        if needed > c.remaining() {
            return Err(Mp4Error::Truncated {
                box_type: trun.box_type,
                offset: c.base + c.pos,
                needed: needed - c.remaining(),
            });
        }
        if per_sample == 0 && count > mdat.len() {
            // Every field comes from tfhd defaults, so the count is not bounded by the trun's
            // size; samples of at least one byte each cannot outnumber the mdat's bytes.
            return Err(Mp4Error::Unsupported {
                box_type: trun.box_type,
                what: "sample_count",
                value: count as u64,
            });
        }
        let mut offset = match data_offset {
            // The data offset is a signed 32-bit value for both trun versions in practice.
            Some(d) => base.saturating_add(i64::from(d as i32)),
            None if first_run => base,
            None => next_offset,
        };
        first_run = false;
        samples.reserve(count);
        for i in 0..count {
            let sample = samples.len();
            let duration = if flags & TRUN_DURATION != 0 {
                c.u32()?
            } else {
                default_duration.ok_or(Mp4Error::MissingSampleField {
                    track_id,
                    sample,
                    field: "duration",
                })?
            };
            let size = if flags & TRUN_SIZE != 0 {
                c.u32()?
            } else {
                default_size.ok_or(Mp4Error::MissingSampleField {
                    track_id,
                    sample,
                    field: "size",
                })?
            };
            let sample_flags = if flags & TRUN_FLAGS != 0 {
                c.u32()?
            } else if i == 0 {
                first_flags.unwrap_or(default_flags)
            } else {
                default_flags
            };
            if flags & TRUN_CTO != 0 {
                let cto = c.u32()?;
                if cto != 0 {
                    return Err(Mp4Error::Unsupported {
                        box_type: trun.box_type,
                        what: "composition offset",
                        value: if version == 0 {
                            u64::from(cto)
                        } else {
                            i64::from(cto as i32) as u64
                        },
                    });
                }
            }
            let end = offset.saturating_add(i64::from(size));
            if offset < mdat.start as i64 || end > mdat.end as i64 {
                return Err(Mp4Error::SampleOutOfRange {
                    track_id,
                    sample,
                    offset,
                    size,
                    mdat: mdat.clone(),
                });
            }
            samples.push(SampleRef {
                decode_time,
                duration,
                size,
                flags: sample_flags,
                // In range of the mdat, hence non-negative and within usize.
                offset: offset as usize,
            });
            decode_time = decode_time
                .checked_add(u64::from(duration))
                .ok_or(Mp4Error::TimeOverflow { track_id })?;
            offset = end;
        }
        next_offset = offset;
    }
    Ok((
        TrackFragment {
            track_id,
            base_decode_time,
            samples,
        },
        next_offset,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A frame for tests.
    pub(crate) fn frame(
        track: TrackKind,
        dts: i64,
        duration: u32,
        key: bool,
        data: &[u8],
    ) -> Frame {
        Frame {
            track,
            dts,
            duration,
            wall_ms: 1_700_000_000_000 + dts / 90,
            is_key: key,
            data: Bytes::copy_from_slice(data),
        }
    }

    /// A stand-in sample entry box of type `t` (a real one is only needed by real decoders).
    pub(crate) fn fake_entry(t: &[u8; 4], extra: usize) -> Vec<u8> {
        let mut v = Vec::new();
        write_box(&mut v, t, |b| {
            b.put_u32(0);
            b.put_u32(1); // data_reference_index
            b.extend((0..extra).map(|i| i as u8));
        });
        v
    }

    pub(crate) fn stream(audio: bool) -> StreamInfo {
        StreamInfo {
            video: TrackInfo {
                kind: TrackKind::Video,
                timescale: 90_000,
                sample_entry: fake_entry(b"avc1", 78),
                width: 1920,
                height: 1080,
            },
            audio: audio.then(|| TrackInfo {
                kind: TrackKind::Audio,
                timescale: 48_000,
                sample_entry: fake_entry(b"mp4a", 28),
                width: 0,
                height: 0,
            }),
        }
    }

    /// Top-level (type, start, size) of a buffer, asserting the boxes tile it exactly.
    fn top_boxes(data: &[u8]) -> Vec<(FourCc, usize, usize)> {
        let v: Vec<_> = Boxes::new(data, 0, FourCc(*b"file"))
            .map(|b| b.map(|b| (b.box_type, b.start, b.end() - b.start)))
            .collect::<Result<_, _>>()
            .expect("our own output parses");
        assert_eq!(v.iter().map(|b| b.2).sum::<usize>(), data.len());
        v
    }

    /// The box at `path` (first match at each level).
    pub(crate) fn find<'a>(data: &'a [u8], path: &[&[u8; 4]]) -> RawBox<'a> {
        let mut cur = Boxes::new(data, 0, FourCc(*b"file"))
            .map(|b| b.expect("parses"))
            .find(|b| &b.box_type.0 == path[0])
            .expect("top box");
        for t in &path[1..] {
            cur = child(&cur, t).expect("child");
        }
        cur
    }

    fn children(b: &RawBox<'_>) -> Vec<String> {
        Boxes::of(b)
            .map(|c| c.expect("parses").box_type.to_string())
            .collect()
    }

    fn sample_fragment() -> (Vec<Frame>, Vec<Frame>, Bytes) {
        let video = vec![
            frame(TrackKind::Video, 9000, 3000, true, &[1; 50]),
            frame(TrackKind::Video, 12000, 3000, false, &[2; 7]),
            frame(TrackKind::Video, 15000, 3600, false, &[3; 11]),
        ];
        let audio = vec![
            frame(TrackKind::Audio, 4800, 1024, true, &[9; 5]),
            frame(TrackKind::Audio, 5824, 1024, true, &[8; 6]),
        ];
        let f = fragment(
            7,
            &[
                TrackRun::new(TrackKind::Video, 9000, &video[..]),
                TrackRun::new(TrackKind::Audio, 4800, &audio[..]),
            ],
        )
        .expect("small fragment");
        (video, audio, f)
    }

    #[test]
    fn init_segment_layout_video_and_audio() {
        let info = stream(true);
        let init = init_segment(&info);
        let top = top_boxes(&init);
        let names: Vec<String> = top.iter().map(|b| b.0.to_string()).collect();
        assert_eq!(names, ["ftyp", "moov"]);
        // ftyp: header 8 + major 4 + minor 4 + 4 compatible brands.
        assert_eq!(top[0].2, 8 + 8 + 16);
        assert_eq!(&init[8..16], b"isom\0\0\x02\0");
        assert_eq!(&init[16..32], b"isomiso6avc1mp41");

        let moov = find(&init, &[b"moov"]);
        assert_eq!(children(&moov), ["mvhd", "trak", "trak", "mvex"]);
        let mvhd = find(&init, &[b"moov", b"mvhd"]);
        assert_eq!(mvhd.end() - mvhd.start, 108);
        assert_eq!(&mvhd.body[mvhd.body.len() - 4..], &3u32.to_be_bytes());
        let trak = find(&init, &[b"moov", b"trak"]);
        assert_eq!(children(&trak), ["tkhd", "mdia"]);
        let tkhd = child(&trak, b"tkhd").expect("tkhd");
        assert_eq!(tkhd.end() - tkhd.start, 92);
        assert_eq!(&tkhd.body[76..84], &[0x07, 0x80, 0, 0, 0x04, 0x38, 0, 0]);
        let minf = find(&init, &[b"moov", b"trak", b"mdia", b"minf"]);
        assert_eq!(children(&minf), ["vmhd", "dinf", "stbl"]);
        let dinf = child(&minf, b"dinf").expect("dinf");
        assert_eq!(dinf.end() - dinf.start, 36);
        let stbl = child(&minf, b"stbl").expect("stbl");
        assert_eq!(children(&stbl), ["stsd", "stts", "stsc", "stsz", "stco"]);
        let stsd = child(&stbl, b"stsd").expect("stsd");
        assert_eq!(stsd.end() - stsd.start, 16 + info.video.sample_entry.len());
        let mvex = find(&init, &[b"moov", b"mvex"]);
        assert_eq!(children(&mvex), ["trex", "trex"]);
        assert_eq!(mvex.end() - mvex.start, 8 + 2 * 32);

        let parsed = parse_init(&init).expect("parses");
        assert_eq!(
            parsed.tracks,
            vec![
                InitTrack {
                    track_id: 1,
                    kind: TrackKind::Video,
                    timescale: 90_000,
                    sample_entry: info.video.sample_entry.clone(),
                    width: 1920,
                    height: 1080,
                },
                InitTrack {
                    track_id: 2,
                    kind: TrackKind::Audio,
                    timescale: 48_000,
                    sample_entry: info.audio.as_ref().expect("audio").sample_entry.clone(),
                    width: 0,
                    height: 0,
                },
            ]
        );
    }

    #[test]
    fn init_segment_video_only_has_one_trak_and_trex() {
        let init = init_segment(&stream(false));
        let moov = find(&init, &[b"moov"]);
        assert_eq!(children(&moov), ["mvhd", "trak", "mvex"]);
        assert_eq!(children(&find(&init, &[b"moov", b"mvex"])), ["trex"]);
        assert_eq!(parse_init(&init).expect("parses").tracks.len(), 1);
    }

    #[test]
    fn init_segment_hevc_has_no_avc1_brand() {
        let mut info = stream(false);
        info.video.sample_entry = fake_entry(b"hvc1", 90);
        let init = init_segment(&info);
        assert_eq!(&init[16..28], b"isomiso6mp41");
    }

    #[test]
    fn fragment_layout_sizes_and_data_offsets() {
        let (video, audio, f) = sample_fragment();
        let top = top_boxes(&f);
        let moof_len = 8 + 16 + (64 + 12 * 3) + (64 + 12 * 2);
        assert_eq!(top[0], (FourCc(*b"moof"), 0, moof_len));
        assert_eq!(
            top[1],
            (FourCc(*b"mdat"), moof_len, 8 + 50 + 7 + 11 + 5 + 6)
        );
        let moof = find(&f, &[b"moof"]);
        assert_eq!(children(&moof), ["mfhd", "traf", "traf"]);
        let traf = child(&moof, b"traf").expect("traf");
        assert_eq!(children(&traf), ["tfhd", "tfdt", "trun"]);
        let tfhd = child(&traf, b"tfhd").expect("tfhd");
        assert_eq!(tfhd.body, &[0, 2, 0, 0, 0, 0, 0, 1]);
        let tfdt = child(&traf, b"tfdt").expect("tfdt");
        assert_eq!(tfdt.body[0], 1, "tfdt version 1");
        // Video data starts right after the mdat header; audio right after the video.
        let trun = child(&traf, b"trun").expect("trun");
        let off = i32::from_be_bytes([trun.body[8], trun.body[9], trun.body[10], trun.body[11]]);
        assert_eq!(off as usize, moof_len + 8);
        assert_eq!(&f[off as usize..off as usize + 50], &video[0].data[..]);
        let audio_off = moof_len + 8 + 68;
        assert_eq!(&f[audio_off..audio_off + 5], &audio[0].data[..]);
    }

    #[test]
    fn fragment_round_trip_two_tracks() {
        let (video, audio, f) = sample_fragment();
        let p = parse_fragment(&f).expect("parses");
        assert_eq!(p.sequence, 7);
        assert_eq!(p.tracks.len(), 2);
        for (tf, frames, id, base) in [
            (&p.tracks[0], &video, 1, 9000),
            (&p.tracks[1], &audio, 2, 4800),
        ] {
            assert_eq!(tf.track_id, id);
            assert_eq!(tf.base_decode_time, base);
            assert_eq!(tf.samples.len(), frames.len());
            let mut t = base;
            for (s, fr) in tf.samples.iter().zip(frames.iter()) {
                assert_eq!(s.decode_time, t);
                assert_eq!(s.duration, fr.duration);
                assert_eq!(s.is_sync(), fr.is_key);
                assert_eq!(&f[s.range()], &fr.data[..]);
                t += u64::from(fr.duration);
            }
        }
        assert_eq!(p.tracks[0].samples[1].flags, SAMPLE_FLAGS_NON_SYNC);
        assert_eq!(p.tracks[0].samples[0].flags, SAMPLE_FLAGS_SYNC);
    }

    #[test]
    fn fragment_leaves_out_empty_runs() {
        let video = [frame(TrackKind::Video, 0, 3000, true, &[1; 4])];
        let none: Vec<Frame> = Vec::new();
        let f = fragment(
            1,
            &[
                TrackRun::new(TrackKind::Video, 0, &video[..]),
                TrackRun::new(TrackKind::Audio, 0, &none[..]),
            ],
        )
        .expect("fragment");
        let p = parse_fragment(&f).expect("parses");
        assert_eq!(p.tracks.len(), 1);
        // A fragment with no samples at all is still well-formed.
        let empty = fragment::<Frame>(2, &[]).expect("fragment");
        assert_eq!(parse_fragment(&empty).expect("parses").tracks, vec![]);
    }

    #[test]
    fn fragment_from_shared_frames_for_live() {
        let frames: Vec<Arc<Frame>> = (0..3)
            .map(|i| {
                Arc::new(frame(
                    TrackKind::Video,
                    i * 3000,
                    3000,
                    i == 1,
                    &[i as u8; 3],
                ))
            })
            .collect();
        // A sub-GOP live fragment may start at a non-key frame.
        let f = fragment(5, &[TrackRun::new(TrackKind::Video, 0, &frames[..])]).expect("fragment");
        let p = parse_fragment(&f).expect("parses");
        let sync: Vec<bool> = p.tracks[0].samples.iter().map(|s| s.is_sync()).collect();
        assert_eq!(sync, [false, true, false]);
    }

    #[test]
    fn parse_fragment_every_truncation_is_an_error() {
        let (_, _, f) = sample_fragment();
        for len in 0..f.len() {
            assert!(parse_fragment(&f[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn parse_init_every_truncation_is_an_error() {
        let init = init_segment(&stream(true));
        for len in 0..init.len() {
            assert!(parse_init(&init[..len]).is_err(), "prefix of {len} bytes");
        }
    }

    fn set_u32(data: &mut [u8], at: usize, v: u32) {
        data[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn parse_rejects_size_zero_box() {
        let (_, _, f) = sample_fragment();
        let mut f = f.to_vec();
        let mdat = find(&f, &[b"mdat"]).start;
        set_u32(&mut f, mdat, 0);
        assert!(matches!(
            parse_fragment(&f),
            Err(Mp4Error::BadBoxSize { size: 0, .. })
        ));
        // A zero-filled tail (torn write) is not a box either.
        let mut init = init_segment(&stream(false)).to_vec();
        init.splice(0..0, [0u8; 16]);
        assert!(parse_init(&init).is_err());
    }

    #[test]
    fn parse_rejects_size_below_header_or_beyond_room() {
        let (_, _, f) = sample_fragment();
        for bogus in [1u32, 7, u32::MAX] {
            let mut g = f.to_vec();
            let traf = find(&g, &[b"moof", b"traf"]).start;
            set_u32(&mut g, traf, bogus);
            let r = parse_fragment(&g);
            assert!(r.is_err(), "size {bogus}: {r:?}");
        }
        let mut g = f.to_vec();
        set_u32(&mut g, 0, 4);
        assert!(matches!(
            parse_fragment(&g),
            Err(Mp4Error::BadBoxSize { size: 4, .. })
        ));
    }

    #[test]
    fn parse_largesize_boxes() {
        let init = init_segment(&stream(false));
        // A valid 64-bit-size box before moov is fine.
        let mut v = Vec::new();
        v.put_u32(1);
        v.extend_from_slice(b"free");
        v.put_u64(20);
        v.put_u32(0xdead_beef);
        v.extend_from_slice(&init);
        assert_eq!(parse_init(&v).expect("parses").tracks.len(), 1);
        // largesize smaller than its own header.
        let mut w = v.clone();
        w[8..16].copy_from_slice(&8u64.to_be_bytes());
        assert!(matches!(
            parse_init(&w),
            Err(Mp4Error::BadBoxSize { size: 8, .. })
        ));
        // largesize header cut short.
        assert!(matches!(
            parse_init(&v[..12]),
            Err(Mp4Error::Truncated { .. })
        ));
        // largesize beyond the data.
        let mut w = v.clone();
        w[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(parse_init(&w), Err(Mp4Error::BadBoxSize { .. })));
    }

    #[test]
    fn parse_fragment_rejects_wrong_order_and_trailing_data() {
        let (_, _, f) = sample_fragment();
        let moof = find(&f, &[b"moof"]);
        let mut swapped = f[moof.end()..].to_vec();
        swapped.extend_from_slice(&f[..moof.end()]);
        assert!(matches!(
            parse_fragment(&swapped),
            Err(Mp4Error::UnexpectedBox { .. })
        ));
        let mut extra = f.to_vec();
        extra.extend_from_slice(&[0, 0, 0, 8, b'f', b'r', b'e', b'e']);
        assert!(matches!(
            parse_fragment(&extra),
            Err(Mp4Error::TrailingData { len: 8, .. })
        ));
        assert!(matches!(
            parse_fragment(&f[..moof.end()]),
            Err(Mp4Error::MissingBox { .. })
        ));
    }

    #[test]
    fn parse_fragment_rejects_samples_outside_mdat() {
        let (_, _, f) = sample_fragment();
        let trun = find(&f, &[b"moof", b"traf", b"trun"]);
        // data_offset pointing before the mdat payload, and a sample size past its end.
        for (at, v) in [(8, 0u32), (8, (-100i32) as u32), (16, 1_000_000)] {
            let mut g = f.to_vec();
            set_u32(&mut g, trun.body_start + at, v);
            assert!(
                matches!(parse_fragment(&g), Err(Mp4Error::SampleOutOfRange { .. })),
                "field at {at} = {v}"
            );
        }
    }

    #[test]
    fn parse_fragment_huge_sample_count_is_truncation_not_allocation() {
        let (_, _, f) = sample_fragment();
        let trun = find(&f, &[b"moof", b"traf", b"trun"]);
        let mut g = f.to_vec();
        set_u32(&mut g, trun.body_start + 4, u32::MAX);
        assert!(matches!(
            parse_fragment(&g),
            Err(Mp4Error::Truncated { .. })
        ));
        // Without per-sample fields nothing bounds the count but the mdat.
        let flags_at = trun.body_start;
        set_u32(&mut g, flags_at, TRUN_DATA_OFFSET);
        assert!(parse_fragment(&g).is_err());
    }

    #[test]
    fn parse_fragment_survives_extreme_base_data_offset() {
        // A tfhd with an explicit base_data_offset near i64::MAX and a large data offset.
        let (_, _, f) = sample_fragment();
        let traf = find(&f, &[b"moof", b"traf"]);
        let tfhd = child(&traf, b"tfhd").expect("tfhd");
        let mut g = f[..tfhd.start].to_vec();
        let mut new_tfhd = Vec::new();
        write_full_box(&mut new_tfhd, b"tfhd", 0, TFHD_BASE_DATA_OFFSET, |b| {
            b.put_u32(1);
            b.put_u64(i64::MAX as u64 - 5);
        });
        g.extend_from_slice(&new_tfhd);
        g.extend_from_slice(&f[tfhd.end()..]);
        // Grow the moof and traf sizes by the 8 added bytes.
        for at in [0, traf.start] {
            let size = u32::from_be_bytes([g[at], g[at + 1], g[at + 2], g[at + 3]]);
            set_u32(&mut g, at, size + 8);
        }
        assert!(matches!(
            parse_fragment(&g),
            Err(Mp4Error::SampleOutOfRange { .. })
        ));
    }

    #[test]
    fn parse_init_rejects_bad_tracks() {
        let init = init_segment(&stream(true));
        // Zero timescale.
        let mdhd = find(&init, &[b"moov", b"trak", b"mdia", b"mdhd"]);
        let mut g = init.to_vec();
        set_u32(&mut g, mdhd.body_start + 12, 0);
        assert_eq!(parse_init(&g), Err(Mp4Error::ZeroTimescale { track_id: 1 }));
        // Unknown handler.
        let hdlr = find(&init, &[b"moov", b"trak", b"mdia", b"hdlr"]);
        let mut g = init.to_vec();
        g[hdlr.body_start + 8..hdlr.body_start + 12].copy_from_slice(b"text");
        assert!(matches!(
            parse_init(&g),
            Err(Mp4Error::Unsupported {
                what: "handler",
                ..
            })
        ));
        // Both traks claiming id 1.
        let moov = find(&init, &[b"moov"]);
        let second_tkhd = Boxes::of(&moov)
            .map(|b| b.expect("parses"))
            .filter(|b| &b.box_type.0 == b"trak")
            .nth(1)
            .map(|t| child(&t, b"tkhd").expect("tkhd"))
            .expect("second trak");
        let mut g = init.to_vec();
        set_u32(&mut g, second_tkhd.body_start + 12, 1);
        assert_eq!(
            parse_init(&g),
            Err(Mp4Error::DuplicateTrack { track_id: 1 })
        );
        // No moov at all.
        let ftyp_len = find(&init, &[b"ftyp"]).end();
        assert!(matches!(
            parse_init(&init[..ftyp_len]),
            Err(Mp4Error::MissingBox { .. })
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_corruption(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let (_, _, f) = sample_fragment();
            let init = init_segment(&stream(true));
            for data in [f.to_vec(), init.to_vec()] {
                let mut g = data.clone();
                for (i, b) in &flips {
                    let at = i.index(g.len());
                    g[at] ^= *b | 1;
                }
                let _ = parse_fragment(&g);
                let _ = parse_init(&g);
                let len = cut.index(data.len());
                let _ = parse_fragment(&g[..len]);
                let _ = parse_init(&g[..len]);
            }
        }
    }
}
