//! Sizes (`256MiB`) and durations (`5m`, `1h30m`) as operators write them.
//!
//! Both parsers are strict: integers only, no signs, no overflow, no unknown units. Their error
//! strings say what was wrong and show valid examples, because they end up verbatim in
//! `tollgate check` output.

use std::time::Duration;

/// Size units: binary (`KiB`…) are powers of 1024, decimal (`KB`…) powers of 1000.
/// Matched case-insensitively.
const SIZE_UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

const SIZE_HINT: &str =
    "Fix: write an integer with an optional unit, e.g. 1024, 512KiB, 256MiB, 10GiB \
                         (KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000)";

const DURATION_HINT: &str =
    "Fix: write integers with units, e.g. 30s, 5m, 1h, 1d, 1500ms or 1h30m (a bare integer means seconds)";

/// Parses a byte size: `"256MiB"`, `"10GiB"`, `"512KiB"`, `"1024"`, `"1B"`, `"5MB"`.
///
/// `KiB/MiB/GiB/TiB` are powers of 1024, `KB/MB/GB/TB` powers of 1000; units are
/// case-insensitive and may be separated from the number by spaces. Rejects negatives,
/// fractions, overflow and anything else.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty size. {SIZE_HINT}"));
    }
    if text.starts_with('-') {
        return Err(format!("size '{s}' is negative. {SIZE_HINT}"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "size '{s}' does not start with a number. {SIZE_HINT}"
        ));
    }
    let unit = unit.trim_start();
    let multiplier = if unit.is_empty() {
        1
    } else {
        match SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        {
            Some((_, m)) => *m,
            None => {
                return Err(format!(
                    "size '{s}' has an unknown unit '{unit}'. {SIZE_HINT}"
                ))
            }
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("size '{s}' is too large. {SIZE_HINT}"))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size '{s}' is too large. {SIZE_HINT}"))
}

/// Parses a duration: `"30s"`, `"5m"`, `"1h"`, `"1d"`, `"0s"`, `"1500ms"`, `"1h30m"`.
///
/// A bare integer means seconds. Units: `ms`, `s`, `m`, `h`, `d`; several `<integer><unit>`
/// parts may be concatenated. Rejects negatives, fractions, overflow and anything else.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration. {DURATION_HINT}"));
    }
    if text.starts_with('-') {
        return Err(format!("duration '{s}' is negative. {DURATION_HINT}"));
    }
    let too_large = || format!("duration '{s}' is too large");
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // the same bound as the forms with units (u64 milliseconds), so that every duration
        // accepted prints back as one that parses (fuzzing found 18446744073709551615 seconds
        // accepted bare and refused once written with units)
        let secs: u64 = text.parse().map_err(|_| too_large())?;
        secs.checked_mul(1000).ok_or_else(too_large)?;
        return Ok(Duration::from_secs(secs));
    }

    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "duration '{s}' has '{rest}' where a number was expected. {DURATION_HINT}"
            ));
        }
        let (number, after) = rest.split_at(digits_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60 * 1000,
            "h" => 60 * 60 * 1000,
            "d" => 24 * 60 * 60 * 1000,
            "" => {
                return Err(format!(
                    "duration '{s}' has a number without a unit after other parts. {DURATION_HINT}"
                ))
            }
            other => {
                return Err(format!(
                    "duration '{s}' has an unknown unit '{other}'. {DURATION_HINT}"
                ))
            }
        };
        let value: u64 = number.parse().map_err(|_| too_large())?;
        let part = value.checked_mul(unit_ms).ok_or_else(too_large)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_large)?;
        rest = next;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a byte count the way `parse_size` reads it, in the largest exact binary unit
/// (`256MiB`, `1536KiB`, `1000B` → `1000`).
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// Formats a duration the way `parse_duration` reads it (`5m`, `1h30m`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: [(&str, u64); 14] = [
            ("0", 0),
            ("1024", 1024),
            ("1B", 1),
            ("512KiB", 512 * 1024),
            ("256MiB", 256 * 1024 * 1024),
            ("10GiB", 10 * 1024 * 1024 * 1024),
            ("2TiB", 2 << 40),
            ("5KB", 5000),
            ("3MB", 3_000_000),
            ("1GB", 1_000_000_000),
            ("256mib", 256 << 20),
            ("256 MiB", 256 << 20),
            (" 7 ", 7),
            ("16777216", 16 << 20),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_sizes() {
        for input in [
            "", "-1", "-1MiB", "1.5GiB", "MiB", "12XB", "abc", "1 2", "1MiB2",
        ] {
            let err = parse_size(input).expect_err(input);
            assert!(err.contains("Fix: write an integer"), "{err}");
        }
        let err = parse_size("99999999999999999999").expect_err("overflow");
        assert!(err.contains("too large"), "{err}");
        let err = parse_size("20000000TiB").expect_err("overflow");
        assert!(err.contains("too large"), "{err}");
        assert!(parse_size("-1").expect_err("neg").contains("negative"));
        assert!(parse_size("3XB")
            .expect_err("unit")
            .contains("unknown unit 'XB'"));
    }

    #[test]
    fn durations() {
        let cases: [(&str, Duration); 11] = [
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("30", Duration::from_secs(30)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86400)),
            ("1500ms", Duration::from_millis(1500)),
            ("1h30m", Duration::from_secs(5400)),
            ("1d2h3m4s5ms", Duration::from_millis(93_784_005)),
            (" 10s ", Duration::from_secs(10)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn every_accepted_duration_prints_back() {
        for input in ["18446744073709551", "0", "90", "1d2h3m4s5ms"] {
            let d = parse_duration(input).expect(input);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{input}");
        }
    }

    #[test]
    fn bad_durations() {
        for input in [
            "",
            "-5s",
            "s",
            "5x",
            "1.5h",
            "1h30",
            "5 m",
            "m5",
            "1w",
            "99999999999999999999s",
            "18446744073709551615",
            "18446744073709552",
        ] {
            assert!(parse_duration(input).is_err(), "{input} should fail");
        }
        assert!(parse_duration("1w")
            .expect_err("w")
            .contains("unknown unit 'w'"));
        assert!(parse_duration("-5s").expect_err("neg").contains("negative"));
        assert!(parse_duration("213503982334601d")
            .expect_err("overflow")
            .contains("too large"));
    }

    #[test]
    fn format_round_trips() {
        for input in ["0s", "5m", "1h30m", "1d", "1500ms", "1d2h3m4s5ms"] {
            let d = parse_duration(input).expect(input);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        for (bytes, text) in [
            (0, "0"),
            (1000, "1000"),
            (1536 << 10, "1536KiB"),
            (256 << 20, "256MiB"),
            (3 << 40, "3TiB"),
        ] {
            assert_eq!(format_size(bytes), text);
            assert_eq!(parse_size(text), Ok(bytes));
        }
    }
}
