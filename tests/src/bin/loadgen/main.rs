//! `loadgen`: the HTTP load generator of `cargo xtask bench` (a benchmark tool, not a test).
//! It speaks HTTP/1.1 over a unix socket with hyper's client, one kept-alive connection per
//! concurrent worker, and prints one JSON line of results on stdout.
//!
//! - `loadgen http SOCKET PATH CONCURRENCY SECONDS [WARMUP]`: GET PATH in a closed loop;
//!   requests/s over the measured window and p50/p99 latency of the requests completed in it,
//!   and its own CPU time (`cpu_ticks`, warm-up included).
//! - `loadgen upload SOCKET PATH BYTES`: one POST of BYTES (Content-Length, streamed from a
//!   reused buffer, never held whole) and the throughput until both the body is sent and the
//!   answer is read.
//! - `loadgen relay LISTEN UPSTREAM` and `loadgen hyper-proxy LISTEN UPSTREAM`: the floors the
//!   sidecar bench measures proxies against (a byte relay; hyper's server and client alone).
//! - `loadgen spew BYTES`: writes BYTES zero bytes to stdout and exits (an attached container's
//!   output).
//! - `loadgen sink SOCKET`: serves until killed, reading every request body to its end before
//!   answering 200, as the engine does with `images/load`. (nginx answers first and discards the
//!   body, which tells a client it may stop sending; making nginx read it first means spooling
//!   it to a file, whose cost would drown the proxies'.)
//!
//! It runs on one thread (tokio's current-thread runtime) so that it takes at most one core from
//! the proxies it measures, whatever the concurrency.

mod stats;

use std::{
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    process::ExitCode,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, sync::oneshot};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The modes that serve or write on their own runtime (or none), not the client's.
    let own = match &args[..] {
        [mode, listen, upstream] if mode == "relay" => {
            Some(relay(Path::new(listen), Path::new(upstream)))
        }
        [mode, listen, upstream] if mode == "hyper-proxy" => {
            Some(hyper_proxy(Path::new(listen), Path::new(upstream)))
        }
        [mode, bytes] if mode == "spew" => Some(spew(bytes)),
        _ => None,
    };
    if let Some(result) = own {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("loadgen: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("loadgen: {err}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(&args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: loadgen http SOCKET PATH CONCURRENCY SECONDS [WARMUP] | loadgen upload SOCKET PATH BYTES [chunked] | loadgen sink SOCKET | loadgen relay LISTEN UPSTREAM | loadgen hyper-proxy LISTEN UPSTREAM | loadgen spew BYTES";

/// BYTES zero bytes on stdout, 64 KiB per write: what a container prints to an attached client
/// (the `streams` section's attach stream).
fn spew(bytes: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut left: u64 = bytes.parse().context("BYTES")?;
    let chunk = vec![0u8; 64 << 10];
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n]).context("writing stdout")?;
        left -= n as u64;
    }
    out.flush().context("writing stdout")
}

/// Serves `listen` on the sidecar's runtime (tokio, one worker per core), each accepted
/// connection in a task of its own, as `serve` makes it: the frame of the relay and of bare
/// hyper, so that they differ only in what they do with a connection.
fn serve_each<F, Fut>(listen: &Path, serve: F) -> anyhow::Result<()>
where
    F: Fn(UnixStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = std::fs::remove_file(listen);
        let listener = tokio::net::UnixListener::bind(listen)
            .with_context(|| format!("binding {}", listen.display()))?;
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(serve(client));
        }
    })
}

/// The floor of any proxy on this machine: bytes copied both ways between each client
/// connection and a connection of its own to the upstream, on the sidecar's runtime, reading
/// nothing of HTTP. Per request it makes the syscalls every proxy must (a read and a write each
/// way), so what a proxy costs above it is its own work.
fn relay(listen: &Path, upstream: &Path) -> anyhow::Result<()> {
    let upstream = Arc::new(upstream.to_owned());
    serve_each(listen, |mut client| {
        let upstream = upstream.clone();
        async move {
            let Ok(mut server) = UnixStream::connect(&*upstream).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
    })
}

/// hyper alone, as the sidecar uses it: its HTTP/1 server (the sidecar's head timeout, timer and
/// buffer limit) in front of its HTTP/1 client, one kept-alive upstream connection per client
/// connection, both bodies streamed; no identity, policy or framing guard, and no upgrades. What
/// the sidecar costs above this is its own pipeline; what this costs above the relay is hyper's.
fn hyper_proxy(listen: &Path, upstream: &Path) -> anyhow::Result<()> {
    use eci_agent::sidecar::MAX_HEAD_BYTES;
    use hyper::body::Incoming;
    use hyper_util::rt::TokioTimer;
    use tokio::sync::Mutex;

    type Sender = http1::SendRequest<Incoming>;

    async fn forward(
        sender: &Mutex<Option<Sender>>,
        upstream: &Path,
        req: Request<Incoming>,
    ) -> anyhow::Result<http::Response<Incoming>> {
        let mut slot = sender.lock().await;
        let reusable = match slot.take() {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut s = match reusable {
            Some(s) => s,
            None => {
                let stream = UnixStream::connect(upstream).await?;
                let (s, conn) = http1::Builder::new()
                    .max_buf_size(MAX_HEAD_BYTES)
                    .handshake(TokioIo::new(stream))
                    .await?;
                tokio::spawn(conn);
                s
            }
        };
        let resp = s.send_request(req).await?;
        *slot = Some(s);
        Ok(resp)
    }

    let upstream = Arc::new(upstream.to_owned());
    serve_each(listen, |client| {
        let upstream = upstream.clone();
        async move {
            let sender = Arc::new(Mutex::new(None));
            let service = hyper::service::service_fn(move |req| {
                let sender = sender.clone();
                let upstream = upstream.clone();
                async move {
                    match forward(&sender, &upstream, req).await {
                        Ok(resp) => Ok(resp.map(http_body_util::Either::Left)),
                        Err(err) => http::Response::builder()
                            .status(502)
                            .body(http_body_util::Either::Right(http_body_util::Full::new(
                                Bytes::from(err.to_string()),
                            )))
                            .map_err(anyhow::Error::from),
                    }
                }
            });
            // The sidecar's head timeout (`SidecarConfig::new`).
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(client), service)
                .await;
        }
    })
}

async fn run(args: &[String]) -> anyhow::Result<String> {
    match args {
        [mode, socket, path, concurrency, seconds, rest @ ..] if mode == "http" => {
            let warmup = match rest {
                [] => 0.5,
                [w] => w.parse().context("WARMUP")?,
                _ => bail!("{USAGE}"),
            };
            let plan = Plan {
                socket: PathBuf::from(socket),
                path: path.clone(),
                concurrency: concurrency.parse().context("CONCURRENCY")?,
                warmup: Duration::from_secs_f64(warmup),
                measure: Duration::from_secs_f64(seconds.parse().context("SECONDS")?),
            };
            if plan.concurrency == 0 || plan.measure.is_zero() {
                bail!("CONCURRENCY and SECONDS must be positive");
            }
            let mut json = closed_loop(&plan).await?.to_json();
            // Its own CPU (warm-up included), so the bench can weigh a way's whole cost.
            json["cpu_ticks"] = own_cpu_ticks().into();
            Ok(json.to_string())
        }
        [mode, socket, path, bytes, framing @ ..]
            if mode == "upload" && matches!(framing, [] | [_]) =>
        {
            let bytes: u64 = bytes.parse().context("BYTES")?;
            let chunked = match framing {
                [] => false,
                [word] if word == "chunked" => true,
                _ => bail!("{USAGE}"),
            };
            let (seconds, status) = upload(Path::new(socket), path, bytes, chunked).await?;
            Ok(serde_json::json!({
                "bytes": bytes,
                "seconds": seconds,
                "mib_per_s": bytes as f64 / (1024.0 * 1024.0) / seconds,
                "status": status,
            })
            .to_string())
        }
        [mode, socket] if mode == "sink" => sink(Path::new(socket)).await,
        _ => bail!("{USAGE}"),
    }
}

/// utime + stime of this process from /proc/self/stat (fields 14 and 15, counted after the
/// `)` that ends the command name), in clock ticks; `None` if unreadable.
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

async fn sink(socket: &Path) -> anyhow::Result<String> {
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::task::spawn_local(async move {
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut body = req.into_body();
                    let mut read: u64 = 0;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame?.into_data() {
                            read += data.len() as u64;
                        }
                    }
                    let answer = format!("{{\"stream\":\"Loaded {read} bytes\"}}");
                    Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                        Bytes::from(answer),
                    )))
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Plan {
    socket: PathBuf,
    path: String,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
}

/// What one worker saw inside the measured window.
#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
    reconnects: u64,
}

async fn closed_loop(plan: &Plan) -> anyhow::Result<stats::Summary> {
    let start = Instant::now();
    let window = (start + plan.warmup, start + plan.warmup + plan.measure);
    let mut workers = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let socket = plan.socket.clone();
        let path = plan.path.clone();
        workers.push(tokio::task::spawn_local(async move {
            worker(&socket, &path, window).await
        }));
    }
    let mut all = Tally::default();
    for worker in workers {
        let tally = worker.await.context("worker panicked")??;
        all.latencies_ns.extend(tally.latencies_ns);
        all.errors += tally.errors;
        all.reconnects += tally.reconnects;
    }
    Ok(stats::Summary::new(
        all.latencies_ns,
        all.errors,
        all.reconnects,
        plan.measure,
    ))
}

async fn connect(socket: &Path) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(socket: &Path, path: &str, window: (Instant, Instant)) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut sender = connect(socket).await?;
    loop {
        if sender.ready().await.is_err() {
            // The server closed the kept-alive connection (nginx's keepalive_requests, or an
            // error): a fresh one, counted, as a real client would do.
            sender = connect(socket).await?;
            tally.reconnects += 1;
            continue;
        }
        let req = Request::get(path)
            .header(header::HOST, "docker")
            .body(Empty::<Bytes>::new())?;
        let sent = Instant::now();
        if sent >= window.1 {
            return Ok(tally);
        }
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                resp.into_body().collect().await.is_ok() && status.is_success()
            }
            Err(_) => false,
        };
        let done = Instant::now();
        if sent >= window.0 && done <= window.1 {
            if ok {
                tally.latencies_ns.push(duration_ns(done - sent));
            } else {
                tally.errors += 1;
            }
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A body of `left` bytes made of one shared chunk, which tells `done` when its last chunk was
/// taken by the connection; of known length (`Content-Length`) unless `chunked`.
struct Upload {
    chunk: Bytes,
    left: u64,
    chunked: bool,
    done: Option<oneshot::Sender<()>>,
}

impl Body for Upload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        let data = self.chunk.slice(..n as usize);
        // The connection takes no more once the last chunk is out (Content-Length is met).
        if self.left == 0
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.left)
        }
    }
}

/// One POST of `bytes`; `chunked` frames it as Go's client frames a body it knows no length of
/// (the CLI's `load` and `build`): one 32 KiB chunk per read of its source.
async fn upload(
    socket: &Path,
    path: &str,
    bytes: u64,
    chunked: bool,
) -> anyhow::Result<(f64, u16)> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::task::spawn_local(conn);
    let (done_tx, done_rx) = oneshot::channel();
    let body = Upload {
        chunk: Bytes::from(vec![0x5a; if chunked { 32 << 10 } else { 256 << 10 }]),
        left: bytes,
        chunked,
        done: Some(done_tx),
    };
    let req = Request::post(path)
        .header(header::HOST, "docker")
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(body)?;
    let start = Instant::now();
    let resp = sender
        .send_request(req)
        .await
        .context("sending the upload")?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .context("reading the answer")?;
    // The server may answer before it has read the whole body (nginx discards it): the upload
    // is over when the last byte has left, too.
    done_rx
        .await
        .context("the connection stopped before the whole body was sent")?;
    let seconds = start.elapsed().as_secs_f64();
    conn.abort();
    if !(200..300).contains(&status) {
        bail!("upload answered {status}");
    }
    Ok((seconds, status))
}
