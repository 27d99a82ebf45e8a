//! Sizes and rates as people read them, in binary units.

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

#[cfg(test)]
mod tests {
    use super::*;

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
