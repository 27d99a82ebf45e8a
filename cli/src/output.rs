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
