//! Leases in an object store: at most one holder at a time for a name (a
//! session's runner, a task's worker), with no clock compared across
//! machines.
//!
//! A lease is an object, `{prefix}/leases/{name}` (the `/`-separated parts
//! of a name nest), naming its holder.
//! - **Taking a free lease**: the holder creates the object with
//!   [`PutMode::Create`].
//! - **Renewing**: the holder rewrites it with [`PutMode::Update`] on the
//!   version it last wrote, well within its time to live. A renewal that
//!   fails means someone took the lease: the holder must stop.
//! - **Taking over an expired lease**: a contender that finds the lease
//!   held notes its version, waits one time to live on its *own* monotonic
//!   clock, and looks again. If the version is unchanged, the holder did not
//!   renew for a whole time to live, and the contender takes it over with
//!   [`PutMode::Update`] on that version. Of several contenders, exactly one
//!   wins.
//!
//! Only durations measured on one machine are compared, never timestamps
//! from two, so clock skew between machines does not matter. Clock *rate*
//! differences of a few percent are covered by renewing at a third of the
//! time to live. Durations are measured on the clock that counts suspended
//! time ([`transfer_core::since_boot`]): a contender whose machine slept
//! through the holder's silence has still waited it out.
//!
//! **Fencing**: every lease carries an epoch that grows by one with each
//! new holder. A holder stamps what it writes with its epoch, and readers
//! keep nothing written under an older epoch than one they have seen: a
//! holder that was paused past its lease and wakes up writes nothing that
//! counts.
//!
//! Releasing writes a released marker, again conditionally on the holder's
//! version, so the next contender takes over at once. Every write carries a
//! fresh random number, because S3's ETag is a hash of the content and a
//! renewal must change it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use transfer_core::{StoreError, StoreErrorKind};

use crate::io;

/// A lease as stored.
#[derive(Serialize, Deserialize)]
struct Record {
    /// Who holds it (empty when released).
    holder: String,
    /// How long it lives without a renewal, in milliseconds.
    ttl_ms: u64,
    /// Changed by every write: S3's ETag is a hash of the content, so a
    /// renewal that wrote the same bytes would look like no renewal.
    #[serde(default)]
    beat: u64,
    /// The fencing epoch: one more with each new holder.
    #[serde(default)]
    epoch: u64,
}

/// Takes and hands back leases under a prefix; see the module
/// documentation.
#[derive(Clone)]
pub struct Leases {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    /// Leases seen held by someone else: the version seen, and when (time
    /// since boot, suspended time included) it was first seen.
    sightings: Arc<std::sync::Mutex<HashMap<Path, (UpdateVersion, Duration)>>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    objects: Arc<dyn ObjectStore>,
    path: Path,
    holder: String,
    ttl: Duration,
    version: UpdateVersion,
    epoch: u64,
}

fn version_of(put: object_store::PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: put.e_tag,
        version: put.version,
    }
}

fn encode(holder: &str, ttl: Duration, epoch: u64) -> PutPayload {
    let record = Record {
        holder: holder.to_owned(),
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        beat: transfer_core::random_u64(),
        epoch,
    };
    PutPayload::from(serde_json::to_vec(&record).unwrap_or_default())
}

impl Leases {
    /// Leases under `{prefix}/leases/` in `objects`.
    pub fn new(objects: Arc<dyn ObjectStore>, prefix: &str) -> Leases {
        Leases {
            objects,
            prefix: Path::from(prefix).join("leases"),
            sightings: Arc::default(),
        }
    }

    /// The lease object of `name` (its `/`-separated parts nest).
    fn path(&self, name: &str) -> Path {
        name.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// The lease's object, its holder and its version, if it exists.
    async fn look(&self, path: &Path) -> Result<Option<(Record, UpdateVersion)>, StoreError> {
        let got = match self.objects.get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(io("reading a lease", e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await.map_err(|e| io("reading a lease", e))?;
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::new(StoreErrorKind::Corrupt, format!("lease {path}: {e}")).with_source(e)
        })?;
        Ok(Some((record, version)))
    }

    /// Writes `holder` into the lease with `mode`, under `epoch`; `None`
    /// when another writer got there first.
    async fn claim(
        &self,
        path: &Path,
        holder: &str,
        ttl: Duration,
        mode: PutMode,
        epoch: u64,
    ) -> Result<Option<Lease>, StoreError> {
        match self
            .objects
            .put_opts(path, encode(holder, ttl, epoch), PutOptions::from(mode))
            .await
        {
            Ok(put) => Ok(Some(Lease {
                objects: self.objects.clone(),
                path: path.clone(),
                holder: holder.to_owned(),
                ttl,
                version: version_of(put),
                epoch,
            })),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(io("writing a lease", e)),
        }
    }

    /// Takes the lease `name` for `holder` without waiting: when it is free
    /// or released, or when its holder has not renewed it for a whole time
    /// to live since this `Leases` (or a clone) first saw it; `None`
    /// otherwise. Calling it again later is how a silent holder is noticed.
    pub async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let path = self.path(name);
        let found = self.look(&path).await?;
        let (record, version) = match found {
            Some((record, version)) if !record.holder.is_empty() => (record, version),
            // Free or released: no one holds it, and nothing is left to watch.
            free => {
                self.forget(&path);
                let epoch = free.as_ref().map_or(0, |(r, _)| r.epoch) + 1;
                let mode = free.map_or(PutMode::Create, |(_, v)| PutMode::Update(v));
                return self.claim(&path, holder, ttl, mode, epoch).await;
            }
        };
        let silent = {
            let mut sightings = self
                .sightings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = transfer_core::since_boot();
            let first = match sightings.get(&path) {
                Some((v, at)) if *v == version => *at,
                _ => {
                    sightings.insert(path.clone(), (version.clone(), now));
                    now
                }
            };
            now.saturating_sub(first) >= Duration::from_millis(record.ttl_ms)
        };
        if !silent {
            return Ok(None);
        }
        let got = self
            .claim(
                &path,
                holder,
                ttl,
                PutMode::Update(version),
                record.epoch + 1,
            )
            .await?;
        if got.is_some() {
            self.forget(&path);
        }
        Ok(got)
    }

    fn forget(&self, path: &Path) {
        self.sightings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(path);
    }

    /// Takes the lease `name` for `holder`, waiting while someone else holds
    /// it and renews it, and taking it over once they have not renewed for
    /// a whole time to live (theirs, measured here): [`try_acquire`](Self::try_acquire)
    /// every quarter of `ttl` until it succeeds.
    pub async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        loop {
            if let Some(lease) = self.try_acquire(name, holder, ttl).await? {
                return Ok(lease);
            }
            tokio::time::sleep(ttl / 4).await;
        }
    }
}

impl Lease {
    /// Who holds it.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long it lives without a renewal; renew at a third of it.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Its fencing epoch (see the module documentation).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Renews the lease. [`StoreErrorKind::Conflict`] means it was taken
    /// over: whatever it guarded must stop now.
    pub async fn renew(&mut self) -> Result<(), StoreError> {
        let put = self
            .objects
            .put_opts(
                &self.path,
                encode(&self.holder, self.ttl, self.epoch),
                PutOptions::from(PutMode::Update(self.version.clone())),
            )
            .await
            .map_err(|e| io("renewing a lease", e))?;
        self.version = version_of(put);
        Ok(())
    }

    /// Hands the lease back, so the next contender takes it at once (a no-op
    /// when it was already taken over).
    pub async fn release(self) -> Result<(), StoreError> {
        match self
            .objects
            .put_opts(
                &self.path,
                encode("", self.ttl, self.epoch),
                PutOptions::from(PutMode::Update(self.version.clone())),
            )
            .await
        {
            Ok(_) | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(io("releasing a lease", e)),
        }
    }
}

#[async_trait::async_trait]
impl transfer_core::Claim for Lease {
    async fn renew(&mut self) -> Result<(), StoreError> {
        Lease::renew(self).await
    }

    async fn release(self: Box<Self>) -> Result<(), StoreError> {
        Lease::release(*self).await
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// [`Claims`](transfer_core::Claims) on tasks as [`Leases`]: the claim on
/// task `T` of session `S` is the lease `{prefix}/leases/S/T`. Every
/// process sharing a session builds one with its own holder name (a host
/// name and process id is a good one) and the same prefix.
#[derive(Clone, Debug)]
pub struct S3Claims {
    leases: Leases,
    holder: String,
    ttl: Duration,
}

impl S3Claims {
    /// Claims under `prefix` in `objects`, held by `holder`, each living
    /// `ttl` without a renewal.
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        prefix: &str,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> S3Claims {
        S3Claims {
            leases: Leases::new(objects, prefix),
            holder: holder.into(),
            ttl,
        }
    }

    /// Who holds the claims this process takes.
    pub fn holder(&self) -> &str {
        &self.holder
    }
}

#[async_trait::async_trait]
impl transfer_core::Claims for S3Claims {
    async fn try_claim(
        &self,
        session: &transfer_core::SessionId,
        task: transfer_core::TaskId,
    ) -> Result<Option<Box<dyn transfer_core::Claim>>, StoreError> {
        let name = format!("{session}/{task}");
        let got = self
            .leases
            .try_acquire(&name, &self.holder, self.ttl)
            .await?;
        Ok(got.map(|l| Box::new(l) as Box<dyn transfer_core::Claim>))
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}
