//! A plain request's body, from the client to the engine.
//!
//! Bodies of known length (an image load or a build context from an API client) move through
//! a pipe with `splice(2)`: the kernel hands the client's pages to the engine's socket without
//! the sidecar copying them in and out. Where the kernel refuses to splice these sockets, they
//! are copied.
//!
//! Chunked bodies (the docker CLI's `load` and `build`) are copied as they came, chunk lines
//! included, while [`BodyEnd`] follows them to their end: Go's client writes each 32 KiB it
//! reads as one chunk, so splicing between chunk lines would take more system calls than a copy
//! of everything the client sent at once.

use std::io;

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::{io::Interest, net::UnixStream};

use super::{
    body_end::{BadChunk, BodyEnd},
    socket_io::{read_more, read_some, write_all},
};

/// The pipe's capacity asked for, and the largest copy: fewer, larger moves wake the engine
/// less often (the kernel caps a pipe at `fs.pipe-max-size`, 1 MiB by default).
const BODY_CHUNK: usize = 1 << 20;
/// The largest read of a chunked body: more than a unix socket's default send buffer holds
/// (208 KiB), so one read takes all the client has sent.
const CHUNKED_READ: usize = 256 << 10;

/// Which side failed a body.
#[derive(Debug)]
pub enum BodyFailure {
    /// The client went away or cut its body short.
    Client(io::Error),
    /// The engine stopped reading it.
    Engine(io::Error),
    /// The client broke its chunk framing; what went before it reached the engine.
    Malformed(BadChunk),
}

/// Sends `rest` more body bytes from `client` to `engine`.
pub async fn send(client: &UnixStream, engine: &UnixStream, rest: u64) -> Result<(), BodyFailure> {
    match Pipe::new() {
        Ok(pipe) => pipe.splice(client, engine, rest).await,
        Err(err) => {
            tracing::debug!(%err, "no pipe for splice: the body is copied");
            copy(client, engine, rest).await
        }
    }
}

/// Sends the rest of a chunked body from `client` to `engine`, `end` having followed what came
/// of it so far; returns what the client sent after the body's end (a pipelined request).
pub async fn send_chunked(
    client: &UnixStream,
    engine: &UnixStream,
    mut end: BodyEnd,
) -> Result<Vec<u8>, BodyFailure> {
    let mut buf = Vec::with_capacity(CHUNKED_READ);
    loop {
        buf.clear();
        let n = read_more(client, &mut buf)
            .await
            .map_err(BodyFailure::Client)?;
        if n == 0 {
            return Err(BodyFailure::Client(io::ErrorKind::UnexpectedEof.into()));
        }
        let body = end.follow(&buf).map_err(BodyFailure::Malformed)?;
        write_all(engine, &buf[..body])
            .await
            .map_err(BodyFailure::Engine)?;
        if end.done() {
            buf.drain(..body);
            return Ok(buf);
        }
    }
}

struct Pipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // Only slower with the default 64 KiB.
        let _ = rustix::pipe::fcntl_setpipe_size(&write, BODY_CHUNK);
        Ok(Self { read, write })
    }

    async fn splice(
        self,
        client: &UnixStream,
        engine: &UnixStream,
        mut rest: u64,
    ) -> Result<(), BodyFailure> {
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        let mut moved_any = false;
        while rest > 0 {
            let want = usize::try_from(rest).map_or(BODY_CHUNK, |rest| rest.min(BODY_CHUNK));
            // The pipe is empty here, so the only wait is for the client.
            let filled = loop {
                client.readable().await.map_err(BodyFailure::Client)?;
                // Readiness is cleared only on `WouldBlock`, not after a short move as plain reads
                // do (`socket_io`): a splice can stop short for want of room in the pipe with
                // bytes left in the socket, and those would wait for a readiness that never comes.
                match client.try_io(Interest::READABLE, || {
                    Ok(rustix::pipe::splice(
                        client,
                        None,
                        &self.write,
                        None,
                        want,
                        flags,
                    )?)
                }) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(err) if !moved_any && err.raw_os_error() == Some(libc::EINVAL) => {
                        tracing::debug!(%err, "splice refused: the body is copied");
                        return copy(client, engine, rest).await;
                    }
                    filled => break filled.map_err(BodyFailure::Client)?,
                }
            };
            if filled == 0 {
                return Err(BodyFailure::Client(io::ErrorKind::UnexpectedEof.into()));
            }
            moved_any = true;
            // The pipe holds data here, so the only wait is for the engine.
            let mut left = filled;
            while left > 0 {
                engine.writable().await.map_err(BodyFailure::Engine)?;
                match engine.try_io(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(
                        &self.read, None, engine, None, left, flags,
                    )?)
                }) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Ok(0) => return Err(BodyFailure::Engine(io::ErrorKind::WriteZero.into())),
                    Ok(n) => left -= n,
                    Err(err) => return Err(BodyFailure::Engine(err)),
                }
            }
            rest -= filled as u64;
        }
        Ok(())
    }
}

/// The same, through a buffer of the sidecar's.
async fn copy(client: &UnixStream, engine: &UnixStream, mut rest: u64) -> Result<(), BodyFailure> {
    let mut chunk = vec![0; usize::try_from(rest).map_or(BODY_CHUNK, |rest| rest.min(BODY_CHUNK))];
    while rest > 0 {
        let want = usize::try_from(rest).map_or(chunk.len(), |rest| rest.min(chunk.len()));
        let n = read_some(client, &mut chunk[..want])
            .await
            .map_err(BodyFailure::Client)?;
        if n == 0 {
            return Err(BodyFailure::Client(io::ErrorKind::UnexpectedEof.into()));
        }
        write_all(engine, &chunk[..n])
            .await
            .map_err(BodyFailure::Engine)?;
        rest -= n as u64;
    }
    Ok(())
}
