//! Kernel section: what the BPF LSM programs cost the syscalls they sit on, measured in the VM
//! harness (`kernel-bench` in the guest, see tests/src/bin/kernel-bench). Rounds alternate
//! without and with the programs in one boot; the figure is the median with the programs over
//! the median without. TCG makes every nanosecond slow, but both sides alike, so the ratio
//! still shows the hooks' cost.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{Context, Figure, Report, Section, Target, median};
use crate::{
    build, setup,
    vm::{self, Console, Guest},
};

pub struct KernelSection;

/// The guest's workloads, what each one's figure is called and the target it has.
const WORKLOADS: &[(&str, Option<Target>)] = &[
    (
        "open_shallow",
        Some(Target::at_most(1.01, "under 1% overhead")),
    ),
    ("open_shallow_floor", None),
    ("open_write_shallow", None),
    ("open_cgroupfs_read", None),
    ("open_cgroupfs_write_protected", None),
    ("bpf_map_lookup", None),
    ("bpf_map_fd_by_id", None),
    (
        "open_deep",
        Some(Target::at_most(1.01, "under 1% overhead")),
    ),
    (
        "stat_deep",
        Some(Target::at_most(1.01, "under 1% overhead")),
    ),
    ("stat_shallow", None),
    (
        "connect_unrelated",
        Some(Target::at_most(1.02, "under 2% overhead")),
    ),
    ("connect_protected_allowed", None),
    (
        "dgram_unrelated",
        Some(Target::at_most(1.02, "under 2% overhead")),
    ),
    ("create_unlink_plain_dir", None),
    ("create_unlink_protected_dir", None),
    ("rename_protected_dir", None),
    ("pass_fd", None),
    ("pipe_open_close", None),
    ("cgroup_mkdir_rmdir", None),
];

impl Section for KernelSection {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn run(&self, cx: &Context) -> anyhow::Result<Report> {
        let kernels = setup::all(cx.root)?;
        let bins = build::guest(cx.root)?;
        let initramfs = vm::initramfs(cx.root, &bins)?;
        // Rounds per mode and a scale on the guest's operation counts (see kernel-bench).
        let (rounds, scale, timeout) = if cx.quick {
            (4, 0.25, Duration::from_secs(150))
        } else {
            (10, 1.0, Duration::from_secs(900))
        };
        // Counting instructions slows TCG down, and one vCPU runs everything.
        let timeout = if cx.accel == "icount" {
            timeout * 4
        } else {
            timeout
        };
        let mut report = Report::default();
        let selected: Vec<_> = kernels
            .iter()
            .filter(|k| cx.kernels.is_empty() || cx.kernels.contains(&k.label))
            .collect();
        if selected.is_empty() {
            bail!("no kernel selected");
        }
        for kernel in selected {
            println!(
                "xtask bench: kernel {} ({}), {rounds} rounds each way",
                kernel.label, kernel.package
            );
            let append = format!("eci.mode=bench eci.arg={rounds} eci.arg={scale}");
            let guest = Guest::boot(kernel, &initramfs, cx.accel, &append)?;
            let (samples, runs_per_op) = collect(&guest, &kernel.label, Instant::now() + timeout)
                .with_context(|| format!("kernel {}", kernel.label))?;
            drop(guest);
            report.notes.push(format!(
                "kernel.{}: programs run per operation, as `program=runs×ns per run` (time inside \
                 the program, not its trampoline; BPF run statistics, measured apart): {}",
                kernel.label,
                runs_per_op
                    .iter()
                    .map(|line| match line.split_once(' ') {
                        Some((workload, runs)) => format!("{workload} {runs}"),
                        None => format!("{line} none"),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            report.figures.extend(
                figures(&kernel.label, &samples)
                    .with_context(|| format!("kernel {}: incomplete results", kernel.label))?,
            );
        }
        report.notes.push(format!(
            "kernel.*: ns per operation in a QEMU guest ({}), value with the programs attached, \
             baseline without, medians of {rounds} alternating rounds; *_deep walk 26 \
             directories, stat_shallow 2 (open_deep runs file_open's fast path, stat no program); connect_unrelated \
             and dgram_unrelated reach untagged sockets (unix_stream_connect, unix_may_send), \
             connect_protected_allowed the protected one from a trusted cgroup (the verdict \
             walk), and each connect's two new socket files pass d_instantiate; \
             create_unlink_plain_dir creates where nothing is protected (d_instantiate), \
             create_unlink_ and rename_protected_dir use 11-byte names in a directory \
             protecting engine.sock (d_instantiate, inode_rename: the name compare); pass_fd \
             sends a plain file's fd with SCM_RIGHTS (file_receive); pipe_open_close makes a \
             pseudo file (d_instantiate, as for every socket or eventfd); cgroup_mkdir_rmdir \
             makes and removes a cgroup (the cgroup_mkdir and cgroup_rmdir tracepoints); \
             open_shallow opens and closes an ordinary file read-only (file_open's fast path: \
             the file mode), open_shallow_floor the same with only a file_open program that \
             returns 0 (the trampoline any BPF LSM program there costs), \
             open_shallow_over_floor the first over the second (both attached), \
             open_write_shallow for writing (the file system's magic), \
             open_cgroupfs_read a cgroup's cgroup.procs read-only, \
             open_cgroupfs_write_protected the bench's own trusted cgroup's for writing (the \
             verdict walk and the writer check); bpf_map_lookup is one bpf(2) lookup on an \
             unrelated map (the guard's bpf program), bpf_map_fd_by_id an fd of it by id (bpf \
             and bpf_map: one hash lookup)",
            cx.accel
        ));
        Ok(report)
    }
}

/// One measurement line of the guest: `eci-bench <workload> <on|off> <round> <ns_per_op>`.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub workload: String,
    pub on: bool,
    pub round: u32,
    pub ns_per_op: f64,
}

pub fn parse(line: &str) -> Option<Sample> {
    let mut words = line.strip_prefix("eci-bench ")?.split_whitespace();
    let workload = words.next()?.to_owned();
    let on = match words.next()? {
        "on" => true,
        "off" => false,
        _ => return None,
    };
    let round = words.next()?.parse().ok()?;
    let ns_per_op: f64 = words.next()?.parse().ok()?;
    if words.next().is_some() || !ns_per_op.is_finite() || ns_per_op <= 0.0 {
        return None;
    }
    Some(Sample {
        workload,
        on,
        round,
        ns_per_op,
    })
}

/// The guest's samples, and its `eci-bench-runs` lines (which programs each operation runs).
fn collect(
    guest: &Guest,
    label: &str,
    deadline: Instant,
) -> anyhow::Result<(Vec<Sample>, Vec<String>)> {
    let mut samples = Vec::new();
    let mut runs_per_op = Vec::new();
    let mut done = false;
    loop {
        match guest.next(deadline) {
            Console::Line(line) => {
                if let Some(sample) = parse(&line) {
                    println!("  [{label}] {line}");
                    samples.push(sample);
                } else if let Some(runs) = line.strip_prefix("eci-bench-runs ") {
                    println!("  [{label}] {line}");
                    runs_per_op.push(runs.to_owned());
                } else if line == "eci-bench-done" {
                    done = true;
                } else if line.starts_with("eci-bench-error") || line.starts_with("init: ") {
                    println!("  [{label}] {line}");
                } else if vm::is_panic(&line) {
                    bail!("kernel panic: {line}");
                }
            }
            Console::Ended if done => return Ok((samples, runs_per_op)),
            Console::Ended => bail!("the guest stopped before eci-bench-done"),
            Console::TimedOut => bail!("the guest did not finish in time"),
        }
    }
}

/// One figure per workload: median with the programs over median without; then the open loop
/// with the agent's programs over the same loop with the floor program alone, which is what the
/// agent's `file_open` adds above what any BPF LSM program on that hook costs.
pub fn figures(label: &str, samples: &[Sample]) -> anyhow::Result<Vec<Figure>> {
    let side = |workload: &str, on: bool| {
        let values: Vec<f64> = samples
            .iter()
            .filter(|s| s.workload == workload && s.on == on)
            .map(|s| s.ns_per_op)
            .collect();
        median(&values)
            .with_context(|| format!("no {workload} samples {}", if on { "on" } else { "off" }))
    };
    let mut figures = WORKLOADS
        .iter()
        .map(|(workload, target)| {
            let mut figure = Figure::new(
                format!("kernel.{label}.{workload}"),
                side(workload, true)?,
                side(workload, false)?,
                "ns/op",
            );
            figure.target = target.clone();
            Ok(figure)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    figures.push(
        Figure::new(
            format!("kernel.{label}.open_shallow_over_floor"),
            side("open_shallow", true)?,
            side("open_shallow_floor", true)?,
            "ns/op",
        )
        .with_target(Target::at_most(1.01, "under 1% above the floor")),
    );
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_measurement_lines_only() {
        assert_eq!(
            parse("eci-bench open_deep on 3 1234.5"),
            Some(Sample {
                workload: "open_deep".to_owned(),
                on: true,
                round: 3,
                ns_per_op: 1234.5
            })
        );
        assert_eq!(parse("eci-bench-done"), None);
        assert_eq!(parse("eci-bench open_deep maybe 3 1.0"), None);
        assert_eq!(parse("eci-bench open_deep on x 1.0"), None);
        assert_eq!(parse("eci-bench open_deep on 1 -1"), None);
        assert_eq!(parse("eci-bench open_deep on 1 1.0 extra"), None);
        assert_eq!(parse("eci-test x: ok"), None);
    }

    #[test]
    fn figures_are_medians_on_over_off() {
        let mut samples = Vec::new();
        for (workload, _) in WORKLOADS {
            for (round, (off, on)) in [(100.0, 101.0), (90.0, 95.0), (110.0, 300.0)]
                .into_iter()
                .enumerate()
            {
                for (is_on, ns) in [(false, off), (true, on)] {
                    samples.push(Sample {
                        workload: (*workload).to_owned(),
                        on: is_on,
                        round: round as u32,
                        ns_per_op: ns,
                    });
                }
            }
        }
        let figures = figures("6.1", &samples).unwrap();
        assert_eq!(figures.len(), WORKLOADS.len() + 1);
        // By name: the workloads' order is the report's, not the test's.
        let named = |workload: &str| {
            let name = format!("kernel.6.1.{workload}");
            figures.iter().find(|f| f.name == name).expect(&name)
        };
        let deep = named("open_deep");
        assert_eq!(deep.value, 101.0);
        assert_eq!(deep.baseline, 100.0);
        assert_eq!(deep.met(), Some(true));
        assert!(named("stat_shallow").target.is_none());
        assert!(named("connect_unrelated").target.is_some());
        assert!(named("connect_protected_allowed").target.is_none());
        // With the agent's programs over with the floor program: both sides' "on" medians.
        let over_floor = named("open_shallow_over_floor");
        assert_eq!((over_floor.value, over_floor.baseline), (101.0, 101.0));
        assert!(over_floor.target.is_some());
        // A workload without samples on one side is an error, not a figure.
        samples.retain(|s| !(s.workload == "stat_deep" && s.on));
        assert!(self::figures("6.1", &samples).is_err());
    }
}
