//! File names for downloads: the URL path's last segment, percent-decoded
//! and made safe (no separators, no `..`, no control characters, no
//! invisible format characters such as direction controls), and a numbered
//! name when the file exists.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

/// Longest name kept, in bytes (file systems allow 255).
const MAX_NAME: usize = 200;

/// A safe file name for `url`; `download` when the URL names none.
pub(crate) fn file_name(url: &str) -> String {
    let segment = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .unwrap_or_default();
    let decoded = percent_decode_str(&segment).decode_utf8_lossy();
    sanitize(&decoded)
}

/// Whether `c` is an invisible format character (Unicode category Cf):
/// the direction controls that make "\u{202E}gnp.exe" show as "exe.png",
/// zero-width characters, and the like. Such characters are dropped.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

fn sanitize(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .filter(|c| !is_format(*c))
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                '_'
            } else {
                c
            }
        })
        .collect();
    name = name.trim().trim_start_matches('.').to_owned();
    if name.len() > MAX_NAME {
        let mut cut = MAX_NAME;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    if name.is_empty() || name == "." || name == ".." {
        "download".to_owned()
    } else {
        name
    }
}

/// URLs from which a directory is listed once instead of asking for each
/// name in turn (a path lookup each).
const LIST_FROM: usize = 64;

/// The names in `dir` when `urls` names are to be found there and listing
/// it costs less than asking for each: `None` for a short list, or a
/// directory that holds many more entries than there are URLs.
pub(crate) fn listing(dir: &Path, urls: usize) -> Option<HashSet<OsString>> {
    if urls < LIST_FROM {
        return None;
    }
    let most = urls.saturating_mul(4).saturating_add(1024);
    let mut names = HashSet::new();
    for entry in std::fs::read_dir(dir).ok()? {
        names.insert(entry.ok()?.file_name());
        if names.len() > most {
            return None;
        }
    }
    Some(names)
}

/// `dir/name`, or `dir/stem-N.ext` with the first N that is free (neither on
/// disk nor `taken` by this command), unless `overwrite`. On disk means in
/// `listed` when the directory was listed (see [`listing`]), else present
/// at that path (a link too). `tried` remembers per name where the search
/// stopped, so many URLs with one name cost one probe each, not one per
/// earlier clash.
pub(crate) fn unique(
    dir: &Path,
    name: &str,
    overwrite: bool,
    listed: Option<&HashSet<OsString>>,
    taken: &HashSet<PathBuf>,
    tried: &mut HashMap<String, u64>,
) -> PathBuf {
    let first = dir.join(name);
    let on_disk = |p: &Path| match listed {
        Some(names) => p.file_name().is_some_and(|n| names.contains(n)),
        // A link counts, even one leading nowhere: a download is never
        // written through one.
        None => std::fs::symlink_metadata(p).is_ok(),
    };
    let free = |p: &Path| !taken.contains(p) && (overwrite || !on_disk(p));
    if free(&first) {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    let from = tried.get(name).copied().unwrap_or(1);
    let found = (from..)
        .map(|n| (n, dir.join(format!("{stem}-{n}{ext}"))))
        .find(|(_, p)| free(p));
    match found {
        Some((n, p)) => {
            tried.insert(name.to_owned(), n + 1);
            p
        }
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_segment() {
        assert_eq!(file_name("https://h.example/a/b/file.iso?x=1"), "file.iso");
        assert_eq!(file_name("https://h.example/my%20file.txt"), "my file.txt");
        assert_eq!(file_name("https://h.example/"), "download");
        assert_eq!(file_name("https://h.example"), "download");
    }

    #[test]
    fn hostile_names_stay_inside_the_directory() {
        for url in [
            "https://h.example/..%2F..%2Fetc%2Fpasswd",
            "https://h.example/%2e%2e",
            "https://h.example/a%5C..%5Cb",
            "https://h.example/.bashrc",
            "https://h.example/x%00y%0Az",
        ] {
            let name = file_name(url);
            assert!(
                !name.contains('/') && !name.contains('\\'),
                "{url} -> {name}"
            );
            assert!(!name.starts_with('.'), "{url} -> {name}");
            assert!(!name.chars().any(char::is_control), "{url} -> {name:?}");
            let p = Path::new("/out").join(&name);
            assert_eq!(p.parent(), Some(Path::new("/out")), "{url} -> {name}");
        }
        assert_eq!(
            file_name(&format!("https://h.example/{}", "a".repeat(500))).len(),
            MAX_NAME
        );
    }

    #[test]
    fn direction_controls_and_other_invisible_characters_are_dropped() {
        assert_eq!(file_name("http://h/%E2%80%AEgnp.exe"), "gnp.exe");
        for (code, c) in [
            ("%E2%80%AA", '\u{202A}'),
            ("%E2%80%AB", '\u{202B}'),
            ("%E2%80%AC", '\u{202C}'),
            ("%E2%80%AD", '\u{202D}'),
            ("%E2%80%AE", '\u{202E}'),
            ("%E2%81%A6", '\u{2066}'),
            ("%E2%81%A7", '\u{2067}'),
            ("%E2%81%A8", '\u{2068}'),
            ("%E2%81%A9", '\u{2069}'),
            ("%E2%80%8E", '\u{200E}'),
            ("%E2%80%8F", '\u{200F}'),
            ("%D8%9C", '\u{061C}'),
            ("%E2%80%8B", '\u{200B}'),
            ("%EF%BB%BF", '\u{FEFF}'),
        ] {
            let name = file_name(&format!("http://h/a{code}b.txt"));
            assert_eq!(name, "ab.txt", "{c:?}");
        }
        // A line separator is not invisible, but breaks a listing's line.
        assert_eq!(file_name("http://h/a%E2%80%A8b"), "a_b");
        // Dropping leaves nothing that could climb out of the directory.
        assert_eq!(file_name("http://h/.%E2%80%8E."), "download");
        // Letters of right-to-left scripts stay.
        assert_eq!(file_name("http://h/%D7%A9%D7%9C%D7%95%D7%9D"), "שלום");
    }

    #[test]
    fn clashes_get_numbered_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.bin"), b"x").unwrap();
        let mut tried = HashMap::new();
        let mut taken = HashSet::new();
        let p = unique(dir.path(), "f.bin", false, None, &taken, &mut tried);
        assert_eq!(p, dir.path().join("f-1.bin"));
        taken.insert(p);
        let q = unique(dir.path(), "f.bin", false, None, &taken, &mut tried);
        assert_eq!(q, dir.path().join("f-2.bin"));
        assert_eq!(
            unique(
                dir.path(),
                "f.bin",
                true,
                None,
                &HashSet::new(),
                &mut HashMap::new()
            ),
            dir.path().join("f.bin")
        );
        // Ten thousand URLs with one name: each probe starts where the last
        // stopped.
        let mut names = HashSet::new();
        for _ in 0..10_000 {
            let p = unique(dir.path(), "same", false, None, &taken, &mut tried);
            taken.insert(p.clone());
            assert!(names.insert(p));
        }
    }

    #[test]
    fn a_listed_directory_answers_as_the_paths_do() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["f.bin", "f-1.bin", "g"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        // A dangling link takes its name as well: a download may not go
        // through it.
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("h")).unwrap();
        assert_eq!(
            listing(dir.path(), LIST_FROM - 1),
            None,
            "a short list asks per name"
        );
        let listed = listing(dir.path(), LIST_FROM).expect("listed");
        assert_eq!(listed.len(), 4);
        let taken = HashSet::new();
        for (name, free) in [
            ("f.bin", "f-2.bin"),
            ("g", "g-1"),
            ("h", "h-1"),
            ("new", "new"),
        ] {
            let by_list = unique(
                dir.path(),
                name,
                false,
                Some(&listed),
                &taken,
                &mut HashMap::new(),
            );
            assert_eq!(by_list, dir.path().join(free), "{name}");
            let by_path = unique(dir.path(), name, false, None, &taken, &mut HashMap::new());
            assert_eq!(by_path, by_list, "{name}");
        }
        // A directory far larger than the list is not read through.
        for i in 0..(LIST_FROM * 4 + 1024) {
            std::fs::write(dir.path().join(format!("x{i}")), b"").unwrap();
        }
        assert_eq!(listing(dir.path(), LIST_FROM), None);
    }
}
