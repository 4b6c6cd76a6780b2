//! Durations on the command line: `30s`, `2m`, `250ms`, `1h 30m`.

use std::time::Duration;

/// Parses a human duration such as `30s`, `2m` or `250ms` (clap value parser).
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (write durations like 30s, 2m or 250ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_bare_numbers() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse("30").is_err());
        assert!(parse("soon").is_err());
    }
}
