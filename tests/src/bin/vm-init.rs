//! The guest's `/init` for the kernel-VM harness: mounts what the suite needs, checks that BPF LSM
//! is active, runs `/bin/kernel-tests`, prints `init: success|failure` for the host and powers off.
//! The host parses the serial console; a missing `init:` line is a failure there.
//!
//! With `eci.mode=bench` on the kernel command line it runs `/bin/kernel-bench` instead (the
//! benchmark of `cargo xtask bench`); `eci.arg=` words are passed to either program.

use std::{ffi::CString, fs, process::Command};

use eci_agent::kernel::lsm;

struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
}

const MOUNTS: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
    },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
    },
    Mount {
        source: "bpf",
        target: "/sys/fs/bpf",
        fstype: "bpf",
    },
    Mount {
        source: "securityfs",
        target: "/sys/kernel/security",
        fstype: "securityfs",
    },
];

fn mount(m: &Mount) -> Result<(), String> {
    let _ = fs::create_dir_all(m.target);
    let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let (source, target, fstype) = (c(m.source)?, c(m.target)?, c(m.fstype)?);
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount {} on {}: {}",
            m.fstype,
            m.target,
            std::io::Error::last_os_error()
        ))
    }
}

fn run() -> Result<bool, String> {
    for m in MOUNTS {
        mount(m)?;
    }
    let lsm = lsm::active_lsms().map_err(|e| format!("{}: {e}", lsm::LSM_LIST))?;
    println!(
        "init: kernel {} lsm {}",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        lsm.trim()
    );
    if !lsm::lsm_list_has_bpf(&lsm) {
        return Err(format!(
            "bpf is not an active LSM ({lsm}); the kernel command line needs lsm=...,bpf"
        ));
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let args: Vec<String> = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("eci.arg="))
        .map(str::to_owned)
        .collect();
    let program = if cmdline.split_whitespace().any(|w| w == "eci.mode=bench") {
        "/bin/kernel-bench"
    } else {
        "/bin/kernel-tests"
    };
    let status = Command::new(program)
        .args(&args)
        .env("PATH", "/bin")
        .status()
        .map_err(|e| format!("running {program}: {e}"))?;
    Ok(status.success())
}

fn main() {
    let ok = match run() {
        Ok(ok) => ok,
        Err(err) => {
            println!("init: error: {err}");
            false
        }
    };
    println!("init: {}", if ok { "success" } else { "failure" });
    // SAFETY: plain syscalls; power-off ends the guest, which is all the host waits for.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
