//! `ferry ls`'s rows: one per task, typed, printed as a JSON object
//! (`--json`) or as a line of columns.

use std::fmt;

use serde::{Deserialize, Serialize};
use transfer_core::{Destination, Phase, TaskId, TaskKind, TaskRecord};

/// One row of `ferry ls`. Its fields are in the order of their names, as
/// `--json` has always written them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LsRow {
    /// Bytes received so far.
    pub(crate) bytes: u64,
    /// A download's file or object key (empty for an upload).
    pub(crate) destination: String,
    /// Where the task is, in words.
    pub(crate) detail: String,
    /// Download or upload.
    pub(crate) direction: Direction,
    /// Bytes received that a restart keeps.
    pub(crate) durable: u64,
    /// The task's id, as 16 hex digits.
    #[serde(with = "hex_id")]
    pub(crate) id: TaskId,
    /// The proxy its last request went through (`scheme://host:port`,
    /// never its credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proxy: Option<String>,
    /// The recent rate in bytes per second, while a runner moves the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rate: Option<u64>,
    /// An upload's file (empty for a download).
    pub(crate) source: String,
    /// The phase's one-word name.
    pub(crate) state: String,
    /// The payload's length, when known.
    pub(crate) total: Option<u64>,
    /// The task's URL.
    pub(crate) url: String,
}

/// Which way a task moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Direction {
    /// From the URL into a file or object.
    Download,
    /// From a file to the URL.
    Upload,
}

impl LsRow {
    /// The row for `r`. `live` says whether a runner holds the session
    /// (else a task left running was interrupted, and continues on the next
    /// run).
    pub(crate) fn of(r: &TaskRecord, live: bool) -> LsRow {
        let detail = match &r.state.phase {
            Phase::Running { .. } if !live => "interrupted: continues on the next run".to_owned(),
            // The attempt's number is not for this column.
            p @ Phase::Running { .. } => p.name().to_owned(),
            p => p.to_string(),
        };
        let (direction, destination, source) = match &r.spec.kind {
            TaskKind::Download {
                destination: Destination::Path(p),
            } => (Direction::Download, p.display().to_string(), String::new()),
            TaskKind::Download {
                destination: Destination::ObjectKey(k),
            } => (Direction::Download, k.clone(), String::new()),
            TaskKind::Upload { source, .. } => (
                Direction::Upload,
                String::new(),
                source.display().to_string(),
            ),
        };
        LsRow {
            bytes: r.state.bytes_received,
            destination,
            detail,
            direction,
            durable: r.state.resume.durable_offset,
            id: r.id,
            proxy: r.state.proxy.clone(),
            rate: None,
            source,
            state: r.state.phase.name().to_owned(),
            total: r.state.resume.total_length,
            url: r.spec.url().to_string(),
        }
    }
}

impl fmt::Display for LsRow {
    /// The row as `ferry ls` prints it without `--json`: id, detail,
    /// bytes/total, rate, the file (or upload) and the proxy it went
    /// through.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total.map_or_else(|| "?".to_owned(), |t| t.to_string());
        let rate = self.rate.map_or_else(String::new, |r| {
            format!("{}/s", transfer_core::format_rate(r))
        });
        let mut what = match self.direction {
            Direction::Upload => format!("{} -> {}", self.source, self.url),
            Direction::Download => self.destination.clone(),
        };
        if let Some(proxy) = &self.proxy {
            what.push_str(" via ");
            what.push_str(proxy);
        }
        write!(
            f,
            "{}  {:<40}  {:>21}  {:>10}  {}",
            self.id,
            self.detail,
            format!("{}/{total}", self.bytes),
            rate,
            what
        )
    }
}

/// A task id as its 16 hex digits.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};
    use transfer_core::TaskId;

    pub(super) fn serialize<S: Serializer>(id: &TaskId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TaskId, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rate: Option<u64>, total: Option<u64>) -> LsRow {
        LsRow {
            bytes: 10,
            destination: "/out/a.bin".to_owned(),
            detail: "running".to_owned(),
            direction: Direction::Download,
            durable: 5,
            id: TaskId::from_u64(0x1f),
            proxy: None,
            rate,
            source: String::new(),
            state: "running".to_owned(),
            total,
            url: "https://a.test/a.bin".to_owned(),
        }
    }

    /// `ls --json` writes what the untyped rows wrote: keys in name order,
    /// the id as hex, `total` null when unknown, and `rate` only when known.
    #[test]
    fn json_rows_keep_their_shape() -> anyhow::Result<()> {
        assert_eq!(
            serde_json::to_string(&row(None, None))?,
            r#"{"bytes":10,"destination":"/out/a.bin","detail":"running","direction":"download","durable":5,"id":"000000000000001f","source":"","state":"running","total":null,"url":"https://a.test/a.bin"}"#
        );
        let with_rate = row(Some(2048), Some(100));
        let line = serde_json::to_string(&with_rate)?;
        assert_eq!(
            line,
            r#"{"bytes":10,"destination":"/out/a.bin","detail":"running","direction":"download","durable":5,"id":"000000000000001f","rate":2048,"source":"","state":"running","total":100,"url":"https://a.test/a.bin"}"#
        );
        assert_eq!(serde_json::from_str::<LsRow>(&line)?, with_rate);
        Ok(())
    }

    #[test]
    fn text_rows_line_up() {
        assert_eq!(
            row(Some(2048), Some(100)).to_string(),
            format!(
                "000000000000001f  {:<40}  {:>21}  {:>10}  /out/a.bin",
                "running", "10/100", "2K/s"
            )
        );
        let mut up = row(None, None);
        up.direction = Direction::Upload;
        up.source = "/in/b".to_owned();
        assert!(up.to_string().ends_with("  /in/b -> https://a.test/a.bin"));
        assert!(up.to_string().contains("10/?"));
    }
}
