//! caddy (quic-go), from Debian's `caddy` package, serving a directory over
//! HTTP/1.1, HTTP/2 and HTTP/3 on one port of 127.0.0.1 with a certificate
//! from a root made for the run: a real server no one here wrote, for
//! interop tests and benchmarks. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::process::{Spawned, spawn};

/// A running caddy; see the module documentation.
#[derive(Debug)]
pub struct Caddy {
    child: Spawned,
    port: u16,
    root_pem: String,
    _dir: tempfile::TempDir,
}

/// A port free for both TCP and UDP on 127.0.0.1.
fn free_port() -> Result<u16, Error> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Io(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both TCP and UDP",
    )))
}

impl Caddy {
    /// Starts `caddy` (found on PATH) serving `www` and waits until it
    /// accepts connections.
    pub fn start(www: &Path) -> Result<Caddy, Error> {
        let dir = tempfile::tempdir()?;
        let certs = crate::pem_certificates()?;
        let write = |name: &str, text: &str| -> Result<PathBuf, Error> {
            let p = dir.path().join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let leaf = write("leaf.pem", &certs.leaf)?;
        let key = write("key.pem", &certs.key)?;
        let port = free_port()?;
        let caddyfile = write(
            "Caddyfile",
            &format!(
                "{{\n  admin off\n  auto_https off\n  servers {{\n    protocols h1 h2 h3\n  }}\n}}\n\
                 https://localhost:{port} {{\n  bind 127.0.0.1\n  tls {} {}\n  root * {}\n  file_server\n}}\n",
                leaf.display(),
                key.display(),
                www.display()
            ),
        )?;
        let child = spawn(
            Command::new("caddy")
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(&caddyfile)
                .env("HOME", dir.path())
                .env("XDG_DATA_HOME", dir.path().join("data"))
                .env("XDG_CONFIG_HOME", dir.path().join("config")),
            "caddy (Debian package `caddy`)",
        )?;
        let mut caddy = Caddy {
            child,
            port,
            root_pem: certs.root,
            _dir: dir,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(caddy);
            }
            if let Ok(Some(status)) = caddy.child.0.try_wait() {
                return Err(Error::Io(std::io::Error::other(format!(
                    "caddy exited with {status}"
                ))));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("caddy did not start on port {port}"),
        )))
    }

    /// The port (TCP for HTTP/1.1 and HTTP/2, UDP for HTTP/3).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The root certificate (PEM) its certificate chains to.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }
}
