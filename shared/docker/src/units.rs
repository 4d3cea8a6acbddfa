//! Docker's sizes and durations: the one grammar of each, for `berth run`'s flags and the
//! Compose file's keys alike.
//!
//! - A **size** is read as go-units' `RAMInBytes` reads it (what `docker run -m`, `--tmpfs
//!   size=` and Compose's `deploy.resources.limits.memory`, `tmpfs.size` accept): a number
//!   (`512`, `1.5`, `1e3`), at most one space, then an optional unit `b`, `k`, `m`, `g`, `t`
//!   or `p` in any case, powers of 1024, which may be followed by `b` or `ib` (`1k`, `1KB`,
//!   `1KiB` are all 1024). A fraction of a byte is dropped, as Docker drops it.
//! - A **duration** is Go's `time.ParseDuration` (what `docker run --health-interval` and
//!   Compose's `healthcheck.interval`, `stop_grace_period` accept): a sequence of numbers,
//!   each with a unit `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m` or `h`, like `1h2m3.5s` or
//!   `300ms`; `0` alone needs no unit. berth refuses a negative one, which no field takes.
//!
//! Leading and trailing white space is ignored. Every error is one line naming the value.

use std::time::Duration;

const SIZE_FORM: &str = "expected a number with an optional unit like 512m, 1g or 1.5GB";
const DURATION_FORM: &str = "expected a number with a unit like 10s, 1m30s or 500ms";

/// Bytes of a size: `512m`, `1g`, `1.5GB`, `512 MiB`, `64K`, `1024` (see the module).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid size {s:?}: {SIZE_FORM}");
    // go-units: the number ends at a space, else after its last digit or point.
    let (num, unit) = match t.split_once(' ') {
        Some(split) => split,
        None => t.split_at(
            t.rfind(|c: char| c.is_ascii_digit() || c == '.')
                .map_or(0, |i| i + 1),
        ),
    };
    if num.starts_with('-') {
        return Err(format!("invalid size {s:?}: a size cannot be negative"));
    }
    // Go's ParseFloat: digits, a point, an exponent (no `inf`, `nan` or hexadecimal here).
    if num.is_empty()
        || !num
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let u = unit.to_ascii_lowercase();
    let shift = match u.as_bytes() {
        [] | [b'b'] => 0,
        [p] | [p, b'b'] | [p, b'i', b'b'] => match p {
            b'k' => 10,
            b'm' => 20,
            b'g' => 30,
            b't' => 40,
            b'p' => 50,
            _ => return Err(unknown_unit(s, unit)),
        },
        _ => return Err(unknown_unit(s, unit)),
    };
    let bytes = n * (1u64 << shift) as f64;
    // Docker's sizes are int64.
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    Ok(bytes as u64)
}

fn unknown_unit(s: &str, unit: &str) -> String {
    format!(
        "invalid size {s:?}: unknown unit {unit:?} (b, k, m, g, t or p, optionally followed by b or ib, as in 512m, 1GB, 64KiB)"
    )
}

/// A duration in Go's format: `10s`, `1m30s`, `1.5h`, `300ms`, `2h45m`, `0` (see the module).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, u128)] = &[
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("invalid duration {s:?}: {DURATION_FORM}"));
    }
    let (negative, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.parse::<f64>().is_ok() && body.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        return Err(format!("duration {t} needs a unit, e.g. {t}s"));
    }
    let too_long = || format!("invalid duration {s:?}: too long");
    let mut total: u128 = 0;
    let mut rest = body;
    if rest.is_empty() {
        return Err(format!("invalid duration {s:?}: {DURATION_FORM}"));
    }
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_end);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len())),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(format!("invalid duration {s:?}: {DURATION_FORM}"));
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let per = match UNITS.iter().find(|(u, _)| *u == unit) {
            Some((_, per)) => *per,
            None if unit.is_empty() => {
                return Err(format!("invalid duration {s:?}: a number without a unit"))
            }
            None => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
                ))
            }
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| too_long())?
        };
        total = total
            .checked_add(whole.checked_mul(per).ok_or_else(too_long)?)
            .ok_or_else(too_long)?;
        // Digits beyond the eighteenth are below a nanosecond of any unit: Go ignores them too.
        let frac = &frac[..frac.len().min(18)];
        if !frac.is_empty() {
            let digits: u128 = frac.parse().expect("digits");
            total += digits * per / 10u128.pow(frac.len() as u32);
        }
        if total > i64::MAX as u128 {
            return Err(too_long());
        }
        rest = next;
    }
    if negative && total > 0 {
        return Err(format!(
            "invalid duration {s:?}: a duration cannot be negative"
        ));
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Whole milliseconds of a duration (what berth stores; a fraction of one is dropped).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    parse_duration(s).map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_reads_them() {
        const K: u64 = 1 << 10;
        const M: u64 = 1 << 20;
        const G: u64 = 1 << 30;
        for (s, bytes) in [
            ("1024", 1024),
            ("0", 0),
            ("100b", 100),
            ("100B", 100),
            ("1k", K),
            ("1K", K),
            ("1kb", K),
            ("1KB", K),
            ("1KiB", K),
            ("1kib", K),
            ("2kb", 2 * K),
            ("64K", 64 * K),
            ("512m", 512 * M),
            ("512 MiB", 512 * M),
            ("512 mb", 512 * M),
            ("1g", G),
            ("1G", G),
            ("1.5k", 1536),
            ("1.5GB", 3 << 29),
            ("1t", 1 << 40),
            ("1p", 1 << 50),
            ("1e3", 1000),
            ("1e1k", 10 * K),
            (".5k", 512),
            ("5.k", 5 * K),
            // Docker drops the fraction of a byte.
            ("0.3m", 314_572),
            ("0.5b", 0),
            ("  256m ", 256 * M),
        ] {
            assert_eq!(parse_size(s), Ok(bytes), "{s}");
        }
    }

    #[test]
    fn sizes_docker_refuses() {
        for s in [
            "", "lots", "m", "1.5.5g", "-1g", "-1", "1ki", "1i", "1ib", "1kbb", "1bb", "1kiB2",
            "5q", "1 k b", "1  k", " k", "inf", "nan", "0x10", "1,5g", "1kilo",
        ] {
            assert!(parse_size(s).is_err(), "{s} should be refused");
        }
        assert_eq!(
            parse_size("lots").unwrap_err(),
            "invalid size \"lots\": expected a number with an optional unit like 512m, 1g or 1.5GB"
        );
        assert_eq!(
            parse_size("5q").unwrap_err(),
            "invalid size \"5q\": unknown unit \"q\" (b, k, m, g, t or p, optionally followed by b or ib, as in 512m, 1GB, 64KiB)"
        );
        assert_eq!(
            parse_size("-1g").unwrap_err(),
            "invalid size \"-1g\": a size cannot be negative"
        );
        assert_eq!(
            parse_size("99999999999p").unwrap_err(),
            "invalid size \"99999999999p\": too large"
        );
    }

    #[test]
    fn durations_as_go_reads_them() {
        const MS: u64 = 1_000_000;
        for (s, nanos) in [
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("10s", 10_000 * MS),
            ("+10s", 10_000 * MS),
            ("1m30s", 90_000 * MS),
            ("1h", 3_600_000 * MS),
            ("1.5h", 5_400_000 * MS),
            ("2h45m", 9_900_000 * MS),
            ("1h2m3.5s", 3_723_500 * MS),
            ("500ms", 500 * MS),
            ("2.5s", 2_500 * MS),
            (".5s", 500 * MS),
            ("1.s", 1_000 * MS),
            ("300us", 300_000),
            ("300µs", 300_000),
            ("300μs", 300_000),
            ("1us", 1_000),
            ("7ns", 7),
            ("1s500ms", 1_500 * MS),
            ("0s", 0),
            ("0.000000001s", 1),
            ("1.0000000001s", 1_000_000_000),
            (" 30s ", 30_000 * MS),
        ] {
            assert_eq!(parse_duration(s), Ok(Duration::from_nanos(nanos)), "{s}");
        }
        assert_eq!(parse_duration_ms("1.0005s"), Ok(1000));
        assert_eq!(parse_duration_ms("300us"), Ok(0));
    }

    #[test]
    fn durations_go_refuses() {
        for s in [
            "", "10", "1.5", "00", "1m30", "soon", "10x", "1S", "1H", "1 s", "1hour", "5min", "1d",
            "1w", ".s", "s", "1.5.5s", "-", "+", "-5s", "1h-5m", "3000000h",
        ] {
            assert!(parse_duration(s).is_err(), "{s} should be refused");
        }
        for (s, e) in [
            ("10", "duration 10 needs a unit, e.g. 10s"),
            (
                "10x",
                "invalid duration \"10x\": unknown unit \"x\" (ns, us, ms, s, m, h)",
            ),
            ("1m30", "invalid duration \"1m30\": a number without a unit"),
            (
                "soon",
                "invalid duration \"soon\": expected a number with a unit like 10s, 1m30s or 500ms",
            ),
            (
                "-5s",
                "invalid duration \"-5s\": a duration cannot be negative",
            ),
            ("3000000h", "invalid duration \"3000000h\": too long"),
        ] {
            assert_eq!(parse_duration(s).unwrap_err(), e, "{s}");
        }
        // Go's largest duration is 2^63-1 ns.
        assert!(parse_duration("2562047h47m16.854775807s").is_ok());
        assert!(parse_duration("2562047h47m16.854775808s").is_err());
    }
}
