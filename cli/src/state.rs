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
        let timeout = format!("{}ms", limit.as_millis().max(1));
        let client = |key| object_store::aws::AmazonS3ConfigKey::Client(key);
        let objects: Arc<dyn ObjectStore> = Arc::new(
            store_s3::s3_builder(bucket, endpoint.as_deref())
                .with_config(client(object_store::ClientConfigKey::Timeout), &timeout)
                .with_config(
                    client(object_store::ClientConfigKey::ConnectTimeout),
                    &timeout,
                )
                .with_retry(object_store::RetryConfig {
                    retry_timeout: limit,
                    ..object_store::RetryConfig::default()
                })
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

/// Reads a duration such as `30s`, `500ms` or `2m` (a bare number is
/// seconds).
pub(crate) fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .with_context(|| format!("{s:?} is not a duration such as 30s or 500ms"))?,
    };
    if d.is_zero() {
        bail!("{s:?}: must be above zero");
    }
    Ok(d)
}
