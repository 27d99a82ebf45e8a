//! Downloads straight into an object store: a download whose destination is
//! an object key streams into a multipart upload, a part at a time.
//!
//! - **Parts**: each part holds `part_size` bytes (at least 5 MiB, S3's
//!   floor for all but the last part; 8 MiB by default).
//! - **Checkpoints**: the upload id and the parts stored so far are the
//!   partial's location, kept in the task record as each part is stored
//!   (`durable_update`), whatever the session's checkpoint interval. After
//!   a crash or a kill, the upload continues with those parts. Only the part
//!   that was in flight is fetched and uploaded again.
//! - **Durable offset**: it is the end of the last stored part. The bytes
//!   of the part being filled are not durable until that part is uploaded.
//! - **Completion and cancellation**: completing the download completes the
//!   multipart upload, which makes the object appear whole and at once.
//!   Cancelling aborts it.
//! - **Checksums**: the parts cannot be read back before the upload
//!   completes, so a resumed download that must verify a checksum of the
//!   whole payload fails with a storage error rather than skip the check.
//! - **Never over another's object**: a commit without overwrite does not
//!   replace an object at the key that this upload did not make. A small
//!   payload's single put is a conditional create (`If-None-Match: *`),
//!   atomic against any other writer. A multipart upload is completed only
//!   after a look at the key finds it free: object_store's
//!   `complete_multipart` sends no condition, so a writer that creates the
//!   object between that look and the completion is replaced. The upload
//!   of a refused commit is kept (it is the task's resume data). Every
//!   object also names its session and task (`x-amz-meta-ferry-task`): an
//!   object an earlier upload of the same task made, whose completion was
//!   never recorded (a worker killed right after it), is that task's to
//!   replace.
//! - **Completed, then killed**: every upload has a random tag, kept in the
//!   task record and given to the object as metadata (`x-amz-meta-ferry-tag`).
//!   A process that dies after completing the upload and before recording
//!   it leaves a record that still names the upload. Opening it finds the
//!   object with that tag and hands back the finished payload (readable,
//!   so its length and checksum are checked) instead of writing into an
//!   upload that no longer exists.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, MultipartId, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload,
};
use transfer_core::{
    Destination, PartRecord, Partial, PartialLocation, PayloadStore, ResumeData, SessionId,
    StoreError, StoreErrorKind, TaskId,
};

use crate::io;

/// S3's smallest part (all but the last).
pub const MIN_PART: usize = 5 << 20;

/// A [`PayloadStore`] writing downloads into an object store; see the
/// module documentation. Destinations must be object keys.
pub struct S3PayloadStore {
    objects: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    part_size: usize,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for S3PayloadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3PayloadStore")
            .field("objects", &self.objects.to_string())
            .field("part_size", &self.part_size)
            .finish()
    }
}

impl S3PayloadStore {
    /// Writes into `store` (`AmazonS3` and `InMemory` are both an
    /// [`ObjectStore`] and a [`MultipartStore`]).
    pub fn new<S>(store: Arc<S>) -> S3PayloadStore
    where
        S: ObjectStore + MultipartStore + 'static,
    {
        S3PayloadStore {
            objects: store.clone(),
            multipart: store,
            part_size: 8 << 20,
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Requests sent so far (creates, parts, completions, aborts, puts):
    /// what the payloads cost in billed requests.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes per part (default 8 MiB; at least 5 MiB): what a kill costs
    /// at most in bytes fetched and uploaded again.
    pub fn part_size(mut self, bytes: usize) -> S3PayloadStore {
        self.part_size = bytes.max(MIN_PART);
        self
    }
}

/// The metadata naming an upload's tag.
const TAG: &str = "ferry-tag";

/// The metadata naming the session and task an upload is for
/// (`SESSION/TASK`): an object of the same task, from an earlier upload
/// whose completion was not recorded, is that task's to replace.
const TASK: &str = "ferry-task";

fn tagged(tag: &str, owner: &str) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::Metadata(TAG.into()), tag.to_owned().into());
    a.insert(Attribute::Metadata(TASK.into()), owner.to_owned().into());
    a
}

/// The value of [`TASK`] for `task` of `session`.
fn owner_of(session: &SessionId, task: TaskId) -> String {
    format!("{session}/{task}")
}

impl S3PayloadStore {
    /// Whether the object at `key` is the one the upload tagged `tag` made.
    async fn finished(&self, key: &Path, tag: &str) -> Result<bool, StoreError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(object_at(&*self.objects, key, Some(tag), None).await? == At::Ours)
    }
}

/// What is at a key, for an upload.
#[derive(Debug, PartialEq, Eq)]
enum At {
    /// No object.
    Nothing,
    /// The object this upload made.
    Ours,
    /// An object an earlier upload of the same task made.
    OurTask,
    /// Any other object.
    Another,
}

/// What is at `key`, for the upload tagged `tag` of the task `owner` names.
async fn object_at(
    objects: &dyn ObjectStore,
    key: &Path,
    tag: Option<&str>,
    owner: Option<&str>,
) -> Result<At, StoreError> {
    let head = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    match objects.get_opts(key, head).await {
        Ok(got) => {
            let is = |name: &'static str, want: Option<&str>| {
                let found = got.attributes.get(&Attribute::Metadata(name.into()));
                matches!((found, want), (Some(v), Some(w)) if v.as_ref() == w)
            };
            Ok(if is(TAG, tag) {
                At::Ours
            } else if is(TASK, owner) {
                At::OurTask
            } else {
                At::Another
            })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(At::Nothing),
        Err(e) => Err(io("looking at the destination", e)),
    }
}

/// The error of a commit that would replace an object it may not.
fn exists(key: &Path) -> StoreError {
    StoreError::new(
        StoreErrorKind::Exists,
        format!(
            "{key} exists; not replaced (an object this download did not write and may not overwrite)"
        ),
    )
}

fn key_of(destination: &Destination) -> Result<Path, StoreError> {
    match destination {
        Destination::ObjectKey(key) => Path::parse(key).map_err(|e| {
            StoreError::new(
                StoreErrorKind::OutsideRoot,
                format!("object key {key:?}: {e}"),
            )
        }),
        Destination::Path(p) => Err(StoreError::new(
            StoreErrorKind::Unsupported,
            format!(
                "{} is a file path; an object store takes object keys",
                p.display()
            ),
        )),
    }
}

#[async_trait]
impl PayloadStore for S3PayloadStore {
    async fn open(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        resume: &ResumeData,
    ) -> Result<Box<dyn Partial>, StoreError> {
        let key = key_of(destination)?;
        let owner = owner_of(session, task);
        if let Some(PartialLocation::Multipart {
            key: stored,
            upload_id,
            parts,
            tag,
        }) = &resume.partial
            && *stored == key.as_ref()
        {
            if let (Some(tag), Some(total)) = (tag, resume.total_length)
                && self.finished(&key, tag).await?
            {
                return Ok(Box::new(Finished {
                    objects: self.objects.clone(),
                    key,
                    len: total,
                    location: resume.partial.clone(),
                }));
            }
            // Keep the parts the durable offset covers (all of them, unless
            // the record is older than the parts).
            let mut kept = Vec::new();
            let mut at = 0u64;
            for p in parts {
                if at + p.len > resume.durable_offset {
                    break;
                }
                at += p.len;
                kept.push(p.clone());
            }
            return Ok(Box::new(S3Partial {
                store: self.multipart.clone(),
                objects: self.objects.clone(),
                key,
                upload_id: upload_id.clone(),
                parts: kept,
                tag: tag.clone(),
                owner,
                stored: at,
                reported: at,
                buf: BytesMut::new(),
                part_size: self.part_size,
                requests: self.requests.clone(),
            }));
        }
        if let Some(PartialLocation::Multipart { key, upload_id, .. }) = &resume.partial {
            // Another destination's upload: it will never complete.
            let old = Path::from(key.as_str());
            let _ = self.multipart.abort_multipart(&old, upload_id).await;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:016x}", transfer_core::random_u64());
        let upload_id = self
            .multipart
            .create_multipart_opts(
                &key,
                PutMultipartOptions {
                    attributes: tagged(&tag, &owner),
                    ..PutMultipartOptions::default()
                },
            )
            .await
            .map_err(|e| io("starting a multipart upload", e))?;
        Ok(Box::new(S3Partial {
            store: self.multipart.clone(),
            objects: self.objects.clone(),
            key,
            upload_id,
            parts: Vec::new(),
            tag: Some(tag),
            owner,
            stored: 0,
            reported: 0,
            buf: BytesMut::new(),
            part_size: self.part_size,
            requests: self.requests.clone(),
        }))
    }

    async fn discard(
        &self,
        _session: &SessionId,
        _task: TaskId,
        _destination: &Destination,
        partial: Option<&PartialLocation>,
    ) -> Result<(), StoreError> {
        if let Some(PartialLocation::Multipart { key, upload_id, .. }) = partial {
            match self
                .multipart
                .abort_multipart(&Path::from(key.as_str()), upload_id)
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io("aborting a multipart upload", e)),
            }
        }
        Ok(())
    }
}

/// A multipart upload being filled.
struct S3Partial {
    store: Arc<dyn MultipartStore>,
    objects: Arc<dyn ObjectStore>,
    key: Path,
    upload_id: MultipartId,
    parts: Vec<PartRecord>,
    /// The tag the finished object carries.
    tag: Option<String>,
    /// The session and task it is for (see [`TASK`]).
    owner: String,
    /// Bytes in the stored parts.
    stored: u64,
    /// The durable offset last handed out (`sync` or `durable_update`).
    reported: u64,
    /// Bytes of the part being filled.
    buf: BytesMut,
    part_size: usize,
    requests: Arc<AtomicU64>,
}

impl S3Partial {
    fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// What is at the destination key now, as this upload sees it (one
    /// request).
    async fn what_is_at_key(&self) -> Result<At, StoreError> {
        self.request();
        object_at(
            &*self.objects,
            &self.key,
            self.tag.as_deref(),
            Some(&self.owner),
        )
        .await
    }

    fn location(&self) -> PartialLocation {
        PartialLocation::Multipart {
            key: self.key.to_string(),
            upload_id: self.upload_id.clone(),
            parts: self.parts.clone(),
            tag: self.tag.clone(),
        }
    }

    async fn put_part(&mut self, data: Bytes) -> Result<(), StoreError> {
        let len = data.len() as u64;
        let idx = self.parts.len();
        self.request();
        let id = self
            .store
            .put_part(&self.key, &self.upload_id, idx, PutPayload::from(data))
            .await
            .map_err(|e| io("uploading a part", e))?;
        self.parts.push(PartRecord {
            number: u32::try_from(idx + 1).unwrap_or(u32::MAX),
            id: id.content_id,
            len,
        });
        self.stored += len;
        Ok(())
    }
}

#[async_trait]
impl Partial for S3Partial {
    fn offset(&self) -> u64 {
        self.stored + self.buf.len() as u64
    }

    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.buf.extend_from_slice(&data);
        while self.buf.len() >= self.part_size {
            let part = self.buf.split_to(self.part_size).freeze();
            self.put_part(part).await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(u64, PartialLocation), StoreError> {
        self.reported = self.stored;
        Ok((self.stored, self.location()))
    }

    /// Each stored part is a checkpoint: a kill costs the part in flight,
    /// whatever the session's checkpoint interval.
    fn durable_update(&mut self) -> Option<(u64, PartialLocation)> {
        (self.stored > self.reported).then(|| {
            self.reported = self.stored;
            (self.stored, self.location())
        })
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<(), StoreError> {
        if self.parts.is_empty() {
            // Nothing uploaded as parts (a small payload): one plain put,
            // a conditional create unless it may overwrite.
            let body = PutPayload::from(std::mem::take(&mut self.buf).freeze());
            let put = |mode| {
                self.request();
                let opts = PutOptions {
                    attributes: tagged(self.tag.as_deref().unwrap_or_default(), &self.owner),
                    mode,
                    ..PutOptions::default()
                };
                self.objects.put_opts(&self.key, body.clone(), opts)
            };
            let mode = if overwrite {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            match put(mode).await {
                Ok(_) => {}
                // Taken: by this same put (a retry after its answer was
                // lost), by an earlier upload of this task, or by another
                // writer.
                Err(object_store::Error::AlreadyExists { .. }) => {
                    match self.what_is_at_key().await? {
                        At::Ours => {}
                        At::OurTask => {
                            put(PutMode::Overwrite)
                                .await
                                .map_err(|e| io("writing the object", e))?;
                        }
                        At::Nothing | At::Another => return Err(exists(&self.key)),
                    }
                }
                Err(e) => return Err(io("writing the object", e)),
            }
            self.request();
            let _ = self.store.abort_multipart(&self.key, &self.upload_id).await;
            return Ok(());
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf).freeze();
            self.put_part(last).await?;
        }
        if !overwrite {
            match self.what_is_at_key().await? {
                // Free, or an earlier upload's of this same task.
                At::Nothing | At::OurTask => {}
                // Completed already, by this upload.
                At::Ours => return Ok(()),
                At::Another => return Err(exists(&self.key)),
            }
        }
        let ids = self
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.id.clone(),
            })
            .collect();
        self.request();
        self.store
            .complete_multipart(&self.key, &self.upload_id, ids)
            .await
            .map_err(|e| io("completing the multipart upload", e))?;
        Ok(())
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        match self.store.abort_multipart(&self.key, &self.upload_id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io("aborting a multipart upload", e)),
        }
    }
}

/// An upload found completed (by a process that died before recording
/// it): the finished object, read back for the length and checksum checks.
struct Finished {
    objects: Arc<dyn ObjectStore>,
    key: Path,
    len: u64,
    location: Option<PartialLocation>,
}

#[async_trait]
impl Partial for Finished {
    fn offset(&self) -> u64 {
        self.len
    }

    async fn write(&mut self, _data: Bytes) -> Result<(), StoreError> {
        Err(StoreError::new(
            StoreErrorKind::Unsupported,
            format!("{} is finished: nothing more can be written", self.key),
        ))
    }

    async fn sync(&mut self) -> Result<(u64, PartialLocation), StoreError> {
        let location = self.location.clone().ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::NotFound,
                "a finished upload without its record",
            )
        })?;
        Ok((self.len, location))
    }

    async fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let end = (at + buf.len() as u64).min(self.len);
        if at >= end {
            return Ok(0);
        }
        let opts = GetOptions {
            range: Some(GetRange::Bounded(at..end)),
            ..GetOptions::default()
        };
        let got = self
            .objects
            .get_opts(&self.key, opts)
            .await
            .map_err(|e| io("reading the finished object", e))?
            .bytes()
            .await
            .map_err(|e| io("reading the finished object", e))?;
        let n = got.len().min(buf.len());
        buf[..n].copy_from_slice(&got[..n]);
        Ok(n)
    }

    async fn commit(self: Box<Self>, _overwrite: bool) -> Result<(), StoreError> {
        Ok(()) // it already is
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        Ok(()) // a finished object is not this partial's to delete
    }
}
