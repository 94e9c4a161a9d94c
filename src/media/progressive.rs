//! The progressive layout: our init segment plus a run of stored fragments become one
//! progressive MP4 (`ftyp`+`moov`+`mdat`). A pure format transform: which fragments, from
//! where, is [`crate::export`]'s business (it picks the segments of a time range).
//!
//! # Output
//!
//! ```text
//! ftyp  isom, minor 0x200, compatible isom iso2 (avc1) mp41
//! moov  mvhd (duration = longest track, ms), one trak per track that has samples:
//!       tkhd/mdhd with durations, the init's sample entry verbatim, and full sample tables:
//!       stts (run-length), stss (video, when not every sample is sync), stsc (run-length),
//!       stsz (one constant size when all equal and non-zero), stco, or co64 when offsets pass 4 GiB
//! mdat  the fragments' mdat payloads, in order (64-bit largesize when over 4 GiB)
//! ```
//!
//! `moov` comes before `mdat` ("faststart"), so players and browsers start at once. There is no
//! edit list: each track starts at time 0.
//!
//! Chunks: each `trun`'s samples are contiguous in their fragment, so each becomes one chunk.
//! A GOP-long video chunk followed by that GOP's audio chunk is interleaved well enough.
//!
//! # Time and gaps
//!
//! Sample times are the sum of sample durations; `tfdt` is not used for placement. A gap between
//! two fragments (camera offline, segments evicted) is therefore closed: playback jumps from the
//! last frame before the gap to the first after it. The caller reports gaps to the user from
//! its segment index; [`Layout::discontinuities`] lists the fragments whose video `tfdt`
//! does not continue the previous one, as a cross-check. The small start offset between audio
//! and video of the first fragment (under a frame) is not kept, since the export is edit-free.
//!
//! One export covers one init segment: fragments written for another init (new SPS/PPS,
//! resolution) must go to another export or be converted first.
//!
//! # Memory
//!
//! The sample tables are built first ([`ProgressiveBuilder`], about 4 bytes per sample plus run
//! lengths), then [`ProgressiveBuilder::finish`] yields a [`Layout`]: the bytes before the
//! media (`ftyp`+`moov`+`mdat` header) and a list of [`MdatPiece`]s, byte ranges of the
//! fragments in output order. Writing the plan reads each fragment once
//! ([`Layout::write_with`] loads them on demand, e.g. from the segment files), so a long
//! export never holds more than one fragment's bytes beyond the tables.
//!
//! A fragment that cannot be read is refused by [`ProgressiveBuilder::add_fragment`] with the builder
//! unchanged, so the caller may skip it (and report it like a gap) and carry on.

use std::io::{self, Write};
use std::ops::Range;

use super::mp4::{self, FileKind, InitTrack, Mp4Error, TrakParams};
use super::TrackKind;
use bytes::BufMut;

/// Most samples one track of an export may have (about 31 days of 25 fps video). Keeps every
/// sample table, and so `moov`, well below 4 GiB.
pub const MAX_SAMPLES_PER_TRACK: usize = 1 << 26;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The init segment could not be read.
    #[error("unreadable init segment")]
    Init(#[source] Mp4Error),
    /// A fragment could not be read (truncated, damaged, not one of ours).
    #[error("unreadable fragment {index}")]
    Fragment {
        /// Position of the fragment in the input (0-based).
        index: usize,
        /// What was wrong with it.
        #[source]
        source: Mp4Error,
    },
    /// A fragment has a track the init segment does not describe (it was written for another
    /// init segment).
    #[error("fragment {index} has track {track_id}, absent from the init segment")]
    UnknownTrack {
        /// Position of the fragment in the input.
        index: usize,
        /// The unknown track id.
        track_id: u32,
    },
    /// A track would exceed [`MAX_SAMPLES_PER_TRACK`].
    #[error("fragment {index}: track {track_id} exceeds {MAX_SAMPLES_PER_TRACK} samples")]
    TooManySamples {
        /// Position of the fragment that would pass the limit.
        index: usize,
        /// The track.
        track_id: u32,
    },
    /// No fragment contributed a sample.
    #[error("nothing to export: no samples")]
    NoSamples,
    /// While writing, a fragment the plan refers to was not provided.
    #[error("fragment {index} is missing")]
    MissingFragment {
        /// Position of the fragment in the input.
        index: usize,
    },
    /// While writing, a fragment is shorter than when the plan was made (it changed).
    #[error("fragment {index} is {len} bytes, the plan needs bytes {range:?}")]
    FragmentChanged {
        /// Position of the fragment in the input.
        index: usize,
        /// Its length now.
        len: usize,
        /// The range the plan needs.
        range: Range<usize>,
    },
    /// Reading a fragment or writing the output failed.
    #[error("export I/O failed")]
    Io(#[from] io::Error),
}

/// A byte range of one input fragment that goes into the output `mdat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdatPiece {
    /// Position of the fragment among those given to the builder (counting refused ones).
    pub fragment: usize,
    /// The bytes within that fragment.
    pub range: Range<usize>,
}

/// Summary of one exported track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutTrack {
    /// Track id (as in the init segment).
    pub track_id: u32,
    /// Video or audio.
    pub kind: TrackKind,
    /// Ticks per second.
    pub timescale: u32,
    /// Number of samples.
    pub samples: u64,
    /// Sum of sample durations, in ticks.
    pub duration: u64,
}

/// Sample tables of one track, built as fragments arrive.
#[derive(Debug)]
struct TrackTables {
    init: InitTrack,
    sizes: Vec<u32>,
    /// (sample_count, sample_delta) runs.
    stts: Vec<(u32, u32)>,
    /// 1-based numbers of sync samples.
    sync: Vec<u32>,
    /// (offset within the mdat payload, number of samples).
    chunks: Vec<(u64, u32)>,
    duration: u64,
    /// Decode time right after the last sample added, for discontinuity detection.
    next_decode_time: Option<u64>,
}

impl TrackTables {
    fn new(init: InitTrack) -> Self {
        TrackTables {
            init,
            sizes: Vec::new(),
            stts: Vec::new(),
            sync: Vec::new(),
            chunks: Vec::new(),
            duration: 0,
            next_decode_time: None,
        }
    }

    fn push_sample(&mut self, s: &mp4::SampleRef) {
        self.sizes.push(s.size);
        match self.stts.last_mut() {
            Some((count, delta)) if *delta == s.duration && *count < u32::MAX => *count += 1,
            _ => self.stts.push((1, s.duration)),
        }
        if s.is_sync() {
            // At most MAX_SAMPLES_PER_TRACK samples: fits u32.
            self.sync.push(self.sizes.len() as u32);
        }
        self.duration += u64::from(s.duration);
    }

    fn movie_duration(&self) -> u64 {
        ticks_to_ms(self.duration, self.init.timescale)
    }

    /// Appends stts, stss, stsc, stsz and stco/co64; chunk offsets are `base` + mdat offset.
    fn write_tables(&self, buf: &mut Vec<u8>, base: u64, co64: bool) {
        mp4::write_full_box(buf, b"stts", 0, 0, |buf| {
            buf.put_u32(self.stts.len() as u32);
            for &(count, delta) in &self.stts {
                buf.put_u32(count);
                buf.put_u32(delta);
            }
        });
        if self.sync.len() != self.sizes.len() {
            mp4::write_full_box(buf, b"stss", 0, 0, |buf| {
                buf.put_u32(self.sync.len() as u32);
                for &n in &self.sync {
                    buf.put_u32(n);
                }
            });
        }
        mp4::write_full_box(buf, b"stsc", 0, 0, |buf| {
            let count_pos = buf.len();
            buf.put_u32(0);
            let mut entries = 0u32;
            let mut last = None;
            for (i, &(_, n)) in self.chunks.iter().enumerate() {
                if last != Some(n) {
                    buf.put_u32(i as u32 + 1); // first_chunk
                    buf.put_u32(n); // samples_per_chunk
                    buf.put_u32(1); // sample_description_index
                    entries += 1;
                    last = Some(n);
                }
            }
            buf[count_pos..count_pos + 4].copy_from_slice(&entries.to_be_bytes());
        });
        mp4::write_full_box(buf, b"stsz", 0, 0, |buf| {
            let first = self.sizes.first().copied().unwrap_or(0);
            // A constant size of 0 would mean "a table follows" (ISO/IEC 14496-12): empty
            // samples, which a camera can send, always get the table.
            if first > 0 && self.sizes.iter().all(|&s| s == first) {
                buf.put_u32(first);
                buf.put_u32(self.sizes.len() as u32);
            } else {
                buf.put_u32(0);
                buf.put_u32(self.sizes.len() as u32);
                for &s in &self.sizes {
                    buf.put_u32(s);
                }
            }
        });
        if co64 {
            mp4::write_full_box(buf, b"co64", 0, 0, |buf| {
                buf.put_u32(self.chunks.len() as u32);
                for &(off, _) in &self.chunks {
                    buf.put_u64(base + off);
                }
            });
        } else {
            mp4::write_full_box(buf, b"stco", 0, 0, |buf| {
                buf.put_u32(self.chunks.len() as u32);
                for &(off, _) in &self.chunks {
                    // The caller chose stco only when every offset fits.
                    buf.put_u32((base + off) as u32);
                }
            });
        }
    }
}

fn ticks_to_ms(ticks: u64, timescale: u32) -> u64 {
    let ts = u128::from(timescale.max(1));
    let ms = (u128::from(ticks) * 1000 + ts / 2) / ts;
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Collects sample tables from fragments; see the module doc.
#[derive(Debug)]
pub struct ProgressiveBuilder {
    tracks: Vec<TrackTables>,
    pieces: Vec<MdatPiece>,
    mdat_len: u64,
    fragments_seen: usize,
    discontinuities: Vec<usize>,
}

impl ProgressiveBuilder {
    /// Starts an export for fragments written with init segment `init`.
    pub fn new(init: &[u8]) -> Result<Self, LayoutError> {
        let info = mp4::parse_init(init).map_err(LayoutError::Init)?;
        Ok(ProgressiveBuilder {
            tracks: info.tracks.into_iter().map(TrackTables::new).collect(),
            pieces: Vec::new(),
            mdat_len: 0,
            fragments_seen: 0,
            discontinuities: Vec::new(),
        })
    }

    /// Adds the next fragment (`moof`+`mdat`). Every call, successful or not, takes the next
    /// fragment index (0, 1, ...), which [`MdatPiece::fragment`] refers to. On error the builder
    /// is unchanged and the caller may skip the fragment and go on.
    pub fn add_fragment(&mut self, data: &[u8]) -> Result<(), LayoutError> {
        let index = self.fragments_seen;
        self.fragments_seen += 1;
        let parsed =
            mp4::parse_fragment(data).map_err(|source| LayoutError::Fragment { index, source })?;

        // Check everything before changing anything.
        let mut slots = Vec::with_capacity(parsed.tracks.len());
        for tf in &parsed.tracks {
            let slot = self
                .tracks
                .iter()
                .position(|t| t.init.track_id == tf.track_id)
                .ok_or(LayoutError::UnknownTrack {
                    index,
                    track_id: tf.track_id,
                })?;
            let added: usize = parsed
                .tracks
                .iter()
                .filter(|o| o.track_id == tf.track_id)
                .map(|o| o.samples.len())
                .sum();
            if self.tracks[slot].sizes.len() + added > MAX_SAMPLES_PER_TRACK {
                return Err(LayoutError::TooManySamples {
                    index,
                    track_id: tf.track_id,
                });
            }
            slots.push(slot);
        }

        let mut discontinuity = false;
        for (tf, slot) in parsed.tracks.iter().zip(slots) {
            let t = &mut self.tracks[slot];
            if t.init.kind == TrackKind::Video
                && t.next_decode_time.is_some_and(|n| n != tf.base_decode_time)
            {
                discontinuity = true;
            }
            let mut prev_end = None;
            for s in &tf.samples {
                if prev_end != Some(s.offset) {
                    // A new chunk: the bytes are not contiguous with the previous sample's.
                    t.chunks.push((self.mdat_len, 0));
                    match self.pieces.last_mut() {
                        Some(p) if p.fragment == index && p.range.end == s.offset => {}
                        _ => self.pieces.push(MdatPiece {
                            fragment: index,
                            range: s.offset..s.offset,
                        }),
                    }
                }
                if let Some(c) = t.chunks.last_mut() {
                    c.1 += 1;
                }
                if let Some(p) = self.pieces.last_mut() {
                    p.range.end = s.offset + s.size as usize;
                }
                t.push_sample(s);
                self.mdat_len += u64::from(s.size);
                prev_end = Some(s.offset + s.size as usize);
            }
            if let Some(last) = tf.samples.last() {
                t.next_decode_time = Some(last.decode_time + u64::from(last.duration));
            }
        }
        if discontinuity {
            self.discontinuities.push(index);
        }
        Ok(())
    }

    /// Computes `ftyp`+`moov`+`mdat` header. Tracks without samples are left out.
    pub fn finish(self) -> Result<Layout, LayoutError> {
        let tracks: Vec<&TrackTables> =
            self.tracks.iter().filter(|t| !t.sizes.is_empty()).collect();
        if tracks.is_empty() {
            return Err(LayoutError::NoSamples);
        }
        let video_entry = tracks
            .iter()
            .find(|t| t.init.kind == TrackKind::Video)
            .map_or(&[][..], |t| &t.init.sample_entry[..]);
        let mut head = Vec::new();
        mp4::write_ftyp(&mut head, FileKind::Progressive, video_entry);

        let mdat_header_len: u64 = if self.mdat_len + 8 > u64::from(u32::MAX) {
            16
        } else {
            8
        };
        // moov's size depends only on stco vs co64, not on the offsets: measure, then decide.
        let mut moov = Vec::new();
        write_moov(&mut moov, &tracks, 0, false);
        let stco_end = head.len() as u64 + moov.len() as u64 + mdat_header_len + self.mdat_len;
        let co64 = stco_end > u64::from(u32::MAX);
        if co64 {
            moov.clear();
            write_moov(&mut moov, &tracks, 0, true);
        }
        let base = head.len() as u64 + moov.len() as u64 + mdat_header_len;
        moov.clear();
        write_moov(&mut moov, &tracks, base, co64);
        head.extend_from_slice(&moov);
        drop(moov);
        if mdat_header_len == 16 {
            head.put_u32(1);
            head.extend_from_slice(b"mdat");
            head.put_u64(16 + self.mdat_len);
        } else {
            head.put_u32((8 + self.mdat_len) as u32);
            head.extend_from_slice(b"mdat");
        }
        debug_assert_eq!(head.len() as u64, base);

        let exported = tracks
            .iter()
            .map(|t| LayoutTrack {
                track_id: t.init.track_id,
                kind: t.init.kind,
                timescale: t.init.timescale,
                samples: t.sizes.len() as u64,
                duration: t.duration,
            })
            .collect();
        Ok(Layout {
            head,
            pieces: self.pieces,
            mdat_len: self.mdat_len,
            tracks: exported,
            discontinuities: self.discontinuities,
        })
    }
}

fn write_moov(buf: &mut Vec<u8>, tracks: &[&TrackTables], base: u64, co64: bool) {
    mp4::write_box(buf, b"moov", |buf| {
        let duration_ms = tracks.iter().map(|t| t.movie_duration()).max().unwrap_or(0);
        let next_track_id = tracks
            .iter()
            .map(|t| t.init.track_id)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        mp4::write_mvhd(buf, duration_ms, next_track_id);
        for t in tracks {
            let params = TrakParams {
                track_id: t.init.track_id,
                kind: t.init.kind,
                timescale: t.init.timescale,
                width: t.init.width,
                height: t.init.height,
                sample_entry: &t.init.sample_entry,
                media_duration: t.duration,
                movie_duration: t.movie_duration(),
            };
            mp4::write_trak(buf, &params, |buf| t.write_tables(buf, base, co64));
        }
    });
}

/// A computed export: the bytes before the media and where the media bytes come from.
#[derive(Clone, Debug)]
pub struct Layout {
    head: Vec<u8>,
    pieces: Vec<MdatPiece>,
    mdat_len: u64,
    tracks: Vec<LayoutTrack>,
    discontinuities: Vec<usize>,
}

impl Layout {
    /// `ftyp` + `moov` + the `mdat` header: the first bytes of the output.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The fragment byte ranges that follow [`Layout::head`], in order.
    pub fn pieces(&self) -> &[MdatPiece] {
        &self.pieces
    }

    /// Size of the whole output in bytes.
    pub fn total_len(&self) -> u64 {
        self.head.len() as u64 + self.mdat_len
    }

    /// The exported tracks.
    pub fn tracks(&self) -> &[LayoutTrack] {
        &self.tracks
    }

    /// Duration of the longest track in ms (the `mvhd` duration).
    pub fn duration_ms(&self) -> u64 {
        self.tracks
            .iter()
            .map(|t| ticks_to_ms(t.duration, t.timescale))
            .max()
            .unwrap_or(0)
    }

    /// Fragments whose video decode time does not continue the previous fragment's: a gap (or
    /// overlap) that the export closed.
    pub fn discontinuities(&self) -> &[usize] {
        &self.discontinuities
    }

    /// Writes the output to `out`, asking `load` for each fragment it needs (once per run of
    /// pieces from the same fragment, in increasing index order). Returns the bytes written.
    pub fn write_with<W, B, L>(&self, out: &mut W, mut load: L) -> Result<u64, LayoutError>
    where
        W: Write + ?Sized,
        B: AsRef<[u8]>,
        L: FnMut(usize) -> io::Result<B>,
    {
        out.write_all(&self.head)?;
        let mut written = self.head.len() as u64;
        let mut current: Option<(usize, B)> = None;
        for piece in &self.pieces {
            if current.as_ref().is_none_or(|(i, _)| *i != piece.fragment) {
                current = Some((piece.fragment, load(piece.fragment)?));
            }
            let Some((_, bytes)) = &current else {
                continue;
            };
            let bytes = bytes.as_ref();
            let Some(slice) = bytes.get(piece.range.clone()) else {
                return Err(LayoutError::FragmentChanged {
                    index: piece.fragment,
                    len: bytes.len(),
                    range: piece.range.clone(),
                });
            };
            out.write_all(slice)?;
            written += slice.len() as u64;
        }
        Ok(written)
    }

    /// Writes the output to `out` from fragments in memory (the same list, in the same order,
    /// as given to the builder).
    pub fn write_to<W, F>(&self, fragments: &[F], out: &mut W) -> Result<u64, LayoutError>
    where
        W: Write + ?Sized,
        F: AsRef<[u8]>,
    {
        let mut missing = None;
        let r = self.write_with(out, |i| match fragments.get(i) {
            Some(f) => Ok(f.as_ref()),
            None => {
                missing = Some(i);
                Err(io::Error::other("missing fragment"))
            }
        });
        match (r, missing) {
            (Err(_), Some(index)) => Err(LayoutError::MissingFragment { index }),
            (r, _) => r,
        }
    }
}

/// Plans an export of `fragments` (in order) written with `init`. Fails on the first unreadable
/// fragment; use [`ProgressiveBuilder`] to skip such fragments instead.
pub fn plan_layout<F: AsRef<[u8]>>(init: &[u8], fragments: &[F]) -> Result<Layout, LayoutError> {
    let mut builder = ProgressiveBuilder::new(init)?;
    for f in fragments {
        builder.add_fragment(f.as_ref())?;
    }
    builder.finish()
}

/// `init` + `fragments` as one progressive MP4 in memory (tests and benches; the daemon
/// streams from the segment files with [`Layout::write_with`]).
pub fn progressive_mp4<F: AsRef<[u8]>>(
    init: &[u8],
    fragments: &[F],
) -> Result<Vec<u8>, LayoutError> {
    let plan = plan_layout(init, fragments)?;
    let mut out = Vec::with_capacity(usize::try_from(plan.total_len()).unwrap_or(0));
    plan.write_to(fragments, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mp4::tests::{find, stream};
    use crate::media::mp4::{child, Boxes, FourCc, RawBox};
    use crate::media::segmenter::{Segment, Segmenter};
    use crate::media::{Frame, StreamInfo};
    use bytes::Bytes;
    use proptest::prelude::*;

    /// One sample of a progressive file, as its tables describe it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct ProgSample {
        pub offset: u64,
        pub size: u32,
        pub duration: u32,
        pub sync: bool,
    }

    #[derive(Debug)]
    pub(super) struct ProgTrack {
        pub track_id: u32,
        pub timescale: u32,
        pub media_duration: u64,
        pub samples: Vec<ProgSample>,
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn be64(b: &[u8], at: usize) -> u64 {
        (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
    }

    fn top_types(data: &[u8]) -> Vec<String> {
        Boxes::new(data, 0, FourCc(*b"file"))
            .map(|b| b.expect("parses").box_type.to_string())
            .collect()
    }

    /// Reads the sample tables of a progressive file we wrote (a test oracle independent of
    /// the builder's bookkeeping). Returns the mvhd duration and the tracks.
    pub(super) fn read_progressive(data: &[u8]) -> (u64, Vec<ProgTrack>) {
        let moov = find(data, &[b"moov"]);
        let mvhd = child(&moov, b"mvhd").expect("mvhd");
        let mvhd_duration = if mvhd.body[0] == 1 {
            be64(mvhd.body, 24)
        } else {
            u64::from(be32(mvhd.body, 16))
        };
        let mut tracks = Vec::new();
        for trak in Boxes::of(&moov).map(|b| b.expect("parses")) {
            if &trak.box_type.0 != b"trak" {
                continue;
            }
            tracks.push(read_trak(&trak));
        }
        (mvhd_duration, tracks)
    }

    fn read_trak(trak: &RawBox<'_>) -> ProgTrack {
        let tkhd = child(trak, b"tkhd").expect("tkhd");
        let track_id = be32(tkhd.body, if tkhd.body[0] == 1 { 20 } else { 12 });
        let mdia = child(trak, b"mdia").expect("mdia");
        let mdhd = child(&mdia, b"mdhd").expect("mdhd");
        let (timescale, media_duration) = if mdhd.body[0] == 1 {
            (be32(mdhd.body, 20), be64(mdhd.body, 24))
        } else {
            (be32(mdhd.body, 12), u64::from(be32(mdhd.body, 16)))
        };
        let stbl = child(&child(&mdia, b"minf").expect("minf"), b"stbl").expect("stbl");
        let table = |t: &[u8; 4]| -> Option<Vec<u8>> {
            crate::media::mp4::child(&stbl, t)
                .ok()
                .map(|b| b.body.to_vec())
        };
        let stts = table(b"stts").expect("stts");
        let mut durations = Vec::new();
        for i in 0..be32(&stts, 4) as usize {
            let (n, d) = (be32(&stts, 8 + 8 * i), be32(&stts, 12 + 8 * i));
            durations.extend(std::iter::repeat_n(d, n as usize));
        }
        let stsz = table(b"stsz").expect("stsz");
        let count = be32(&stsz, 8) as usize;
        let sizes: Vec<u32> = match be32(&stsz, 4) {
            0 => (0..count).map(|i| be32(&stsz, 12 + 4 * i)).collect(),
            n => vec![n; count],
        };
        let sync: Option<Vec<u32>> = table(b"stss").map(|s| {
            (0..be32(&s, 4) as usize)
                .map(|i| be32(&s, 8 + 4 * i))
                .collect()
        });
        let offsets: Vec<u64> = match (table(b"stco"), table(b"co64")) {
            (Some(s), None) => (0..be32(&s, 4) as usize)
                .map(|i| u64::from(be32(&s, 8 + 4 * i)))
                .collect(),
            (None, Some(s)) => (0..be32(&s, 4) as usize)
                .map(|i| be64(&s, 8 + 8 * i))
                .collect(),
            other => panic!("need exactly one of stco/co64: {other:?}"),
        };
        let stsc = table(b"stsc").expect("stsc");
        let entries: Vec<(u32, u32)> = (0..be32(&stsc, 4) as usize)
            .map(|i| (be32(&stsc, 8 + 12 * i), be32(&stsc, 12 + 12 * i)))
            .collect();
        assert_eq!(durations.len(), count, "stts and stsz agree on the count");
        let mut samples = Vec::new();
        for (c, &chunk_off) in offsets.iter().enumerate() {
            let chunk = c as u32 + 1;
            let per = entries
                .iter()
                .rev()
                .find(|e| e.0 <= chunk)
                .expect("stsc covers every chunk")
                .1;
            let mut off = chunk_off;
            for _ in 0..per {
                let n = samples.len();
                samples.push(ProgSample {
                    offset: off,
                    size: sizes[n],
                    duration: durations[n],
                    sync: sync.as_ref().is_none_or(|s| s.contains(&(n as u32 + 1))),
                });
                off += u64::from(sizes[n]);
            }
        }
        assert_eq!(samples.len(), count, "stsc and stco cover every sample");
        ProgTrack {
            track_id,
            timescale,
            media_duration,
            samples,
        }
    }

    fn frame(track: TrackKind, dts: i64, key: bool, fill: u8, len: usize) -> Frame {
        Frame {
            track,
            dts,
            duration: 0,
            wall_ms: 1_000_000 + dts,
            is_key: key,
            data: Bytes::from(vec![fill; len]),
        }
    }

    /// `gops` GOPs of 5 frames at 25 fps, audio every 1024 ticks at 48 kHz in between.
    fn record(info: &StreamInfo, gops: i64) -> (Vec<Frame>, Vec<Segment>) {
        let mut s = Segmenter::new(info);
        let mut input = Vec::new();
        let mut segs = Vec::new();
        let mut a = 0;
        for i in 0..gops * 5 {
            let v = frame(
                TrackKind::Video,
                i * 3600,
                i % 5 == 0,
                i as u8,
                20 + i as usize,
            );
            input.push(v.clone());
            segs.extend(s.push(v));
            while info.audio.is_some() && a * 1024 * 90_000 / 48_000 < (i + 1) * 3600 {
                let af = frame(TrackKind::Audio, a * 1024, true, 200 + (a % 50) as u8, 6);
                input.push(af.clone());
                segs.extend(s.push(af));
                a += 1;
            }
        }
        segs.extend(s.flush());
        (input, segs)
    }

    fn fragments(segs: &[Segment]) -> Vec<Bytes> {
        segs.iter().map(|s| s.fragment.clone()).collect()
    }

    #[test]
    fn export_puts_moov_first_and_every_sample_in_place() {
        let info = stream(true);
        let (input, segs) = record(&info, 3);
        assert_eq!(segs.len(), 3);
        let init = segs[0].init.clone();
        let out = progressive_mp4(&init, &fragments(&segs)).expect("export");
        assert_eq!(top_types(&out), ["ftyp", "moov", "mdat"]);
        assert_eq!(&out[8..12], b"isom");

        let (mvhd_ms, tracks) = read_progressive(&out);
        assert_eq!(tracks.len(), 2);
        for t in &tracks {
            let kind = if t.track_id == 1 {
                TrackKind::Video
            } else {
                TrackKind::Audio
            };
            let frames: Vec<&Frame> = input.iter().filter(|f| f.track == kind).collect();
            assert_eq!(t.samples.len(), frames.len(), "track {}", t.track_id);
            for (s, f) in t.samples.iter().zip(&frames) {
                let at = s.offset as usize;
                assert_eq!(&out[at..at + s.size as usize], &f.data[..]);
                assert_eq!(s.sync, f.is_key);
            }
            let sum: u64 = t.samples.iter().map(|s| u64::from(s.duration)).sum();
            assert_eq!(sum, t.media_duration);
        }
        assert_eq!(tracks[0].media_duration, 15 * 3600);
        assert_eq!(tracks[0].timescale, 90_000);
        // The movie lasts as long as its longest track (audio runs a little past the video).
        let audio_ms = (tracks[1].media_duration * 1000 + 24_000) / 48_000;
        assert!(audio_ms > 600);
        assert_eq!(mvhd_ms, audio_ms);
        // stss lists the keyframes only.
        let stss = find(
            &out,
            &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stss"],
        );
        assert_eq!(
            &stss.body[4..],
            &[0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 0, 11]
        );
    }

    #[test]
    fn export_tables_are_run_length_encoded() {
        let (_, segs) = record(&stream(false), 4);
        let init = segs[0].init.clone();
        let out = progressive_mp4(&init, &fragments(&segs)).expect("export");
        let stbl = find(&out, &[b"moov", b"trak", b"mdia", b"minf", b"stbl"]);
        let stts = child(&stbl, b"stts").expect("stts");
        assert_eq!(be32(stts.body, 4), 1, "one duration run: {:?}", stts.body);
        let stsc = child(&stbl, b"stsc").expect("stsc");
        assert_eq!(be32(stsc.body, 4), 1, "every chunk has 5 samples");
        let stco = child(&stbl, b"stco").expect("stco");
        assert_eq!(be32(stco.body, 4), 4, "one chunk per fragment");
        assert!(child(&stbl, b"co64").is_err());
    }

    #[test]
    fn export_of_constant_size_samples_uses_one_stsz_size() {
        let (_, segs) = record(&stream(true), 2);
        let out = progressive_mp4(&segs[0].init, &fragments(&segs)).expect("export");
        let (_, tracks) = read_progressive(&out);
        assert!(tracks[1].samples.iter().all(|s| s.size == 6));
        let moov = find(&out, &[b"moov"]);
        let audio = Boxes::of(&moov)
            .map(|b| b.expect("parses"))
            .filter(|b| &b.box_type.0 == b"trak")
            .nth(1)
            .expect("audio trak");
        let stsz = child(
            &child(
                &child(&child(&audio, b"mdia").expect("mdia"), b"minf").expect("minf"),
                b"stbl",
            )
            .expect("stbl"),
            b"stsz",
        )
        .expect("stsz");
        assert_eq!(stsz.body.len(), 12, "no per-sample entries");
    }

    #[test]
    fn export_closes_gaps_and_reports_discontinuities() {
        let (_, segs) = record(&stream(false), 3);
        let kept = [segs[0].fragment.clone(), segs[2].fragment.clone()];
        let plan = plan_layout(&segs[0].init, &kept).expect("plan");
        assert_eq!(plan.discontinuities(), &[1]);
        assert_eq!(plan.tracks()[0].samples, 10);
        assert_eq!(plan.tracks()[0].duration, 10 * 3600);
        assert_eq!(plan.duration_ms(), 400);
        let mut out = Vec::new();
        let n = plan.write_to(&kept, &mut out).expect("write");
        assert_eq!(n, plan.total_len());
        assert_eq!(out.len() as u64, n);
        let (_, tracks) = read_progressive(&out);
        assert_eq!(tracks[0].samples.len(), 10);
        // Contiguous fragments report nothing.
        let all = plan_layout(&segs[0].init, &fragments(&segs)).expect("plan");
        assert!(all.discontinuities().is_empty());
    }

    #[test]
    fn export_skips_refused_fragment_and_keeps_indexes() {
        let (input, segs) = record(&stream(false), 3);
        let damaged = segs[1].fragment.slice(..segs[1].fragment.len() - 3);
        let list = [segs[0].fragment.clone(), damaged, segs[2].fragment.clone()];
        let mut b = ProgressiveBuilder::new(&segs[0].init).expect("init");
        b.add_fragment(&list[0]).expect("good");
        let err = b.add_fragment(&list[1]).expect_err("damaged");
        assert!(
            matches!(err, LayoutError::Fragment { index: 1, .. }),
            "{err:?}"
        );
        b.add_fragment(&list[2]).expect("good");
        let plan = b.finish().expect("plan");
        let used: Vec<usize> = plan.pieces().iter().map(|p| p.fragment).collect();
        assert_eq!(used, [0, 2]);
        let mut out = Vec::new();
        plan.write_to(&list, &mut out).expect("write");
        let (_, tracks) = read_progressive(&out);
        let expected: Vec<&Frame> = input
            .iter()
            .filter(|f| f.dts < 5 * 3600 || f.dts >= 10 * 3600)
            .collect();
        assert_eq!(tracks[0].samples.len(), expected.len());
        for (s, f) in tracks[0].samples.iter().zip(expected) {
            assert_eq!(&out[s.offset as usize..][..s.size as usize], &f.data[..]);
        }
    }

    #[test]
    fn export_rejects_fragment_of_another_init() {
        let (_, with_audio) = record(&stream(true), 1);
        let (_, video_only) = record(&stream(false), 1);
        let err = plan_layout(&video_only[0].init, &fragments(&with_audio)).expect_err("audio");
        assert!(
            matches!(
                err,
                LayoutError::UnknownTrack {
                    index: 0,
                    track_id: 2
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn export_without_samples_is_an_error() {
        let init = crate::media::mp4::init_segment(&stream(false));
        let none: [&[u8]; 0] = [];
        assert!(matches!(
            plan_layout(&init, &none),
            Err(LayoutError::NoSamples)
        ));
        assert!(matches!(
            progressive_mp4(b"garbage!", &none),
            Err(LayoutError::Init(_))
        ));
    }

    #[test]
    fn write_reports_missing_or_changed_fragments() {
        let (_, segs) = record(&stream(false), 2);
        let frags = fragments(&segs);
        let plan = plan_layout(&segs[0].init, &frags).expect("plan");
        let mut out = Vec::new();
        assert!(matches!(
            plan.write_to(&frags[..1], &mut out),
            Err(LayoutError::MissingFragment { index: 1 })
        ));
        let shrunk = [frags[0].clone(), frags[1].slice(..10)];
        assert!(matches!(
            plan.write_to(&shrunk, &mut Vec::new()),
            Err(LayoutError::FragmentChanged { index: 1, .. })
        ));
    }

    #[test]
    fn write_with_loads_each_fragment_once_in_order() {
        let (_, segs) = record(&stream(true), 4);
        let frags = fragments(&segs);
        let plan = plan_layout(&segs[0].init, &frags).expect("plan");
        // Video and audio of a fragment are adjacent in its mdat: one piece per fragment.
        assert_eq!(plan.pieces().len(), 4);
        let mut loads = Vec::new();
        let mut out = Vec::new();
        plan.write_with(&mut out, |i| {
            loads.push(i);
            Ok(frags[i].clone())
        })
        .expect("write");
        assert_eq!(loads, [0, 1, 2, 3]);
        assert_eq!(out, progressive_mp4(&segs[0].init, &frags).expect("export"));
    }

    #[test]
    fn co64_offsets_when_past_4_gib() {
        let (_, segs) = record(&stream(false), 2);
        let mut b = ProgressiveBuilder::new(&segs[0].init).expect("init");
        for s in &segs {
            b.add_fragment(&s.fragment).expect("fragment");
        }
        let tracks: Vec<&TrackTables> = b.tracks.iter().collect();
        let mut moov = Vec::new();
        write_moov(&mut moov, &tracks, 5 << 30, true);
        let (_, read) = read_progressive(&moov);
        assert_eq!(read[0].samples[0].offset, 5 << 30);
        assert_eq!(read[0].samples.len(), 10);
    }

    #[test]
    fn audio_track_has_no_stss() {
        let (_, segs) = record(&stream(true), 1);
        let out = progressive_mp4(&segs[0].init, &fragments(&segs)).expect("export");
        let moov = find(&out, &[b"moov"]);
        let stbls: Vec<RawBox<'_>> = Boxes::of(&moov)
            .map(|b| b.expect("parses"))
            .filter(|b| &b.box_type.0 == b"trak")
            .map(|t| {
                let mdia = child(&t, b"mdia").expect("mdia");
                child(&child(&mdia, b"minf").expect("minf"), b"stbl").expect("stbl")
            })
            .collect();
        assert!(
            child(&stbls[0], b"stss").is_ok(),
            "video has non-sync samples"
        );
        assert!(
            child(&stbls[1], b"stss").is_err(),
            "all audio samples are sync"
        );
        let (_, tracks) = read_progressive(&out);
        assert!(tracks[1].samples.iter().all(|s| s.sync));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        /// Random frame sequences (keyframes anywhere, dts jitter, repeats and steps back,
        /// stray audio) through segmenter → fragments → export: no panic, every emitted sample
        /// and every tick of duration arrives in the MP4.
        #[test]
        fn random_streams_survive_segmenter_and_export(
            audio in any::<bool>(),
            steps in proptest::collection::vec(
                (any::<bool>(), -500i64..8000, prop::bool::weighted(0.15), 0usize..40),
                1..300,
            ),
            max_segment_ms in 50u32..2000,
        ) {
            let info = stream(audio);
            let config = crate::media::segmenter::SegmenterConfig {
                max_segment_ms,
                max_segment_bytes: 2000,
                ..Default::default()
            };
            let mut s = Segmenter::with_config(&info, config);
            let (mut vdts, mut adts) = (0i64, 0i64);
            let mut segs = Vec::new();
            for (is_audio, step, key, len) in &steps {
                let (track, dts) = if *is_audio {
                    adts += step;
                    (TrackKind::Audio, adts)
                } else {
                    vdts += step;
                    (TrackKind::Video, vdts)
                };
                segs.extend(s.push(frame(track, dts, *key || *is_audio, 7, *len)));
            }
            segs.extend(s.flush());
            let st = s.stats();
            let emitted: u64 = segs
                .iter()
                .map(|g| u64::from(g.video_frames + g.audio_frames))
                .sum();
            prop_assert_eq!(
                st.frames_in,
                emitted + st.dropped_before_keyframe + st.dropped_unexpected_track
                    + st.dropped_over_cap + st.dropped_unwritable
            );
            if segs.is_empty() {
                return Ok(());
            }
            let frags = fragments(&segs);
            let plan = plan_layout(&segs[0].init, &frags).expect("our own fragments export");
            let out = progressive_mp4(&segs[0].init, &frags).expect("export");
            prop_assert_eq!(out.len() as u64, plan.total_len());
            let (_, tracks) = read_progressive(&out);
            let video_frames: u64 = segs.iter().map(|g| u64::from(g.video_frames)).sum();
            let video_ticks: u64 = segs.iter().map(|g| g.video_duration).sum();
            prop_assert_eq!(tracks[0].samples.len() as u64, video_frames);
            prop_assert_eq!(tracks[0].media_duration, video_ticks);
            let audio_frames: u64 = segs.iter().map(|g| u64::from(g.audio_frames)).sum();
            let audio_ticks: u64 = frags
                .iter()
                .flat_map(|f| crate::media::mp4::parse_fragment(f).expect("parses").tracks)
                .filter(|t| t.track_id == 2)
                .flat_map(|t| t.samples)
                .map(|s| u64::from(s.duration))
                .sum();
            if audio_frames > 0 {
                prop_assert_eq!(tracks[1].samples.len() as u64, audio_frames);
                prop_assert_eq!(tracks[1].media_duration, audio_ticks);
            } else {
                prop_assert_eq!(tracks.len(), 1);
            }
            // Every segment after the first that starts with a keyframe begins with a sync sample.
            let mut n = 0;
            for g in &segs {
                if g.starts_with_keyframe {
                    prop_assert!(tracks[0].samples[n].sync);
                }
                n += g.video_frames as usize;
            }
        }
    }
}

/// Real-decoder checks: ffmpeg encodes H.264/H.265 and AAC, we packetize them as ingest would,
/// run segmenter → fragments → export, and ffprobe/ffmpeg judge both the fMP4 and the export.
/// ffmpeg and ffprobe must be installed; a missing tool fails the test, it is never skipped.
#[cfg(test)]
mod decoder_tests {
    use super::*;
    use crate::media::mp4::write_box;
    use crate::media::segmenter::Segmenter;
    use crate::media::{Frame, StreamInfo, TrackInfo};
    use bytes::Bytes;
    use std::path::Path;
    use std::process::{Command, Output};

    const WALL0: i64 = 1_700_000_000_000;

    fn run(cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| {
            panic!(
                "cannot run {:?} ({e}): ffmpeg and ffprobe must be installed for the media \
                 decoder tests (apt-get install ffmpeg)",
                cmd.get_program()
            )
        });
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ffmpeg(args: &[&str]) -> Output {
        run(Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
            .args(args))
    }

    /// NAL units of an Annex B stream (start codes removed).
    fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= data.len() {
            if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        let mut nals = Vec::new();
        for (k, &s) in starts.iter().enumerate() {
            let mut end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
            while end > s && data[end - 1] == 0 {
                end -= 1; // the zero byte of a 4-byte start code, or trailing zeros
            }
            nals.push(&data[s..end]);
        }
        nals
    }

    /// Access units in MP4 framing (4-byte lengths), parameter sets kept apart.
    struct Elementary {
        params: Vec<Vec<u8>>,
        frames: Vec<(bool, Vec<u8>)>,
    }

    #[derive(Clone, Copy)]
    enum Codec {
        H264,
        H265,
    }

    fn access_units(data: &[u8], codec: Codec) -> Elementary {
        let mut params: Vec<Vec<u8>> = Vec::new();
        let mut frames: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut cur: Vec<u8> = Vec::new();
        let mut cur_key = false;
        let mut cur_has_vcl = false;
        for nal in split_annex_b(data) {
            // (is a parameter set or AUD, starts a new access unit, is VCL, is IRAP)
            let (param, boundary, vcl, key) = match codec {
                Codec::H264 => {
                    let t = nal[0] & 0x1f;
                    let first_mb = nal.len() > 1 && nal[1] & 0x80 != 0;
                    match t {
                        7..=9 => (t != 9, true, false, false),
                        6 => (false, true, false, false),
                        1 | 5 => (false, first_mb, true, t == 5),
                        _ => (false, false, false, false),
                    }
                }
                Codec::H265 => {
                    let t = (nal[0] >> 1) & 0x3f;
                    let first_slice = nal.len() > 2 && nal[2] & 0x80 != 0;
                    match t {
                        32..=35 => (t != 35, true, false, false),
                        39 => (false, true, false, false),
                        0..=31 => (false, first_slice, true, (16..=23).contains(&t)),
                        _ => (false, false, false, false),
                    }
                }
            };
            if boundary && cur_has_vcl {
                frames.push((cur_key, std::mem::take(&mut cur)));
                cur_key = false;
                cur_has_vcl = false;
            }
            if param {
                if !params.iter().any(|p| p[..2] == nal[..2]) {
                    params.push(nal.to_vec());
                }
                continue;
            }
            if matches!(codec, Codec::H264) && nal[0] & 0x1f == 9 {
                continue;
            }
            if matches!(codec, Codec::H265) && (nal[0] >> 1) & 0x3f == 35 {
                continue;
            }
            cur.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            cur.extend_from_slice(nal);
            cur_key |= key;
            cur_has_vcl |= vcl;
        }
        if cur_has_vcl {
            frames.push((cur_key, cur));
        }
        Elementary { params, frames }
    }

    /// A VisualSampleEntry like retina's `VideoParameters::mp4_sample_entry()`.
    fn visual_entry(
        kind: &[u8; 4],
        config_kind: &[u8; 4],
        config: &[u8],
        w: u16,
        h: u16,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        write_box(&mut v, kind, |b| {
            b.put_u32(0);
            b.put_u32(1); // data_reference_index
            b.put_bytes(0, 16);
            b.put_u16(w);
            b.put_u16(h);
            b.put_u32(0x0048_0000);
            b.put_u32(0x0048_0000);
            b.put_u32(0);
            b.put_u16(1); // frame count
            b.put_bytes(0, 32); // compressorname
            b.put_u16(0x18);
            b.put_u16(0xffff);
            write_box(b, config_kind, |b| b.extend_from_slice(config));
        });
        v
    }

    fn avc1_entry(params: &[Vec<u8>], w: u16, h: u16) -> Vec<u8> {
        let sps = params.iter().find(|p| p[0] & 0x1f == 7).expect("SPS");
        let pps = params.iter().find(|p| p[0] & 0x1f == 8).expect("PPS");
        let mut c = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        c.put_u16(sps.len() as u16);
        c.extend_from_slice(sps);
        c.push(1);
        c.put_u16(pps.len() as u16);
        c.extend_from_slice(pps);
        if matches!(sps[1], 100 | 110 | 122 | 144) {
            // High profiles: chroma 4:2:0, 8-bit, no SPS extensions (ISO/IEC 14496-15 5.3.3.1).
            c.extend_from_slice(&[0xfc | 1, 0xf8, 0xf8, 0]);
        }
        visual_entry(b"avc1", b"avcC", &c, w, h)
    }

    /// Removes emulation prevention bytes (00 00 03 → 00 00).
    fn unescape(nal: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(nal.len());
        let mut zeros = 0;
        for &b in nal {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }

    fn hvc1_entry(params: &[Vec<u8>], w: u16, h: u16) -> Vec<u8> {
        let of = |t: u8| {
            params
                .iter()
                .find(|p| (p[0] >> 1) & 0x3f == t)
                .expect("parameter set")
        };
        let (vps, sps, pps) = (of(32), of(33), of(34));
        // After the 2-byte NAL header: vps id / max_sub_layers / nesting (1 byte), then
        // profile_tier_level's general part (12 bytes) which hvcC repeats.
        let rbsp = unescape(&sps[2..]);
        let mut c = vec![1];
        c.extend_from_slice(&rbsp[1..13]);
        c.extend_from_slice(&[0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f, 3]);
        for (t, nal) in [(32u8, vps), (33, sps), (34, pps)] {
            c.push(0x80 | t);
            c.put_u16(1);
            c.put_u16(nal.len() as u16);
            c.extend_from_slice(nal);
        }
        visual_entry(b"hvc1", b"hvcC", &c, w, h)
    }

    /// Raw AAC frames of an ADTS stream, and the AudioSpecificConfig.
    fn adts_frames(data: &[u8]) -> (Vec<u8>, u32, Vec<Vec<u8>>) {
        const RATES: [u32; 13] = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ];
        let mut pos = 0;
        let mut frames = Vec::new();
        let mut asc = Vec::new();
        let mut rate = 0;
        while pos + 7 <= data.len() {
            let h = &data[pos..];
            assert!(h[0] == 0xff && h[1] & 0xf0 == 0xf0, "ADTS sync at {pos}");
            let header = if h[1] & 1 == 1 { 7 } else { 9 };
            let profile = h[2] >> 6;
            let sf = (h[2] >> 2) & 0xf;
            let ch = ((h[2] & 1) << 2) | (h[3] >> 6);
            let len =
                (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
            let aot = profile + 1;
            asc = vec![(aot << 3) | (sf >> 1), ((sf & 1) << 7) | (ch << 3)];
            rate = RATES[usize::from(sf)];
            frames.push(h[header..len].to_vec());
            pos += len;
        }
        (asc, rate, frames)
    }

    /// An MP4AudioSampleEntry with esds, like retina's `AudioParameters::mp4_sample_entry()`.
    fn mp4a_entry(asc: &[u8], rate: u32, channels: u16) -> Vec<u8> {
        let mut v = Vec::new();
        write_box(&mut v, b"mp4a", |b| {
            b.put_u32(0);
            b.put_u32(1);
            b.put_bytes(0, 8);
            b.put_u16(channels);
            b.put_u16(16);
            b.put_u32(0);
            b.put_u32(rate << 16);
            write_box(b, b"esds", |b| {
                b.put_u32(0);
                let dsi_len = asc.len() as u8;
                let dcd_len = 13 + 2 + dsi_len;
                b.extend_from_slice(&[0x03, 3 + 2 + dcd_len + 3, 0, 0, 0]);
                b.extend_from_slice(&[0x04, dcd_len, 0x40, 0x15, 0, 0x03, 0]);
                b.put_u32(6144 * u32::from(channels) * rate / 1024 / 8 * 8);
                b.put_u32(0);
                b.extend_from_slice(&[0x05, dsi_len]);
                b.extend_from_slice(asc);
                b.extend_from_slice(&[0x06, 1, 2]);
            });
        });
        v
    }

    /// ffprobe's view of a file: (streams, format duration).
    fn probe(path: &Path) -> (Vec<serde_json::Value>, f64) {
        let out = run(Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_entries",
                "stream=codec_type,codec_name,width,height,nb_read_frames,duration:format=duration",
                "-of",
                "json",
            ])
            .arg(path));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
        let duration = v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("no format duration for {}: {v}", path.display()));
        let streams = v["streams"].as_array().cloned().expect("streams");
        (streams, duration)
    }

    fn decode_cleanly(path: &Path) {
        let out = ffmpeg(&["-i", path.to_str().expect("utf-8 path"), "-f", "null", "-"]);
        assert!(
            out.stderr.is_empty(),
            "ffmpeg decoding {} complained: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    struct Expect {
        codec: &'static str,
        video_frames: usize,
        audio_frames: usize,
    }

    fn check(path: &Path, e: &Expect) {
        let (streams, duration) = probe(path);
        let video = streams
            .iter()
            .find(|s| s["codec_type"] == "video")
            .unwrap_or_else(|| panic!("no video stream in {}", path.display()));
        assert_eq!(video["codec_name"], e.codec, "{}", path.display());
        assert_eq!(video["width"], 320);
        assert_eq!(video["height"], 240);
        assert_eq!(
            video["nb_read_frames"],
            e.video_frames.to_string(),
            "{}",
            path.display()
        );
        let audio = streams.iter().find(|s| s["codec_type"] == "audio");
        if e.audio_frames > 0 {
            let audio = audio.unwrap_or_else(|| panic!("no audio in {}", path.display()));
            assert_eq!(audio["codec_name"], "aac");
            assert_eq!(audio["nb_read_frames"], e.audio_frames.to_string());
        } else {
            assert!(audio.is_none());
        }
        let video_duration: f64 = video["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("video duration");
        assert!(
            (video_duration - 4.0).abs() < 0.001,
            "{}: video duration {video_duration}",
            path.display()
        );
        // Audio (AAC priming included) may run a frame or two past the video.
        assert!(
            (duration - 4.0).abs() < 0.1,
            "{}: duration {duration}",
            path.display()
        );
        // The demuxer sees exactly the keyframes as sync samples (trun flags / stss).
        let out = run(Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-select_streams",
                "v",
                "-show_entries",
                "packet=flags",
            ])
            .args(["-of", "csv=p=0"])
            .arg(path));
        let flags = String::from_utf8_lossy(&out.stdout);
        let keys: Vec<usize> = flags
            .lines()
            .enumerate()
            .filter(|(_, f)| f.starts_with('K'))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, [0, 25, 50, 75], "{}", path.display());
        decode_cleanly(path);
    }

    /// Encodes 4 s of test video (and audio), records it, checks fMP4 and export.
    fn round_trip(codec: Codec, with_audio: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name);
        let es_path = p("video.es");
        let s = |path: &Path| path.to_str().expect("utf-8 path").to_owned();
        let encoder: &[&str] = match codec {
            Codec::H264 => &["-c:v", "libx264", "-g", "25", "-bf", "0", "-f", "h264"],
            Codec::H265 => &[
                "-c:v",
                "libx265",
                "-x265-params",
                "keyint=25:min-keyint=25:bframes=0:open-gop=0:log-level=error",
                "-f",
                "hevc",
            ],
        };
        let mut args = vec![
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "4",
            "-pix_fmt",
            "yuv420p",
        ];
        args.extend_from_slice(encoder);
        let es = s(&es_path);
        args.push(&es);
        ffmpeg(&args);
        let es = access_units(&std::fs::read(&es_path).expect("read es"), codec);
        assert_eq!(es.frames.len(), 100, "25 fps for 4 s");
        assert!(es.frames[0].0, "starts with a keyframe");
        assert_eq!(
            es.frames.iter().filter(|f| f.0).count(),
            4,
            "one keyframe a second"
        );
        let (sample_entry, codec_name) = match codec {
            Codec::H264 => (avc1_entry(&es.params, 320, 240), "h264"),
            Codec::H265 => (hvc1_entry(&es.params, 320, 240), "hevc"),
        };

        let mut frames: Vec<Frame> = es
            .frames
            .into_iter()
            .enumerate()
            .map(|(i, (key, data))| Frame {
                track: TrackKind::Video,
                dts: i as i64 * 3600,
                duration: 0,
                wall_ms: WALL0 + i as i64 * 40,
                is_key: key,
                data: Bytes::from(data),
            })
            .collect();
        let mut audio = None;
        let mut audio_frames = 0;
        if with_audio {
            let aac_path = p("audio.aac");
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "4",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
                "-f",
                "adts",
                &s(&aac_path),
            ]);
            let (asc, rate, aac) = adts_frames(&std::fs::read(&aac_path).expect("read aac"));
            assert_eq!(rate, 48_000);
            audio_frames = aac.len();
            frames.extend(aac.into_iter().enumerate().map(|(i, data)| Frame {
                track: TrackKind::Audio,
                dts: i as i64 * 1024,
                duration: 0,
                wall_ms: WALL0 + i as i64 * 1024 * 1000 / 48_000,
                is_key: true,
                data: Bytes::from(data),
            }));
            // Arrival order: by wall clock, video first on ties.
            frames.sort_by_key(|f| (f.wall_ms, f.track == TrackKind::Audio));
            audio = Some(TrackInfo {
                kind: TrackKind::Audio,
                timescale: rate,
                sample_entry: mp4a_entry(&asc, rate, 1),
                width: 0,
                height: 0,
            });
        }
        let info = StreamInfo {
            video: TrackInfo {
                kind: TrackKind::Video,
                timescale: 90_000,
                sample_entry,
                width: 320,
                height: 240,
            },
            audio,
        };

        let mut seg = Segmenter::new(&info);
        let mut segments: Vec<_> = frames.into_iter().filter_map(|f| seg.push(f)).collect();
        segments.extend(seg.flush());
        assert_eq!(segments.len(), 4, "one segment per GOP");
        assert!(segments.iter().all(|s| s.starts_with_keyframe));
        assert_eq!(seg.stats().dropped_before_keyframe, 0);
        let expect = Expect {
            codec: codec_name,
            video_frames: 100,
            audio_frames,
        };

        // Fragmented: init + fragments concatenated, as a live viewer or the clip upload sees it.
        let mut fmp4 = seg.init_segment().to_vec();
        for s in &segments {
            fmp4.extend_from_slice(&s.fragment);
        }
        std::fs::write(p("fragmented.mp4"), &fmp4).expect("write");
        check(&p("fragmented.mp4"), &expect);

        // Progressive export, streamed through the plan.
        let frags: Vec<Bytes> = segments.iter().map(|s| s.fragment.clone()).collect();
        let plan = plan_layout(seg.init_segment(), &frags).expect("plan");
        assert_eq!(plan.tracks()[0].samples, 100);
        let mut file = std::fs::File::create(p("export.mp4")).expect("create");
        let n = plan.write_to(&frags, &mut file).expect("write export");
        drop(file);
        assert_eq!(n, plan.total_len());
        check(&p("export.mp4"), &expect);
    }

    #[test]
    fn ffprobe_reads_h264_with_aac_fragmented_and_exported() {
        round_trip(Codec::H264, true);
    }

    #[test]
    fn ffprobe_reads_h264_video_only_fragmented_and_exported() {
        round_trip(Codec::H264, false);
    }

    #[test]
    fn ffprobe_reads_h265_with_aac_fragmented_and_exported() {
        round_trip(Codec::H265, true);
    }
}
