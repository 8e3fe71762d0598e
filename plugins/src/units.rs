//! Human-friendly configuration units: durations (`250ms`, `5s`, `1m`, `1h`) and sizes
//! (`16KiB`, `1MiB`), and the bounds a configured number is checked against when the
//! configuration is compiled, so that one that passes `check` also starts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::Problem;

/// The longest duration any setting takes. Longer ones are mistakes, and time arithmetic
/// (`Instant` plus a duration, nanosecond counts in a `u64`) stays far from overflowing.
pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(31_557_600);

/// `value` when it lies within `min..=max`, else a problem at `path` naming the range.
pub fn within<T: PartialOrd + fmt::Display>(
    path: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, Problem> {
    if min <= value && value <= max {
        Ok(value)
    } else {
        Err(Problem::new(
            path,
            format!("must be between {min} and {max} (is {value})"),
        ))
    }
}

impl Duration {
    /// The duration when it lies within `min..=max` ([`LONGEST`] at most is the rule),
    /// else a problem at `path` naming the range as the configuration writes durations.
    pub fn within(
        self,
        path: &str,
        min: std::time::Duration,
        max: std::time::Duration,
    ) -> Result<std::time::Duration, Problem> {
        within(path, self, Duration(min), Duration(max)).map(|duration| duration.0)
    }
}

/// A duration written as a string in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(Duration)
            .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 250ms, 5s, 1m, 1h"))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A byte size written as a string (`16KiB`, `1MiB`, `512`) or a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| Size(size.as_u64()))
            .map_err(|e| format!("invalid size {text:?} ({e}); use e.g. 512, 16KiB, 1MiB"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(Size(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written() {
        let ms = |text: &str| text.parse::<Duration>().map(|d| d.0.as_millis());
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("5s"), Ok(5_000));
        assert_eq!(ms("1m"), Ok(60_000));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert!(ms("5 parsecs").is_err());
        assert!(ms("").is_err());
    }

    #[test]
    fn values_outside_their_range_are_problems_at_their_path() {
        assert_eq!(within("a.b", 5, 1, 10), Ok(5));
        let problem = within("a.b", 0, 1, 10).expect_err("below");
        assert_eq!(problem.path, "a.b");
        assert_eq!(problem.message, "must be between 1 and 10 (is 0)");
        let second = std::time::Duration::from_secs(1);
        let long = Duration(LONGEST * 2).within("t", second, LONGEST);
        assert_eq!(
            long.expect_err("too long").message,
            "must be between 1s and 1year (is 2years)"
        );
        assert_eq!(Duration(second).within("t", second, LONGEST), Ok(second));
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!("16KiB".parse::<Size>(), Ok(Size(16 * 1024)));
        assert_eq!("1MiB".parse::<Size>(), Ok(Size(1024 * 1024)));
        assert_eq!("512".parse::<Size>(), Ok(Size(512)));
        assert!("lots".parse::<Size>().is_err());
    }
}
