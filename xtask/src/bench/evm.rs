//! eci VM section: how long the eci VM takes to be useful, and what the sidecar adds to a
//! `docker run --rm` inside it. One boot in bench mode (`evm bench` in the guest, see
//! tests/src/bin/evm/bench.rs): the init's marks give boot to ready (init, engine ready, agent
//! ready, in host seconds since QEMU started), then the guest times the boot's first `docker run`
//! and RUNS rounds of one run through the sidecar and one straight to the engine socket, the
//! order alternating per round. Figures are the median and p90 through the sidecar against the
//! same straight to the engine, from the same boot. A full run also boots the end-to-end suite
//! once and reports its time. A boot that fails before the guest's workload starts is retried
//! once, as `cargo xtask vm-e2e` does, and the notes say so.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail};

use super::{Context, Figure, Report, Section, median, percentile};
use crate::{
    build,
    evm::{
        attempt::{self, Attempt, Console, Failure, Next},
        boot::{Accel, Mode, Share, Vm},
        e2e, image,
    },
    setup,
};

pub struct EvmSection;

/// The init's marks reported as boot figures: (mark label, figure name).
const BOOT_MARKS: &[(&str, &str)] = &[
    ("init", "evm.boot.init"),
    ("engine ready", "evm.boot.engine_ready"),
    ("agent ready", "evm.boot.agent_ready"),
];

impl Section for EvmSection {
    fn name(&self) -> &'static str {
        "evm"
    }

    fn run(&self, cx: &Context) -> anyhow::Result<Report> {
        let (runs, limit) = if cx.quick {
            (5, Duration::from_secs(600))
        } else {
            (20, Duration::from_secs(900))
        };
        let accel = match cx.accel {
            "kvm" => Accel::Kvm,
            _ => Accel::TcgSingle,
        };
        let kernel = setup::eci_vm_kernel(cx.root)?;
        let image = image::ensure(cx.root, &kernel)?;
        let bins = build::guest(cx.root)?;
        let settings = cx.root.join("examples/admin-settings.json");
        let (outcome, retried) = attempt::with_one_retry("bench", |n| {
            println!(
                "xtask bench: eci VM ({}, {accel:?}), {runs} rounds{}",
                kernel.package,
                if n > 1 { ", second boot" } else { "" }
            );
            let share = Share::new(cx.root, &bins, &settings)?;
            let vm = Vm::start(&image, &share, Mode::Bench { runs }, accel)?;
            Ok(watch(&vm, limit))
        })?;
        if let Some(failure) = &outcome.failure {
            bail!("the eci VM bench failed: {failure}");
        }
        let mut report = Report {
            figures: figures(&outcome)?,
            notes: Vec::new(),
        };
        report.notes.push(format!(
            "evm.boot.*: host seconds from QEMU's start to the init's mark ({accel:?}); \
             evm.first_run: the boot's first `docker run --rm` (through the sidecar); \
             evm.run_rm.*: `docker run --rm` of a busybox image, value through the sidecar, \
             baseline straight to the engine socket (from the agent's cgroup), {runs} of each \
             in one boot, interleaved"
        ));
        if let Some(why) = retried {
            report.notes.push(format!(
                "RETRIED: the first boot failed before the bench started ({why}); these figures \
                 are the second boot's"
            ));
        }
        if !cx.quick {
            suite(cx.root, accel, &mut report)?;
        }
        Ok(report)
    }
}

/// The end-to-end suite's time (a full run only: it takes a few minutes).
fn suite(root: &Path, accel: Accel, report: &mut Report) -> anyhow::Result<()> {
    let (outcome, retried) = e2e::boot(root, accel, Duration::from_secs(900), false)?;
    if let Err(failure) = &outcome.verdict {
        bail!("the end-to-end suite failed: {failure}");
    }
    let suite = outcome.suite_seconds.context("the suite printed no time")?;
    report
        .figures
        .push(Figure::new("evm.e2e.suite", suite, f64::NAN, "s"));
    report.figures.push(Figure::new(
        "evm.e2e.qemu_to_poweroff",
        outcome.seconds,
        f64::NAN,
        "s",
    ));
    report.notes.push(format!(
        "evm.e2e.*: the end-to-end suite's own time, and QEMU's start to the guest's power-off{}",
        retried.map_or(String::new(), |why| format!(
            " (RETRIED: the first boot failed before the suite started: {why})"
        ))
    ));
    Ok(())
}

/// One measurement line of the guest.
#[derive(Clone, Debug, PartialEq)]
enum Line {
    FirstRun(f64),
    Run { direct: bool, ms: f64 },
    Done,
    Error(String),
}

fn parse(line: &str) -> Option<Line> {
    if line == "eci-bench-evm-done" {
        return Some(Line::Done);
    }
    if let Some(why) = line.strip_prefix("eci-bench-evm-error ") {
        return Some(Line::Error(why.to_owned()));
    }
    let words: Vec<&str> = line.strip_prefix("eci-bench-evm ")?.split(' ').collect();
    let ms = |text: &str| {
        text.parse::<f64>()
            .ok()
            .filter(|ms| *ms > 0.0 && ms.is_finite())
    };
    match words.as_slice() {
        ["first_run", value] => Some(Line::FirstRun(ms(value)?)),
        ["run", via, round, value] => {
            round.parse::<u32>().ok()?;
            let direct = match *via {
                "direct" => true,
                "sidecar" => false,
                _ => return None,
            };
            Some(Line::Run {
                direct,
                ms: ms(value)?,
            })
        }
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Outcome {
    /// (label, host s) of the init's and the guest's marks.
    marks: Vec<(String, f64)>,
    first_run: Option<f64>,
    sidecar: Vec<f64>,
    direct: Vec<f64>,
    failure: Option<Failure>,
}

impl Attempt for Outcome {
    fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }
}

fn watch(vm: &Vm, limit: Duration) -> Outcome {
    let mut console = Console::new(vm, limit);
    let mut outcome = Outcome::default();
    let mut done = false;
    outcome.failure = loop {
        match console.next() {
            Ok(Next::Line(line)) => {
                println!("  [eci-vm] {line}");
                match parse(&line) {
                    Some(Line::FirstRun(ms)) => outcome.first_run = Some(ms),
                    Some(Line::Run { direct: true, ms }) => outcome.direct.push(ms),
                    Some(Line::Run { direct: false, ms }) => outcome.sidecar.push(ms),
                    Some(Line::Done) => done = true,
                    Some(Line::Error(why)) => break Some(Failure::workload(why)),
                    None => {}
                }
            }
            Ok(Next::Stopped) if done => break None,
            Ok(Next::Stopped) => break Some(console.stopped("no eci-bench-evm-done")),
            Err(failure) => break Some(failure),
        }
    };
    outcome.marks = console
        .marks
        .iter()
        .map(|(label, host, _)| (label.clone(), *host))
        .collect();
    outcome
}

fn figures(outcome: &Outcome) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for (mark, name) in BOOT_MARKS {
        let (_, host) = outcome
            .marks
            .iter()
            .find(|(label, _)| label == mark)
            .with_context(|| format!("no {mark:?} mark"))?;
        figures.push(Figure::new(*name, *host, f64::NAN, "s"));
    }
    let first = outcome.first_run.context("no first run")?;
    figures.push(Figure::new("evm.first_run", first, f64::NAN, "ms"));
    for (name, p) in [("evm.run_rm.p50", 50.0), ("evm.run_rm.p90", 90.0)] {
        let side = |samples: &[f64]| {
            if p == 50.0 {
                median(samples)
            } else {
                percentile(samples, p)
            }
        };
        figures.push(Figure::new(
            name,
            side(&outcome.sidecar).context("no run through the sidecar")?,
            side(&outcome.direct).context("no run straight to the engine")?,
            "ms",
        ));
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guest_lines_only() {
        assert_eq!(
            parse("eci-bench-evm first_run 4123.4"),
            Some(Line::FirstRun(4123.4))
        );
        assert_eq!(
            parse("eci-bench-evm run direct 3 2500.0"),
            Some(Line::Run {
                direct: true,
                ms: 2500.0
            })
        );
        assert_eq!(
            parse("eci-bench-evm run sidecar 0 2600"),
            Some(Line::Run {
                direct: false,
                ms: 2600.0
            })
        );
        assert_eq!(parse("eci-bench-evm-done"), Some(Line::Done));
        assert_eq!(
            parse("eci-bench-evm-error docker run failed"),
            Some(Line::Error("docker run failed".into()))
        );
        assert_eq!(parse("eci-bench-evm run other 0 1.0"), None);
        assert_eq!(parse("eci-bench-evm run direct x 1.0"), None);
        assert_eq!(parse("eci-bench-evm run direct 0 -1"), None);
        assert_eq!(parse("eci-bench-evm first_run NaN"), None);
        assert_eq!(parse("eci-bench-evm first_run 1 2"), None);
        assert_eq!(parse("eci-bench open_deep on 1 1.0"), None);
    }

    #[test]
    fn figures_from_marks_and_samples() {
        let outcome = Outcome {
            marks: vec![
                ("init".into(), 4.0),
                ("engine ready".into(), 11.0),
                ("workload start".into(), 11.5),
                ("agent ready".into(), 15.0),
            ],
            first_run: Some(5000.0),
            sidecar: vec![3000.0, 2000.0, 2500.0, 9000.0],
            direct: vec![1900.0, 2100.0, 2000.0, 2200.0],
            failure: None,
        };
        let figures = figures(&outcome).unwrap();
        let get = |name: &str| figures.iter().find(|f| f.name == name).unwrap().clone();
        assert_eq!(get("evm.boot.engine_ready").value, 11.0);
        assert_eq!(get("evm.boot.agent_ready").value, 15.0);
        assert_eq!(get("evm.boot.agent_ready").ratio(), None);
        assert_eq!(get("evm.first_run").value, 5000.0);
        assert_eq!(get("evm.run_rm.p50").value, 2750.0);
        assert_eq!(get("evm.run_rm.p50").baseline, 2050.0);
        assert_eq!(get("evm.run_rm.p90").value, 9000.0);
        assert_eq!(get("evm.run_rm.p90").baseline, 2200.0);
        // A missing mark or side is an error, not a figure.
        let mut partial = outcome;
        partial.direct.clear();
        assert!(self::figures(&partial).is_err());
        partial.direct.push(1.0);
        partial.marks.retain(|(l, _)| l != "agent ready");
        assert!(self::figures(&partial).is_err());
    }
}
