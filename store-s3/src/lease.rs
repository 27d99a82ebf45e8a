//! Leases in an object store: at most one holder at a time for a name (a
//! session's runner, a task's worker), with no clock compared across
//! machines.
//!
//! A lease is an object, `{prefix}/leases/{name}`, naming its holder.
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
//! time to live.
//!
//! Releasing writes a released marker, again conditionally on the holder's
//! version, so the next contender takes over at once. Every write carries a
//! fresh random number, because S3's ETag is a hash of the content and a
//! renewal must change it.

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
}

/// Takes and hands back leases under a prefix; see the module
/// documentation.
#[derive(Clone)]
pub struct Leases {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
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
}

fn version_of(put: object_store::PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: put.e_tag,
        version: put.version,
    }
}

fn encode(holder: &str, ttl: Duration) -> PutPayload {
    let record = Record {
        holder: holder.to_owned(),
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        beat: transfer_core::random_u64(),
    };
    PutPayload::from(serde_json::to_vec(&record).unwrap_or_default())
}

impl Leases {
    /// Leases under `{prefix}/leases/` in `objects`.
    pub fn new(objects: Arc<dyn ObjectStore>, prefix: &str) -> Leases {
        Leases {
            objects,
            prefix: Path::from(prefix).join("leases"),
        }
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

    /// Writes `holder` into the lease with `mode`; `None` when another
    /// writer got there first.
    async fn claim(
        &self,
        path: &Path,
        holder: &str,
        ttl: Duration,
        mode: PutMode,
    ) -> Result<Option<Lease>, StoreError> {
        match self
            .objects
            .put_opts(path, encode(holder, ttl), PutOptions::from(mode))
            .await
        {
            Ok(put) => Ok(Some(Lease {
                objects: self.objects.clone(),
                path: path.clone(),
                holder: holder.to_owned(),
                ttl,
                version: version_of(put),
            })),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(io("writing a lease", e)),
        }
    }

    /// Takes the lease `name` for `holder` if it is free or released now;
    /// `None` when someone holds it.
    pub async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let path = self.prefix.clone().join(name);
        match self.look(&path).await? {
            None => self.claim(&path, holder, ttl, PutMode::Create).await,
            Some((r, v)) if r.holder.is_empty() => {
                self.claim(&path, holder, ttl, PutMode::Update(v)).await
            }
            Some(_) => Ok(None),
        }
    }

    /// Takes the lease `name` for `holder`, waiting while someone else holds
    /// it and renews it, and taking it over once they have not renewed for
    /// a whole time to live (theirs, measured here).
    pub async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let path = self.prefix.clone().join(name);
        loop {
            let seen = match self.look(&path).await? {
                None => {
                    if let Some(l) = self.claim(&path, holder, ttl, PutMode::Create).await? {
                        return Ok(l);
                    }
                    continue;
                }
                Some((r, v)) if r.holder.is_empty() => {
                    if let Some(l) = self.claim(&path, holder, ttl, PutMode::Update(v)).await? {
                        return Ok(l);
                    }
                    continue;
                }
                Some((r, v)) => (Duration::from_millis(r.ttl_ms), v),
            };
            tokio::time::sleep(seen.0).await;
            match self.look(&path).await? {
                // Not renewed for a whole time to live: take it over.
                Some((_, v)) if v == seen.1 => {
                    if let Some(l) = self.claim(&path, holder, ttl, PutMode::Update(v)).await? {
                        return Ok(l);
                    }
                }
                _ => {}
            }
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

    /// Renews the lease. [`StoreErrorKind::Conflict`] means it was taken
    /// over: whatever it guarded must stop now.
    pub async fn renew(&mut self) -> Result<(), StoreError> {
        let put = self
            .objects
            .put_opts(
                &self.path,
                encode(&self.holder, self.ttl),
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
                encode("", self.ttl),
                PutOptions::from(PutMode::Update(self.version.clone())),
            )
            .await
        {
            Ok(_) | Err(object_store::Error::Precondition { .. }) => Ok(()),
            Err(e) => Err(io("releasing a lease", e)),
        }
    }
}
