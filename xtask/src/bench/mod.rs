//! `cargo xtask bench`: performance as benchmarks, never as timed assertions in tests.
//!
//! Each section measures figures against a baseline taken in the same run (the same work without
//! the agent, or through another proxy), so the ratio means something even on a slow or busy
//! machine. All figures end up in one markdown table and in `target/bench/summary.json`:
//! `{"<name>": {"value": …, "baseline": …, "ratio": …, "unit": "…"}}`.
//!
//! A section is one file implementing [`Section`] plus one line in [`SECTIONS`].

mod evm;
mod image_policy;
mod kernel;
mod sidecar;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};

/// Every section, in the order a full run takes them.
const SECTIONS: &[&dyn Section] = &[
    &kernel::KernelSection,
    &sidecar::SidecarSection,
    &sidecar::CallersSection,
    &sidecar::StreamsSection,
    &image_policy::ImagePolicySection,
    &evm::EvmSection,
];

#[derive(clap::Args)]
#[group(id = "bench")]
pub struct Options {
    /// Short rounds: every section together stays under 5 minutes (builds aside).
    #[arg(long)]
    pub quick: bool,
    /// Only these sections (repeatable; the possible values list them all).
    #[arg(long, value_parser = section_names())]
    pub section: Vec<String>,
    /// Kernel section: only kernels whose series label (e.g. 6.1) matches.
    #[arg(long)]
    pub kernel: Vec<String>,
    /// Kernel section: QEMU accelerator (see `cargo xtask vm-test --help`); `icount` is TCG
    /// whose guest clock counts guest instructions (one ns each), so the figures are
    /// instructions per operation, which host load does not change.
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm", "icount"])]
    pub accel: String,
}

fn section_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(SECTIONS.iter().map(|s| s.name()))
}

/// What a section gets to work with.
pub struct Context<'a> {
    pub root: &'a Path,
    pub quick: bool,
    /// Kernel series to boot (empty: all).
    pub kernels: &'a [String],
    pub accel: &'a str,
}

pub trait Section: Sync {
    /// The name `--section` selects it by.
    fn name(&self) -> &'static str;
    fn run(&self, cx: &Context) -> anyhow::Result<Report>;
}

/// A section's figures, and the notes that say how to read them.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

/// One measured figure and its baseline from the same run.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub baseline: f64,
    pub unit: &'static str,
    pub target: Option<Target>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, baseline: f64, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value,
            baseline,
            unit,
            target: None,
        }
    }

    pub fn with_target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// value / baseline, when both are finite and the baseline is not zero.
    pub fn ratio(&self) -> Option<f64> {
        (self.value.is_finite() && self.baseline.is_finite() && self.baseline != 0.0)
            .then(|| self.value / self.baseline)
    }

    /// Whether the target is met; `None` without a target or without a ratio.
    pub fn met(&self) -> Option<bool> {
        let target = self.target.as_ref()?;
        let ratio = self.ratio()?;
        Some(match target.bound {
            Bound::AtMost(limit) => ratio <= limit,
            Bound::AtLeast(limit) => ratio >= limit,
            Bound::AddedAtMost(limit) => self.value - self.baseline <= limit,
        })
    }
}

/// A goal on a figure's ratio, with the words the table prints for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub bound: Bound,
    pub label: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// value / baseline at most this.
    AtMost(f64),
    /// value / baseline at least this.
    AtLeast(f64),
    /// value − baseline at most this, in the figure's unit (a latency the agent adds).
    AddedAtMost(f64),
}

impl Target {
    pub const fn at_most(ratio: f64, label: &'static str) -> Self {
        Self {
            bound: Bound::AtMost(ratio),
            label,
        }
    }

    pub const fn at_least(ratio: f64, label: &'static str) -> Self {
        Self {
            bound: Bound::AtLeast(ratio),
            label,
        }
    }

    pub const fn added_at_most(limit: f64, label: &'static str) -> Self {
        Self {
            bound: Bound::AddedAtMost(limit),
            label,
        }
    }
}

/// The median of `samples` (mean of the middle two for an even count); `None` when empty or
/// when a sample is not a number.
pub fn median(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Nearest-rank percentile (`p` in 0..=100): the smallest sample at or below which at least p%
/// of the samples lie; `None` when empty, when a sample is not a number or `p` is out of range.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let selected: Vec<&dyn Section> = SECTIONS
        .iter()
        .copied()
        .filter(|s| opts.section.is_empty() || opts.section.iter().any(|n| n == s.name()))
        .collect();
    let cx = Context {
        root,
        quick: opts.quick,
        kernels: &opts.kernel,
        accel: &opts.accel,
    };
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for section in selected {
        println!("xtask bench: section {}", section.name());
        let started = Instant::now();
        match section.run(&cx) {
            Ok(report) => {
                println!(
                    "xtask bench: section {} done in {:.0} s",
                    section.name(),
                    started.elapsed().as_secs_f64()
                );
                reports.push((section.name(), report));
            }
            Err(err) => {
                println!("xtask bench: section {} FAILED: {err:#}", section.name());
                failed.push(section.name());
            }
        }
    }
    println!();
    print!("{}", table(&reports));
    let summary = summary_json(reports.iter().flat_map(|(_, r)| &r.figures));
    let path = root.join("target/bench/summary.json");
    fs::create_dir_all(path.parent().unwrap_or(root))?;
    fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nxtask bench: figures written to {}", path.display());
    if !failed.is_empty() {
        bail!("bench sections failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The markdown table of every figure (with its target, if it has one) and the sections' notes.
fn table(reports: &[(&str, Report)]) -> String {
    let mut out = String::new();
    out.push_str("| figure | value | baseline | ratio | unit | target |\n");
    out.push_str("|---|---:|---:|---:|---|---|\n");
    for (_, report) in reports {
        for f in &report.figures {
            let ratio = f.ratio().map_or("–".to_owned(), |r| format!("{r:.3}"));
            let target = match (&f.target, f.met()) {
                (None, _) => String::new(),
                (Some(t), Some(true)) => format!("{} ✓", t.label),
                (Some(t), Some(false)) => format!("{} ✗ **missed**", t.label),
                (Some(t), None) => format!("{} (no ratio)", t.label),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {ratio} | {} | {target} |\n",
                f.name,
                number(f.value),
                number(f.baseline),
                f.unit
            ));
        }
    }
    for (name, report) in reports {
        for note in &report.notes {
            out.push_str(&format!("\n- {name}: {note}"));
        }
    }
    if reports.iter().any(|(_, r)| !r.notes.is_empty()) {
        out.push('\n');
    }
    out
}

/// Enough digits to compare, few enough to read.
fn number(x: f64) -> String {
    if !x.is_finite() {
        "–".to_owned()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// `{"<name>": {"value", "baseline", "ratio", "unit"}}`; a missing ratio is `null`.
fn summary_json<'a>(figures: impl IntoIterator<Item = &'a Figure>) -> serde_json::Value {
    let finite = |x: f64| x.is_finite().then_some(x);
    let map: BTreeMap<&str, serde_json::Value> = figures
        .into_iter()
        .map(|f| {
            (
                f.name.as_str(),
                serde_json::json!({
                    "value": finite(f.value),
                    "baseline": finite(f.baseline),
                    "ratio": f.ratio(),
                    "unit": f.unit,
                }),
            )
        })
        .collect();
    serde_json::to_value(map).unwrap_or_default()
}

/// A scratch directory for one section's run, removed when dropped. Under /tmp so that socket
/// paths stay short (108 bytes) wherever the checkout lives.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(section: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("eci-bench-{section}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        // Twenty samples: p99 is the largest.
        let twenty: Vec<f64> = (0..20).map(f64::from).collect();
        assert_eq!(percentile(&twenty, 99.0), Some(19.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0, f64::NAN], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
    }

    #[test]
    fn added_latency_targets_compare_differences() {
        let target = Target::added_at_most(5.0, "≤ 5 ms added");
        let f = Figure::new("x", 14.0, 10.0, "ms").with_target(target.clone());
        assert_eq!(f.met(), Some(true));
        let f = Figure::new("x", 15.5, 10.0, "ms").with_target(target);
        assert_eq!(f.met(), Some(false));
    }

    #[test]
    fn ratio_and_targets() {
        let f = Figure::new("x", 101.0, 100.0, "ns/op")
            .with_target(Target::at_most(1.01, "under 1% overhead"));
        assert!((f.ratio().unwrap() - 1.01).abs() < 1e-12);
        assert_eq!(f.met(), Some(true));
        let f = Figure::new("x", 102.0, 100.0, "ns/op")
            .with_target(Target::at_most(1.01, "under 1% overhead"));
        assert_eq!(f.met(), Some(false));
        let f = Figure::new("x", 70.0, 100.0, "req/s")
            .with_target(Target::at_least(0.75, "≥ 75% of direct"));
        assert_eq!(f.met(), Some(false));
        assert_eq!(Figure::new("x", 1.0, 0.0, "u").ratio(), None);
        assert_eq!(
            Figure::new("x", 1.0, 0.0, "u")
                .with_target(Target::at_least(1.0, "t"))
                .met(),
            None
        );
        assert_eq!(Figure::new("x", 1.0, 2.0, "u").met(), None);
    }

    #[test]
    fn summary_has_exactly_the_documented_shape() {
        let figures = [
            Figure::new("kernel.6.1.open_deep", 1010.0, 1000.0, "ns/op"),
            Figure::new("broken", 1.0, 0.0, "req/s"),
        ];
        let json = summary_json(&figures);
        let open = &json["kernel.6.1.open_deep"];
        assert_eq!(open["value"], 1010.0);
        assert_eq!(open["baseline"], 1000.0);
        assert!((open["ratio"].as_f64().unwrap() - 1.01).abs() < 1e-12);
        assert_eq!(open["unit"], "ns/op");
        assert_eq!(open.as_object().unwrap().len(), 4);
        assert!(json["broken"]["ratio"].is_null());
        assert_eq!(json.as_object().unwrap().len(), 2);
    }

    #[test]
    fn table_marks_missed_targets_and_lists_notes() {
        let report = Report {
            figures: vec![
                Figure::new("a", 2.0, 1.0, "ns/op").with_target(Target::at_most(1.01, "<1%")),
                Figure::new("b", 1.0, 1.0, "ns/op").with_target(Target::at_most(1.01, "<1%")),
                Figure::new("c", 1234.4, 0.0, "req/s"),
            ],
            notes: vec!["how to read it".to_owned()],
        };
        let text = table(&[("s", report)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "| figure | value | baseline | ratio | unit | target |"
        );
        assert_eq!(
            lines[2],
            "| a | 2.000 | 1.000 | 2.000 | ns/op | <1% ✗ **missed** |"
        );
        assert_eq!(lines[3], "| b | 1.000 | 1.000 | 1.000 | ns/op | <1% ✓ |");
        assert_eq!(lines[4], "| c | 1234 | 0.000 | – | req/s |  |");
        assert!(text.contains("- s: how to read it"));
    }

    #[test]
    fn every_section_has_a_distinct_name() {
        let mut names: Vec<&str> = SECTIONS.iter().map(|s| s.name()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
