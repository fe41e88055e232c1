//! `cargo xtask run --vm`: the eci VM serving the agent's sidecar to the host through the channel,
//! until Ctrl-C (or SIGTERM), which stops QEMU by pid and removes the socket and the share.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    sync::mpsc::RecvTimeoutError,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    boot::{self, Accel, Mode, Share, Vm},
    channel::Channel,
    image, signals,
};
use crate::{build, setup};

pub fn run(root: &Path, accel: Accel, settings: &Path, socket: &Path) -> anyhow::Result<()> {
    let kernel = setup::eci_vm_kernel(root)?;
    let image = image::ensure(root, &kernel)?;
    let bins = build::guest(root)?;
    let share = Share::new(root, &bins, settings)?;
    signals::install();
    let vm = Vm::start(&image, &share, Mode::Serve, accel)?;
    println!(
        "xtask run: eci VM booting (qemu pid {}, kernel {}, settings {})",
        vm.pid(),
        kernel.package,
        settings.display()
    );
    wait_ready(&vm)?;
    let channel = Channel::open(socket, vm.channel_port)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ping(&channel.socket) {
        if Instant::now() > deadline || signals::stop_requested() {
            bail!("the sidecar did not answer through the host channel");
        }
        thread::sleep(Duration::from_millis(250));
    }
    println!(
        "xtask run: eci VM ready after {:.1} s; guest logs go to {}",
        vm.elapsed(),
        share.out().display()
    );
    println!("export DOCKER_HOST=unix://{}", channel.socket.display());
    println!("xtask run: Ctrl-C stops the VM");
    loop {
        if signals::stop_requested() {
            println!("xtask run: stopping the eci VM");
            return Ok(());
        }
        match vm.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => println!("  [vm] {line}"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the eci VM stopped"),
        }
    }
}

fn wait_ready(vm: &Vm) -> anyhow::Result<()> {
    let deadline = boot::wait_secs(Duration::from_secs(300));
    loop {
        if signals::stop_requested() {
            bail!("interrupted while booting");
        }
        let line = match vm.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
            Err(RecvTimeoutError::Timeout) => bail!("the eci VM was not ready after 300 s"),
            Err(RecvTimeoutError::Disconnected) => bail!("the eci VM stopped while booting"),
        };
        println!("  [vm] {line}");
        if line.starts_with("evm: ready") {
            return Ok(());
        }
        if line.starts_with("init: failure") || boot::is_panic(&line) {
            bail!("the eci VM failed to start: {line}");
        }
    }
}

/// `GET /_ping` through the channel.
pub fn ping(socket: &Path) -> bool {
    (|| -> anyhow::Result<bool> {
        let mut stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).context("reading")?;
        Ok(reply.starts_with(b"HTTP/1.1 200") || reply.starts_with(b"HTTP/1.0 200"))
    })()
    .unwrap_or(false)
}
