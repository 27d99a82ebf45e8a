//! File names for downloads: the URL path's last segment, percent-decoded
//! and made safe (no separators, no `..`, no control characters), and a
//! numbered name when the file exists.

use std::collections::{HashMap, HashSet};
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

fn sanitize(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == '\0' {
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

/// `dir/name`, or `dir/stem-N.ext` with the first N that is free (neither on
/// disk nor `taken` by this command), unless `overwrite`. `tried` remembers
/// per name where the search stopped, so many URLs with one name cost one
/// probe each, not one per earlier clash.
pub(crate) fn unique(
    dir: &Path,
    name: &str,
    overwrite: bool,
    taken: &HashSet<PathBuf>,
    tried: &mut HashMap<String, u64>,
) -> PathBuf {
    let first = dir.join(name);
    let free = |p: &Path| !taken.contains(p) && (overwrite || !p.exists());
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
    fn clashes_get_numbered_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.bin"), b"x").unwrap();
        let mut tried = HashMap::new();
        let mut taken = HashSet::new();
        let p = unique(dir.path(), "f.bin", false, &taken, &mut tried);
        assert_eq!(p, dir.path().join("f-1.bin"));
        taken.insert(p);
        let q = unique(dir.path(), "f.bin", false, &taken, &mut tried);
        assert_eq!(q, dir.path().join("f-2.bin"));
        assert_eq!(
            unique(
                dir.path(),
                "f.bin",
                true,
                &HashSet::new(),
                &mut HashMap::new()
            ),
            dir.path().join("f.bin")
        );
        // Ten thousand URLs with one name: each probe starts where the last
        // stopped.
        let mut names = HashSet::new();
        for _ in 0..10_000 {
            let p = unique(dir.path(), "same", false, &taken, &mut tried);
            taken.insert(p.clone());
            assert!(names.insert(p));
        }
    }
}
