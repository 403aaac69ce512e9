//! Human-friendly durations ("30s", "1h30m") and sizes ("2GiB", "512MB").

use std::time::Duration;

/// The longest duration any key takes. Durations meet dates (a retry's
/// next try, an SLA's deadline), and a bound keeps every such sum far
/// inside what dates and timers can hold, whatever a job file says.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h30m`, `2d`, `1w` or
/// `1h 30m` (humantime's forms). A bare number is seconds. At most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; expected e.g. \"30s\", \"5m\", \"1h\"".into());
    }
    let parsed = match s.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(s).map_err(|e| {
            format!("invalid duration \"{text}\" ({e}); expected e.g. \"30s\", \"5m\", \"1h30m\"")
        }),
    }?;
    if parsed > MAX_DURATION {
        return Err(format!(
            "duration \"{text}\" is too long; at most 10 years (\"3660d\")"
        ));
    }
    Ok(parsed)
}

/// Parses a size such as `2GiB`, `512MB`, `64k` or a bare number of bytes.
/// Binary (KiB) and decimal (KB) units both mean what they say.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size \"{text}\"; expected e.g. \"512MiB\", \"2GiB\""))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        other => {
            return Err(format!(
                "unknown unit \"{other}\" in size \"{text}\"; expected one of B, KB, KiB, MB, MiB, GB, GiB, TB, TiB"
            ));
        }
    };
    Ok((number * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1w").unwrap(), Duration::from_secs(604_800));
        let e = parse_duration("5 parsecs").unwrap_err();
        assert!(
            e.contains("invalid duration \"5 parsecs\"") && e.contains("parsecs"),
            "{e}"
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for text in [
            "99999999999999999999s",
            "9999999999d",
            "18446744073709551615",
            "11y",
            "3661d",
            "99999999999999999999999999999999999999h",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(
                e.contains("too long") || e.contains("invalid duration"),
                "{text}: {e}"
            );
        }
        assert_eq!(parse_duration("3660d").unwrap(), MAX_DURATION);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("3 bananas").is_err());
    }
}
