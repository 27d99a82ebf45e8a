//! What the workspace's tests need beyond the Rust toolchain, found or
//! installed.
//!
//! Why: `cargo test --workspace` runs servers no one here wrote (caddy and
//! ngtcp2's `gtlsserver` for the HTTP/3 interop tests, moto for store-s3's,
//! `@tus/server` for the tus interop tests, `dbus-daemon` for the scheduler's
//! NetworkManager tests). On a machine without them it
//! fails part-way. `cargo xtask test` calls [`ensure`] first, so the README's
//! one test command passes on a fresh machine.
//!
//! How: each need is checked without side effects, and only what is missing
//! is installed, so a second run does nothing and prints nothing. Before an
//! install starts, it says what it installs and why. Nothing prompts: apt-get
//! runs with `-y` and `DEBIAN_FRONTEND=noninteractive`, pip with
//! `PIP_NO_INPUT`, and no installer gets a standard input. What cannot be
//! installed (no root for apt-get, no apt-get at all) fails with the command
//! to run by hand.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, anyhow, bail};

/// The moto release store-s3's tests are written against.
const MOTO_VERSION: &str = "5.2.1";

/// Where Debian's `ngtcp2-server` puts the server the HTTP/3 interop tests
/// start (transport-quic/tests/ngtcp2.rs looks here first).
const GTLSSERVER: &str = "/usr/sbin/gtlsserver";

/// Something the tests need that this machine does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missing {
    /// A Debian package, installed with apt-get.
    Package {
        /// The package's name.
        name: &'static str,
        /// What in it the tests use, and which tests.
        why: &'static str,
    },
    /// moto in its own virtualenv (PyPI `moto[server]`), where testkit
    /// looks for `moto_server`.
    Moto {
        /// The virtualenv's directory.
        venv: PathBuf,
    },
    /// The tus server's pinned npm packages (`npm ci`).
    TusPackages {
        /// The directory holding `package-lock.json`.
        dir: PathBuf,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Package { name, why } => write!(f, "{name} (Debian package): {why}"),
            Missing::Moto { venv } => write!(
                f,
                "moto {MOTO_VERSION} (PyPI moto[server]) in the virtualenv {}: store-s3's tests",
                venv.display()
            ),
            Missing::TusPackages { dir } => write!(
                f,
                "@tus/server and its pinned packages (npm ci in {}): the tus interop tests",
                dir.display()
            ),
        }
    }
}

/// Installs whatever the tests need that is missing. Prints nothing when
/// nothing is.
pub(crate) fn ensure(root: &Path) -> anyhow::Result<()> {
    let missing = missing(root);
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing what the tests need and this machine lacks:");
    for m in &missing {
        println!("  - {m}");
    }
    install(&missing)?;
    let left = self::missing(root);
    if !left.is_empty() {
        let names: Vec<String> = left.iter().map(ToString::to_string).collect();
        bail!(
            "setup: the installers finished, but still missing: {}",
            names.join("; ")
        );
    }
    println!("setup: done");
    Ok(())
}

/// What the tests need that is not here, in the order it must be installed
/// (Debian packages first: moto's virtualenv needs Python's `venv` module,
/// the tus packages need npm). Looks only; changes nothing.
pub(crate) fn missing(root: &Path) -> Vec<Missing> {
    let mut missing = Vec::new();
    let mut package = |name, why| missing.push(Missing::Package { name, why });
    if !on_path("caddy") {
        package(
            "caddy",
            "caddy, a second HTTP/3 server for the interop tests",
        );
    }
    if !Path::new(GTLSSERVER).is_file() {
        package(
            "ngtcp2-server",
            "gtlsserver, ngtcp2's HTTP/3 server for the interop tests",
        );
    }
    let sbin = |name: &str| on_path(name) || Path::new("/usr/sbin").join(name).is_file();
    if !sbin("squid") {
        package("squid", "squid, the HTTP proxy the proxy tests go through");
    }
    if !sbin("danted") {
        package(
            "dante-server",
            "danted, the SOCKS5 proxy the proxy tests go through",
        );
    }
    if !on_path("openssl") {
        package(
            "openssl",
            "openssl, which hashes the squid test's proxy password",
        );
    }
    if !on_path("dbus-daemon") {
        package(
            "dbus-daemon",
            "dbus-daemon, the bus a fake NetworkManager is served on in the conditions tests",
        );
    }
    let venv = moto_venv();
    let moto = moto_installed(&venv);
    if !moto && !python_can_make_venvs() {
        package(
            "python3-venv",
            "Python's venv module, for moto's virtualenv",
        );
    }
    if !on_path("node") {
        package("nodejs", "node, which runs the tus server");
    }
    if !on_path("npm") {
        package("npm", "npm, which installs the tus server's packages");
    }
    if !moto {
        missing.push(Missing::Moto { venv });
    }
    let tus = root.join("testkit/tus");
    if !tus.join("node_modules/@tus/server").is_dir() {
        missing.push(Missing::TusPackages { dir: tus });
    }
    missing
}

/// Installs `missing`, Debian packages first in one apt-get call.
fn install(missing: &[Missing]) -> anyhow::Result<()> {
    let packages: Vec<&str> = missing
        .iter()
        .filter_map(|m| match m {
            Missing::Package { name, .. } => Some(*name),
            _ => None,
        })
        .collect();
    if !packages.is_empty() {
        apt_install(&packages)?;
    }
    for m in missing {
        match m {
            Missing::Package { .. } => {}
            Missing::Moto { venv } => install_moto(venv)?,
            Missing::TusPackages { dir } => {
                println!("setup: npm ci --no-audit --no-fund (in {})", dir.display());
                run(Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .env("NPM_CONFIG_UPDATE_NOTIFIER", "false")
                    .current_dir(dir))?;
            }
        }
    }
    Ok(())
}

/// `apt-get update` then `apt-get install -y PACKAGES`, as root or through
/// `sudo -n` (which fails rather than ask for a password).
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let by_hand = format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    );
    if !on_path("apt-get") {
        bail!(
            "setup: the tests need these Debian packages and there is no apt-get here: {}; \
             install their equivalents and run again",
            packages.join(", ")
        );
    }
    let sudo = if is_root() {
        false
    } else if sudo_without_password() {
        true
    } else {
        bail!(
            "setup: installing {} needs root, and this is not root (nor can sudo run without a \
             password); run as root, or run this first:\n  sudo sh -c '{by_hand}'",
            packages.join(", ")
        );
    };
    let apt_get = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            c
        } else {
            let mut c = Command::new("apt-get");
            c.env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        c.args(args);
        c
    };
    let via = if sudo { "sudo -n " } else { "" };
    println!("setup: {via}apt-get update");
    run(&mut apt_get(&["update", "-qq"]))?;
    println!("setup: {via}apt-get install -y {}", packages.join(" "));
    let mut install = apt_get(&[
        "install",
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]);
    install.args(packages);
    run(&mut install).map_err(|e| anyhow!("{e:#}; to install by hand: {by_hand}"))
}

/// A fresh virtualenv at `venv` with moto installed in it from PyPI.
fn install_moto(venv: &Path) -> anyhow::Result<()> {
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    println!("setup: python3 -m venv --clear {}", venv.display());
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(venv))?;
    let spec = format!("moto[server]=={MOTO_VERSION}");
    println!("setup: {}/bin/pip install '{spec}'", venv.display());
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", &spec])
        .env("PIP_NO_INPUT", "1"))
}

/// Runs `cmd` with no standard input (so nothing can prompt) and fails
/// unless it exits 0.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    let shown = format!("{} {}", cmd.get_program().display(), args.join(" "));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("setup: could not start {shown}"))?;
    if !status.success() {
        bail!("setup: {shown} failed ({status})");
    }
    Ok(())
}

/// `~/.cache/ferry/moto`, where testkit's `moto` module looks for
/// `bin/moto_server`.
fn moto_venv() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_default();
    Path::new(&home).join(".cache/ferry/moto")
}

/// Whether the tests will find moto: `$FERRY_MOTO_SERVER` names an
/// executable file (testkit uses it as is), or `venv` has `moto_server`, a
/// Python that still exists, and moto at [`MOTO_VERSION`].
fn moto_installed(venv: &Path) -> bool {
    if let Some(server) = std::env::var_os("FERRY_MOTO_SERVER") {
        return is_executable(Path::new(&server));
    }
    let dist_info = format!("moto-{MOTO_VERSION}.dist-info");
    is_executable(&venv.join("bin/moto_server"))
        && is_executable(&venv.join("bin/python3"))
        && std::fs::read_dir(venv.join("lib")).is_ok_and(|pythons| {
            pythons.flatten().any(|python| {
                python
                    .path()
                    .join("site-packages")
                    .join(&dist_info)
                    .is_dir()
            })
        })
}

/// Whether `python3 -m venv` can make a virtualenv with pip in it.
fn python_can_make_venvs() -> bool {
    Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether an executable file called `name` is in a directory on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name))))
}

/// Whether `path` is a file (following links) with an execute bit set.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (its effective user id, from
/// `/proc/self/status`, is 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Whether `sudo` is here and runs a command without asking for a password.
fn sudo_without_password() -> bool {
    on_path("sudo")
        && Command::new("sudo")
            .args(["-n", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_not_on_path() {
        assert!(!on_path("ferry-no-such-program-on-any-path"));
        assert!(on_path("sh"));
    }

    #[test]
    fn an_empty_virtualenv_has_no_moto() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        assert!(std::env::var_os("FERRY_MOTO_SERVER").is_some() || !moto_installed(dir.path()));
    }

    #[test]
    fn each_missing_thing_names_itself_and_its_tests() {
        let m = Missing::Package {
            name: "caddy",
            why: "caddy, a second HTTP/3 server for the interop tests",
        };
        assert_eq!(
            m.to_string(),
            "caddy (Debian package): caddy, a second HTTP/3 server for the interop tests"
        );
        let m = Missing::TusPackages {
            dir: PathBuf::from("testkit/tus"),
        };
        assert!(m.to_string().contains("npm ci in testkit/tus"));
    }
}
