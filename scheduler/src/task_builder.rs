//! Builders for the tasks a session runs: [`Session::download`] and
//! [`Session::upload`] describe a task step by step; `enqueue` validates it,
//! records it durably and starts it.

use std::path::PathBuf;

use http::Method;
use transfer_core::{Destination, ResumableProtocol, TaskSpec, TaskSpecBuilder, UploadBody};

use crate::{Session, SessionError, TaskHandle};

type Adjust = Box<dyn FnOnce(TaskSpecBuilder) -> TaskSpecBuilder + Send>;

/// Describes a task of kind `K` ([`DownloadBuilder`], [`UploadBuilder`]).
#[must_use = "a builder does nothing until enqueue() is called"]
pub struct TaskBuilder<K> {
    session: Session,
    kind: K,
    adjust: Vec<Adjust>,
    start: bool,
}

/// Describes a download; see [`Session::download`].
pub type DownloadBuilder = TaskBuilder<ToPath>;

/// Describes an upload; see [`Session::upload`].
pub type UploadBuilder = TaskBuilder<FromFile>;

/// What a download needs: the URL, and the path its body goes to.
#[derive(Debug)]
pub struct ToPath {
    url: String,
    to: Option<PathBuf>,
}

impl ToPath {
    pub(crate) fn new(url: &str) -> ToPath {
        ToPath {
            url: url.to_owned(),
            to: None,
        }
    }
}

/// What an upload needs: the file, the URL, and how the body is framed.
#[derive(Debug)]
pub struct FromFile {
    source: PathBuf,
    url: Option<String>,
    method: Option<Method>,
    content_type: Option<String>,
    /// Multipart: the file's field name and file name.
    form: Option<(String, String)>,
    fields: Vec<(String, String)>,
    resumable: Option<ResumableProtocol>,
}

impl FromFile {
    pub(crate) fn new(source: PathBuf) -> FromFile {
        FromFile {
            source,
            url: None,
            method: None,
            content_type: None,
            form: None,
            fields: Vec::new(),
            resumable: None,
        }
    }
}

impl<K> TaskBuilder<K> {
    pub(crate) fn new(session: Session, kind: K) -> Self {
        TaskBuilder {
            session,
            kind,
            adjust: Vec::new(),
            start: true,
        }
    }

    /// The task's own rate limit in bytes per second.
    pub fn max_rate(self, bytes_per_sec: u64) -> Self {
        self.with(move |b| b.max_rate(bytes_per_sec))
    }

    /// An idempotency key: enqueueing again with the same key returns the
    /// unfinished task instead of adding one.
    pub fn key(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.with(move |b| b.key(key))
    }

    /// Free text shown in listings.
    pub fn label(self, label: impl Into<String>) -> Self {
        let label = label.into();
        self.with(move |b| b.label(label))
    }

    /// Priority from 0.0 to 1.0 (default 0.5).
    pub fn priority(self, p: f32) -> Self {
        self.with(move |b| b.priority(p))
    }

    /// A request header.
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        self.with(move |b| b.header(name, value))
    }

    /// Enqueue without starting ([`TaskHandle::resume`] starts it).
    pub fn suspended(mut self) -> Self {
        self.start = false;
        self
    }

    fn with(mut self, f: impl FnOnce(TaskSpecBuilder) -> TaskSpecBuilder + Send + 'static) -> Self {
        self.adjust.push(Box::new(f));
        self
    }

    async fn finish(self, mut b: TaskSpecBuilder) -> Result<TaskHandle, SessionError> {
        for f in self.adjust {
            b = f(b);
        }
        let spec = b.build()?;
        self.session.enqueue(spec, self.start).await
    }
}

impl TaskBuilder<ToPath> {
    /// The destination path, as the payload store resolves it (store-fs:
    /// relative to its root, never outside it).
    pub fn to(mut self, path: impl Into<PathBuf>) -> Self {
        self.kind.to = Some(path.into());
        self
    }

    /// The expected SHA-256 of the whole payload (64 hex digits).
    pub fn sha256(self, hex: impl Into<String>) -> Self {
        let hex = hex.into();
        self.with(move |b| b.expected_sha256(hex))
    }

    /// The expected size; a larger body fails the task.
    pub fn expected_size(self, bytes: u64) -> Self {
        self.with(move |b| b.expected_size(bytes))
    }

    /// Validates the task, records it durably, and starts it (unless
    /// [`suspended`](Self::suspended)).
    pub async fn enqueue(mut self) -> Result<TaskHandle, SessionError> {
        let to = self
            .kind
            .to
            .take()
            .ok_or(SessionError::Missing("a destination (`to`)"))?;
        let b = TaskSpec::download(&self.kind.url, Destination::Path(to));
        self.finish(b).await
    }
}

impl TaskBuilder<FromFile> {
    /// The URL to send the file to.
    pub fn to(mut self, url: &str) -> Self {
        self.kind.url = Some(url.to_owned());
        self
    }

    /// The method: PUT (the default), POST or PATCH.
    pub fn method(mut self, method: Method) -> Self {
        self.kind.method = Some(method);
        self
    }

    /// The file's content type (default `application/octet-stream`): the
    /// request's `Content-Type`, or the file part's in a form.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.kind.content_type = Some(content_type.into());
        self
    }

    /// Sends a `multipart/form-data` body (a POST unless another method is
    /// set) with the file as the part named `field`, announced as
    /// `file_name`.
    pub fn form(mut self, field: impl Into<String>, file_name: impl Into<String>) -> Self {
        self.kind.form = Some((field.into(), file_name.into()));
        self
    }

    /// A text field sent before the file in a form (implies
    /// [`form`](Self::form), with the field `file` and the source's name).
    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.kind.fields.push((name.into(), value.into()));
        self
    }

    /// Sends the file resumably with the IETF draft ("Resumable Uploads
    /// for HTTP", interop version 9): an interrupted upload continues from
    /// the server's offset. A server that does not offer it gets a plain
    /// upload. Not with a form.
    pub fn resumable(mut self) -> Self {
        self.kind.resumable = Some(ResumableProtocol::IetfDraft);
        self
    }

    /// Sends the file resumably with tus 1.0 (the URL is the server's
    /// creation endpoint, e.g. `…/files/`). Not with a form.
    pub fn tus(mut self) -> Self {
        self.kind.resumable = Some(ResumableProtocol::Tus);
        self
    }

    /// Validates the task, checks and stamps the source file, records the
    /// task durably, and starts it (unless [`suspended`](Self::suspended)).
    pub async fn enqueue(mut self) -> Result<TaskHandle, SessionError> {
        let url = self
            .kind
            .url
            .take()
            .ok_or(SessionError::Missing("a URL to upload to (`to`)"))?;
        let kind = &mut self.kind;
        let form = kind.form.take().or_else(|| {
            (!kind.fields.is_empty()).then(|| {
                let name = kind
                    .source
                    .file_name()
                    .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned());
                ("file".to_owned(), name)
            })
        });
        if kind.resumable.is_some() && form.is_some() {
            return Err(SessionError::Conflict(
                "a resumable upload sends the file alone, not a form",
            ));
        }
        let (body, default_method) = match form {
            None if kind.resumable.is_some() => (
                UploadBody::Resumable {
                    content_type: kind.content_type.take(),
                    protocol: kind.resumable.unwrap_or_default(),
                },
                Method::POST,
            ),
            Some((field, file_name)) => (
                UploadBody::Multipart {
                    field,
                    file_name,
                    content_type: kind.content_type.take(),
                    fields: std::mem::take(&mut kind.fields),
                },
                Method::POST,
            ),
            None => (
                UploadBody::Raw {
                    content_type: kind.content_type.take(),
                },
                Method::PUT,
            ),
        };
        let method = kind.method.take().unwrap_or(default_method);
        let b = TaskSpec::upload(&url, kind.source.clone(), body).method(method);
        self.finish(b).await
    }
}

impl Session {
    /// Starts describing a download of `url`; finish with
    /// [`DownloadBuilder::to`] and [`DownloadBuilder::enqueue`].
    pub fn download(&self, url: &str) -> Result<DownloadBuilder, SessionError> {
        transfer_core::Url::parse(url)?;
        Ok(TaskBuilder::new(self.clone(), ToPath::new(url)))
    }

    /// Starts describing an upload of the file at `source`; finish with
    /// [`UploadBuilder::to`] and [`UploadBuilder::enqueue`]. The file is
    /// checked at enqueue (it must exist and be readable) and its size and
    /// modification time recorded: an attempt that finds it changed fails.
    pub fn upload(&self, source: impl Into<PathBuf>) -> UploadBuilder {
        TaskBuilder::new(self.clone(), FromFile::new(source.into()))
    }
}
