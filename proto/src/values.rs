//! Values both binaries' command lines take, parsed once so that `bertsweep serve
//! --lease-ttl 30s` and `bertsweep-worker --exit-when-idle 30s` read the same way.

use std::time::Duration;

/// Parses `30s`, `500ms`, `2m`, `1h`, `7d` or plain seconds; the error is one line saying how
/// to write one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = t.find(|c: char| c.is_ascii_alphabetic()).map(|i| t.split_at(i)).unwrap_or((t, "s"));
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration; use e.g. 30s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use ms, s, m, h or d")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_refusals() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("0s").unwrap_err().contains("positive"));
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("is not a duration"));
    }
}
