//! The few raw system calls the guest needs; every `unsafe` of the eci VM's binaries is here.

use std::{ffi::CString, io, path::Path};

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(io::Error::other)
}

/// `mount(2)` with an optional data string.
pub fn mount(source: &str, target: &str, fstype: &str, data: Option<&str>) -> io::Result<()> {
    let _ = std::fs::create_dir_all(target);
    let (source, target, fstype) = (cstr(source)?, cstr(target)?, cstr(fstype)?);
    let data = data.map(cstr).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: NUL-terminated strings that outlive the call; `data` is null or a C string.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data_ptr,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new network namespace for the calling process (used between fork and exec).
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: plain syscall without pointers; async-signal-safe, so fine in a pre_exec hook.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reaps any child; returns its pid and exit code (128+signal when killed), None when there are
/// no children left.
pub fn wait_any() -> Option<(i32, i32)> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            return Some((pid, code));
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Sends `signal` to one process we started.
pub fn kill(pid: u32, signal: i32) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: plain syscall without pointers.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`'s bytes for the duration of the call.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flushes the disks and powers the guest off; QEMU exits (`-no-reboot`).
pub fn power_off() -> ! {
    // SAFETY: plain syscalls; nothing in this process runs after the machine is off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    #[expect(
        clippy::exit,
        reason = "the guest's init: reboot(2) returned, so there is no caller left to return to"
    )]
    std::process::exit(0)
}

/// Moves `pid` into the cgroup at `dir` (created if needed).
pub fn join_cgroup(dir: &Path, pid: u32) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
}

/// Sets environment variables; call only while the process has a single thread.
pub fn set_env_single_threaded(vars: &[(&str, &str)]) {
    for (key, value) in vars {
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        unsafe { std::env::set_var(key, value) };
    }
}

extern "C" fn exit_now(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends the process without running any Rust code.
    unsafe { libc::_exit(0) }
}

/// SIGTERM ends the process at once (a container's PID 1 would otherwise ignore it).
pub fn exit_on_sigterm() {
    // SAFETY: the handler calls only _exit, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGTERM, exit_now as *const () as libc::sighandler_t) };
}
