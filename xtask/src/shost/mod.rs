//! `cargo xtask shost` (and a step of `cargo xtask test`): the systemd-host tier. A Debian
//! bookworm guest with systemd as PID 1 and Debian's own docker packages (the systemd cgroup
//! driver), on a disk that keeps its state from one boot to the next. The guest's driver
//! (`evm shost driver`, a unit stage 1 installs from the share) runs the checks of each boot and
//! prints one line per case; the host boots the phases in order and reads them:
//!
//! 1. `install`: containers made with plain Docker (`--restart=always`: an unlisted one mounting
//!    `/run`, an allowed one mounting the socket), then eci-agent installed by the commands in
//!    `eci-agent.service`'s header, then the checks on a freshly installed host;
//! 2. `cold1`, 3. `cold2`: cold boots of that disk: an unlisted root process and the unlisted
//!    container probe both sockets from the first second; restart of the engine (cold1); an
//!    allowed image connecting at once 20 times and SIGKILL of the agent (cold2);
//! 4. `pod`: the agent uninstalled by its header's steps, then installed again by the DaemonSet's
//!    pod (this image's rootfs under the node's containerd, with the manifest's command, host pid
//!    namespace and mounts); ConfigMap edits, a pod restart, an upgrade.
//!
//! A case that fails fails the tier, with the guest's logs printed. There is no "known gap"
//! outcome: a case either holds or fails.

mod share;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build,
    evm::{
        attempt::{Console, Next},
        boot::{Accel, Disk, Share, Vm},
        image,
    },
    exec, setup,
};

#[derive(clap::Args)]
#[group(id = "shost")]
pub struct Options {
    /// How QEMU runs the guest's CPUs.
    #[arg(id = "shost_accel", long = "shost-accel", value_enum, default_value_t = Accel::TcgSingle)]
    pub accel: Accel,
    /// Timeout of each boot, in seconds.
    #[arg(id = "shost_timeout", long = "shost-timeout", default_value_t = 600)]
    pub timeout: u64,
    /// The boots to run, in order (each needs the ones before it, but `pod` only `install`):
    /// install, cold1, cold2, pod. CI runs all four: the proof asks for two cold boots
    /// (about 3.5 min of the tier's 6 under TCG, most of it the 20 container starts) and for the
    /// DaemonSet's pod.
    #[arg(
        id = "shost_boots",
        long = "shost-boots",
        value_delimiter = ',',
        default_values_t = ["install".to_owned(), "cold1".to_owned(), "cold2".to_owned(), "pod".to_owned()]
    )]
    pub boots: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Result_ {
    Ok,
    Failed(String),
}

/// One boot as the host saw it.
struct Boot {
    name: String,
    cases: Vec<(String, Result_)>,
    figures: Vec<(String, String)>,
    marks: Vec<(String, f64, String)>,
    /// Why the boot itself failed (no end line, a panic, a timeout), if it did.
    failure: Option<String>,
    seconds: f64,
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let kernel = setup::eci_vm_kernel(root)?;
    let image = image::ensure_recipe(root, &kernel, &image::SHOST)?;
    let bins = build::guest(root)?;
    let dir = image::recipe_dir(root, &image::SHOST);
    let share = Share::in_dir(&dir, &bins, &root.join("examples/admin-settings.json"))?;
    share::fill(root, &share.dir)?;
    let disk = RunDisk::copy(
        &image.disk,
        &dir.join(format!("run-{}.img", std::process::id())),
    )?;
    let started = Instant::now();
    let mut boots = Vec::new();
    for name in &opts.boots {
        println!(
            "xtask shost: boot `{name}` ({}, {:?})",
            kernel.package, opts.accel
        );
        let vm = Vm::boot(
            &image,
            Disk::Persistent(&disk.path),
            &share,
            &format!("eci.shost={name}"),
            opts.accel,
        )?;
        let boot = watch(&vm, name, Duration::from_secs(opts.timeout));
        drop(vm);
        // Each boot builds on the one before: after a failure the next would only time out.
        let stop = boot.failure.is_some()
            || boot
                .cases
                .iter()
                .any(|(_, r)| matches!(r, Result_::Failed(_)));
        boots.push(boot);
        if stop {
            break;
        }
    }
    let total = started.elapsed().as_secs_f64();
    let failed = report(&boots, total);
    if failed {
        print_guest_logs(&share.out());
        let keep = dir.join("last-logs");
        let _ = fs::remove_dir_all(&keep);
        if fs::rename(share.out(), &keep).is_ok() {
            println!("xtask shost: guest logs kept in {}", keep.display());
        }
        bail!("the systemd-host tier failed");
    }
    Ok(())
}

/// The disk of one run: a sparse copy of the image, written through by every boot of the run
/// and removed when dropped.
struct RunDisk {
    path: PathBuf,
}

impl RunDisk {
    fn copy(image: &Path, path: &Path) -> anyhow::Result<Self> {
        exec::run(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(image)
                .arg(path),
        )
        .context("copying the image for this run's boots")?;
        Ok(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for RunDisk {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn watch(vm: &Vm, name: &str, timeout: Duration) -> Boot {
    let mut console = Console::new(vm, timeout);
    let mut boot = Boot {
        name: name.to_owned(),
        cases: Vec::new(),
        figures: Vec::new(),
        marks: Vec::new(),
        failure: None,
        seconds: 0.0,
    };
    let mut done = false;
    loop {
        let line = match console.next() {
            Ok(Next::Line(line)) => line,
            Ok(Next::Stopped) => {
                if !done {
                    boot.failure = Some(console.stopped("no `shost: … done` line").message);
                }
                break;
            }
            Err(failure) => {
                boot.failure = Some(failure.message);
                break;
            }
        };
        println!("  [shost] {line}");
        // The console may carry other writers' text before ours on the same line.
        let Some(at) = line.find("shost ").or_else(|| line.find("shost: ")) else {
            continue;
        };
        let ours = &line[at..];
        if let Some(rest) = ours.strip_prefix("shost figure ") {
            if let Some((key, value)) = rest.split_once(" = ") {
                boot.figures.push((key.to_owned(), value.to_owned()));
            }
        } else if let Some(rest) = ours.strip_prefix("shost ") {
            if let Some((case, result)) = rest.split_once(" => ") {
                boot.cases.push((case.to_owned(), parse_result(result)));
            }
        } else if ours.starts_with("shost: ") && ours.ends_with("; done") {
            done = true;
        }
    }
    boot.marks = std::mem::take(&mut console.marks);
    boot.seconds = vm.elapsed();
    if done && boot.cases.is_empty() {
        boot.failure = Some("no case ran".to_owned());
    }
    boot
}

fn parse_result(text: &str) -> Result_ {
    if text.starts_with("ok") {
        Result_::Ok
    } else {
        Result_::Failed(text.trim_start_matches("FAILED").trim().to_owned())
    }
}

/// Prints the tables; true when anything failed.
fn report(boots: &[Boot], total: f64) -> bool {
    println!();
    println!("| boot | systemd-host case | result |");
    println!("|---|---|---|");
    let (mut passed, mut failed) = (0, 0);
    for boot in boots {
        for (case, result) in &boot.cases {
            let cell = match result {
                Result_::Ok => {
                    passed += 1;
                    "ok".to_owned()
                }
                Result_::Failed(why) => {
                    failed += 1;
                    format!("FAILED: {why}")
                }
            };
            println!("| {} | {case} | {cell} |", boot.name);
        }
        if let Some(why) = &boot.failure {
            failed += 1;
            println!("| {} | (boot) | FAILED: {why} |", boot.name);
        }
    }
    println!();
    println!("| boot | figure | value |");
    println!("|---|---|---|");
    for boot in boots {
        for (key, value) in &boot.figures {
            println!("| {} | {key} | {value} |", boot.name);
        }
    }
    println!();
    println!("| boot | step | host s | guest uptime s |");
    println!("|---|---|---|---|");
    for boot in boots {
        for (label, host, guest) in &boot.marks {
            println!("| {} | {label} | {host:.1} | {guest} |", boot.name);
        }
        println!("| {} | (powered off) | {:.1} | |", boot.name, boot.seconds);
    }
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "systemd-host tier: {passed} passed, {failed} failed in {total:.0} s \
         (load average {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    failed > 0
}

/// The end of each log the driver copied out, so that a failure in CI can be read in CI's log.
fn print_guest_logs(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else {
        println!("xtask shost: the guest left no logs");
        return;
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(80);
        println!();
        println!(
            "----- guest log {} (last {} of {} lines) -----",
            file.file_name().unwrap_or_default().to_string_lossy(),
            lines.len() - from,
            lines.len()
        );
        for line in &lines[from..] {
            println!("{line}");
        }
    }
}
