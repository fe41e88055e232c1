//! `kernel-tests probe CGROUP OP PATH [DIR]`: joins CGROUP (relative to the cgroup2 mount), then
//! tries OP on PATH and exits with what happened. Running each attempt in a fresh process keeps the
//! suite's own cgroup out of the way.

use std::{
    fs::{self, OpenOptions},
    io::{self, Read as _},
    os::unix::{fs::OpenOptionsExt as _, net::UnixStream},
    path::Path,
    process::ExitCode,
};

/// Exit codes of a probe.
pub const CONNECTED: u8 = 0;
pub const EPERM: u8 = 10;
pub const REFUSED: u8 = 12;
pub const OTHER: u8 = 13;

pub fn main(args: &[String]) -> ExitCode {
    let [cgroup, op, path, rest @ ..] = args else {
        eprintln!("usage: kernel-tests probe CGROUP OP PATH [DIR]");
        return ExitCode::from(OTHER);
    };
    let procs = Path::new(crate::fixture::CGROUP_ROOT)
        .join(cgroup.trim_start_matches('/'))
        .join("cgroup.procs");
    if let Err(err) = fs::write(&procs, std::process::id().to_string()) {
        eprintln!("probe: joining {}: {err}", procs.display());
        return ExitCode::from(OTHER);
    }
    let result = match op.as_str() {
        "connect" => UnixStream::connect(path).map(drop),
        // Connect through a relative path from DIR.
        "connect-rel" => rest
            .first()
            .ok_or_else(|| io::Error::other("connect-rel needs DIR"))
            .and_then(std::env::set_current_dir)
            .and_then(|()| UnixStream::connect(path).map(drop)),
        // Connect through /proc/self/fd/N of an O_PATH fd (which itself opens nothing).
        "connect-opath" => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .and_then(|file| {
                use std::os::fd::AsRawFd as _;
                UnixStream::connect(format!("/proc/self/fd/{}", file.as_raw_fd())).map(drop)
            }),
        "read" => fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut Vec::new()))
            .map(drop),
        _ => Err(io::Error::other(format!("unknown probe op {op}"))),
    };
    ExitCode::from(match result {
        Ok(()) => CONNECTED,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => EPERM,
        Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => REFUSED,
        Err(err) => {
            eprintln!("probe {op} {path}: {err}");
            OTHER
        }
    })
}
