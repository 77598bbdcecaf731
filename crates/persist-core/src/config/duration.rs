//! Durations as operators write them: `"50ms"`, `"90s"`, `"20m"`, `"12h"`, `"7d"`, or an
//! integer number of seconds.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A configuration duration. Deserializes from a string with a unit or from integer seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration(pub Duration);

/// Parses `"<digits><unit>"` with unit `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "`{text}` is not a duration (expected e.g. \"90s\", \"20m\", \"12h\", \"7d\")"
        ));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}`: number out of range"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "`{text}` has no unit (use ms, s, m, h or d, or an integer number of seconds)"
            ))
        }
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
            ))
        }
    };
    let millis = value
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("`{text}`: out of range"))?;
    // Cookie timestamps are 32-bit seconds: keep every duration well inside that.
    if millis > MAX_MILLIS {
        return Err(format!("`{text}`: longer than the maximum of 3650d"));
    }
    Ok(Duration::from_millis(millis))
}

const MAX_MILLIS: u64 = 3650 * 86_400_000;

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration such as \"90s\", \"20m\", \"12h\", \"7d\" or integer seconds",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                let millis = v
                    .checked_mul(1000)
                    .filter(|m| *m <= MAX_MILLIS)
                    .ok_or_else(|| {
                        E::custom(format!("{v} seconds: longer than the maximum of 3650d"))
                    })?;
                Ok(ConfigDuration(Duration::from_millis(millis)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v}: a duration cannot be negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn units() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "s",
            "20",
            "20x",
            "-5s",
            "1.5h",
            "20 m",
            "99999999999999999999s",
            "4000d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_forms() {
        let d: ConfigDuration = serde_json::from_str("\"20m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(1200));
        let d: ConfigDuration = serde_json::from_str("45").unwrap();
        assert_eq!(d.0, Duration::from_secs(45));
        assert!(serde_json::from_str::<ConfigDuration>("-1").is_err());
        assert!(serde_json::from_str::<ConfigDuration>("1.5").is_err());
        assert!(serde_json::from_str::<ConfigDuration>("true").is_err());
    }
}
