//! moto (PyPI `moto[server]` 5.2.1), an S3-protocol server no one here
//! wrote, started on 127.0.0.1 for tests: conditional creates hold under
//! concurrent writers, and multipart uploads work. Killed on drop.
//!
//! The server is found at `$FERRY_MOTO_SERVER`, else
//! `~/.cache/ferry/moto/bin/moto_server` (where `.ci/run` installs it), else
//! `moto_server` on PATH.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::Error;
use crate::process::{Spawned, spawn};

/// A running moto server; see the module documentation.
#[derive(Debug)]
pub struct Moto {
    _child: Spawned,
    port: u16,
}

fn moto_server() -> String {
    if let Ok(p) = std::env::var("FERRY_MOTO_SERVER") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = format!("{home}/.cache/ferry/moto/bin/moto_server");
    if std::path::Path::new(&cached).exists() {
        return cached;
    }
    "moto_server".to_owned()
}

/// Sends one bodiless HTTP/1.1 request and returns the status line.
fn request(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

impl Moto {
    /// Starts moto and creates `buckets`.
    pub fn start(buckets: &[&str]) -> Result<Moto, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = spawn(
            Command::new(moto_server()).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            "moto_server (pip install 'moto[server]==5.2.1')",
        )?;
        let moto = Moto {
            _child: child,
            port,
        };
        for _ in 0..200 {
            if request(port, "GET", "/").is_ok() {
                for b in buckets {
                    let status = request(port, "PUT", &format!("/{b}"))?;
                    if !status.contains(" 200") {
                        return Err(Error::Io(std::io::Error::other(format!(
                            "creating bucket {b}: {status}"
                        ))));
                    }
                }
                return Ok(moto);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("moto did not start on port {port}"),
        )))
    }

    /// `http://127.0.0.1:PORT`, the endpoint clients use (path-style,
    /// region `us-east-1`, any key id and secret).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
