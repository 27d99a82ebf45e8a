//! Where `ferry` keeps a session's state: `$FERRY_HOME` on this machine (one
//! process runs the session; the others talk to it over its control
//! socket), or, with `--store s3://BUCKET/PREFIX`, a bucket that several
//! processes share, on one machine or many, each task run by one of them at
//! a time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::ObjectStore;
use store_s3::{S3Claims, S3TaskStore};

/// A session's state in a bucket.
pub(crate) struct Shared {
    /// Task records and the completion outbox.
    pub(crate) tasks: Arc<S3TaskStore>,
    /// The client, for the claims of the process that runs tasks.
    objects: Arc<dyn ObjectStore>,
    prefix: String,
    /// How long this process's claims live without a renewal.
    ttl: Duration,
}

impl Shared {
    /// The state under `s3://BUCKET/PREFIX` (the prefix defaults to
    /// `ferry`), through `endpoint` (else `AWS_ENDPOINT_URL`, else AWS), for
    /// a process whose claims live `ttl` without a renewal.
    ///
    /// Every request to the bucket, retries included, gives up after a
    /// quarter of `ttl`. A process stops writing a task's record at most two
    /// thirds of `ttl` after its last renewal, so whatever it wrote lands (or
    /// fails) before another process may take the task over, a whole `ttl`
    /// after that renewal: a write held up in the network cannot land after
    /// the new holder's.
    pub(crate) fn open(url: &str, endpoint: Option<&str>, ttl: Duration) -> anyhow::Result<Shared> {
        let rest = url
            .strip_prefix("s3://")
            .with_context(|| format!("--store {url:?}: an s3://BUCKET/PREFIX URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            bail!("--store {url:?}: no bucket named");
        }
        let prefix = if prefix.is_empty() { "ferry" } else { prefix };
        let endpoint = endpoint
            .map(str::to_owned)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        let limit = ttl / 4;
        let objects: Arc<dyn ObjectStore> = Arc::new(
            store_s3::s3_builder(bucket, endpoint.as_deref())
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_timeout(limit)
                        .with_connect_timeout(limit),
                )
                .with_retry(object_store::RetryConfig {
                    retry_timeout: limit,
                    ..object_store::RetryConfig::default()
                })
                // The client options above replaced the builder's: again.
                .with_allow_http(
                    endpoint
                        .as_deref()
                        .is_some_and(|e| e.starts_with("http://")),
                )
                .build()
                .with_context(|| format!("--store {url:?}"))?,
        );
        Ok(Shared {
            tasks: Arc::new(S3TaskStore::new(objects.clone(), prefix)),
            objects,
            prefix: prefix.to_owned(),
            ttl,
        })
    }

    /// Claims held by this process.
    pub(crate) fn claims(&self) -> Arc<S3Claims> {
        Arc::new(S3Claims::new(
            self.objects.clone(),
            &self.prefix,
            holder(),
            self.ttl,
        ))
    }
}

/// This process's name among the holders of claims: host, process id and
/// a random tag (process ids are reused).
fn holder() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "ferry".to_owned());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        transfer_core::random_u64() & 0xffff
    )
}

/// Reads a duration such as `30s`, `500ms` or `2m`.
pub(crate) fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = digits
        .parse()
        .with_context(|| format!("{s:?} is not a duration such as 30s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => bail!("{s:?}: the unit is ms, s or m"),
    };
    if !(secs.is_finite() && secs > 0.0) {
        bail!("{s:?}: must be above zero");
    }
    Ok(Duration::from_secs_f64(secs))
}
