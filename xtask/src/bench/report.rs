//! The bench's results: medians and ratios, written as JSON (for tools), a
//! Markdown table (for reading) and an SVG chart (for looking at).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::measure::{Sample, median};

/// What a scenario's throughput counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum Unit {
    /// This many bytes moved: MB/s (10^6 bytes).
    MegabytesPerSecond(u64),
    /// This many files fetched: files/s.
    FilesPerSecond(u64),
}

impl Unit {
    /// Throughput for a run that took `wall_s`.
    pub(crate) fn rate(self, wall_s: f64) -> f64 {
        match self {
            Unit::MegabytesPerSecond(b) => b as f64 / 1e6 / wall_s,
            Unit::FilesPerSecond(n) => n as f64 / wall_s,
        }
    }

    /// `rate` with its unit.
    pub(crate) fn format(self, rate: f64) -> String {
        format!("{rate:.0} {}", self.name())
    }

    fn name(self) -> &'static str {
        match self {
            Unit::MegabytesPerSecond(_) => "MB/s",
            Unit::FilesPerSecond(_) => "files/s",
        }
    }

    /// GiB moved, for CPU seconds per GiB.
    fn gib(self, expect_bytes: u64) -> f64 {
        match self {
            Unit::MegabytesPerSecond(b) => b as f64 / f64::from(1u32 << 30),
            Unit::FilesPerSecond(_) => expect_bytes as f64 / f64::from(1u32 << 30),
        }
    }
}

/// One tool's runs in one scenario, and their medians (over the runs that
/// succeeded).
#[derive(Debug, Serialize)]
pub(crate) struct ToolReport {
    pub(crate) name: String,
    pub(crate) samples: Vec<Sample>,
    pub(crate) ok_runs: usize,
    pub(crate) median_wall_s: f64,
    pub(crate) throughput: f64,
    pub(crate) median_cpu_s: f64,
    pub(crate) median_peak_rss_mib: f64,
}

impl ToolReport {
    pub(crate) fn new(name: &str, unit: Unit, samples: Vec<Sample>) -> ToolReport {
        let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
        let mut wall: Vec<f64> = ok.iter().map(|s| s.wall_s).collect();
        let mut cpu: Vec<f64> = ok.iter().map(|s| s.cpu_s).collect();
        let mut rss: Vec<f64> = ok.iter().map(|s| s.peak_rss_kib as f64 / 1024.0).collect();
        let median_wall_s = median(&mut wall);
        ToolReport {
            name: name.to_owned(),
            ok_runs: ok.len(),
            throughput: unit.rate(median_wall_s),
            median_wall_s,
            median_cpu_s: median(&mut cpu),
            median_peak_rss_mib: median(&mut rss),
            samples,
        }
    }
}

/// One scenario: every tool, and Ferry's ratios to each peer.
#[derive(Debug, Serialize)]
pub(crate) struct ScenarioReport {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) unit: Unit,
    pub(crate) tools: Vec<ToolReport>,
    /// Ferry's throughput over each peer's (above 1: Ferry is faster).
    pub(crate) ferry_over: Vec<(String, f64)>,
}

impl ScenarioReport {
    pub(crate) fn new(id: &str, title: &str, unit: Unit, tools: Vec<ToolReport>) -> ScenarioReport {
        let ferry = tools.first().map_or(f64::NAN, |t| t.throughput);
        let ferry_over = tools
            .iter()
            .skip(1)
            .map(|t| (t.name.clone(), ferry / t.throughput))
            .collect();
        ScenarioReport {
            id: id.to_owned(),
            title: title.to_owned(),
            unit,
            tools,
            ferry_over,
        }
    }
}

/// Scenario 4: a large queue.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct QueueReport {
    /// Tasks queued.
    pub(crate) tasks: u64,
    /// Seconds to enqueue them durably (one `enqueue_many`).
    pub(crate) enqueue_s: f64,
    /// Seconds for a new session to attach to them.
    pub(crate) attach_s: f64,
    /// Resident bytes per queued task in the session holding them.
    pub(crate) rss_per_task_bytes: u64,
    /// `ferry add -i LIST` of as many URLs, one process.
    #[serde(default)]
    pub(crate) ferry_add: Option<Sample>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) runs: usize,
    pub(crate) machine: String,
    pub(crate) scenarios: Vec<ScenarioReport>,
    pub(crate) queue: Option<QueueReport>,
    pub(crate) skipped: Vec<(String, String)>,
    /// Figures that are not a tool-beside-tool table (the cost of a QUIC
    /// migration), one line each.
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(runs: usize) -> Report {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Report {
            runs,
            machine: format!("{cores} cores, Linux {}", kernel.trim()),
            scenarios: Vec::new(),
            queue: None,
            skipped: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn skip(&mut self, what: &str, why: &str) {
        self.skipped.push((what.to_owned(), why.to_owned()));
    }

    /// Writes `report.json`, `report.md` and `report.svg` into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        self.chart(&dir.join("report.svg"))
            .context("drawing report.svg")?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Ferry bench\n\n{}; medians of {} runs; clients write to tmpfs unless the scenario says disk.\n",
            self.machine, self.runs
        );
        for s in &self.scenarios {
            let _ = writeln!(md, "## Scenario {}: {}\n", s.id, s.title);
            let _ = writeln!(
                md,
                "| tool | runs ok | wall s | {} | CPU s | CPU s/GiB | peak RSS MiB | Ferry ÷ tool |",
                s.unit.name()
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
            let bytes = match s.unit {
                Unit::MegabytesPerSecond(b) => b,
                Unit::FilesPerSecond(_) => 0,
            };
            for (i, t) in s.tools.iter().enumerate() {
                let ratio = if i == 0 {
                    "—".to_owned()
                } else {
                    s.ferry_over
                        .get(i - 1)
                        .map_or("—".to_owned(), |(_, r)| format!("{r:.2}×"))
                };
                let per_gib = if bytes > 0 {
                    format!("{:.2}", t.median_cpu_s / s.unit.gib(bytes))
                } else {
                    "—".to_owned()
                };
                let _ = writeln!(
                    md,
                    "| {} | {}/{} | {:.3} | {:.0} | {:.2} | {} | {:.1} | {} |",
                    t.name,
                    t.ok_runs,
                    t.samples.len(),
                    t.median_wall_s,
                    t.throughput,
                    t.median_cpu_s,
                    per_gib,
                    t.median_peak_rss_mib,
                    ratio
                );
            }
            for (t, e) in s.tools.iter().flat_map(|t| {
                t.samples
                    .iter()
                    .filter_map(move |x| x.error.as_ref().map(|e| (t, e)))
            }) {
                let _ = writeln!(md, "\n{} failed a run: {e}", t.name);
            }
            md.push('\n');
        }
        if let Some(q) = &self.queue {
            let _ = writeln!(md, "## Scenario 4: {} queued tasks\n", q.tasks);
            let _ = writeln!(md, "| measure | value |\n|---|---|");
            let _ = writeln!(md, "| durable enqueue (one call) | {:.2} s |", q.enqueue_s);
            let _ = writeln!(md, "| attach (new session) | {:.2} s |", q.attach_s);
            let _ = writeln!(
                md,
                "| RSS per queued task | {} bytes |",
                q.rss_per_task_bytes
            );
            if let Some(a) = &q.ferry_add {
                let _ = writeln!(
                    md,
                    "| `ferry add -i LIST` (process) | {:.2} s, CPU {:.2} s, peak RSS {:.1} MiB |",
                    a.wall_s,
                    a.cpu_s,
                    a.peak_rss_kib as f64 / 1024.0
                );
            }
            md.push('\n');
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "## Also measured\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
            md.push('\n');
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(md, "## Skipped\n");
            for (what, why) in &self.skipped {
                let _ = writeln!(md, "- {what}: {why}");
            }
        }
        md
    }

    /// One panel per scenario: a bar per tool, Ferry's first and coloured.
    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        let panels = self.scenarios.len().max(1);
        let height = 60
            + 40 * self
                .scenarios
                .iter()
                .map(|s| s.tools.len() + 2)
                .sum::<usize>();
        let root = SVGBackend::new(path, (900, height as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, body) = root.split_vertically(50);
        top.draw(&Text::new(
            format!(
                "Ferry vs peers — {} (median of {} runs)",
                self.machine, self.runs
            ),
            (10, 15),
            ("sans-serif", 20).into_font(),
        ))?;
        let sizes: Vec<u32> = self
            .scenarios
            .iter()
            .map(|s| (40 * (s.tools.len() + 2)) as u32)
            .collect();
        let mut rest = body;
        for (i, s) in self.scenarios.iter().enumerate() {
            let (area, below) = if i + 1 < panels {
                rest.split_vertically(sizes[i])
            } else {
                (rest.clone(), rest.clone())
            };
            rest = below;
            let names: Vec<String> = s.tools.iter().map(|t| t.name.clone()).collect();
            let max = s
                .tools
                .iter()
                .map(|t| t.throughput)
                .filter(|v| v.is_finite())
                .fold(1.0_f64, f64::max);
            let mut chart = ChartBuilder::on(&area)
                .caption(
                    format!("{}: {} ({})", s.id, s.title, s.unit.name()),
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(22)
                .y_label_area_size(190)
                .build_cartesian_2d(0.0..max * 1.25, (0..names.len()).into_segmented())?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(names.len())
                .y_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .draw()?;
            chart.draw_series(s.tools.iter().enumerate().map(|(i, t)| {
                let color = if i == 0 {
                    RGBColor(0, 110, 190)
                } else {
                    RGBColor(150, 150, 150)
                };
                let value = if t.throughput.is_finite() {
                    t.throughput
                } else {
                    0.0
                };
                let mut bar = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (value, SegmentValue::Exact(i + 1)),
                    ],
                    color.filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))?;
            chart.draw_series(s.tools.iter().enumerate().map(|(i, t)| {
                let label = if t.throughput.is_finite() {
                    format!(" {:.0}", t.throughput)
                } else {
                    " failed".to_owned()
                };
                let value = if t.throughput.is_finite() {
                    t.throughput
                } else {
                    0.0
                };
                Text::new(
                    label,
                    (value, SegmentValue::CenterOf(i)),
                    ("sans-serif", 13).into_font(),
                )
            }))?;
        }
        root.present()?;
        Ok(())
    }
}
