//! Enqueue and naming: turns the downloads and uploads a command asks for
//! into tasks (a safe, unique file name in the output directory, a label, a
//! key that finds the same task when the same command runs again) and
//! enqueues them, into the running session or the state on disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use scheduler::{KeyRule, Offline, Session, TaskHandle};
use serde::{Deserialize, Serialize};
use transfer_core::{
    Constraints, Destination, Phase, ResumableProtocol, TaskId, TaskKind, TaskRecord, TaskSpec,
    TaskSpecBuilder, UploadBody,
};

use crate::names;

/// Downloads to enqueue, checked (the URL list read, the output directory
/// absolute, the rate parsed): what `get` and `add` ask for, here or of the
/// running ferry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Downloads {
    /// The URLs.
    pub(crate) urls: Vec<String>,
    /// The output directory, absolute.
    pub(crate) output: PathBuf,
    /// The files `-o` names for the first URLs, in order, absolute.
    #[serde(default)]
    pub(crate) files: Vec<PathBuf>,
    /// Into objects instead of files: `s3://BUCKET/KEY` (one URL) or
    /// `s3://BUCKET/PREFIX/`.
    pub(crate) to: Option<String>,
    /// The payload's expected SHA-256 (one URL).
    pub(crate) sha256: Option<String>,
    /// Each download's rate limit, in bytes per second.
    pub(crate) rate: Option<u64>,
    /// Replace existing files instead of choosing a numbered name.
    pub(crate) overwrite: bool,
    /// The largest body accepted.
    #[serde(default)]
    pub(crate) max_size: Option<u64>,
    /// When the downloads may run.
    pub(crate) when: Constraints,
}

impl Downloads {
    /// What every download of the list asks: checksum, rate limit, when it
    /// may run.
    fn finish(&self, mut b: TaskSpecBuilder) -> TaskSpecBuilder {
        if let Some(hex) = &self.sha256 {
            b = b.expected_sha256(hex.clone());
        }
        if let Some(r) = self.rate {
            b = b.max_rate(r);
        }
        if let Some(m) = self.max_size {
            b = b.max_size(m);
        }
        with_constraints(b.overwrite(self.overwrite), self.when)
    }
}

/// An upload to enqueue, checked (the file's path absolute, the form, the
/// method and the rate parsed): what `put` asks for, here or of the running
/// ferry.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Upload {
    /// The file, absolute.
    pub(crate) file: PathBuf,
    /// Where it goes.
    pub(crate) url: String,
    /// A form's file field: the file goes as a multipart/form-data form.
    pub(crate) form_file: Option<String>,
    /// The form's text fields, before the file.
    pub(crate) fields: Vec<(String, String)>,
    /// The method asked for (default PUT; POST for a form or a resumable
    /// upload).
    #[serde(with = "method")]
    pub(crate) method: Option<http::Method>,
    /// The file's content type.
    pub(crate) content_type: Option<String>,
    /// The resumable protocol asked for, if any.
    pub(crate) resumable: Option<ResumableProtocol>,
    /// The upload's rate limit, in bytes per second.
    pub(crate) rate: Option<u64>,
    /// When it may run.
    pub(crate) when: Constraints,
}

/// An [`Upload`]'s method as its name.
mod method {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        m: &Option<http::Method>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.as_ref().map(http::Method::as_str).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<http::Method>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|m| http::Method::from_bytes(m.as_bytes()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A task's constraints, set on its builder.
fn with_constraints(b: TaskSpecBuilder, c: Constraints) -> TaskSpecBuilder {
    b.discretionary(c.discretionary)
        .requires_charging(c.requires_charging)
        .requires_unmetered(c.requires_unmetered)
}

/// Where tasks go: the running session, or the state on disk.
pub(crate) enum Target<'a> {
    /// The session this process runs.
    Live(&'a Session),
    /// The state, while no process runs the session.
    Offline(&'a Offline),
}

impl Target<'_> {
    async fn tasks(&self) -> anyhow::Result<Vec<TaskRecord>> {
        Ok(match self {
            Target::Live(s) => s.tasks().await?,
            Target::Offline(o) => o.tasks().await?,
        })
    }

    async fn enqueue(&self, specs: Vec<TaskSpec>) -> anyhow::Result<Vec<TaskId>> {
        Ok(match self {
            Target::Live(s) => s
                .enqueue_many(specs, true)
                .await?
                .iter()
                .map(TaskHandle::id)
                .collect(),
            Target::Offline(o) => o.enqueue_many(specs).await?,
        })
    }
}

/// The session's records by key, for one lookup per URL instead of a walk
/// of every record.
struct ByKey<'r>(HashMap<&'r str, Vec<&'r TaskRecord>>);

impl<'r> ByKey<'r> {
    fn new(records: &'r [TaskRecord]) -> ByKey<'r> {
        let mut by_key: HashMap<&str, Vec<&TaskRecord>> = HashMap::new();
        for r in records {
            if let Some(k) = r.spec.key.as_deref() {
                by_key.entry(k).or_default().push(r);
            }
        }
        ByKey(by_key)
    }
}

/// What the session already holds under a request's key.
enum Earlier<'r> {
    /// A task that did what is asked: the request is answered with it, and
    /// nothing is enqueued.
    Done(&'r TaskRecord),
    /// A task not yet finished: the request is enqueued again under the
    /// same key (the session answers with this task).
    Unfinished(&'r TaskRecord),
    /// Neither: a new task.
    None,
}

/// The earlier task by key, as `ferry` decides it: among the tasks enqueued
/// under `key`, the first that `done` accepts as having done what is asked
/// now, else the first unfinished one.
fn earlier_task<'r>(
    by_key: &ByKey<'r>,
    key: &str,
    done: impl Fn(&TaskRecord) -> bool,
) -> Earlier<'r> {
    let mine = by_key.0.get(key).map_or(&[][..], Vec::as_slice);
    if let Some(r) = mine.iter().find(|r| done(r)) {
        return Earlier::Done(r);
    }
    // The session's rule for keys: enqueueing again returns the unfinished
    // task that holds the key (a finished one would be replaced).
    mine.iter()
        .find(|r| {
            matches!(
                scheduler::key_rule(Some(scheduler::key_holder(r))),
                KeyRule::Return(_)
            )
        })
        .map_or(Earlier::None, |r| Earlier::Unfinished(r))
}

/// Enqueues one download per URL: a safe name in the output directory, and
/// a key (URL and directory) so the same command again finds the same task.
/// Returns each task's id and name.
pub(crate) async fn add_downloads(
    target: Target<'_>,
    args: &Downloads,
) -> anyhow::Result<Vec<(TaskId, String)>> {
    // The client names the directory by its real, absolute path: one sent
    // relative (over the control socket) would be taken from wherever the
    // runner happens to run.
    if args.to.is_none() && !args.output.is_absolute() {
        anyhow::bail!(
            "the output directory {} is not an absolute path",
            args.output.display()
        );
    }
    let records = target.tasks().await?;
    if let Some(to) = &args.to {
        // Objects: `to` itself for one URL, else the URL's name after it.
        let mut keys = HashSet::new();
        let objects = args.urls.iter().map(|url| {
            let mut key = to.clone();
            if to.ends_with('/') {
                let name = names::file_name(url);
                key = format!("{to}{name}");
                let mut n = 1;
                while !keys.insert(key.clone()) {
                    key = format!("{to}{name}-{n}");
                    n += 1;
                }
            }
            (url.clone(), key)
        });
        let objects: Vec<(String, String)> = objects.collect();
        return add_objects(target, args, objects, &records).await;
    }
    let destination_of = |r: &TaskRecord| match &r.spec.kind {
        TaskKind::Download {
            destination: Destination::Path(p),
        } => Some(p.clone()),
        _ => None,
    };
    // Every unfinished download of the session owns its name, whichever
    // command queued it: a new one never takes it (the session would refuse).
    let mut taken: HashSet<PathBuf> = records
        .iter()
        .filter(|r| !r.state.is_terminal())
        .filter_map(destination_of)
        .collect();
    let mut tried = HashMap::new();
    let mut specs = Vec::new();
    let mut labels = Vec::new();
    let mut done = Vec::new();
    let by_key = ByKey::new(&records);
    let listed = if args.overwrite {
        None
    } else {
        names::listing(&args.output, args.urls.len())
    };
    for (i, url) in args.urls.iter().enumerate() {
        // A file `-o` names is replaced, as curl replaces it.
        let named = args.files.get(i);
        let key = match named {
            Some(file) => format!("get -o {} {url}", file.display()),
            None => format!("get {} {url}", args.output.display()),
        };
        // Finished before, and the file is still there: nothing to do.
        let finished = |r: &TaskRecord| {
            !args.overwrite
                && r.state.phase == Phase::Completed
                && destination_of(r).is_some_and(|p| crate::session::wrote(r.id, &p))
        };
        let unfinished = match earlier_task(&by_key, &key, finished) {
            Earlier::Done(r) => {
                if let Some(p) = destination_of(r) {
                    done.push((r.id, display_name(&p)));
                }
                continue;
            }
            Earlier::Unfinished(r) => Some(r),
            Earlier::None => None,
        };
        let dest = match (unfinished.and_then(destination_of), named) {
            (Some(p), _) => p,
            (None, Some(file)) => {
                if taken.contains(file) {
                    anyhow::bail!(
                        "-o {}: another unfinished download of the session writes there",
                        file.display()
                    );
                }
                file.clone()
            }
            (None, None) => names::unique(
                &args.output,
                &names::file_name(url),
                args.overwrite,
                listed.as_ref(),
                &taken,
                &mut tried,
            ),
        };
        taken.insert(dest.clone());
        let name = display_name(&dest);
        let b = TaskSpec::download(url, Destination::Path(dest))
            .key(key)
            .label(name.clone());
        let mut b = args.finish(b);
        if named.is_some() {
            b = b.overwrite(true);
        }
        specs.push(b.build().with_context(|| url.clone())?);
        labels.push(name);
    }
    // Every URL was checked above: a bad one anywhere has queued nothing.
    // Batches help only a running session (its first downloads start while
    // the rest are saved); the store's own enqueue reads every record per
    // call.
    let mut batch = match target {
        Target::Live(_) => FIRST_BATCH,
        Target::Offline(_) => usize::MAX,
    };
    let mut specs = specs.into_iter();
    let mut labels = labels.into_iter();
    while !specs.as_slice().is_empty() {
        let part: Vec<TaskSpec> = if specs.len() <= batch {
            // The rest in one: the list's own allocation, not a copy of it.
            std::mem::take(&mut specs).collect()
        } else {
            specs.by_ref().take(batch).collect()
        };
        let names: Vec<String> = labels.by_ref().take(part.len()).collect();
        let ids = target.enqueue(part).await?;
        done.extend(ids.into_iter().zip(names));
        batch = batch.saturating_mul(4).min(LAST_BATCH);
    }
    Ok(done)
}

/// A long URL list is enqueued into a running session in batches, each
/// four times the last, from this many: the first downloads begin after one
/// small durable save, not after the whole list is saved.
const FIRST_BATCH: usize = 16;

/// The largest batch: a durable save of this many records takes a few
/// milliseconds.
const LAST_BATCH: usize = 4096;

/// Enqueues downloads into objects, `(url, s3://BUCKET/KEY)`, except those
/// the same command already completed (unless `--overwrite`) or has under
/// way.
async fn add_objects(
    target: Target<'_>,
    args: &Downloads,
    objects: Vec<(String, String)>,
    records: &[TaskRecord],
) -> anyhow::Result<Vec<(TaskId, String)>> {
    let mut done = Vec::new();
    let mut specs = Vec::new();
    let mut labels = Vec::new();
    let by_key = ByKey::new(records);
    for (url, to) in objects {
        let key = format!("get {to} {url}");
        // Done before (and not to be done again), or under way: that task.
        let done_or_under_way = |r: &TaskRecord| {
            !r.state.is_terminal() || (r.state.phase == Phase::Completed && !args.overwrite)
        };
        if let Earlier::Done(r) = earlier_task(&by_key, &key, done_or_under_way) {
            done.push((r.id, to));
            continue;
        }
        let b = TaskSpec::download(&url, Destination::ObjectKey(to.clone()))
            .key(key)
            .label(&to);
        specs.push(args.finish(b).build().with_context(|| url.clone())?);
        labels.push(to);
    }
    let ids = target.enqueue(specs).await?;
    done.extend(ids.into_iter().zip(labels));
    Ok(done)
}

/// Enqueues the upload `args` describes, keyed by file and URL so the same
/// command again finds the same task; an upload that completed before from
/// the same, unchanged file is not sent again. Returns the task's id and
/// name.
pub(crate) async fn add_upload(
    target: Target<'_>,
    args: &Upload,
) -> anyhow::Result<Vec<(TaskId, String)>> {
    let key = format!("put {} {}", args.file.display(), args.url);
    let name = display_name(&args.file);
    let now = std::fs::metadata(&args.file)
        .map(|m| transfer_core::FileStamp::of(&m))
        .with_context(|| format!("upload source {}", args.file.display()))?;
    let records = target.tasks().await?;
    let sent_unchanged = |r: &TaskRecord| {
        r.state.phase == Phase::Completed
            && matches!(&r.spec.kind, TaskKind::Upload { stamp: Some(s), .. } if *s == now)
    };
    if let Earlier::Done(r) = earlier_task(&ByKey::new(&records), &key, sent_unchanged) {
        return Ok(vec![(r.id, name)]);
    }
    let (body, default_method) = match (&args.form_file, args.resumable) {
        (None, Some(protocol)) => (
            UploadBody::Resumable {
                content_type: args.content_type.clone(),
                protocol,
            },
            http::Method::POST,
        ),
        (Some(field), _) => (
            UploadBody::Multipart {
                field: field.clone(),
                file_name: name.clone(),
                content_type: args.content_type.clone(),
                fields: args.fields.clone(),
            },
            http::Method::POST,
        ),
        (None, None) => (
            UploadBody::Raw {
                content_type: args.content_type.clone(),
            },
            http::Method::PUT,
        ),
    };
    let method = args.method.clone().unwrap_or(default_method);
    let mut spec = TaskSpec::upload(&args.url, args.file.clone(), body)
        .method(method)
        .key(key)
        .label(name.clone());
    spec = with_constraints(spec, args.when);
    if let Some(r) = args.rate {
        spec = spec.max_rate(r);
    }
    let spec = spec.build().with_context(|| args.url.clone())?;
    let ids = target.enqueue(vec![spec]).await?;
    Ok(ids.into_iter().map(|id| (id, name.clone())).collect())
}

/// A path's file name, as a task's label.
fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
