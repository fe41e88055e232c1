//! `evm probe …`: one access attempt, its outcome printed as one word (`ok`, `EPERM`,
//! `ECONNREFUSED`, …) and as the exit code (0 only for `ok`). Static, so it runs inside the test
//! images too.
//!
//! - `probe unix PATH`: connect(2) to a unix socket;
//! - `probe tcp HOST:PORT`: connect(2) over TCP (2 s timeout);
//! - `probe in-cgroup REL unix PATH`: first move into cgroup REL (root only), then as above;
//! - `probe ping PATH`: connect(2) and `GET /_ping`: `served` only for an HTTP 200 (see [`ping`]).

use std::{
    io::{self, Read as _, Write as _},
    net::{TcpStream, ToSocketAddrs as _},
    os::unix::net::UnixStream,
    path::Path,
    process::ExitCode,
    time::Duration,
};

use crate::{guest::CGROUP_ROOT, sys};

pub fn main(args: &[String]) -> ExitCode {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pinged = match args.as_slice() {
        ["ping", path] => Some((*path, PING_WAIT)),
        // A caller that only asks whether it is served, not when: the first request of a
        // container the agent has not seen yet waits for one engine lookup, which under TCG,
        // with containers starting beside it, can take longer than a probing loop may wait.
        ["ping", path, secs] => secs.parse().ok().map(|s| (*path, Duration::from_secs(s))),
        _ => None,
    };
    if let Some((path, wait)) = pinged {
        let word = ping_within(Path::new(path), wait);
        println!("{word}");
        return if word == "served" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
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
            "usage: evm probe ping PATH [SECS] | [in-cgroup REL] unix PATH | tcp HOST:PORT",
        )),
    }
}

/// One `GET /_ping` on the unix socket at `path`, as one word: `served` (HTTP 200), `httpNNN`
/// (another status: a refusal by the sidecar), `silent` (connected, no answer within 2 s: queued,
/// nobody accepts yet), `closed` (connected, closed without a word), or the errno of connect(2)
/// (`EPERM`: the kernel refused; `ENOENT`: no socket there yet).
pub fn ping(path: &Path) -> String {
    ping_within(path, PING_WAIT)
}

/// How long [`ping`] waits for an answer: a probing loop's round must stay short.
const PING_WAIT: Duration = Duration::from_secs(2);

/// As [`ping`], `silent` only after `wait`.
pub fn ping_within(path: &Path, wait: Duration) -> String {
    let mut stream = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(err) => return errno_name(&err),
    };
    let exchange = (|| -> io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(wait))?;
        stream.set_write_timeout(Some(wait))?;
        stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut reply = vec![0; 64];
        let mut got = 0;
        while got < 12 {
            match stream.read(&mut reply[got..])? {
                0 => break,
                n => got += n,
            }
        }
        reply.truncate(got);
        Ok(reply)
    })();
    match exchange {
        Ok(reply) if reply.is_empty() => "closed".into(),
        Ok(reply) => match reply.get(9..12).map(|code| String::from_utf8_lossy(code)) {
            Some(code) if reply.starts_with(b"HTTP/1.") && code == "200" => "served".into(),
            Some(code) if reply.starts_with(b"HTTP/1.") => format!("http{code}"),
            _ => "garbled".into(),
        },
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            "silent".into()
        }
        Err(err) => errno_name(&err),
    }
}

pub fn errno_name(err: &io::Error) -> String {
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
