#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Shell completions and manual pages, generated from the command line
//! itself: every shell's script and every command's page come out, and
//! name the options they should.

mod common;

use common::{ferry, stdout};

#[test]
fn completions_come_out_for_every_shell() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let got = ferry(dir.path(), &["completions", shell]);
        assert!(got.status.success(), "{shell}");
        let script = stdout(&got);
        // (fish writes `-l proxy`, the others `--proxy`.)
        for word in ["ferry", "get", "output-dir", "proxy", "http3-only"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let got = ferry(dir.path(), &["completions", "tcsh"]);
    assert_eq!(got.status.code(), Some(2), "an unknown shell is refused");
}

#[test]
fn manual_pages_come_out_for_ferry_and_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let page = stdout(&ferry(dir.path(), &["man"]));
    assert!(page.contains(".TH ferry 1"), "{page}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(page.contains(section), "the page lacks {section}");
    }
    for command in ["get", "add", "put", "run", "ls", "conditions"] {
        let got = ferry(dir.path(), &["man", command]);
        assert!(got.status.success(), "{command}");
        let page = stdout(&got);
        assert!(page.contains(&format!(".TH ferry-{command} 1")), "{page}");
        assert!(page.contains(".SH OPTIONS"), "{command}");
    }
    let get = stdout(&ferry(dir.path(), &["man", "get"]));
    assert!(
        get.contains("output\\-dir") && get.contains("\\-\\-proxy"),
        "{get}"
    );
    assert_eq!(ferry(dir.path(), &["man", "nope"]).status.code(), Some(2));
}

/// `--help` groups the options under headings, names every value, and ends
/// with examples.
#[test]
fn help_groups_options_under_headings_with_examples() {
    let dir = tempfile::tempdir().unwrap();
    let help = stdout(&ferry(dir.path(), &["get", "--help"]));
    for heading in [
        "Output:",
        "Network:",
        "Policies:",
        "Limits:",
        "Sessions:",
        "Examples:",
    ] {
        assert!(help.contains(heading), "no {heading} in {help}");
    }
    assert!(help.contains("--limit-rate <LIMIT_RATE>") || help.contains("--limit-rate <"));
    assert!(help.contains("-x, --proxy <URL>"), "{help}");
    for command in ["add", "put", "run"] {
        let help = stdout(&ferry(dir.path(), &[command, "--help"]));
        assert!(help.contains("Examples:"), "{command}");
    }
}
