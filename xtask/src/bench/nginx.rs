//! nginx serving the bench bodies: a real server no one here wrote, with a
//! configuration generated for the run, plain HTTP/1.1 and TLS with HTTP/2
//! on 127.0.0.1, sendfile on, and a CA and leaf certificate made for the run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running nginx; stopped (and its prefix kept for inspection) on drop.
pub(crate) struct Nginx {
    child: Child,
    /// How it was started: the program, then its `-p` and `-c` arguments.
    command: (PathBuf, PathBuf, PathBuf),
    /// Port of the plain HTTP/1.1 listener.
    pub(crate) http_port: u16,
    /// Port of the TLS listener (HTTP/2 by ALPN, HTTP/1.1 otherwise).
    pub(crate) https_port: u16,
    /// The root certificate (PEM) that signed the server's certificate.
    pub(crate) ca_pem: PathBuf,
}

impl Nginx {
    /// Starts nginx serving `root`; its configuration, logs and certificates
    /// go into `prefix`.
    pub(crate) fn start(prefix: &Path, root: &Path) -> anyhow::Result<Nginx> {
        let nginx =
            which("nginx").context("nginx is not installed (apt-get install nginx-light)")?;
        std::fs::create_dir_all(prefix.join("logs"))?;
        let certs = testkit::pem_certificates()?;
        let ca = prefix.join("ca.pem");
        std::fs::write(&ca, certs.root)?;
        std::fs::write(prefix.join("server.pem"), certs.leaf)?;
        std::fs::write(prefix.join("server.key"), certs.key)?;
        let http_port = free_port()?;
        let https_port = free_port()?;
        let p = prefix.display();
        let conf = format!(
            r#"
user root;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl http2;
        ssl_certificate {p}/server.pem;
        ssl_certificate_key {p}/server.key;
        ssl_protocols TLSv1.3;
        root {root};
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut server = Nginx {
            child,
            command: (nginx.clone(), prefix.to_owned(), conf_path.clone()),
            http_port,
            https_port,
            ca_pem: ca,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", https_port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                let log =
                    std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
                bail!("nginx exited ({status}): {log}");
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("nginx did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The plain HTTP/1.1 URL of `path`.
    pub(crate) fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.http_port)
    }

    /// The TLS URL of `path` (the certificate is for `localhost`).
    pub(crate) fn https(&self, path: &str) -> String {
        format!("https://localhost:{}/{path}", self.https_port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `-s stop` (SIGTERM): a fast shutdown, in which the master stops its workers
        // (after a SIGKILL of the master alone, a worker was seen left
        // behind, spinning, for a minute). SIGKILL if it takes too long.
        let (program, prefix, conf) = &self.command;
        let _ = Command::new(program)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The path of `program` on PATH (or in /usr/sbin, where Debian puts nginx).
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
