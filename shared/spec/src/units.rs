//! Compose's durations (`1m30s`, `10s`, `1h`, `500ms`, `2.5s`) and sizes (`512m`, `1g`,
//! `1.5GB`, `1024` bytes).

/// Milliseconds of a Compose duration (Go's format: a sequence of numbers with units `ns`,
/// `us`, `ms`, `s`, `m`, `h`, like `1m30s` or `1.5h`; `0` alone needs no unit).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let form = "expected a number with a unit like 10s, 1m30s or 500ms";
    if t.is_empty() {
        return Err(format!("empty duration: {form}"));
    }
    if t == "0" {
        return Ok(0);
    }
    if t.parse::<f64>().is_ok() {
        return Err(format!("duration {t} needs a unit, e.g. {t}s"));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: {form}"))?;
        let after = &rest[num_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let factor = match &after[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "" => return Err(format!("invalid duration {s:?}: a number without a unit")),
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h)"
                ))
            }
        };
        total += n * factor;
        rest = &after[unit_end..];
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(format!("duration {s:?} is too long"));
    }
    Ok(total.round() as u64)
}

/// Bytes of a Compose size, as Docker reads them: a number, an optional space, an optional
/// unit `b`, `k`, `m`, `g`, `t`, `p` (powers of 1024, any case, `kb`/`kib` alike), like
/// `512m`, `1g`, `1.5GB`, `1024`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let form = "expected a number with an optional unit like 512m, 1g or 1.5GB";
    let t = s.trim().to_ascii_lowercase();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n: f64 = t[..num_end]
        .parse()
        .map_err(|_| format!("invalid size {s:?}: {form}"))?;
    let unit = t[num_end..].strip_prefix(' ').unwrap_or(&t[num_end..]);
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown unit (use b, k, m, g, t)"
            ))
        }
    };
    let bytes = n * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes.round() as u64)
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
        assert_eq!(parse_duration_ms("1.5h").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("2h45m").unwrap(), 9_900_000);
        assert_eq!(parse_duration_ms("300us").unwrap(), 0);
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
        assert_eq!(
            parse_duration_ms("10").unwrap_err(),
            "duration 10 needs a unit, e.g. 10s"
        );
        assert_eq!(
            parse_duration_ms("10x").unwrap_err(),
            "invalid duration \"10x\": unknown unit \"x\" (use ms, s, m, h)"
        );
        assert_eq!(
            parse_duration_ms("1m30").unwrap_err(),
            "invalid duration \"1m30\": a number without a unit"
        );
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("-5s").is_err());
        assert!(parse_duration_ms("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        assert_eq!(parse_size("100b").unwrap(), 100);
        assert_eq!(
            parse_size("lots").unwrap_err(),
            "invalid size \"lots\": expected a number with an optional unit like 512m, 1g or 1.5GB"
        );
        assert!(parse_size("1.5.5g").is_err());
        assert!(parse_size("-1g").is_err());
        assert_eq!(
            parse_size("5q").unwrap_err(),
            "invalid size \"5q\": unknown unit (use b, k, m, g, t)"
        );
        assert!(parse_size("99999999999p").is_err());
    }
}
