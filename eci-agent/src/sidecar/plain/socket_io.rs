//! Reads and writes on a shared `&UnixStream`, so that one stream can be read and written by
//! two futures of the same exchange (a body going up, the answer coming down).
//!
//! A read that fills less than the room it was given has emptied the socket, and a write that
//! sends less than it was given has filled it: the socket's readiness is cleared then, as
//! tokio's own `AsyncRead` and `AsyncWrite` do. `try_read` and `try_write` clear it only on
//! `WouldBlock`, so the next wait would otherwise begin with a system call that moves nothing
//! (one `recvfrom` more per request), and a wait for a hang-up would wake at once.
//!
//! Each move is tried before any wait: a try on a socket not known ready costs no system call,
//! and a socket known ready (a write's room, mostly) needs no wait at all. The waits use the
//! stream's own reader and writer slots (`poll_read_ready`, `poll_write_ready`), not a waiter
//! of `readable()` linked into its list and unlinked again: every future here belongs to the
//! connection's one task, so the one waker a slot keeps is the right one.

use std::{future::poll_fn, io};

use tokio::{io::Interest, net::UnixStream};

/// Reads what `stream` has into `buf`'s spare room (0: the peer closed).
pub async fn read_more(stream: &UnixStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        let room = buf.capacity() - buf.len();
        if let Some(read) = move_clearing(stream, Interest::READABLE, room, || {
            stream.try_read_buf(buf)
        }) {
            return read;
        }
        read_ready(stream).await?;
    }
}

/// Reads what `stream` has into `buf` (0: the peer closed).
pub async fn read_some(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let room = buf.len();
        if let Some(read) = move_clearing(stream, Interest::READABLE, room, || stream.try_read(buf))
        {
            return read;
        }
        read_ready(stream).await?;
    }
}

/// Waits until `stream` may have something to read, on its reader slot.
pub async fn read_ready(stream: &UnixStream) -> io::Result<()> {
    poll_fn(|cx| stream.poll_read_ready(cx)).await
}

/// One move of up to `room` bytes by `op` (a read or a write), ready for `interest`;
/// `None` when the socket was not ready after all.
fn move_clearing(
    stream: &UnixStream,
    interest: Interest,
    room: usize,
    op: impl FnOnce() -> io::Result<usize>,
) -> Option<io::Result<usize>> {
    let mut done = None;
    // `try_io` clears the readiness it saw (not a newer one) when its closure says
    // `WouldBlock`; a short move says so after keeping its count.
    let outcome = stream.try_io(interest, || match op() {
        Ok(n) => {
            done = Some(n);
            if n > 0 && n < room {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        }
        Err(err) => Err(err),
    });
    match (done, outcome) {
        (Some(n), _) => Some(Ok(n)),
        (None, Err(err)) if err.kind() == io::ErrorKind::WouldBlock => None,
        (None, Err(err)) => Some(Err(err)),
        (None, Ok(())) => None,
    }
}

/// Writes all of `bytes`.
pub async fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match move_clearing(stream, Interest::WRITABLE, bytes.len(), || {
            stream.try_write(bytes)
        }) {
            None => poll_fn(|cx| stream.poll_write_ready(cx)).await?,
            Some(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Some(Ok(n)) => bytes = &bytes[n..],
            Some(Err(err)) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a readiness wait (`readable()`, `writable()`) is over at once: a stale readiness
    /// says so too.
    async fn ready_at_once(wait: impl std::future::Future) -> bool {
        let mut wait = std::pin::pin!(wait);
        std::future::poll_fn(|cx| std::task::Poll::Ready(wait.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test]
    async fn a_short_write_leaves_the_stream_waiting_for_room() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let big = vec![7u8; 4 << 20];
        ours.writable().await.unwrap();
        let sent = move_clearing(&ours, Interest::WRITABLE, big.len(), || {
            ours.try_write(&big)
        })
        .unwrap()
        .unwrap();
        assert!(sent > 0 && sent < big.len(), "{sent}");
        assert!(
            !ready_at_once(ours.writable()).await,
            "readiness kept after a short write"
        );
        // Room again once the peer reads.
        let mut sink = vec![0u8; 4 << 20];
        let mut taken = 0;
        while taken < sent {
            taken += read_some(&theirs, &mut sink).await.unwrap();
        }
        ours.writable().await.unwrap();
    }

    #[tokio::test]
    async fn a_short_read_leaves_the_stream_waiting_for_more() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        write_all(&theirs, b"GET /_ping HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::with_capacity(4096);
        assert_eq!(read_more(&ours, &mut buf).await.unwrap(), 23);
        assert!(
            !ready_at_once(ours.readable()).await,
            "readiness kept after a short read"
        );

        write_all(&theirs, b"more").await.unwrap();
        let mut small = [0u8; 64];
        assert_eq!(read_some(&ours, &mut small).await.unwrap(), 4);
        assert!(!ready_at_once(ours.readable()).await);

        // A read that fills its room may have left bytes behind: readiness stays.
        write_all(&theirs, b"0123456789").await.unwrap();
        assert_eq!(read_some(&ours, &mut small[..4]).await.unwrap(), 4);
        assert!(ready_at_once(ours.readable()).await);
        assert_eq!(read_some(&ours, &mut small).await.unwrap(), 6);

        // A hang-up is still seen after readiness was cleared.
        drop(theirs);
        assert_eq!(read_some(&ours, &mut small).await.unwrap(), 0);
    }
}
