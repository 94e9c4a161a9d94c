//! Human-friendly units in the configuration and the CLI: byte sizes (`"8 GiB"`, `"500MB"`,
//! `1048576`) and durations (`"30s"`, `"10m"`, `"7d"`, `"1h30m"`).
//!
//! Both parse from strings (and byte sizes also from plain integers) so that TOML stays
//! readable, and both print back in the same notation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A number of bytes, written `"8 GiB"`, `"500 MB"`, `"64KiB"` or a plain integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A span of time, written `"30s"`, `"500ms"`, `"10m"`, `"2h"`, `"7d"`, `"1w"` or combined
/// (`"1h30m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// Why a size or duration did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// The text is empty or has no number where one is needed.
    #[error("{0:?}: expected a number followed by a unit")]
    NoNumber(String),
    /// The unit is not one this parser knows.
    #[error("{text:?}: unknown unit {unit:?} (use {expected})")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit that was not understood.
        unit: String,
        /// The units that are accepted.
        expected: &'static str,
    },
    /// The value does not fit in 64 bits.
    #[error("{0:?}: too large")]
    Overflow(String),
}

const SIZE_UNITS: &str = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";
const DUR_UNITS: &str = "ms, s, m, h, d, w";

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        if digits_end == 0 {
            return Err(UnitError::NoNumber(s.to_owned()));
        }
        let n: u64 = text[..digits_end]
            .parse()
            .map_err(|_| UnitError::Overflow(s.to_owned()))?;
        let unit = text[digits_end..].trim();
        let mult: u64 = match unit {
            "" | "B" | "b" => 1,
            "KB" | "kB" | "K" | "k" => 1_000,
            "MB" | "M" => 1_000_000,
            "GB" | "G" => 1_000_000_000,
            "TB" | "T" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => {
                return Err(UnitError::UnknownUnit {
                    text: s.to_owned(),
                    unit: unit.to_owned(),
                    expected: SIZE_UNITS,
                })
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| UnitError::Overflow(s.to_owned()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size {
                let v = self.0 as f64 / size as f64;
                return if self.0.is_multiple_of(size) {
                    write!(f, "{} {name}", self.0 / size)
                } else {
                    write!(f, "{v:.1} {name}")
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl FromStr for Dur {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(UnitError::NoNumber(s.to_owned()));
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let digits_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits_end == 0 {
                return Err(UnitError::NoNumber(s.to_owned()));
            }
            let n: u64 = rest[..digits_end]
                .parse()
                .map_err(|_| UnitError::Overflow(s.to_owned()))?;
            rest = rest[digits_end..].trim_start();
            let unit_end = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_end];
            let mult: u64 = match unit {
                "ms" => 1,
                "s" | "sec" | "secs" => 1_000,
                "m" | "min" | "mins" => 60_000,
                "h" | "hour" | "hours" => 3_600_000,
                "d" | "day" | "days" => 86_400_000,
                "w" | "week" | "weeks" => 7 * 86_400_000,
                _ => {
                    return Err(UnitError::UnknownUnit {
                        text: s.to_owned(),
                        unit: unit.to_owned(),
                        expected: DUR_UNITS,
                    })
                }
            };
            total_ms = n
                .checked_mul(mult)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(|| UnitError::Overflow(s.to_owned()))?;
            rest = rest[unit_end..].trim_start();
        }
        Ok(Dur(Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (name, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size {
                write!(f, "{}{name}", ms / size)?;
                ms %= size;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = String::deserialize(d)?;
        t.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_in_decimal_and_binary_units() {
        let cases = [
            ("0", 0),
            ("1048576", 1 << 20),
            ("500MB", 500_000_000),
            ("8 GiB", 8 << 30),
            ("64KiB", 64 << 10),
            ("2 TB", 2_000_000_000_000),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(want)), "{text}");
        }
    }

    #[test]
    fn byte_sizes_reject_unknown_units_and_overflow() {
        assert!(matches!(
            "5 parsecs".parse::<ByteSize>(),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "GiB".parse::<ByteSize>(),
            Err(UnitError::NoNumber(_))
        ));
        assert!(matches!(
            "99999999999 TiB".parse::<ByteSize>(),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn durations_parse_single_and_combined_units() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("7d", 7 * 86_400_000),
            ("1w", 7 * 86_400_000),
            ("2 h", 7_200_000),
        ];
        for (text, want) in cases {
            assert_eq!(
                text.parse::<Dur>(),
                Ok(Dur(Duration::from_millis(want))),
                "{text}"
            );
        }
    }

    #[test]
    fn durations_reject_missing_or_unknown_units() {
        assert!("10".parse::<Dur>().is_err());
        assert!("10 fortnights".parse::<Dur>().is_err());
        assert!("".parse::<Dur>().is_err());
        assert!("s".parse::<Dur>().is_err());
    }

    #[test]
    fn durations_and_sizes_print_back_in_their_notation() {
        assert_eq!(
            Dur(Duration::from_millis(5_400_500)).to_string(),
            "1h30m500ms"
        );
        assert_eq!(ByteSize(8 << 30).to_string(), "8 GiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize(12).to_string(), "12 B");
    }
}
