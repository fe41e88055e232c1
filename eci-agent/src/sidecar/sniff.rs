//! The first bytes of a connection: HTTP/1.1, or an HTTP/2 prior-knowledge preface.
//!
//! Engines from v29.2 also speak cleartext HTTP/2 on the socket, where BuildKit gRPC calls skip
//! the REST routes altogether. The sidecar does not classify HTTP/2, so only trusted host callers
//! may use it (passed through untouched); anyone else gets a GOAWAY.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf},
    net::UnixStream,
};

use super::peer::Caller;
use crate::ids::CallerKind;

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes cannot be the HTTP/2 preface any more, or are exactly it. HTTP/1
/// requests diverge at their first byte unless their method starts with `P`, so this costs no
/// extra round trip.
pub async fn first_bytes(mut stream: UnixStream) -> io::Result<(UnixStream, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let common = buf.len().min(H2_PREFACE.len());
        if buf[..common] != H2_PREFACE[..common] || buf.len() >= H2_PREFACE.len() {
            return Ok((stream, buf));
        }
    }
}

/// Serves a connection that opened with the HTTP/2 preface.
pub async fn prior_knowledge_h2(
    mut stream: UnixStream,
    first: Vec<u8>,
    caller: &Caller,
    engine: &std::path::Path,
) {
    if caller.kind == CallerKind::TrustedHost {
        let Ok(mut upstream) = UnixStream::connect(engine).await else {
            return;
        };
        if upstream.write_all(&first).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        }
        return;
    }
    tracing::info!(pid = ?caller.pid, cgroup = ?caller.cgroup, "HTTP/2 prior knowledge refused");
    // An empty SETTINGS frame (the server preface), then GOAWAY(last stream 0, HTTP_1_1_REQUIRED).
    let debug = b"eci-agent: HTTP/2 is not served to containers; use HTTP/1.1";
    let mut frames = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
    let len = 8 + debug.len();
    frames.extend_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        7,
        0,
        0,
        0,
        0,
        0,
    ]);
    frames.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x0d]);
    frames.extend_from_slice(debug);
    let _ = stream.write_all(&frames).await;
    let _ = stream.shutdown().await;
}

/// A stream whose first bytes were already read: they are served again before the rest.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    consumed: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            consumed: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.consumed < self.prefix.len() {
            let rest = &self.prefix[self.consumed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.consumed += n;
            if self.consumed == self.prefix.len() {
                self.prefix = Vec::new();
                self.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Writes go straight to the inner stream: [`Prefixed`] and the framing guard only change reads.
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

write_through!(Prefixed);
