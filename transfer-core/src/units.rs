//! Sizes and rates as people read and write them, in binary units.

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number with an optional unit.
    #[error(
        "{0:?} is not a size: a number of bytes, or with k, M, G or T (1024-based), such as 500k or 1.5M"
    )]
    NotASize(String),
    /// Zero, or a fraction that comes to less than one byte.
    #[error("{0:?} comes to less than one byte")]
    BelowOneByte(String),
    /// More than 2^64 bytes.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Reads a size the way every option of Ferry takes one, as curl reads
/// them: a bare number is bytes; `k`, `M`, `G` and `T` (either case,
/// optionally followed by `B` or `iB`: `512KiB`, `2MB`) are powers of 1024;
/// decimals are allowed (`1.5M`). At least one byte: zero, or a fraction
/// that comes to less (`0.5`), is refused rather than rounded to zero (a
/// rate of zero would stall for ever, a chunk of zero would send nothing).
///
/// ```
/// use transfer_core::parse_size;
/// assert_eq!(parse_size("1048576"), Ok(1 << 20));
/// assert_eq!(parse_size("500k"), Ok(500 << 10));
/// assert_eq!(parse_size("1.5M"), Ok(3 << 19));
/// assert_eq!(parse_size("2GiB"), Ok(2 << 30));
/// assert!(parse_size("0").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let not = || SizeError::NotASize(s.to_owned());
    let lower = t.to_ascii_lowercase();
    let unitless = lower
        .strip_suffix("ib")
        .filter(|r| r.ends_with(['k', 'm', 'g', 't']))
        .or_else(|| {
            lower
                .strip_suffix('b')
                .filter(|r| r.ends_with(|c: char| c.is_ascii_digit() || "kmgt.".contains(c)))
        })
        .unwrap_or(&lower);
    let (digits, mult) = match unitless.chars().last() {
        Some('k') => (&unitless[..unitless.len() - 1], 1u64 << 10),
        Some('m') => (&unitless[..unitless.len() - 1], 1 << 20),
        Some('g') => (&unitless[..unitless.len() - 1], 1 << 30),
        Some('t') => (&unitless[..unitless.len() - 1], 1 << 40),
        _ => (unitless, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(not());
    }
    let n: f64 = digits.parse().map_err(|_| not())?;
    let bytes = (n * mult as f64).floor();
    if bytes.is_nan() || bytes < 1.0 {
        return Err(SizeError::BelowOneByte(s.to_owned()));
    }
    if bytes >= u64::MAX as f64 {
        return Err(SizeError::TooLarge(s.to_owned()));
    }
    Ok(bytes as u64)
}

/// Formats bytes per second in binary units (`512K`, `1.5M`).
pub fn format_rate(bytes_per_sec: u64) -> String {
    let units = [(1u64 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    for (size, suffix) in units {
        if bytes_per_sec >= size {
            let v = bytes_per_sec as f64 / size as f64;
            return if (v - v.round()).abs() < 0.005 {
                format!("{}{suffix}", v.round())
            } else {
                format!("{v:.2}{suffix}")
            };
        }
    }
    format!("{bytes_per_sec}B")
}

/// Formats a size in binary units with one decimal (`4.0 GiB`, `1.2 MiB`,
/// `512 B`), as messages about space and limits say them.
pub fn format_size(bytes: u64) -> String {
    let units = [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (size, unit) in units {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

/// Formats a duration as people say it: `30 s`, `5 min`, `2 h`, `1 h 30 min`,
/// `250 ms`.
pub fn format_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{} ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s} s"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_bare_and_binary_with_a_unit() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size(" 512k "), Ok(512 << 10));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512KB"), Ok(512 << 10));
        assert_eq!(parse_size("512kib"), Ok(512 << 10));
        assert_eq!(parse_size("0.5k"), Ok(512));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for zero in ["0", "0.5", "0k", "0.0001k"] {
            assert!(
                matches!(parse_size(zero), Err(SizeError::BelowOneByte(_))),
                "{zero}"
            );
        }
        for bad in ["", "k", "1x", "-1", "1.2.3M", "1e3", "M5", "5 B", "bytes"] {
            assert!(
                matches!(parse_size(bad), Err(SizeError::NotASize(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_size("99999999999T"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        use std::time::Duration;
        assert_eq!(format_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30 s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5 min");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1 h 30 min");
        assert_eq!(format_duration(Duration::from_secs(7 * 24 * 3600)), "168 h");
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(4 << 30), "4.0 GiB");
        assert_eq!(format_size((12 << 30) / 10), "1.2 GiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_rate(512 << 10), "512K");
        assert_eq!(format_rate(3 << 19), "1.50M");
    }
}
