//! Durations written as kube-router's (Go's) flags take them: `5m`, `30s`,
//! `1h0m0s`, `1.5s`, `300ms`.

use std::time::Duration;

/// Parses a Go duration (a sequence of decimal numbers with units `ns`,
/// `us`, `µs`, `ms`, `s`, `m`, `h`), or a bare number of seconds.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    // A bare number is seconds (this agent's older flags took seconds).
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: a number needs a unit (h, m, s, ms, us, ns)"))?;
        if digits == 0 {
            return Err(format!("{s:?}: expected a number at {rest:?}"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: {:?} is not a number", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (h, m, s, ms, us, ns)"
                ))
            }
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    // Past u64 seconds from_secs_f64 would panic.
    Duration::try_from_secs_f64(total).map_err(|_| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_as_kube_router_users_write_them() {
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("5"), Ok(Duration::from_secs(5)), "bare seconds");
        assert!(parse("5s3").unwrap_err().contains("needs a unit"));
        assert!(parse("5d").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("200000000000000000000h")
            .unwrap_err()
            .contains("too large"));
    }
}
