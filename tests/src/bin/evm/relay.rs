//! `evm relay`: the guest end of the host channel. It runs in a network namespace of its own (the
//! init created it and moved the VM's only network device into it, so nothing else in the VM can
//! reach this listener) and in a cgroup the agent trusts: callers over this channel are the host.
//! Each TCP connection QEMU forwards from the host becomes one connection to the sidecar.

use std::{
    io,
    net::{Shutdown, TcpListener, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, ExitCode},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    guest::{self, CGROUP_ROOT, HOST_CGROUP, PUBLIC_SOCK, RELAY_PORT},
    sys,
};

pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            println!("relay: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    sys::join_cgroup(
        &Path::new(CGROUP_ROOT).join(HOST_CGROUP).join("relay"),
        std::process::id(),
    )
    .context("joining the host cgroup")?;
    // /proc/self/net is this namespace's view (/sys/class/net is the namespace of whoever
    // mounted sysfs: the init's, which the device leaves).
    guest::wait_for(
        "eth0 in the relay's namespace",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string("/proc/self/net/dev")
                .is_ok_and(|dev| dev.lines().any(|l| l.trim_start().starts_with("eth0:")))
        },
    )?;
    // QEMU's user networking: the guest is 10.0.2.15 behind a NAT with no DHCP needed.
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "set", "eth0", "up"],
        &["addr", "add", "10.0.2.15/24", "dev", "eth0"],
    ] {
        let status = Command::new("ip").args(args).status()?;
        if !status.success() {
            bail!("ip {}: {status}", args.join(" "));
        }
    }
    let listener = TcpListener::bind(("0.0.0.0", RELAY_PORT))
        .with_context(|| format!("binding port {RELAY_PORT}"))?;
    println!("relay: listening on {RELAY_PORT}, forwarding to {PUBLIC_SOCK}");
    for stream in listener.incoming() {
        match stream {
            Ok(tcp) => {
                thread::spawn(move || {
                    if let Err(err) = forward(tcp) {
                        println!("relay: connection: {err}");
                    }
                });
            }
            Err(err) => println!("relay: accept: {err}"),
        }
    }
    Ok(())
}

/// Copies both ways until each side has finished sending; a half-close is passed on, so
/// `docker attach`/`exec` streams and hijacked connections work as they do on a plain socket.
fn forward(tcp: TcpStream) -> io::Result<()> {
    let unix = UnixStream::connect(PUBLIC_SOCK)?;
    tcp.set_nodelay(true)?;
    let (mut tcp_read, mut unix_write) = (tcp.try_clone()?, unix.try_clone()?);
    let upstream = thread::spawn(move || {
        let copied = io::copy(&mut tcp_read, &mut unix_write);
        let _ = unix_write.shutdown(Shutdown::Write);
        copied
    });
    let (mut unix_read, mut tcp_write) = (unix, tcp);
    let copied = io::copy(&mut unix_read, &mut tcp_write);
    let _ = tcp_write.shutdown(Shutdown::Write);
    let _ = upstream.join();
    copied.map(drop)
}
