//! A client that went away, told apart from one that only finished sending.
//!
//! A client may shut down its write side once its request is sent (`socat`, `nc -N`, a shell
//! health check) and still read the answer: the engine answers it, so the sidecar must too.
//! Reading cannot tell that from a client that went away (both read as end of file), and a
//! client that went away must end its stream (`events`, `logs -f`, `wait`) and with it the
//! engine connection. A unix socket can tell: its peer's close sets `POLLHUP` on it, where a
//! half-close sets only `POLLRDHUP`.

use std::{io, os::fd::AsFd};

use rustix::event::{PollFd, PollFlags, Timespec};
use tokio::{io::Interest, net::UnixStream};

/// Whether the peer of `stream` closed its end (not only its write side). Asked only once a
/// read found the end of the stream, so it costs a system call per connection, not per request.
pub fn peer_gone(stream: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(stream, PollFlags::empty())];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&now)) {
        Ok(_) => fds[0].revents().contains(PollFlags::HUP),
        // Unanswerable: taken for gone, which ends the exchange as end of file did before.
        Err(_) => true,
    }
}

/// Watches a client stream for its peer's close without reading it, so that whoever reads it
/// (hyper, which reads nothing while an answer is under way once half-closed clients are
/// allowed) need not. It holds a second descriptor of the socket, with a readiness of its own:
/// the close wakes it with `POLLHUP`, which reads as write-closed; its other wake-ups (the
/// client reading what it was sent) cost no system call.
pub struct Watch {
    second: UnixStream,
}

impl Watch {
    pub fn new(stream: &UnixStream) -> io::Result<Self> {
        // The descriptor shares the socket's non-blocking mode, as `from_std` requires.
        let second = std::os::unix::net::UnixStream::from(stream.as_fd().try_clone_to_owned()?);
        Ok(Self {
            second: UnixStream::from_std(second)?,
        })
    }

    /// Resolves once the client has closed its end (or the watch failed, taken for the same).
    pub async fn gone(&self) {
        loop {
            match self.second.ready(Interest::WRITABLE).await {
                Ok(ready) if !ready.is_write_closed() => {
                    // Only this descriptor's readiness: the stream's own is not touched.
                    let _ = self.second.try_io(Interest::WRITABLE, || {
                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                    });
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn a_half_closed_client_is_not_gone_until_it_closes() {
        let (mut client, mut sidecar_end) = UnixStream::pair().unwrap();
        let watch = Watch::new(&sidecar_end).unwrap();
        client.write_all(b"req").await.unwrap();
        client.shutdown().await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(sidecar_end.read(&mut buf).await.unwrap(), 3);
        assert_eq!(sidecar_end.read(&mut buf).await.unwrap(), 0);
        assert!(!peer_gone(&sidecar_end), "half-closed");
        // The client reading what it is sent wakes the watch, which goes on waiting.
        sidecar_end.write_all(b"answer").await.unwrap();
        client.read_exact(&mut [0u8; 6]).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), watch.gone())
                .await
                .is_err(),
            "taken for gone while half-closed"
        );
        drop(client);
        tokio::time::timeout(Duration::from_secs(2), watch.gone())
            .await
            .expect("the close is seen");
        assert!(peer_gone(&sidecar_end));
    }

    #[tokio::test]
    async fn a_client_that_closed_before_the_watch_began_is_gone() {
        let (client, sidecar_end) = UnixStream::pair().unwrap();
        drop(client);
        assert!(peer_gone(&sidecar_end));
        let watch = Watch::new(&sidecar_end).unwrap();
        tokio::time::timeout(Duration::from_secs(2), watch.gone())
            .await
            .expect("the close is seen");
    }
}
