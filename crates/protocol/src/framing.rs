//! PLM1 framing: how live feeds and clips travel as MQTT payloads (wire protocol v1).
//!
//! Every payload on `{root}/gw/{gw}/live/{request_id}` and `{root}/gw/{gw}/clip/{request_id}` is
//!
//! ```text
//! "PLM1" (4 bytes) · kind u8 · seq u32 big-endian · timestamp u64 big-endian · body
//! ```
//!
//! - kind 1, **init**: body is `ftyp`+`moov`; timestamp 0.
//! - kind 2, **fragment**: body is `moof`+`mdat`; timestamp is the UTC milliseconds of the
//!   fragment's first sample.
//! - kind 3, **end**: body is JSON — for live `{"reason": "expired|revoked|paused|camera_lost|…"}`,
//!   for a clip the signed manifest.
//!
//! `seq` counts every message of one feed or clip from 0, so the receiver can order them and
//! see losses (live is QoS 0). The bodies of kinds 1 and 2 concatenated in `seq` order are a
//! fragmented MP4 that ffprobe and ffmpeg read.

/// The magic at the start of every framed payload.
pub const MAGIC: &[u8; 4] = b"PLM1";

/// Header length: magic, kind, seq, timestamp.
pub const HEADER_LEN: usize = 4 + 1 + 4 + 8;

/// What a framed message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `ftyp`+`moov`.
    Init = 1,
    /// `moof`+`mdat`.
    Fragment = 2,
    /// JSON: end reason (live) or signed manifest (clip).
    End = 3,
}

/// A decoded framed message, borrowing its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the body is.
    pub kind: Kind,
    /// Position in the feed or clip, from 0.
    pub seq: u32,
    /// UTC ms of the fragment's first sample (0 for init).
    pub timestamp_ms: u64,
    /// The body.
    pub body: &'a [u8],
}

/// Why a payload is not a PLM1 message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// Shorter than the header.
    #[error("payload of {0} bytes is shorter than the {HEADER_LEN}-byte PLM1 header")]
    Short(usize),
    /// Does not start with `PLM1`.
    #[error("payload does not start with PLM1")]
    BadMagic,
    /// Unknown kind byte.
    #[error("unknown PLM1 kind {0}")]
    BadKind(u8),
}

/// Frames `body` as one payload.
pub fn encode(kind: Kind, seq: u32, timestamp_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The header alone, for payloads whose body is sent from elsewhere (a segment file range).
pub fn header(kind: Kind, seq: u32, timestamp_ms: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind as u8;
    h[5..9].copy_from_slice(&seq.to_be_bytes());
    h[9..17].copy_from_slice(&timestamp_ms.to_be_bytes());
    h
}

/// Reads one payload.
pub fn decode(payload: &[u8]) -> Result<Frame<'_>, FramingError> {
    if payload.len() < HEADER_LEN {
        return Err(FramingError::Short(payload.len()));
    }
    if &payload[..4] != MAGIC {
        return Err(FramingError::BadMagic);
    }
    let kind = match payload[4] {
        1 => Kind::Init,
        2 => Kind::Fragment,
        3 => Kind::End,
        k => return Err(FramingError::BadKind(k)),
    };
    let seq = u32::from_be_bytes(payload[5..9].try_into().expect("4 bytes"));
    let timestamp_ms = u64::from_be_bytes(payload[9..17].try_into().expect("8 bytes"));
    Ok(Frame {
        kind,
        seq,
        timestamp_ms,
        body: &payload[HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_round_trips_every_kind() {
        for (kind, seq, ts) in [
            (Kind::Init, 0, 0),
            (Kind::Fragment, 7, 1_795_000_000_123),
            (Kind::End, u32::MAX, u64::MAX),
        ] {
            let p = encode(kind, seq, ts, b"body");
            assert_eq!(&p[..HEADER_LEN], &header(kind, seq, ts));
            let f = decode(&p).unwrap();
            assert_eq!(
                (f.kind, f.seq, f.timestamp_ms, f.body),
                (kind, seq, ts, &b"body"[..])
            );
        }
    }

    #[test]
    fn header_layout_is_big_endian_as_the_protocol_says() {
        let p = encode(Kind::Fragment, 0x0102_0304, 0x1122_3344_5566_7788, b"");
        assert_eq!(
            p,
            b"PLM1\x02\x01\x02\x03\x04\x11\x22\x33\x44\x55\x66\x77\x88"
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert_eq!(decode(b"PLM1\x01"), Err(FramingError::Short(5)));
        assert_eq!(decode(&[0u8; 20]), Err(FramingError::BadMagic));
        let mut p = encode(Kind::Init, 0, 0, b"");
        p[4] = 9;
        assert_eq!(decode(&p), Err(FramingError::BadKind(9)));
    }
}
