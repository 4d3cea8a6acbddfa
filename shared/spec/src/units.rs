//! Compose's durations (`1m30s`, `10s`, `1h`, `500ms`, `2.5s`) and sizes (`512m`, `1g`,
//! `1.5GB`, `1024` bytes).

/// Milliseconds of a Compose duration.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = t.parse::<u64>() {
        // A bare number is seconds in some places; Compose itself wants a unit. Be clear.
        return Err(format!("duration {n:?} needs a unit, e.g. {n}s"));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} needs a unit (us, ms, s, m, h)"))?;
        if num_end == 0 {
            return Err(format!(
                "invalid duration {s:?}: expected a number before the unit"
            ));
        }
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        let after = &rest[num_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit = &after[..unit_end];
        let factor = match unit {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "" => return Err(format!("duration {s:?} needs a unit (us, ms, s, m, h)")),
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (use us, ms, s, m, h)"
                ))
            }
        };
        total += n * factor;
        rest = &after[unit_end..];
    }
    Ok(total.round() as u64)
}

/// Bytes of a Compose size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    if num_end == 0 {
        return Err(format!(
            "invalid size {s:?}: expected a number like 512m or 1g"
        ));
    }
    let n: f64 = t[..num_end]
        .parse()
        .map_err(|_| format!("invalid size {s:?}"))?;
    let unit = t[num_end..].trim();
    let factor: f64 = match unit {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {u:?} (use b, k, m, g)"
            ))
        }
    };
    Ok((n * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10s").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("2.5s").unwrap(), 2_500);
        assert!(parse_duration_ms("10").unwrap_err().contains("unit"));
        assert!(parse_duration_ms("10x")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration_ms("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5q").unwrap_err().contains("unknown unit"));
    }
}
