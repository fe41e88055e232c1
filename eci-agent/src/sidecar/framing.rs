//! Request framing the sidecar refuses outright, before hyper reads it.
//!
//! hyper, like Go, reads a request that carries both `Content-Length` and `Transfer-Encoding:
//! chunked` as chunked and drops the length, then closes the connection after it. That is safe
//! (the engine receives what hyper parsed, re-framed), but such a request is a smuggling attempt
//! or a broken client, and the sidecar answers it with a 400 and closes, like a strict proxy.
//! hyper does not let a handler see that both headers were sent, so this guard follows the byte
//! stream hyper reads, finds each request head and skips each body by its framing; when a head
//! carries both, it spoils the head's last byte so that hyper's parser rejects it with 400.
//!
//! The guard only ever makes hyper stricter: when it cannot follow the stream (a head it cannot
//! parse, an upgrade, a body it does not understand) it stops looking and hyper alone decides.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, ReadBuf};

/// Heads longer than this are hyper's to refuse (431); the guard stops following.
const MAX_HEAD: usize = super::MAX_HEAD_BYTES + 1;
/// hyper's own limit on the number of headers.
const MAX_HEADERS: usize = 100;

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Skipping `n` more body bytes.
    Body(u64),
    /// In a chunked body: collecting a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading trailer lines until an empty one.
    Trailers,
    /// No longer following (upgrade, unparseable input, or a refused head).
    Off,
}

#[derive(Debug)]
pub struct FramingGuard {
    state: State,
    /// The head or line being collected.
    line: Vec<u8>,
    /// Heads refused so far (for tests and logs).
    pub refused: usize,
}

impl Default for FramingGuard {
    fn default() -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            refused: 0,
        }
    }
}

/// What a complete head says about the body that follows.
enum HeadFraming {
    Conflict,
    Upgrade,
    Chunked,
    Length(u64),
    Unknown,
}

impl FramingGuard {
    /// Follows `bytes`, just read and not yet seen by hyper; may spoil the last byte of a head.
    pub fn scan(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Off => return,
                State::Body(n) => {
                    let take = n.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == n {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkData(n) => {
                    let take = n.min((bytes.len() - i) as u64);
                    i += take as usize;
                    if take == n {
                        // The data's CRLF is read as an (empty) line before the next size.
                        self.state = State::ChunkSize;
                        self.line.clear();
                        self.line.push(b'-');
                    } else {
                        self.state = State::ChunkData(n - take);
                    }
                }
                State::Head => {
                    // A head can only end at a LF: take the bytes up to the next one at once
                    // (byte by byte this guard cost about 7% of a proxied request).
                    let rest = &bytes[i..];
                    let (take, at_lf) = match rest.iter().position(|&b| b == b'\n') {
                        Some(lf) => (lf + 1, true),
                        None => (rest.len(), false),
                    };
                    if self.line.len() + take > MAX_HEAD {
                        self.state = State::Off;
                        return;
                    }
                    self.line.extend_from_slice(&rest[..take]);
                    let lf = i + take - 1;
                    i += take;
                    if at_lf && head_complete(&self.line) {
                        match self.judge_head() {
                            HeadFraming::Conflict => {
                                // hyper has not parsed the head yet (its end is in this read):
                                // a NUL where the final LF was makes its parser answer 400.
                                bytes[lf] = 0;
                                self.refused += 1;
                                self.state = State::Off;
                                return;
                            }
                            HeadFraming::Upgrade | HeadFraming::Unknown => self.state = State::Off,
                            HeadFraming::Chunked => self.state = State::ChunkSize,
                            HeadFraming::Length(0) => self.state = State::Head,
                            HeadFraming::Length(n) => self.state = State::Body(n),
                        }
                        self.line.clear();
                    }
                }
                State::ChunkSize | State::Trailers => {
                    let b = bytes[i];
                    i += 1;
                    if b != b'\n' {
                        if self.line.len() > 4096 {
                            self.state = State::Off;
                            return;
                        }
                        self.line.push(b);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::ChunkSize if line == b"-" => State::ChunkSize, // data CRLF
                        State::ChunkSize => match chunk_size(line) {
                            Some(0) => State::Trailers,
                            Some(n) => State::ChunkData(n),
                            None => State::Off,
                        },
                        _ if line.is_empty() => State::Head,
                        _ => State::Trailers,
                    };
                }
            }
        }
    }

    fn judge_head(&self) -> HeadFraming {
        let head = &self.line;
        // Left uninitialised: zeroing 100 headers for every request cost more than parsing.
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return HeadFraming::Unknown,
        }
        let (mut te, mut cl, mut upgrade) = (None::<&[u8]>, None::<u64>, false);
        let mut cl_seen = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("content-length") {
                cl_seen = true;
                cl = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok());
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        match (te, cl_seen) {
            (Some(_), true) => HeadFraming::Conflict,
            _ if upgrade => HeadFraming::Upgrade,
            (Some(te), false) => {
                let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
                if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    HeadFraming::Chunked
                } else {
                    HeadFraming::Unknown
                }
            }
            (None, true) => cl.map_or(HeadFraming::Unknown, HeadFraming::Length),
            (None, false) => HeadFraming::Length(0),
        }
    }
}

/// A head ends with an empty line (CRLF CRLF, or bare LFs, which hyper also accepts); empty
/// lines before the request line are not an end.
fn head_complete(buf: &[u8]) -> bool {
    let trimmed = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .map_or(&buf[buf.len()..], |start| &buf[start..]);
    trimmed.ends_with(b"\r\n\r\n") || trimmed.ends_with(b"\n\n") || trimmed.ends_with(b"\n\r\n")
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// A client stream whose reads go through a [`FramingGuard`].
pub struct Guarded<S> {
    inner: S,
    guard: FramingGuard,
}

impl<S> Guarded<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            guard: FramingGuard::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let refused = this.guard.refused;
            this.guard.scan(&mut buf.filled_mut()[before..]);
            if this.guard.refused > refused {
                tracing::info!(
                    "request with both Content-Length and Transfer-Encoding refused (400)"
                );
            }
        }
        polled
    }
}

super::sniff::write_through!(Guarded);

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns what hyper would see and the count of
    /// refused heads.
    fn feed(input: &[u8], step: usize) -> (Vec<u8>, usize) {
        let mut guard = FramingGuard::default();
        let mut out = input.to_vec();
        for piece in out.chunks_mut(step) {
            guard.scan(piece);
        }
        (out, guard.refused)
    }

    const CONFLICT: &[u8] =
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn a_head_with_both_framings_is_spoiled_at_its_last_byte() {
        for step in [1, 3, 7, CONFLICT.len()] {
            let (out, refused) = feed(CONFLICT, step);
            assert_eq!(refused, 1, "step {step}");
            let end = CONFLICT.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 3;
            assert_eq!(out[end], 0);
            assert_eq!(&out[..end], &CONFLICT[..end]);
        }
    }

    #[test]
    fn pipelined_requests_are_followed_through_their_bodies() {
        // The second request's "body" looks like a conflicting head; it is data, not a head.
        let body = "POST /y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut input = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(
            format!(
                "POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{:x};ext=1\r\n{body}\r\n0\r\nX-Trailer: 1\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        input.extend_from_slice(b"GET /_ping HTTP/1.1\r\n\r\n");
        for step in [1, 2, 5, 64, input.len()] {
            let (out, refused) = feed(&input, step);
            assert_eq!(
                (refused, out.as_slice()),
                (0, input.as_slice()),
                "step {step}"
            );
        }
        // And a conflicting head after them is still found.
        input.extend_from_slice(CONFLICT);
        assert_eq!(feed(&input, 9).1, 1);
    }

    #[test]
    fn what_it_cannot_follow_is_left_to_hyper() {
        for input in [
            &b"GET /x HTTP/1.1\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\nPOST /y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nPOST /y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GARBAGE\r\n\r\nPOST /y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (out, refused) = feed(input, 4);
            assert_eq!((refused, out.as_slice()), (0, input));
        }
    }

    #[test]
    fn leading_empty_lines_and_bare_lf_heads() {
        let (_, refused) = feed(
            b"\r\n\r\nPOST /x HTTP/1.1\nContent-Length: 1\nTransfer-Encoding: chunked\n\n",
            1,
        );
        assert_eq!(refused, 1);
    }
}
