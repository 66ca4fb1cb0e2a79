//! Human-readable durations (`60s`, `1h30m`, `500ms`) and byte sizes (`8MiB`, `1GB`, `65536`).
//!
//! Both parse strictly: no fractions, no negative numbers, no spaces, no overflow, and units are
//! case-sensitive. Parse errors are reasons without a key path (`"60" has no unit (use ms, s, m,
//! h or d)`); the config loader puts the key path in front. `Display` writes the canonical form,
//! which parses back to the same value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Duration units, largest first, with their length in milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const DURATION_HINT: &str = "use ms, s, m, h or d";

/// Size units with their multiplier in bytes.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

const SIZE_HINT: &str =
    "use a number of bytes, or B, KiB, MiB, GiB, TiB, KB, MB, GB or TB; units are case-sensitive";

/// Parses a duration such as `60s`, `5m`, `1h30m`, `2d` or `500ms`.
///
/// A number must be followed by one of the units `ms`, `s`, `m`, `h`, `d`. Several components
/// may be combined, largest unit first and each unit at most once (`1h30m`, `1m30s500ms`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err(format!(
            "\"\" is empty (expected a duration such as 60s, 5m, 1h30m or 500ms; {DURATION_HINT})"
        ));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("\"{text}\" has no unit ({DURATION_HINT})"));
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total_ms: u64 = 0;
    // Index into DURATION_UNITS of the last unit seen: the next one must be smaller.
    let mut last_rank: Option<usize> = None;
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let digits = &text[start..pos];
        if digits.is_empty() {
            return Err(match bytes[pos] {
                b'-' => format!("\"{text}\" is negative (durations must be zero or more)"),
                c if c.is_ascii_alphabetic() => {
                    format!("\"{text}\" has a unit without a number before it (e.g. 60s, 1h30m)")
                }
                c if c.is_ascii_whitespace() => {
                    format!("\"{text}\" contains a space (write e.g. 1h30m or 60s)")
                }
                _ => invalid_duration_char(text, pos),
            });
        }
        if pos < bytes.len() && (bytes[pos] == b'.' || bytes[pos] == b',') {
            return Err(format!(
                "\"{text}\" has a fraction (use whole numbers of a smaller unit, e.g. 90m or 1500ms)"
            ));
        }
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &text[unit_start..pos];
        if unit.is_empty() {
            return Err(if pos == bytes.len() {
                format!("\"{text}\": the number {digits} at the end has no unit ({DURATION_HINT})")
            } else if bytes[pos].is_ascii_whitespace() {
                format!("\"{text}\" contains a space (write e.g. 1h30m or 60s)")
            } else {
                invalid_duration_char(text, pos)
            });
        }
        let Some(rank) = DURATION_UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!(
                "\"{text}\": unknown unit \"{unit}\" ({DURATION_HINT})"
            ));
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(format!(
                "\"{text}\": units must go from largest to smallest, each at most once (e.g. 1h30m)"
            ));
        }
        last_rank = Some(rank);
        let too_large = || format!("\"{text}\" is too large");
        let count: u64 = digits.parse().map_err(|_| too_large())?;
        total_ms = count
            .checked_mul(DURATION_UNITS[rank].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(too_large)?;
    }
    Ok(Duration::from_millis(total_ms))
}

fn invalid_duration_char(text: &str, pos: usize) -> String {
    let c = text[pos..].chars().next().unwrap_or(' ');
    format!("\"{text}\": unexpected character '{c}' (expected e.g. 60s, 5m, 1h30m or 500ms)")
}

/// Writes a duration in the canonical form accepted by [`parse_duration`]: the largest units
/// first, zero components left out (`1h30m`, `1s500ms`, `0s`). Precision below a millisecond is
/// dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, unit_ms) in DURATION_UNITS {
        let count = ms / unit_ms;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(name);
            ms -= count * unit_ms;
        }
    }
    out
}

/// Parses a byte size: a bare number of bytes (`65536`) or a whole number followed by a unit:
/// `B`, `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err(format!(
            "\"\" is empty (expected a size such as 8MiB or 65536; {SIZE_HINT})"
        ));
    }
    let bytes = text.as_bytes();
    let digits_end = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    let (digits, rest) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(if rest.starts_with('-') {
            format!("\"{text}\" is negative (sizes must be zero or more)")
        } else {
            format!("\"{text}\" is not a size (expected e.g. 8MiB or 65536; {SIZE_HINT})")
        });
    }
    if rest.starts_with('.') || rest.starts_with(',') {
        return Err(format!(
            "\"{text}\" has a fraction (use a whole number of a smaller unit, e.g. 1536MiB)"
        ));
    }
    if rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        return Err(format!(
            "\"{text}\" contains a space (write the unit right after the number, e.g. 8MiB)"
        ));
    }
    let multiplier = if rest.is_empty() {
        1
    } else {
        match SIZE_UNITS.iter().find(|(name, _)| *name == rest) {
            Some((_, multiplier)) => *multiplier,
            None => return Err(format!("\"{text}\": unknown unit \"{rest}\" ({SIZE_HINT})")),
        }
    };
    let too_large = || format!("\"{text}\" is too large (at most {} bytes)", u64::MAX);
    let count: u64 = digits.parse().map_err(|_| too_large())?;
    count.checked_mul(multiplier).ok_or_else(too_large)
}

/// Writes a size in the canonical form accepted by [`parse_size`]: the largest binary unit that
/// divides it exactly (`8MiB`), else the largest decimal one (`1500KB`), else bytes (`1000001B`).
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0B".to_string();
    }
    let binary = SIZE_UNITS[1..5].iter().rev();
    let decimal = SIZE_UNITS[5..].iter().rev();
    for (name, multiplier) in binary.chain(decimal) {
        if bytes.is_multiple_of(*multiplier) {
            return format!("{}{name}", bytes / multiplier);
        }
    }
    format!("{bytes}B")
}

/// A duration written as `60s`, `1h30m`, `500ms`, ...: see [`parse_duration`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl From<HumanDuration> for Duration {
    fn from(value: HumanDuration) -> Duration {
        value.0
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 60s, 5m, 1h30m or 500ms")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("\"{n}\" has no unit ({DURATION_HINT})")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "\"{n}\" is negative and has no unit (durations must be zero or more; {DURATION_HINT})"
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "{n} is not a duration (use a whole number and a unit, e.g. 60s or 1500ms)"
                )))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A byte size written as `8MiB`, `1GB`, `65536`, ...: see [`parse_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl From<ByteSize> for u64 {
    fn from(value: ByteSize) -> u64 {
        value.0
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 8MiB, 1GB or 65536 (bytes)")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                match u64::try_from(n) {
                    Ok(n) => Ok(ByteSize(n)),
                    Err(_) => Err(E::custom(format!(
                        "\"{n}\" is negative (sizes must be zero or more)"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "{n} is not a whole number of bytes (use e.g. 1536MiB, not 1.5GiB)"
                )))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// `#[serde(deserialize_with = "...")]` helper: a [`HumanDuration`] into a [`Duration`].
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    HumanDuration::deserialize(d).map(|h| h.0)
}

/// `#[serde(deserialize_with = "...")]` helper: a [`ByteSize`] into a number of bytes.
pub fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ByteSize::deserialize(d).map(|s| s.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_accepts_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn duration_accepts_combined_components() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Ok(Duration::from_millis(93_784_005))
        );
        assert_eq!(parse_duration("1m500ms"), Ok(Duration::from_millis(60_500)));
    }

    #[test]
    fn duration_bare_number_is_rejected_naming_the_units() {
        assert_eq!(
            parse_duration("60").unwrap_err(),
            "\"60\" has no unit (use ms, s, m, h or d)"
        );
        assert!(parse_duration("1h30").unwrap_err().contains("has no unit"));
    }

    #[test]
    fn duration_rejects_bad_forms() {
        for (text, expected) in [
            ("", "is empty"),
            ("-5s", "is negative"),
            ("1.5h", "fraction"),
            ("5x", "unknown unit \"x\""),
            ("5S", "unknown unit \"S\""),
            ("5sec", "unknown unit \"sec\""),
            ("h", "without a number"),
            ("30m1h", "largest to smallest"),
            ("1h1h", "largest to smallest"),
            ("1h 30m", "space"),
            (" 5s", "space"),
            ("5s!", "unexpected character '!'"),
            ("99999999999999999999999d", "too large"),
            ("213503982334601d", "too large"),
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn duration_display_round_trips() {
        for (ms, text) in [
            (0, "0s"),
            (500, "500ms"),
            (60_000, "1m"),
            (5_400_000, "1h30m"),
            (86_400_000 + 1_500, "1d1s500ms"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(HumanDuration(d).to_string(), text);
            assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(d)));
        }
    }

    #[test]
    fn size_accepts_bare_bytes_and_every_unit() {
        for (text, bytes) in [
            ("0", 0),
            ("65536", 65_536),
            ("10B", 10),
            ("64KiB", 64 << 10),
            ("8MiB", 8 << 20),
            ("2GiB", 2 << 30),
            ("1TiB", 1 << 40),
            ("5KB", 5_000),
            ("5MB", 5_000_000),
            ("5GB", 5_000_000_000),
            ("5TB", 5_000_000_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn size_rejects_bad_forms() {
        for (text, expected) in [
            ("", "is empty"),
            ("-1MiB", "is negative"),
            ("1.5GiB", "fraction"),
            ("8mib", "unknown unit \"mib\""),
            ("8kb", "unknown unit \"kb\""),
            ("8M", "unknown unit \"M\""),
            ("8 MiB", "space"),
            ("MiB", "is not a size"),
            ("99999999999999999999", "too large"),
            ("16777216TiB", "too large"),
        ] {
            let err = parse_size(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn size_display_round_trips() {
        for (bytes, text) in [
            (0, "0B"),
            (1, "1B"),
            (8 << 20, "8MiB"),
            (1536 << 20, "1536MiB"),
            (1 << 40, "1TiB"),
            (1_000, "1KB"),
            (1_500_000, "1500KB"),
            (1_000_001, "1000001B"),
        ] {
            assert_eq!(ByteSize(bytes).to_string(), text);
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)));
        }
    }

    #[test]
    fn yaml_numbers_deserialize_as_sizes_but_not_durations() {
        let size: ByteSize = serde_yaml::from_str("65536").unwrap();
        assert_eq!(size, ByteSize(65_536));
        let err = serde_yaml::from_str::<ByteSize>("-1").unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = serde_yaml::from_str::<ByteSize>("1.5").unwrap_err();
        assert!(err.to_string().contains("whole number"), "{err}");
        let err = serde_yaml::from_str::<HumanDuration>("60").unwrap_err();
        assert!(err.to_string().contains("has no unit"), "{err}");
        let d: HumanDuration = serde_yaml::from_str("1h30m").unwrap();
        assert_eq!(d, HumanDuration(Duration::from_secs(5400)));
    }
}
