//! The probe loop (`evm shost probe-loop DIR LABEL=PATH…`) and the reading of what it wrote.
//!
//! The loop runs as an unlisted root process from the first second of boot (the systemd tier's
//! cold boots, the eci VM's init), and as PID 1 of the systemd tier's containers: every 150 ms one `GET /_ping` per socket ([`crate::probe::ping`]). It keeps
//! two files in DIR: `log`, one line per change of outcome (`<uptime> <label> <word>`, after a
//! `<uptime> start <boot id>` line when it starts), and `now`, the latest round
//! (`<uptime> <label>=<word> …`). Uptime is the kernel's, the same inside containers, so every
//! time in the tier is seconds since this boot began.

use std::{
    collections::BTreeMap, fs, io::Write as _, path::Path, process::ExitCode, thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{probe, sys};

pub fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("evm shost probe-loop: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let [dir, targets @ ..] = args else {
        bail!("usage: evm shost probe-loop DIR LABEL=PATH…");
    };
    let targets: Vec<(&str, &str)> = targets
        .iter()
        .map(|t| t.split_once('=').context("a target is LABEL=PATH"))
        .collect::<anyhow::Result<_>>()?;
    if targets.is_empty() {
        bail!("no LABEL=PATH to probe");
    }
    // As a container's PID 1 it would ignore the engine's SIGTERM and hold up every stop.
    sys::exit_on_sigterm();
    let dir = Path::new(dir);
    fs::create_dir_all(dir)?;
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))?;
    writeln!(log, "{:.2} start {}", uptime(), boot_id())?;
    let mut last: BTreeMap<&str, String> = BTreeMap::new();
    loop {
        let mut now = format!("{:.2}", uptime());
        for (label, path) in &targets {
            let word = probe::ping(Path::new(path));
            now.push_str(&format!(" {label}={word}"));
            if last.get(label) != Some(&word) {
                writeln!(log, "{:.2} {label} {word}", uptime())?;
                last.insert(label, word);
            }
        }
        let tmp = dir.join("now.tmp");
        fs::write(&tmp, format!("{now}\n"))?;
        fs::rename(&tmp, dir.join("now"))?;
        thread::sleep(Duration::from_millis(150));
    }
}

/// One change of outcome.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: f64,
    pub label: String,
    pub word: String,
}

/// What one probe loop wrote during this boot.
#[derive(Debug, Default)]
pub struct ProbeLog {
    /// When the loop (re)started in this boot: the container's starts.
    pub starts: Vec<f64>,
    pub changes: Vec<Change>,
}

impl ProbeLog {
    /// The lines of this boot (a container's log keeps earlier boots' too).
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(dir.join("log"))
            .with_context(|| format!("reading {}", dir.join("log").display()))?;
        let boot = boot_id();
        let mut out = Self::default();
        let mut this_boot = false;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(at), Some(second), Some(third)) = (
                words.next().and_then(|w| w.parse::<f64>().ok()),
                words.next(),
                words.next(),
            ) else {
                continue;
            };
            if second == "start" {
                this_boot = third == boot;
                if this_boot {
                    out.starts.push(at);
                }
            } else if this_boot {
                out.changes.push(Change {
                    at,
                    label: second.to_owned(),
                    word: third.to_owned(),
                });
            }
        }
        Ok(out)
    }

    /// Every outcome in force at some moment from `from` on: the one each label had at `from`,
    /// and every change after.
    pub fn outcomes_since(&self, from: f64) -> Vec<Change> {
        let mut at_from: BTreeMap<&str, &Change> = BTreeMap::new();
        let mut after = Vec::new();
        for change in &self.changes {
            if change.at <= from {
                at_from.insert(&change.label, change);
            } else {
                after.push(change.clone());
            }
        }
        let mut out: Vec<Change> = at_from.into_values().cloned().collect();
        out.extend(after);
        out
    }

    /// The first served outcome from `from` on, if any.
    pub fn served_since(&self, from: f64) -> Option<Change> {
        self.outcomes_since(from)
            .into_iter()
            .find(|c| c.word == "served")
    }

    /// The first change of `label` to something other than ENOENT: when the socket first
    /// answered at all, and how.
    pub fn first_answer(&self, label: &str) -> Option<&Change> {
        self.changes
            .iter()
            .find(|c| c.label == label && c.word != "ENOENT")
    }

    /// The first change of `label` to `word` from `from` on.
    pub fn first(&self, label: &str, word: &str, from: f64) -> Option<&Change> {
        self.changes
            .iter()
            .find(|c| c.at >= from && c.label == label && c.word == word)
    }
}

/// The latest round of a loop: (uptime, label=word…), if it wrote one.
pub fn latest(dir: &Path) -> Option<(f64, String)> {
    let text = fs::read_to_string(dir.join("now")).ok()?;
    let (at, rest) = text.trim().split_once(' ')?;
    Some((at.parse().ok()?, rest.to_owned()))
}
