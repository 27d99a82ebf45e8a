//! Writing what `ferry` has to say: lines to standard error, each burst in
//! one write, and lines to standard output that a reader may stop reading.

/// Writes one line to standard error in one write (`eprintln!` makes one
/// per piece, unbuffered: four for each file done).
pub(crate) fn say(text: std::fmt::Arguments<'_>) {
    let mut out = String::new();
    line(&mut out, text);
    say_all(&mut out);
}

/// Adds a line to `out`, for [`say_all`].
pub(crate) fn line(out: &mut String, text: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    let _ = writeln!(out, "{text}");
}

/// Writes the lines gathered in `out` to standard error in one write, and
/// empties it.
pub(crate) fn say_all(out: &mut String) {
    if !out.is_empty() {
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), out.as_bytes());
        out.clear();
    }
}

/// Writes lines to stdout; a reader that stops early (`ferry ls | head`)
/// is not an error.
pub(crate) fn print_lines(lines: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = lines
        .into_iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A duration as people read it: `40 ms`, `12.3 s`, `4 min 05 s`,
/// `2 h 07 min`.
pub(crate) fn format_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        format!("{} ms", d.as_millis())
    } else if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
    }
}

/// A rate as people read it: `3.0 MiB/s`.
pub(crate) fn rate_over(bytes: u64, over: std::time::Duration) -> String {
    let secs = over.as_secs_f64().max(0.001);
    format!(
        "{}/s",
        transfer_core::format_size((bytes as f64 / secs) as u64)
    )
}

/// A URL as it may be shown: without its `user:password@`. Text that does
/// not parse as a URL is kept as it is.
pub(crate) fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations_rates_and_urls_read_as_people_write_them() {
        assert_eq!(format_duration(Duration::from_millis(40)), "40 ms");
        assert_eq!(format_duration(Duration::from_millis(4100)), "4.1 s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4 min 05 s");
        assert_eq!(format_duration(Duration::from_secs(7620)), "2 h 07 min");
        assert_eq!(rate_over(3 << 20, Duration::from_secs(1)), "3.0 MiB/s");
        assert_eq!(
            without_credentials("http://user:secret@a.test:8080/x?y=1"),
            "http://a.test:8080/x?y=1"
        );
        assert_eq!(without_credentials("http://a.test/x"), "http://a.test/x");
    }
}
