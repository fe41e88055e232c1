//! The sidecar's own HTTP/1.1 path, for plain requests.
//!
//! hyper parses each request into a typed message and writes it out again, and the same for
//! each answer: for the requests clients send most (`/_ping`, lists, inspects, bodies of known
//! length or chunked) that cost more CPU than HAProxy's whole relay. Here a connection's
//! requests are read with httparse instead. A head that every parser reads alike
//! ([`request`]), and that the pipeline admits without looking further, goes to the engine as
//! its bytes came, its body too ([`body_end`] finds where it ends), and the engine's answer
//! comes back as its bytes came ([`response`]), on one kept-alive engine connection. The first
//! request that is anything else (not plain, refused, judged by the socket-mount gate, a
//! hijack, a path the engine redirects) hands the connection, with every byte read of it, to
//! hyper's path for good: what hyper alone did before, it still does.
//!
//! A head must be whole within the head timeout, counted from when the connection is ready for
//! it, as hyper counts; bodies and answers have no timeout.

mod body;
mod body_end;
pub mod request;
pub mod response;
mod socket_io;

use std::{
    io,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tokio::net::UnixStream;

use super::hang_up;
use body::BodyFailure;
use body_end::{BadChunk, BodyEnd, Framing};
use request::Head;
pub use request::PlainHead;
use response::Answer;
use socket_io::{read_more, read_ready, write_all};

/// How a connection left this path.
pub enum Ended {
    /// It is over (closed by the client, timed out, or failed).
    Closed,
    /// hyper's path serves it from here: `read` holds the bytes read and not yet served.
    HandOff { read: Vec<u8>, client: UnixStream },
}

/// Answers are read in pieces of up to this size: a `docker save` or a log stream moves in
/// 64 KiB pieces, as the sidecar's tunnels do.
const READ_CHUNK: usize = 64 << 10;
/// What a connection's buffers start with: a whole request head and most answers.
const START_BUFFER: usize = 8 << 10;

/// Serves `client` (whose first bytes, `first`, were read already) until it closes or a
/// request is not for this path. `carry` is the pipeline's word on each plain head: true when
/// it admits the request as it is (and has counted and audited it).
pub async fn serve(
    client: UnixStream,
    first: Vec<u8>,
    engine_path: &Path,
    head_timeout: Duration,
    mut carry: impl FnMut(&PlainHead<'_>) -> bool,
) -> Ended {
    let mut read = first;
    read.reserve(START_BUFFER);
    let mut engine: Option<UnixStream> = None;
    let mut answer = Vec::new();
    // What a client sent after a chunked body, read with it.
    let mut pipelined = Vec::new();
    // One timer for all of a connection's heads, pushed later for each: pushing a timer later is
    // an atomic update, where a timer per head goes into tokio's wheel and out again.
    let head_timer = tokio::time::sleep(head_timeout);
    tokio::pin!(head_timer);
    loop {
        head_timer
            .as_mut()
            .reset(tokio::time::Instant::now() + head_timeout);
        let (head_len, framing, to_head) = loop {
            match request::read(&read) {
                Head::Plain(head) => {
                    if !carry(&head) {
                        return Ended::HandOff { read, client };
                    }
                    break (head.len, head.body, head.method == "HEAD");
                }
                Head::Other => return Ended::HandOff { read, client },
                Head::Partial => {}
            }
            read.reserve(START_BUFFER);
            let more = tokio::select! {
                biased;
                more = read_more(&client, &mut read) => Some(more),
                () = &mut head_timer => None,
            };
            match more {
                Some(Ok(0)) if read.is_empty() => return Ended::Closed,
                // A head cut short is hyper's to answer, as before.
                Some(Ok(0)) => return Ended::HandOff { read, client },
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    tracing::debug!(%err, "client connection ended");
                    return Ended::Closed;
                }
                None => {
                    tracing::debug!("request head not read within the head timeout");
                    return Ended::Closed;
                }
            }
        };
        let exchange = match Exchange::new(&read, head_len, framing, to_head) {
            Ok(exchange) => exchange,
            // Nothing of it went to the engine: refused here, as hyper refuses a bad chunk.
            Err(err) => {
                tracing::debug!(%err, "plain request refused");
                let _ = write_all(&client, &super::respond::bad_body_plain(&err)).await;
                return Ended::Closed;
            }
        };
        let served = match engine.take().filter(still_open) {
            Some(reused) => match exchange
                .run(&client, &read, &reused, &mut answer, &mut pipelined)
                .await
            {
                // The engine closed its idle connection as the request went out, before it
                // read any of it: the request goes again on a new connection.
                Err(Failure::EngineGone) if exchange.consumes_only_read() => None,
                other => Some((other, reused)),
            },
            None => None,
        };
        let (served, used) = match served {
            Some(served) => served,
            None => {
                let fresh = match super::forward::connect_engine(engine_path).await {
                    Ok(fresh) => fresh,
                    // The request was counted as admitted: it is answered here, as hyper's
                    // path answers the engine's absence, not handed on to be counted again.
                    Err(err) => {
                        tracing::debug!(%err, "plain request failed");
                        let _ =
                            write_all(&client, &super::respond::engine_failed_plain(&err)).await;
                        return Ended::Closed;
                    }
                };
                let served = exchange
                    .run(&client, &read, &fresh, &mut answer, &mut pipelined)
                    .await;
                (served, fresh)
            }
        };
        match served {
            Ok(Next::KeepAlive { engine_reusable }) => {
                if engine_reusable {
                    engine = Some(used);
                }
                read.drain(..exchange.consumed());
                read.append(&mut pipelined);
            }
            Ok(Next::Close) => return Ended::Closed,
            Err(failure) => {
                tracing::debug!(%failure, "plain request failed");
                if let Some(answer) = failure.answer() {
                    let _ = write_all(&client, &answer).await;
                }
                return Ended::Closed;
            }
        }
    }
}

/// An idle engine connection the engine has not closed (nor sent anything on: that would be
/// out of step). Costs no system call unless the socket was marked readable.
fn still_open(engine: &UnixStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(engine.try_read(&mut probe), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
}

/// What comes after an exchange.
enum Next {
    KeepAlive {
        engine_reusable: bool,
    },
    /// The client connection ends (the answer was delimited by closing it, or the client's
    /// body was not all sent when the answer ended).
    Close,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The engine connection closed or reset before any of its answer arrived.
    #[error("engine connection failed: the engine closed the connection before answering")]
    EngineGone,
    /// The engine broke the exchange; `answered` says the client has part of an answer.
    #[error("engine connection failed: {why}")]
    Engine { why: String, answered: bool },
    /// The client went away or cut its body short.
    #[error("client: {0}")]
    Client(io::Error),
    /// The client broke its body's chunk framing; `answered` says it has part of an answer.
    #[error("request body: {err}")]
    Malformed { err: BadChunk, answered: bool },
}

impl Failure {
    fn engine(err: impl std::fmt::Display, answered: bool) -> Self {
        Self::Engine {
            why: err.to_string(),
            answered,
        }
    }

    /// The answer the client gets, when it has none yet: the engine's failure, as hyper's
    /// path answers it.
    fn answer(&self) -> Option<Vec<u8>> {
        match self {
            Self::EngineGone
            | Self::Engine {
                answered: false, ..
            } => Some(super::respond::engine_failed_plain(self)),
            Self::Malformed {
                err,
                answered: false,
            } => Some(super::respond::bad_body_plain(err)),
            Self::Engine { answered: true, .. }
            | Self::Malformed { answered: true, .. }
            | Self::Client(_) => None,
        }
    }
}

/// One plain request and its answer.
#[derive(Clone, Copy)]
struct Exchange {
    head_len: usize,
    /// The body's bytes read with the head.
    body_read: usize,
    /// Where the rest of the body ends, when not all of it was read with the head.
    rest: Option<BodyEnd>,
    to_head: bool,
}

impl Exchange {
    /// The request whose head of `head_len` bytes is at the front of `read`.
    fn new(read: &[u8], head_len: usize, body: Framing, to_head: bool) -> Result<Self, BadChunk> {
        let mut end = BodyEnd::new(body);
        let body_read = end.follow(&read[head_len..])?;
        Ok(Self {
            head_len,
            body_read,
            rest: (!end.done()).then_some(end),
            to_head,
        })
    }

    /// The bytes of the connection's buffer this request takes: its head and what arrived of
    /// its body.
    fn consumed(&self) -> usize {
        self.head_len + self.body_read
    }

    /// The whole request was read already, so it can be sent again.
    fn consumes_only_read(&self) -> bool {
        self.rest.is_none()
    }

    /// Sends the request and relays its answer; `pipelined` gets what the client sent after a
    /// chunked body, read with its end.
    async fn run(
        &self,
        client: &UnixStream,
        read: &[u8],
        engine: &UnixStream,
        answer: &mut Vec<u8>,
        pipelined: &mut Vec<u8>,
    ) -> Result<Next, Failure> {
        let taken = &read[..self.consumed()];
        // Shared by the body going up and the answer coming down (one task, so no ordering is
        // needed; atomic only so the connection's future stays `Send`): a broken body is
        // answered only if no answer began.
        let answered = AtomicBool::new(false);
        if self.rest.is_none() {
            // The whole request in one write.
            if let Err(err) = write_all(engine, taken).await {
                return Err(gone_or(err, false));
            }
        }
        // A body still arriving goes on while the answer is awaited: the engine may answer
        // before it has read it all (an error), as hyper's client allows too.
        let send = send_body(client, engine, taken, self.rest);
        let relay = relay_answer(engine, client, answer, self.to_head, &answered);
        tokio::pin!(send, relay);
        let mut body_sent = self.rest.is_none().then_some(true);
        // What the client did while the answer was awaited; watched for until it did something.
        // Bytes read past this request are a pipelined request already: the client's end of
        // file, if it comes, is for after that one.
        let mut seen = (read.len() > self.consumed()).then_some(Client::SentMore);
        loop {
            tokio::select! {
                biased;
                relayed = &mut relay => return match (relayed, body_sent) {
                    // A client that sent all it will is answered, then the connection ends.
                    (Ok(_), Some(true)) if matches!(seen, Some(Client::HalfClosed(_))) => {
                        Ok(Next::Close)
                    }
                    (Ok(next), Some(true)) => Ok(next),
                    // The client's body is not all read: its connection cannot go on.
                    (Ok(_), _) => Ok(Next::Close),
                    (Err(failure), _) => Err(failure),
                },
                sent = &mut send, if body_sent.is_none() => match sent {
                    Ok(after) => {
                        body_sent = Some(true);
                        if !after.is_empty() {
                            *pipelined = after;
                            seen = Some(Client::SentMore);
                        }
                    }
                    Err(BodyFailure::Client(err)) => return Err(Failure::Client(err)),
                    Err(BodyFailure::Malformed(err)) => {
                        return Err(Failure::Malformed {
                            err,
                            answered: answered.load(Ordering::Relaxed),
                        });
                    }
                    // The engine stopped reading: its answer may still come.
                    Err(BodyFailure::Engine(err)) => {
                        tracing::debug!(%err, "engine stopped reading a request body");
                        body_sent = Some(false);
                    }
                },
                now = watch(client), if body_sent.is_some() && seen.is_none() => match now {
                    Client::Gone => {
                        return Err(Failure::Client(io::ErrorKind::ConnectionAborted.into()));
                    }
                    now => seen = Some(now),
                },
                () = async {
                    if let Some(Client::HalfClosed(Some(watch))) = &seen {
                        watch.gone().await;
                    }
                }, if matches!(seen, Some(Client::HalfClosed(Some(_)))) => {
                    return Err(Failure::Client(io::ErrorKind::ConnectionAborted.into()));
                },
            }
        }
    }
}

/// What a client did while its answer was awaited.
enum Client {
    /// It went away (a `docker events`, `logs -f` or `wait` whose caller left): the exchange
    /// ends, and with it the engine connection, as on hyper's path.
    Gone,
    /// It sent more (a pipelined request, not read here).
    SentMore,
    /// It shut down its write side and waits for the answer (`socat`, `nc -N`): the engine
    /// answers such a client, so the sidecar does too, and ends the connection after it
    /// ([`hang_up`]). A socket that read its end stays readable, so the client's close is
    /// watched for otherwise; without a watch (none could be made), writing the answer to a
    /// client that went away fails, which ends the exchange too.
    HalfClosed(Option<hang_up::Watch>),
}

/// Waits until the client does something while its answer is awaited. A client that waits
/// quietly sends nothing, so this costs no system call until it does: reads clear the
/// client's readiness once they have emptied it ([`socket_io`]). The wait uses the client's
/// reader slot, as reads do, since it is dropped unfinished after nearly every answer, and a
/// dropped `readable()` unlinks its waiter under the stream's lock.
async fn watch(client: &UnixStream) -> Client {
    loop {
        if read_ready(client).await.is_err() {
            return Client::Gone;
        }
        let mut probe = [std::mem::MaybeUninit::uninit(); 1];
        match client.try_io(tokio::io::Interest::READABLE, || {
            socket2::SockRef::from(client).peek(&mut probe)
        }) {
            Ok(0) if hang_up::peer_gone(client) => return Client::Gone,
            Ok(0) => return Client::HalfClosed(hang_up::Watch::new(client).ok()),
            Ok(_) => return Client::SentMore,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Client::Gone,
        }
    }
}

/// An engine connection's end before an answer began is [`Failure::EngineGone`]; anything
/// else broke the exchange.
fn gone_or(err: io::Error, answered: bool) -> Failure {
    let gone = matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    );
    if gone && !answered {
        Failure::EngineGone
    } else {
        Failure::engine(err, answered)
    }
}

/// Sends the head and the body read so far (`taken`), then the rest of the body from the
/// client, if `rest` says more is to come; returns what the client sent after a chunked body.
async fn send_body(
    client: &UnixStream,
    engine: &UnixStream,
    taken: &[u8],
    rest: Option<BodyEnd>,
) -> Result<Vec<u8>, BodyFailure> {
    // Not polled without a rest: the whole request went in one write.
    let Some(rest) = rest else {
        return Ok(Vec::new());
    };
    write_all(engine, taken)
        .await
        .map_err(BodyFailure::Engine)?;
    match rest.length_left() {
        Some(left) => body::send(client, engine, left).await.map(|()| Vec::new()),
        None => body::send_chunked(client, engine, rest).await,
    }
}

/// Passes the engine's answer on to the client, as its bytes came (but for hop-by-hop
/// headers), until its body ends.
async fn relay_answer(
    engine: &UnixStream,
    client: &UnixStream,
    buf: &mut Vec<u8>,
    to_head: bool,
    answered: &AtomicBool,
) -> Result<Next, Failure> {
    let answered_yet = || answered.load(Ordering::Relaxed);
    buf.clear();
    let head = loop {
        match response::read(buf, to_head) {
            Answer::Partial => {
                buf.reserve(START_BUFFER);
                match read_more(engine, buf).await {
                    Ok(0) if buf.is_empty() && !answered_yet() => {
                        return Err(Failure::EngineGone);
                    }
                    Ok(0) => {
                        return Err(Failure::engine(
                            "the engine closed mid-answer",
                            answered_yet(),
                        ));
                    }
                    Ok(_) => {}
                    Err(err) if buf.is_empty() => {
                        return Err(gone_or(err, answered_yet()));
                    }
                    Err(err) => return Err(Failure::engine(err, answered_yet())),
                }
            }
            Answer::Invalid(why) => {
                return Err(Failure::engine(why, answered_yet()));
            }
            Answer::Head(head) if head.interim => {
                write_all(client, &buf[head.start..head.len])
                    .await
                    .map_err(Failure::Client)?;
                answered.store(true, Ordering::Relaxed);
                buf.drain(..head.len);
            }
            Answer::Head(head) => break head,
        }
    };
    let mut end = BodyEnd::new(head.framing);
    let mut out_of_step = false;
    let now = end
        .follow(&buf[head.len..])
        .map_err(|err| Failure::engine(err, answered_yet()))?;
    out_of_step |= head.len + now < buf.len();
    // Head and the body read with it in one write: one wake-up of the client.
    write_all(client, &buf[head.start..head.len + now])
        .await
        .map_err(Failure::Client)?;
    answered.store(true, Ordering::Relaxed);
    while !end.done() {
        buf.clear();
        buf.reserve(READ_CHUNK);
        let n = read_more(engine, buf)
            .await
            .map_err(|err| Failure::engine(err, true))?;
        if n == 0 {
            return match head.framing {
                Framing::UntilClose => Ok(Next::Close),
                _ => Err(Failure::engine("the engine closed mid-answer", true)),
            };
        }
        let now = end.follow(buf).map_err(|err| Failure::engine(err, true))?;
        out_of_step |= now < n;
        write_all(client, &buf[..now])
            .await
            .map_err(Failure::Client)?;
    }
    Ok(Next::KeepAlive {
        engine_reusable: !(head.engine_closes || out_of_step),
    })
}

#[cfg(test)]
mod serve_tests;
