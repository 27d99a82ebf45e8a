//! Real proxies no one here wrote, from Debian's packages, on free loopback
//! ports: squid (HTTP: plain requests and `CONNECT` tunnels, optionally with
//! basic proxy auth through its `basic_ncsa_auth` helper) and dante's
//! `danted` (SOCKS5, optionally with username/password). Killed on drop.
//!
//! Both drop to an unprivileged user when started as root, so their files
//! live in a directory anyone may read. dante checks SOCKS5 credentials
//! against the system's users: [`Dante::start`] with credentials needs root
//! to make its user (`ferry-socks`) the first time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::process::{Spawned, spawn};

fn other(message: String) -> Error {
    Error::Io(std::io::Error::other(message))
}

fn free_tcp_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A directory the proxy's unprivileged user can read, with files it can
/// write.
fn shared_dir() -> Result<tempfile::TempDir, Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(p)
}

/// Waits until `port` accepts connections, or the process exits.
fn wait_listening(child: &mut Spawned, port: u16, what: &str, log: &Path) -> Result<(), Error> {
    for _ in 0..150 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(other(format!("{what} exited with {status}: {log}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(other(format!("{what} did not start on port {port}")))
}

/// A running squid; see the module documentation.
#[derive(Debug)]
pub struct Squid {
    child: Option<Spawned>,
    port: u16,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl Squid {
    /// Starts `squid` (Debian package `squid`) on a free port of 127.0.0.1,
    /// allowing every request (and `CONNECT` to any port) from loopback;
    /// with `auth`, only requests carrying that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> Result<Squid, Error> {
        let dir = shared_dir()?;
        let mut squid = Squid {
            child: None,
            port: free_tcp_port()?,
            dir,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        squid.run()?;
        Ok(squid)
    }

    fn run(&mut self) -> Result<(), Error> {
        let dir = self.dir.path();
        let log = write(dir, "cache.log", "", 0o666)?;
        write(dir, "access.log", "", 0o666)?;
        let access = match &self.auth {
            Some((user, password)) => {
                // basic_ncsa_auth reads htpasswd files: an MD5-crypt hash.
                let out = Command::new("openssl")
                    .args(["passwd", "-apr1", password])
                    .output()
                    .map_err(|e| other(format!("openssl (to hash the proxy password): {e}")))?;
                let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                let passwd = write(dir, "passwd", &format!("{user}:{hash}\n"), 0o644)?;
                format!(
                    "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\n\
                     auth_param basic realm ferry-test\n\
                     acl authed proxy_auth REQUIRED\n\
                     http_access allow authed\n\
                     http_access deny all\n",
                    passwd.display()
                )
            }
            None => "http_access allow all\n".to_owned(),
        };
        let conf = write(
            dir,
            "squid.conf",
            &format!(
                "http_port 127.0.0.1:{port}\n\
                 pid_filename none\n\
                 cache deny all\n\
                 access_log stdio:{dir}/access.log\n\
                 cache_log {dir}/cache.log\n\
                 coredump_dir {dir}\n\
                 shutdown_lifetime 0 seconds\n\
                 {access}",
                port = self.port,
                dir = dir.display(),
            ),
            0o644,
        )?;
        // `-n`: a service name of its own, so squids running at once do not
        // share shared-memory segments.
        let mut child = spawn(
            Command::new("squid")
                .args(["-N", "-n"])
                .arg(format!("ferry{}", self.port))
                .arg("-f")
                .arg(&conf),
            "squid (Debian package `squid`)",
        )?;
        wait_listening(&mut child, self.port, "squid", &log)?;
        self.child = Some(child);
        Ok(())
    }

    /// `http://[user:password@]127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.auth {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// `http://127.0.0.1:PORT`, without credentials.
    pub fn bare_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What squid has logged of the requests it carried, one line each.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Kills squid at once (open tunnels break mid-body).
    pub fn kill(&mut self) {
        self.child = None;
    }

    /// Starts it again on the same port, with the same settings.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.run()
    }
}

/// The system user dante checks SOCKS5 credentials against.
pub const DANTE_USER: &str = "ferry-socks";

/// [`DANTE_USER`]'s password.
pub const DANTE_PASSWORD: &str = "s0cks-pw";

/// A running `danted`; see the module documentation.
#[derive(Debug)]
pub struct Dante {
    _child: Spawned,
    port: u16,
    _dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

impl Dante {
    /// Starts `danted` (Debian package `dante-server`) on a free port of
    /// 127.0.0.1, connecting anywhere for loopback clients; with `auth`,
    /// only for [`DANTE_USER`] with [`DANTE_PASSWORD`] (the user is made,
    /// and its password set, as root; elsewhere an error says so).
    pub fn start(auth: bool) -> Result<Dante, Error> {
        let password = auth.then_some(DANTE_PASSWORD);
        if auth {
            static USER: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
            USER.get_or_init(|| ensure_user(DANTE_PASSWORD).map_err(|e| e.to_string()))
                .clone()
                .map_err(other)?;
        }
        let dir = shared_dir()?;
        let port = free_tcp_port()?;
        let method = if password.is_some() {
            "username"
        } else {
            "none"
        };
        let log = write(dir.path(), "danted.log", "", 0o666)?;
        let conf = write(
            dir.path(),
            "danted.conf",
            &format!(
                "logoutput: {log}\n\
                 internal: 127.0.0.1 port = {port}\n\
                 external: 127.0.0.1\n\
                 socksmethod: {method}\n\
                 clientmethod: none\n\
                 user.privileged: root\n\
                 user.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n",
                log = log.display(),
            ),
            0o644,
        )?;
        let mut child = spawn(
            Command::new("danted")
                .arg("-f")
                .arg(&conf)
                .arg("-p")
                .arg(dir.path().join("danted.pid")),
            "danted (Debian package `dante-server`)",
        )?;
        wait_listening(&mut child, port, "danted", &log)?;
        Ok(Dante {
            _child: child,
            port,
            _dir: dir,
            auth: password.map(|p| (DANTE_USER.to_owned(), p.to_owned())),
        })
    }

    /// `socks5h://[user:password@]127.0.0.1:PORT` (names resolved by dante).
    pub fn url(&self) -> String {
        self.url_as("socks5h")
    }

    /// The URL with another scheme (`socks5`: names resolved by the client).
    pub fn url_as(&self, scheme: &str) -> String {
        match &self.auth {
            Some((u, p)) => format!("{scheme}://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Makes [`DANTE_USER`] (no home, no shell) and sets its password.
fn ensure_user(password: &str) -> Result<(), Error> {
    let exists = Command::new("id")
        .arg(DANTE_USER)
        .output()
        .is_ok_and(|o| o.status.success());
    let root = rustix::process::geteuid().is_root();
    if !root {
        return if exists {
            Ok(())
        } else {
            Err(other(format!(
                "dante checks SOCKS5 credentials against system users: make `{DANTE_USER}` \
                 (useradd --no-create-home --shell /usr/sbin/nologin {DANTE_USER}) or run as root"
            )))
        };
    }
    if !exists {
        let status = Command::new("useradd")
            .args([
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                DANTE_USER,
            ])
            .status()?;
        if !status.success() {
            return Err(other(format!("useradd {DANTE_USER}: {status}")));
        }
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = chpasswd
            .stdin
            .take()
            .ok_or_else(|| other("chpasswd has no stdin".to_owned()))?;
        writeln!(stdin, "{DANTE_USER}:{password}")?;
    }
    let status = chpasswd.wait()?;
    if !status.success() {
        return Err(other(format!("chpasswd: {status}")));
    }
    Ok(())
}
