//! Where `ferry` writes payloads: files through store-fs, and object keys
//! (`s3://BUCKET/KEY`, from `--to`) into S3 or an S3-compatible server
//! through store-s3, one client per bucket. Credentials, region and
//! endpoint come from the usual `AWS_*` variables; `--endpoint` overrides
//! the endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use store_fs::FsPayloadStore;
use store_s3::S3PayloadStore;
use transfer_core::{
    Destination, Partial, PartialLocation, PayloadStore, ResumeData, SessionId, StoreError,
    StoreErrorKind, TaskId,
};

/// Splits `s3://BUCKET/KEY`.
pub(crate) fn parse_s3(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    (!bucket.is_empty() && !key.is_empty() && !key.ends_with('/')).then_some((bucket, key))
}

/// Routes each destination to the store that holds it.
pub(crate) struct Payloads {
    fs: FsPayloadStore,
    endpoint: Option<String>,
    buckets: Mutex<HashMap<String, Arc<S3PayloadStore>>>,
}

impl Payloads {
    pub(crate) fn new(fs: FsPayloadStore, endpoint: Option<String>) -> Payloads {
        Payloads {
            fs,
            endpoint,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The store for `s3://BUCKET/KEY`, and the key inside the bucket.
    fn bucket(&self, url: &str) -> Result<(Arc<S3PayloadStore>, Destination), StoreError> {
        let (bucket, key) = parse_s3(url).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Unsupported,
                format!("{url:?} is not an s3://BUCKET/KEY destination"),
            )
        })?;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = buckets.get(bucket) {
            return Ok((s.clone(), Destination::ObjectKey(key.to_owned())));
        }
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT").ok());
        let b = store_s3::s3_builder(bucket, endpoint.as_deref());
        let s3 = b.build().map_err(|e| {
            StoreError::new(StoreErrorKind::Io, format!("S3 bucket {bucket}: {e}")).with_source(e)
        })?;
        let store = Arc::new(S3PayloadStore::new(Arc::new(s3)));
        buckets.insert(bucket.to_owned(), store.clone());
        Ok((store, Destination::ObjectKey(key.to_owned())))
    }
}

#[async_trait]
impl PayloadStore for Payloads {
    async fn open(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        resume: &ResumeData,
    ) -> Result<Box<dyn Partial>, StoreError> {
        match destination {
            Destination::ObjectKey(url) => {
                let (store, key) = self.bucket(url)?;
                store.open(session, task, &key, resume).await
            }
            path => self.fs.open(session, task, path, resume).await,
        }
    }

    async fn discard(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        partial: Option<&PartialLocation>,
    ) -> Result<(), StoreError> {
        match destination {
            Destination::ObjectKey(url) => {
                let (store, key) = self.bucket(url)?;
                store.discard(session, task, &key, partial).await
            }
            path => self.fs.discard(session, task, path, partial).await,
        }
    }
}
