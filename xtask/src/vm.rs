//! The kernel-VM harness: an initramfs of our own static binaries, booted by QEMU on each Debian
//! kernel; the guest prints one line per case and `init: success|failure`, the host reads the
//! serial console and fails on a panic, a timeout or a missing line.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build, cpio,
    process::{Guarded, Stop},
    setup::Kernel,
};

#[derive(clap::Args)]
#[group(id = "vm_test")]
pub struct Options {
    /// Only kernels whose series label (e.g. 6.1) matches.
    #[arg(long)]
    pub kernel: Vec<String>,
    /// QEMU accelerator. TCG by default: machines of this kind have a /dev/kvm that QEMU opens
    /// and then fails on ("KVM internal error"), so KVM is used only when asked for.
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm"])]
    pub accel: String,
    /// Per-kernel timeout in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// The guest's outcome on one kernel.
struct Outcome {
    kernel: String,
    cases: Vec<(String, bool)>,
    verdict: Result<(), String>,
    seconds: f64,
}

pub fn run(root: &Path, opts: &Options, kernels: &[Kernel]) -> anyhow::Result<()> {
    let bins = build::guest(root)?;
    let initramfs = initramfs(root, &bins)?;
    let selected: Vec<&Kernel> = kernels
        .iter()
        .filter(|k| opts.kernel.is_empty() || opts.kernel.contains(&k.label))
        .collect();
    if selected.is_empty() {
        bail!(
            "no kernel selected (have: {})",
            kernels
                .iter()
                .map(|k| k.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let outcomes: Vec<Outcome> = selected
        .iter()
        .map(|k| {
            boot(
                k,
                &initramfs,
                &opts.accel,
                Duration::from_secs(opts.timeout),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    print_table(&outcomes);
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.verdict.is_err())
        .map(|o| o.kernel.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("kernel suite failed on {}", failed.join(", "))
    }
}

/// The guest's initramfs: vm-init as /init, the kernel suite, the kernel bench and the agent.
pub fn initramfs(root: &Path, bins: &Path) -> anyhow::Result<PathBuf> {
    let mut archive = cpio::Archive::new(Vec::new());
    for dir in ["bin", "dev", "proc", "sys", "tmp", "run", "etc"] {
        archive.dir(dir)?;
    }
    let add = |archive: &mut cpio::Archive<Vec<u8>>, from: &Path, to: &str| -> anyhow::Result<()> {
        let data = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        archive.file(to, 0o755, &data)?;
        Ok(())
    };
    add(&mut archive, &bins.join("vm-init"), "init")?;
    add(&mut archive, &bins.join("kernel-tests"), "bin/kernel-tests")?;
    add(&mut archive, &bins.join("kernel-bench"), "bin/kernel-bench")?;
    add(&mut archive, &bins.join("eci-agent"), "bin/eci-agent")?;
    let path = root.join("target/vm/initramfs.cpio");
    fs::create_dir_all(path.parent().unwrap_or(root))?;
    fs::write(&path, archive.finish()?)?;
    Ok(path)
}

/// QEMU's serial console (its stdout), line by line, read on a thread of its own. Bytes that
/// are not UTF-8 (firmware escape sequences, a panicking kernel) are kept lossily rather than
/// ending the stream.
pub fn serial_lines(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(lines)
}

/// Multi-threaded TCG does not make a vCPU see another vCPU's code patching in time: Debian's
/// 6.12 kernel then trips over a stale `int3` from `text_poke_bp` while booting ("Oops: int3",
/// seen in CI). Single-threaded TCG still gives the guest two CPUs, run round-robin, so
/// concurrency in the tests stays real while code patching stays coherent.
///
/// `icount` (the kernel bench only) is that TCG with `-icount shift=0,sleep=off`: the guest's
/// clock then advances by one nanosecond per guest instruction executed (and jumps over idle
/// time), so a guest "ns per operation" counts the instructions the operation took. Host load
/// and TCG's own work (translating code anew after a program is attached) no longer enter it,
/// which is what a sub-microsecond hook's overhead needs when no KVM is at hand; cache misses
/// and other costs that are not instructions do not enter it either. It runs one vCPU: with
/// two, Debian's 6.1 did not get past the boot loader in 200 s.
fn qemu_accel(accel: &str) -> (&str, &'static [&'static str]) {
    match accel {
        "tcg" => ("tcg,thread=single", &["-smp", "2"]),
        "icount" => (
            "tcg,thread=single",
            &["-icount", "shift=0,sleep=off", "-smp", "1"],
        ),
        _ => (accel, &["-smp", "2"]),
    }
}

/// A running QEMU guest booted from our initramfs; its serial console arrives as lines.
/// Killed (by its own pid) when dropped.
pub struct Guest {
    _qemu: Guarded,
    lines: mpsc::Receiver<String>,
}

/// What the console said next.
pub enum Console {
    Line(String),
    /// The guest powered off (or QEMU ended).
    Ended,
    TimedOut,
}

impl Guest {
    /// Boots `kernel`; `append` adds words to the kernel command line (e.g. `eci.mode=bench`).
    pub fn boot(
        kernel: &Kernel,
        initramfs: &Path,
        accel: &str,
        append: &str,
    ) -> anyhow::Result<Self> {
        let (accel, extra) = qemu_accel(accel);
        let mut child = Command::new("qemu-system-x86_64")
            .arg("-accel")
            .arg(accel)
            .args(extra)
            .args(["-m", "1024", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&kernel.vmlinuz)
            .arg("-initrd")
            .arg(initramfs)
            .arg("-append")
            .arg(format!("console=ttyS0 lsm=lockdown,capability,landlock,yama,bpf panic=-1 softlockup_panic=1 quiet loglevel=4 {append}").trim_end())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let lines = serial_lines(&mut child)?;
        // Killed at once: the guest runs from an initramfs, nothing is lost.
        Ok(Self {
            _qemu: Guarded::new("qemu-system-x86_64", child, Stop::Kill),
            lines,
        })
    }

    /// The next console line, waiting at most until `deadline`.
    pub fn next(&self, deadline: Instant) -> Console {
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => Console::Line(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => Console::Ended,
            Err(mpsc::RecvTimeoutError::Timeout) => Console::TimedOut,
        }
    }
}

/// A console line that means the guest kernel died.
pub fn is_panic(line: &str) -> bool {
    line.contains("Kernel panic") || line.contains("KVM internal error")
}

fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    accel: &str,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    println!(
        "xtask vm-test: booting {} ({}) under {accel}",
        kernel.label, kernel.package
    );
    let started = Instant::now();
    let deadline = started + timeout;
    let guest = Guest::boot(kernel, initramfs, accel, "")?;
    let mut cases = Vec::new();
    let mut init: Option<bool> = None;
    let mut summary = None;
    let verdict = loop {
        match guest.next(deadline) {
            Console::Line(line) => {
                println!("  [{}] {line}", kernel.label);
                if let Some(rest) = line.strip_prefix("eci-test ") {
                    if let Some((name, result)) = rest.split_once(": ") {
                        cases.push((name.to_owned(), result == "ok"));
                    }
                } else if line.starts_with("eci-tests: ") {
                    summary = Some(line.clone());
                } else if line == "init: success" {
                    init = Some(true);
                } else if line == "init: failure" {
                    init = Some(false);
                } else if is_panic(&line) {
                    break Err(format!("kernel panic: {line}"));
                }
            }
            Console::Ended => {
                break match (init, &summary) {
                    (None, _) => Err("the guest stopped without an init: line".to_owned()),
                    (Some(_), None) => Err("the guest printed no eci-tests summary".to_owned()),
                    (Some(false), Some(s)) => Err(format!("init: failure ({s})")),
                    (Some(true), Some(_)) if cases.is_empty() => Err("no case ran".to_owned()),
                    (Some(true), Some(_)) if cases.iter().any(|(_, ok)| !ok) => {
                        Err("a case failed".to_owned())
                    }
                    (Some(true), Some(_)) => Ok(()),
                };
            }
            Console::TimedOut => {
                break Err(format!("timed out after {} s", timeout.as_secs()));
            }
        }
    };
    drop(guest);
    Ok(Outcome {
        kernel: format!("{} ({})", kernel.label, kernel.package),
        cases,
        verdict,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn print_table(outcomes: &[Outcome]) {
    let mut names: Vec<&str> = Vec::new();
    for outcome in outcomes {
        for (name, _) in &outcome.cases {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
    }
    println!();
    print!("| case |");
    for o in outcomes {
        print!(" {} |", o.kernel);
    }
    println!();
    println!("|---|{}", "---|".repeat(outcomes.len()));
    for name in &names {
        print!("| {name} |");
        for o in outcomes {
            let cell = match o.cases.iter().find(|(n, _)| n == name) {
                Some((_, true)) => "ok",
                Some((_, false)) => "FAILED",
                None => "missing",
            };
            print!(" {cell} |");
        }
        println!();
    }
    for o in outcomes {
        let passed = o.cases.iter().filter(|(_, ok)| *ok).count();
        let status = match &o.verdict {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("FAILED: {e}"),
        };
        println!(
            "{}: {passed} passed, {} failed, {:.0} s — {status}",
            o.kernel,
            o.cases.len() - passed,
            o.seconds
        );
    }
}
