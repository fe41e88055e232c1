//! Reads and writes on a shared `&UnixStream`, so that one stream can be read and written by
//! two futures of the same exchange (a body going up, the answer coming down).
//!
//! A read that fills less than the room it was given has emptied the socket, and its readiness
//! is cleared then, as tokio's own `AsyncRead` does: `try_read` clears it only on
//! `WouldBlock`, so the next wait would otherwise begin with a read that finds nothing (one
//! system call more per request), and a wait for a hang-up would wake at once.

use std::io;

use tokio::{io::Interest, net::UnixStream};

/// Reads what `stream` has into `buf`'s spare room (0: the peer closed).
pub async fn read_more(stream: &UnixStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        let room = buf.capacity() - buf.len();
        if let Some(read) = read_clearing(stream, room, || stream.try_read_buf(buf)) {
            return read;
        }
    }
}

/// Reads what `stream` has into `buf` (0: the peer closed).
pub async fn read_some(stream: &UnixStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        let room = buf.len();
        if let Some(read) = read_clearing(stream, room, || stream.try_read(buf)) {
            return read;
        }
    }
}

/// One read of up to `room` bytes; `None` when there was nothing to read after all.
fn read_clearing(
    stream: &UnixStream,
    room: usize,
    read: impl FnOnce() -> io::Result<usize>,
) -> Option<io::Result<usize>> {
    let mut done = None;
    // `try_io` clears the readiness it saw (not a newer one) when its closure says
    // `WouldBlock`; a short read says so after keeping its count.
    let outcome = stream.try_io(Interest::READABLE, || match read() {
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
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Writes all of `first` then all of `then`, in one `writev` where the socket takes them.
pub async fn write_all_vectored(
    stream: &UnixStream,
    mut first: &[u8],
    mut then: &[u8],
) -> io::Result<()> {
    while !first.is_empty() {
        stream.writable().await?;
        let parts = [io::IoSlice::new(first), io::IoSlice::new(then)];
        match stream.try_write_vectored(&parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) if n < first.len() => first = &first[n..],
            Ok(n) => {
                then = &then[n - first.len()..];
                first = &[];
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
    }
    write_all(stream, then).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `stream` says it is readable without waiting (a stale readiness says so too).
    async fn says_readable(stream: &UnixStream) -> bool {
        use std::future::Future as _;
        let mut wait = std::pin::pin!(stream.readable());
        std::future::poll_fn(|cx| std::task::Poll::Ready(wait.as_mut().poll(cx).is_ready())).await
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
            !says_readable(&ours).await,
            "readiness kept after a short read"
        );

        write_all(&theirs, b"more").await.unwrap();
        let mut small = [0u8; 64];
        assert_eq!(read_some(&ours, &mut small).await.unwrap(), 4);
        assert!(!says_readable(&ours).await);

        // A read that fills its room may have left bytes behind: readiness stays.
        write_all(&theirs, b"0123456789").await.unwrap();
        assert_eq!(read_some(&ours, &mut small[..4]).await.unwrap(), 4);
        assert!(says_readable(&ours).await);
        assert_eq!(read_some(&ours, &mut small).await.unwrap(), 6);

        // A hang-up is still seen after readiness was cleared.
        drop(theirs);
        assert_eq!(read_some(&ours, &mut small).await.unwrap(), 0);
    }

    /// Larger than a unix socket's buffer, so the writes stop part-way in either slice.
    #[tokio::test]
    async fn a_vectored_write_sends_both_parts_whole_and_in_order() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let first: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
        let then: Vec<u8> = (0..700_003u32).map(|i| (i % 241) as u8).collect();
        let want = [first.as_slice(), then.as_slice()].concat();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                got.reserve(64 << 10);
                if read_more(&theirs, &mut got).await.unwrap() == 0 {
                    return got;
                }
            }
        });
        write_all_vectored(&ours, &first, &then).await.unwrap();
        drop(ours);
        assert!(reader.await.unwrap() == want, "bytes lost or out of order");
    }
}
