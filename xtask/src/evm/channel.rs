//! The host end of the host channel: a unix socket on the host whose every connection becomes a
//! TCP connection to the loopback port that QEMU forwards to the guest's relay (which hands it to
//! the agent's sidecar as a trusted host caller). The socket file is removed when dropped.

use std::{
    fs, io,
    net::{Shutdown, TcpStream},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    thread,
};

use anyhow::Context as _;

pub struct Channel {
    pub socket: PathBuf,
}

impl Channel {
    /// Listens on `socket` (a stale file there is replaced) and relays to 127.0.0.1:`port`.
    pub fn open(socket: &Path, port: u16) -> anyhow::Result<Self> {
        if let Some(parent) = socket.parent() {
            fs::create_dir_all(parent)?;
        }
        match fs::remove_file(socket) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("removing {}", socket.display()));
            }
            _ => {}
        }
        let listener =
            UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    if let Err(err) = forward(stream, port) {
                        eprintln!("xtask channel: {err}");
                    }
                });
            }
        });
        Ok(Self {
            socket: socket.to_owned(),
        })
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.socket);
    }
}

/// Copies both ways, passing each side's half-close on (hijacked attach/exec streams need it).
fn forward(unix: UnixStream, port: u16) -> io::Result<()> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_nodelay(true)?;
    let (mut unix_read, mut tcp_write) = (unix.try_clone()?, tcp.try_clone()?);
    let upstream = thread::spawn(move || {
        let copied = io::copy(&mut unix_read, &mut tcp_write);
        let _ = tcp_write.shutdown(Shutdown::Write);
        copied
    });
    let (mut tcp_read, mut unix_write) = (tcp, unix);
    let copied = io::copy(&mut tcp_read, &mut unix_write);
    let _ = unix_write.shutdown(Shutdown::Write);
    let _ = upstream.join();
    copied.map(drop)
}
