//! Booting the eci VM: the per-boot share (our static binaries, settings, logs coming back) and
//! the QEMU process, whose serial console arrives as lines on a channel. The VM is stopped (by
//! QEMU's pid) when the handle is dropped.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::image::Image;
use crate::process::{Guarded, Stop};

/// What the guest init does after the engine is up (`eci.mode=` on the kernel command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The agent in front of the engine, until stopped.
    Serve,
    /// The end-to-end suite, then power-off.
    E2e,
    /// The bench (`cargo xtask bench --section evm`): `runs` timed `docker run`s each way.
    Bench { runs: u32 },
}

impl Mode {
    /// The kernel command line words the guest init reads.
    fn args(self) -> String {
        match self {
            Self::Serve => "eci.mode=serve".to_owned(),
            Self::E2e => "eci.mode=e2e".to_owned(),
            Self::Bench { runs } => format!("eci.mode=bench eci.runs={runs}"),
        }
    }
}

/// How QEMU emulates the CPUs. Multi-threaded TCG runs the two vCPUs on two host threads, but a
/// vCPU may then miss another's kernel text patching (Debian's 6.12 oopsed on a stale int3 in
/// the kernel suite). Measured on this 2-core machine for the eci VM (6.1), boot to ready was
/// 21–27 s either way and a `docker run` 2–6 s either way, so single-threaded is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    TcgMulti,
    TcgSingle,
    Kvm,
}

impl Accel {
    fn arg(self) -> &'static str {
        match self {
            Self::TcgMulti => "tcg,thread=multi",
            Self::TcgSingle => "tcg,thread=single",
            Self::Kvm => "kvm",
        }
    }
}

/// The directory shared with the guest as `/mnt/eci`: removed when dropped.
pub struct Share {
    pub dir: PathBuf,
}

impl Share {
    /// A fresh share holding the guest binaries (`evm`, `eci-agent`) and `settings`.
    pub fn new(root: &Path, bins: &Path, settings: &Path) -> anyhow::Result<Self> {
        Self::in_dir(&super::image::dir(root), bins, settings)
    }

    /// As [`Share::new`], under `parent` (the image's directory).
    pub fn in_dir(parent: &Path, bins: &Path, settings: &Path) -> anyhow::Result<Self> {
        let dir = parent.join(format!("share-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin"))?;
        fs::create_dir_all(dir.join("out"))?;
        let share = Self { dir };
        for bin in ["evm", "eci-agent"] {
            // Copies, not links: a concurrent cargo build must not change them under the guest.
            fs::copy(bins.join(bin), share.dir.join("bin").join(bin))
                .with_context(|| format!("copying {} into the share", bins.join(bin).display()))?;
        }
        fs::copy(settings, share.dir.join("settings.json"))
            .with_context(|| format!("copying {}", settings.display()))?;
        Ok(share)
    }

    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A running VM.
pub struct Vm {
    /// Our own QEMU, killed by pid when dropped; the disk is a snapshot, so nothing is lost.
    qemu: Guarded,
    pub lines: mpsc::Receiver<String>,
    pub started: Instant,
    /// The host's end of the channel: 127.0.0.1:PORT, forwarded by QEMU to the guest's relay.
    pub channel_port: u16,
}

/// The disk a boot uses.
pub enum Disk<'a> {
    /// The image itself, copy-on-write in memory: nothing a boot writes is kept.
    Snapshot(&'a Path),
    /// A writable copy that keeps what a boot writes for the next (the systemd host's cold boots).
    Persistent(&'a Path),
}

impl Vm {
    pub fn start(image: &Image, share: &Share, mode: Mode, accel: Accel) -> anyhow::Result<Self> {
        Self::boot(
            image,
            Disk::Snapshot(&image.disk),
            share,
            &mode.args(),
            accel,
        )
    }

    /// Boots `image`'s kernel and stage 1 from `disk`; `args` go on the kernel command line.
    pub fn boot(
        image: &Image,
        disk: Disk<'_>,
        share: &Share,
        args: &str,
        accel: Accel,
    ) -> anyhow::Result<Self> {
        let (disk, snapshot) = match disk {
            Disk::Snapshot(path) => (path, "on"),
            Disk::Persistent(path) => (path, "off"),
        };
        let channel_port = free_port()?;
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .arg("-accel")
            .arg(accel.arg())
            .args([
                "-m",
                "3072",
                "-smp",
                "2",
                "-nographic",
                "-no-reboot",
                "-nodefaults",
            ])
            .args(["-serial", "stdio", "-bios", "/usr/share/qemu/qboot.rom"])
            .arg("-kernel")
            .arg(&image.vmlinux)
            .arg("-initrd")
            .arg(&image.stage1)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet loglevel=4 panic=-1 softlockup_panic=1 \
                 lsm=lockdown,capability,landlock,yama,bpf {args}"
            ))
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,snapshot={snapshot}",
                disk.display()
            ))
            .args(["-device", "virtio-rng-pci"])
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=eci,security_model=none,id=eci",
                share.dir.display()
            ))
            .arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{channel_port}-:2375"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let lines = crate::vm::serial_lines(&mut child)?;
        Ok(Self {
            qemu: Guarded::new("qemu-system-x86_64", child, Stop::Kill),
            lines,
            started,
            channel_port,
        })
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Waits for the next line until `deadline`; None when QEMU has exited.
    pub fn next_line(&self, deadline: Instant) -> anyhow::Result<Option<String>> {
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => Ok(Some(line)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Ok(None),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("timed out after {:.0} s", self.elapsed())
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }
}

/// A port free on the host's loopback now (QEMU binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether a serial line says the guest kernel died.
pub fn is_panic(line: &str) -> bool {
    line.contains("Kernel panic") || line.contains("KVM internal error")
}

pub fn wait_secs(d: Duration) -> Instant {
    Instant::now() + d
}
