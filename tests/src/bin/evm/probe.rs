//! `evm probe …`: one access attempt, its outcome printed as one word (`ok`, `EPERM`,
//! `ECONNREFUSED`, …) and as the exit code (0 only for `ok`). Static, so it runs inside the test
//! images too.
//!
//! - `probe unix PATH`: connect(2) to a unix socket;
//! - `probe tcp HOST:PORT`: connect(2) over TCP (2 s timeout);
//! - `probe in-cgroup REL unix PATH`: first move into cgroup REL (root only), then as above.

use std::{
    io,
    net::{TcpStream, ToSocketAddrs as _},
    os::unix::net::UnixStream,
    path::Path,
    process::ExitCode,
    time::Duration,
};

use crate::{guest::CGROUP_ROOT, sys};

pub fn main(args: &[String]) -> ExitCode {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["in-cgroup", rel, rest @ ..] => {
            match sys::join_cgroup(&Path::new(CGROUP_ROOT).join(rel), std::process::id()) {
                Ok(()) => attempt(rest),
                Err(err) => Err(err),
            }
        }
        rest => attempt(rest),
    };
    let word = match &outcome {
        Ok(()) => "ok".to_owned(),
        Err(err) => errno_name(err),
    };
    println!("{word}");
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn attempt(args: &[&str]) -> io::Result<()> {
    match args {
        ["unix", path] => UnixStream::connect(path).map(drop),
        ["tcp", addr] => {
            let addr = addr
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::other("no address"))?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop)
        }
        _ => Err(io::Error::other(
            "usage: evm probe [in-cgroup REL] unix PATH | tcp HOST:PORT",
        )),
    }
}

fn errno_name(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        Some(libc::ENETUNREACH) => "ENETUNREACH".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(n) => format!("errno{n}"),
        None if err.kind() == io::ErrorKind::TimedOut => "ETIMEDOUT".into(),
        None => format!("error: {err}"),
    }
}
