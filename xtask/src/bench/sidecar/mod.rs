//! Sidecar section: HTTP throughput, latency and CPU per request of the same fast upstream
//! (nginx from Debian on a unix socket, fixed answers: [`templates`]) reached seven ways
//! ([`results::Via`]): directly; through HAProxy from Debian configured as Tecnativa's
//! docker-socket-proxy is (path regexes per API section, `option http-server-close`); through
//! the same HAProxy with keep-alive and reuse of its engine connections (the best-configured
//! peer); through eci-agent's sidecar (`eci-agent run --allow-no-lsm`, the host trusted as
//! `cargo xtask run` trusts it); through a byte relay that reads no HTTP (`loadgen relay`),
//! the floor of any proxy on this machine; through HAProxy in TCP mode, the same floor relayed
//! by C code, so the floor is not tokio's; and through hyper's server and client alone,
//! configured as the sidecar's (`loadgen hyper-proxy`), which parts the sidecar's own pipeline
//! from the HTTP library under it. The load comes from `loadgen` (tests/src/bin/loadgen): hyper's
//! client, N kept-alive connections, one thread. Plus the throughput of one large upload
//! (`POST /v1.43/images/load`) each way, once of known length and once chunked in 32 KiB
//! chunks, as the docker CLI sends `load` and `build` bodies.
//!
//! Runs are interleaved (every route, concurrency and way, then again), each way's order
//! rotating per round, and each figure is the median over rounds, so a busy machine slows all
//! ways alike. On a small machine the load generator, the proxy and nginx share the cores: the
//! proxies' own CPU time per request is reported too ([`cpu`]), since it does not depend on that
//! sharing, and so is the load generator's and what one request costs the whole machine each
//! way. A run during which other processes used more than [`OTHERS_LIMIT`] of the machine is
//! discarded and retried (at most [`RETRIES`] times; then kept and flagged in the notes).
//!
//! Only host callers are timed here: a container caller needs a real engine (the container table
//! is filled from its events), which would then be the upstream of every way. Container callers
//! are timed by the `callers` section (`callers.rs`, a private dockerd as the upstream) and
//! counted by `count-callers.sh` next to this file (run by hand, as root): a private
//! dockerd as the engine, `loadgen` exec'd in a running container (deny list, allow list) or on
//! the host, callgrind and `strace -c` on the agent, and HAProxy keep-alive counted the same way.
//!
//! Tried to lower the sidecar's cost, each measured against the same build interleaved (CPU µs
//! per request at c = 1, 10, 50, 200 and a 1 GiB upload): a current-thread runtime; running
//! the engine connection inside the client connection's task (also with a task-local waker, so
//! the two sides' wake-ups of each other do not requeue the task); hyper's flattened writes
//! instead of `writev`. None moved the CPU per request beyond the noise (15–20 µs at c ≥ 10 for
//! all, nginx ~5 µs): about half of it is the kernel's socket work — 4 syscalls and 2 peer
//! wake-ups per proxied request, where nginx has 2 and 1. Kept: a 1 MiB send buffer on engine
//! connections (12–19% less agent CPU per GiB uploaded).
//!
//! Issue 13, counted rather than timed (callgrind on the agent, `GET /_ping` at c = 10, trusted
//! host caller: user-space instructions per request, which a busy machine does not change):
//! 41.1k before, 36.3k after stripping hop-by-hop headers in one pass, the framing guard taking
//! a head line at once, no per-request copies of method, target and command name, and no
//! allocation for a clean path (20.2 → 13.4 mallocs per request). HAProxy keep-alive with
//! Tecnativa's rules: 41.7k. Syscalls per request (strace -c): the agent 2 `recvfrom`,
//! 2 `writev`, ~0.2 `futex`, ~0.25 `epoll_wait`; HAProxy 2 `recvfrom`, 2 `sendto`, ~1
//! `clock_gettime`, ~0.5 `epoll_wait`.
//!
//! Session 4, container callers (count-callers.sh; dockerd, API 1.41, as the engine; c = 10;
//! instructions per request, ± ~700 between runs from scheduling). Before → after, `/_ping`:
//! host 38.0k → 35.8k, container under a deny list 38.8k → 37.0k, under an allow list
//! 38.7k → 36.5k; `/containers/json`: host 35.9k → 36.1k, deny 37.3k → 36.8k, allow 37.7k →
//! 36.4k (mallocs 15.2 → 14.3). HAProxy keep-alive in front of the same engine: 43.9k and 36.6k.
//! What the container path cost was per request, not the caller's identity (found once per
//! connection): the table's allowance lookup hashed the 64-byte id (421, now the connection's
//! revocation receiver is read); the revocation future was polled again on every wake-up of the
//! connection (464, now the connection runs in a task of its own); an allow list spelled out the
//! deciding rule (one `String`, ~750). Route classification scanned the table in order (1,650
//! for `/_ping`, which comes late; `/containers/json` comes early); an index by method and
//! first path segment makes it 430 for every caller. The rest of the container's difference is
//! the runtime parking more often at the caller's slower pace. Syscalls per request did not
//! change: 2 `recvfrom`, 2 `writev`, 0.35–0.8 `epoll_wait`, 0.2–0.35 `futex` (4.5–5.3).
//!
//! Streams with the real engine and CLI (session 4, one run of 2 rounds interleaved, a private
//! dockerd, 400 MB each, trusted host caller; the machine was 100% busy with others' builds, so
//! these are indications, not figures to hold a target to): `docker load` 5.5/6.3 s direct,
//! 5.5/5.3 s through the sidecar (agent CPU 0.26–0.29 s); `docker build` of a 400 MB context
//! 6.7/4.1 s direct, 5.6/4.8 s through it (0.35–0.44 s); `docker run` attached to 400 MB of
//! stdout 28.9/29.3 s direct, 35.2/29.8 s through it (1.2–1.8 s), the engine's own attach path
//! being the limit (14 MB/s). 64 KiB tunnel buffers instead of 8 KiB changed nothing measurable
//! there (the engine writes small frames). Not done: splice(2) for tunnels and bodies. These
//! streams are timed by the `streams` section since session 9 (`streams.rs`).
//!
//! Session 8, profiled with `perf` (frame pointers, `GET /_ping`, c = 50): the kernel is 57% of
//! the sidecar's CPU (the four socket syscalls per request and the peers' wake-ups, which every
//! proxy makes), libc 10% (malloc and free 5%), the agent's own code 32%, spread over hyper's
//! two dispatchers, tokio's scheduler and the pipeline with no symbol above 3%. mimalloc as the
//! global allocator, interleaved with the same build (3 rounds, c = 10/50/200): requests/s
//! 0.93/1.11/0.99×, CPU per request 1.02/0.87/0.93×, within the noise; not kept. The relay way
//! was added then to say where the targets lie: in a quiet run it reached 1.12–1.26× HAProxy
//! keep-alive's requests/s (1.12–1.21× at c ≥ 50, so 1.25× there is beyond any proxy here), p99
//! at c = 10 2.6–3.1× direct (the 1.3× target is too), and 0.60–0.68× HAProxy's CPU at c = 50
//! (the 0.75× target leaves a proxy about 1–2 µs per request for HTTP).
//!
//! Session 9, hyper alone (`loadgen hyper-proxy`: its server and client with the sidecar's
//! settings, one kept-alive upstream connection per client, no identity, policy, framing guard
//! or metrics), one run of 3 rounds: CPU per request at c = 50 16.5/14.6 µs (`/_ping`,
//! `/containers/json`) against the sidecar's 15.8/14.6 and HAProxy keep-alive's 14.2/13.7. The
//! pipeline costs nothing measurable there; what stands between the sidecar and 0.75× HAProxy's
//! CPU is hyper's own dispatch (two state machines and a channel per request), which only an
//! HTTP/1 path of the sidecar's own would remove. At c = 200 the sidecar used 3–9 µs more than
//! hyper alone (21.0/23.1 against 17.9/14.1). Looked into by hand (nginx upstream, 3 s runs at
//! c = 200 interleaved with bare hyper, 4–5 rounds, medians; single runs spread ±20% here):
//! syscalls per request are the same as hyper's (strace: 2 `writev`, 2 `recvfrom`, under 0.03
//! `epoll_wait` and `futex`); and no change beyond that spread came from a build without request
//! counting (the metrics mutex), one without the framing guard and the engine connection's 1 MiB
//! send buffer, one whose per-request future was cut from 6.6 KB to 2.9 KB (the gate's slow
//! paths boxed), or one that forwards at once with no path, policy or gate work at all
//! (`/_ping` 14.9 µs against the full pipeline's 15.4, hyper alone 13.3). So what the sidecar
//! costs above bare hyper is in how its connections are plumbed (the guarded, prefixed stream,
//! boxed bodies, header stripping), not in its decisions; none of it was kept.
//!
//! Session 10, the sidecar's own HTTP/1 path (`eci-agent/src/sidecar/plain`): plain requests
//! (a head every parser reads alike, admitted untouched) go to the engine as their bytes came
//! and the answers come back as theirs came, with no HTTP library; hyper serves a connection
//! from its first request that is anything else. Interleaved with the build before it (nginx
//! upstream, 2 s runs, 3 rounds, c = 50, `/containers/json`): 12.8–14.6 µs per request against
//! 16.0–18.8 (the relay 10.5–12.3), syscalls per request 2 `sendto` and 2 `recvfrom` (a
//! rewritten answer head sent apart from its body had made it 3 `sendto`: nginx answers
//! `Connection: keep-alive`, which is dropped). Request bodies of known length then moved by
//! splice(2) through a 1 MiB pipe: 1 GiB uploads to `loadgen sink`, 5 rounds, medians 3,181 MiB/s
//! and 140 ms of agent CPU per GiB, against 2,420 and 210 with 1 MiB copies and 1,975 and 300 on
//! hyper's path. Tried and not kept: one timer per connection for both the head timeout and
//! the hang-up watch (pushed later only, which tokio does without wheel work), to save the
//! second timer per request (about 1% of the agent's samples in `perf`); the watch's timer then
//! never fired in the unit test, and the saving was too small to chase why.
//!
//! Session 11, by hand against the same nginx (c = 50, 3 s runs, 6–10 rounds interleaved, the
//! agent's user and system CPU apart from /proc): `strace -c` found 3 `recvfrom` per request, one
//! of them finding nothing: `try_read` clears a socket's readiness only on `WouldBlock`, so each
//! wait for the next head or answer began with an empty read. Clearing it after a short read, as
//! tokio's own `AsyncRead` does, made it 2 and took the system time from 8.6–8.9 to 7.9–8.1 µs
//! per request, the relay's; the hang-up watch then needs no timer. What was left was user time,
//! 3.0–3.4 µs against the relay's 1.6: the answer's rewritten head sent by `writev` beside its body
//! instead of copied in front of it, and answer headers sorted by name length, took 0.15–0.2 µs;
//! fat LTO 0.25–0.65 µs (`profile.agent`). Measured and left: a build that did not count
//! requests at all used no less CPU within the runs' spread, so the metrics lock stays. The head
//! timeout is now one timer per connection pushed later per head (the wheel work per request
//! goes); body splices keep clearing readiness only on `WouldBlock`, since a splice can stop
//! short for want of pipe room with bytes left in the socket. 1 GiB uploads by hand spread too
//! widely (1.0–3.4 GiB/s through the agent in 3 rounds) to say what the clearing of writes bought.
//!
//! Session 12, by hand, nothing kept (medians of 3–12 interleaved rounds). The runtime: the relay
//! on one current-thread runtime used 8.5–9.1 µs per request at c = 10–200 against 9.4–12.2 on
//! tokio's two workers, and the agent with `TOKIO_WORKER_THREADS=1` 10.2 against 12.6 at c = 10,
//! but within 1 µs of it at c = 50 and 200, with 5–7% fewer requests/s at c = 50; connections
//! spread over two current-thread runtimes cost what two workers cost. One core per sidecar
//! would cap it on real hosts for a gain inside the spread of this one. Uploads: filling the
//! pipe from the client while the engine drains it (instead of a pipeful at a time) cut
//! `epoll_wait` from 4,972 to 3,184 per GiB, with 9,800 splices either way (the client's 208 KiB
//! send buffer sets how much one splice takes), and moved the median by +8% in one set of rounds
//! and −1% in the next; a 4 MiB send buffer on the engine connection changed nothing. The two
//! socket hops cost 110–140 ms of agent CPU per GiB, which on two cores shared with the client
//! and the engine is what keeps uploads under direct's rate. At c = 1 the agent and the relay
//! make the same system calls per request (2 `recvfrom`, 2 sends, 2 `epoll_wait`); two thirds of
//! the samples of each are the wake-up itself (`finish_task_switch`, the hypervisor's
//! spin-unlock), and each one's own code is 11% of the agent's samples and 6% of the relay's.
//!
//! Session 13, the `streams` section before and after chunked request bodies moved to the
//! sidecar's own path (two runs of 5 rounds, nine minutes apart): hyper's path had used
//! 0.48–1.72 s of agent CPU per GiB for `docker load` across rounds (median 1.00, HAProxy
//! keep-alive 0.56–0.64), the rounds that cost most being the slowest (1.89 s against 1.40 s for
//! 256 MiB): each chunk went from hyper's server task through a channel to the engine
//! connection's task, so a slow engine meant small frames and two wake-ups each. Copied in one
//! task in reads of up to 256 KiB: 0.36–0.44 s per GiB (median 0.40), `build` 0.36–0.80 (median
//! 0.44, from 0.68), and `load` 1.11× direct, `build` 0.98× (from 0.94× and 0.91×). The
//! upload is now timed chunked too (32 KiB chunks, as the CLI sends): in the first run, 3,773
//! MiB/s through the sidecar against 5,772 direct, 1,662 through HAProxy keep-alive, 1,228 through
//! the relay and 2,527 through hyper alone: a body of known length is spliced (4,811 in the same
//! run), each chunk is copied in and out. Splicing chunks would take three system calls per
//! 32 KiB chunk (peek its line, splice line and data into the pipe, splice them out) where the
//! copy takes two per 256 KiB read, against the two copies of every byte (`_copy_from_iter`
//! into the engine's socket was 29% of the agent's samples over `load` and `build`); not tried.
//!
//! Session 14, counted with callgrind on the agent profile built with line tables
//! (`CARGO_PROFILE_AGENT_DEBUG=line-tables-only`; without them LTO leaves one symbol), nginx
//! upstream, `/_ping` at c = 10: 12.9k user-space instructions per request, the tokio relay
//! 4.4k. Where the difference went: answer heads with hop-by-hop headers (nginx sends
//! `Connection: keep-alive` on every answer) rebuilt into a fresh `Vec` by comparing each header
//! with each `Connection` token, ~1.5k and a malloc; the head's CRLF check branching per byte,
//! ~300; `readable()`/`writable()` waiters linked into and out of the stream's list, the
//! hang-up watch's dropped unfinished after every answer, ~500; char searchers for `?`, `/` and
//! `%`, ~300. Cutting hop-by-hop lines in place (only the head's bytes before a cut line move),
//! a fold over neighbouring bytes, tries before waits on the stream's own reader and writer
//! slots, and byte searches: 9.1k. By hand, c = 50, 6 interleaved rounds against the build
//! before: user time 1.78 against 2.16 µs per request, system 7.18 against 7.36. What is left
//! above the relay is httparse (~2.2k, seven answer headers and one request header) and tokio's
//! own per-task work (its poll-time EWMA alone calls `pow` and the clock per batch). The relay
//! being tokio too, HAProxy in TCP mode is now a way of its own, a floor relayed in C: in the
//! first run with it (01:20, 3 rounds), 1.07–1.38× HAProxy keep-alive's requests/s (the tokio
//! relay 1.05–1.41×), p99 at c = 10 3.2× and 3.7× direct, 7.5–9.4 µs per request at c ≥ 50. The
//! 1 GiB upload of known length, by hand against `loadgen sink` (8 rounds interleaved): 4,854
//! MiB/s against 4,745 before and 6,011 direct, the agent using 110 ms of CPU per GiB and the
//! sink 100; with the client busy the whole transfer, the three of them need about 380 ms of
//! CPU per GiB on two cores, which caps the upload near 0.9× direct before any scheduling.
//! Counted by `count-callers.sh` against a private dockerd (which sends no hop-by-hop header,
//! so the in-place cut does not apply), c = 10, before → after: `/_ping` host 10.7k → 9.2k,
//! container under a deny list 10.8k → 9.2k, under an allow list 10.8k → 9.2k;
//! `/containers/json` 12.5k → 10.5k, 12.7k → 10.7k, 12.7k → 11.1k (HAProxy keep-alive 43.8k and
//! 36.5k); no mallocs per request either way, syscalls unchanged (2 `recvfrom`, 2 `sendto`,
//! 0.25–0.98 `epoll_wait`, 0.16–0.48 `futex`).
//! Tokio's `event_interval` at 16 and 255 instead of 61 (6 interleaved rounds at c = 10, 50 and
//! 200): within 0.2 µs and 5% of requests/s of the default everywhere; not kept.

mod callers;
mod cpu;
mod engine_rig;
mod results;
mod streams;
mod templates;

pub use callers::CallersSection;
pub use streams::StreamsSection;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::Context as _;

use super::{Context, Figure, Report, Scratch, Section, Target, median};
use crate::{
    build, exec,
    process::{Guarded, Stop},
    setup,
};
use cpu::MachineTicks;
use results::{HttpResult, Run, VIAS, Via};
use templates::HaproxyMode;

pub struct SidecarSection;

/// (figure name, request path).
const ROUTES: &[(&str, &str)] = &[
    ("ping", "/_ping"),
    ("containers_json", "/v1.43/containers/json"),
];
const CONCURRENCY: &[u32] = &[1, 10, 50, 200];
const UPLOAD_PATH: &str = "/v1.43/images/load";

/// A run is discarded when processes other than the measured ones used more than this share of
/// the whole machine during it.
const OTHERS_LIMIT: f64 = 0.10;
/// How often a disturbed run is tried again before it is kept (and flagged).
const RETRIES: usize = 2;

const UPLOAD_TARGET: &str = "≥ 0.95× direct";

struct Plan {
    rounds: usize,
    seconds: f64,
    warmup: f64,
    upload_bytes: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 1,
                seconds: 1.0,
                warmup: 0.25,
                upload_bytes: 256 << 20,
            }
        } else {
            Self {
                rounds: 3,
                seconds: 2.0,
                warmup: 0.5,
                upload_bytes: 1 << 30,
            }
        }
    }
}

impl Section for SidecarSection {
    fn name(&self) -> &'static str {
        "sidecar"
    }

    fn run(&self, cx: &Context) -> anyhow::Result<Report> {
        setup::build_tools()?;
        setup::bench_tools()?;
        let agent = build::agent(cx.root)?;
        let loadgen = build::host_bin(cx.root, "eci-tests", "loadgen")?;
        let scratch = Scratch::new("sidecar")?;
        let dir = scratch.path();
        let plan = Plan::new(cx.quick);

        let engine = dir.join("engine.sock");
        let nginx = start_nginx(dir, &engine)?;
        let proxies = Proxies::start(cx, &agent, &loadgen, dir, &engine, "http")?;
        let tick = cpu::clock_ticks_per_second();

        let mut runs: Vec<Run> = Vec::new();
        let mut discarded = 0usize;
        for round in 0..plan.rounds {
            for &(route, path) in ROUTES {
                for &concurrency in CONCURRENCY {
                    for i in 0..VIAS.len() {
                        let via = VIAS[(i + round) % VIAS.len()];
                        for attempt in 0..=RETRIES {
                            let run = measure(
                                &loadgen,
                                &proxies,
                                &nginx,
                                &engine,
                                &plan,
                                tick,
                                (route, path, concurrency, via),
                            )?;
                            let disturbed = run.others_share > OTHERS_LIMIT;
                            println!(
                                "  {route} c={concurrency} {via:?}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs{}, others {:.0}%{}",
                                run.result.rps,
                                run.result.p50_us,
                                run.result.p99_us,
                                run.cpu_us_per_request
                                    .map_or(String::new(), |c| format!(", {c:.1} CPU µs/req")),
                                run.others_share * 100.0,
                                if disturbed { " (disturbed)" } else { "" },
                            );
                            if disturbed && attempt < RETRIES {
                                discarded += 1;
                                continue;
                            }
                            runs.push(Run { disturbed, ..run });
                            break;
                        }
                    }
                }
            }
        }
        drop(proxies);
        drop(nginx);

        let uploads = uploads(cx, &agent, &loadgen, dir, &plan)?;

        let route_names: Vec<&'static str> = ROUTES.iter().map(|(name, _)| *name).collect();
        let mut report = Report {
            figures: results::http_figures(&runs, &route_names, CONCURRENCY)?,
            notes: Vec::new(),
        };
        for (name, chunked) in [("upload", false), ("upload_chunked", true)] {
            let upload = |via: Via| {
                median(
                    &uploads
                        .iter()
                        .filter(|u| u.via == via && u.chunked == chunked)
                        .map(|u| u.mib_s)
                        .collect::<Vec<_>>(),
                )
                .context("no upload result")
            };
            let direct = upload(Via::Direct)?;
            let eci = Figure::new(
                format!("sidecar.{name}.mib_s"),
                upload(Via::Eci)?,
                direct,
                "MiB/s",
            );
            // Issue 13's target is for the upload of known length; chunked bodies are held to
            // theirs with the real engine and CLI (the streams section).
            report.figures.push(if chunked {
                eci
            } else {
                eci.with_target(Target::at_least(0.95, UPLOAD_TARGET))
            });
            for (way, via) in [
                ("haproxy_ka", Via::HaproxyKeepAlive),
                ("relay", Via::Relay),
                ("haproxy_tcp", Via::HaproxyTcp),
                ("hyper", Via::Hyper),
            ] {
                report.figures.push(Figure::new(
                    format!("sidecar.{name}.{way}_mib_s"),
                    upload(via)?,
                    direct,
                    "MiB/s",
                ));
            }
        }
        report.notes.extend(results::run_notes(&runs, OTHERS_LIMIT));
        report.notes.push(format!(
            "sidecar.*: value through eci-agent (host caller, trusted), baseline nginx reached \
             directly (rps_vs_haproxy_ka, cpu_us_per_req: baseline HAProxy with keep-alive; \
             haproxy_*: value HAProxy; relay_*: value a byte relay reading no HTTP, the floor of \
             any proxy here, rps_vs_relay: the sidecar against it; haproxy_tcp_*: value HAProxy \
             in TCP mode, the same floor relayed in C; hyper_*: value hyper's server \
             and client alone, configured as the sidecar's, without its pipeline; loadgen_cpu_us_per_req: the load generator's own; \
             total_cpu_us_per_req: loadgen + nginx + proxy); medians of {} round(s) of {} s per \
             run on {} shared cores; {discarded} run(s) discarded because other processes used \
             more than {:.0}% of the machine; upload of {} MiB in one POST, of known length \
             (upload) and chunked in 32 KiB chunks (upload_chunked)",
            plan.rounds,
            plan.seconds,
            thread::available_parallelism().map_or(0, |n| n.get()),
            OTHERS_LIMIT * 100.0,
            plan.upload_bytes >> 20
        ));
        Ok(report)
    }
}

/// One loadgen run of `path` at `concurrency` through `via`, charged with the CPU of the
/// processes it involves.
fn measure(
    loadgen: &Path,
    proxies: &Proxies,
    nginx: &Guarded,
    engine: &Path,
    plan: &Plan,
    tick: f64,
    (route, path, concurrency, via): (&'static str, &str, u32, Via),
) -> anyhow::Result<Run> {
    let proxy_pid = proxies.pid(via);
    let proxy_before = proxy_pid.map(cpu::process_ticks).transpose()?;
    let nginx_before = cpu::process_ticks(nginx.pid())?;
    let machine_before = MachineTicks::now()?;
    let out = exec::stdout(
        Command::new(loadgen)
            .arg("http")
            .arg(proxies.socket(via).unwrap_or(engine))
            .arg(path)
            .arg(concurrency.to_string())
            .arg(plan.seconds.to_string())
            .arg(plan.warmup.to_string()),
    )?;
    let machine_after = MachineTicks::now()?;
    let proxy_after = proxy_pid.map(cpu::process_ticks).transpose()?;
    let nginx_ticks = cpu::process_ticks(nginx.pid())? - nginx_before;
    let result = HttpResult::parse(&out)?;
    let proxy_ticks = proxy_before.zip(proxy_after).map(|(b, a)| a - b);
    // The CPU was counted over warm-up and window, the requests over the window only.
    let per_request = |ticks: u64| {
        ticks as f64 * 1e6 / tick / result.requests as f64 * plan.seconds
            / (plan.seconds + plan.warmup)
    };
    let ours = result.loadgen_cpu_ticks.unwrap_or(0) + nginx_ticks + proxy_ticks.unwrap_or(0);
    Ok(Run {
        route,
        concurrency,
        via,
        cpu_us_per_request: proxy_ticks.map(per_request),
        loadgen_cpu_us_per_request: result.loadgen_cpu_ticks.map(per_request),
        total_cpu_us_per_request: result.loadgen_cpu_ticks.map(|_| per_request(ours)),
        others_share: machine_before.others_share(machine_after, ours),
        disturbed: false,
        result,
    })
}

/// One upload's rate.
struct Upload {
    via: Via,
    chunked: bool,
    mib_s: f64,
}

/// The upload each way, of known length and chunked, to a sink that reads the whole body before
/// it answers (see loadgen), per round.
fn uploads(
    cx: &Context,
    agent: &Path,
    loadgen: &Path,
    dir: &Path,
    plan: &Plan,
) -> anyhow::Result<Vec<Upload>> {
    let sink_socket = dir.join("sink.sock");
    let _sink = daemon(
        "loadgen sink",
        Command::new(loadgen).arg("sink").arg(&sink_socket),
        &dir.join("sink.log"),
        &sink_socket,
    )?;
    let proxies = Proxies::start(cx, agent, loadgen, dir, &sink_socket, "upload")?;
    let mut uploads = Vec::new();
    for round in 0..plan.rounds {
        for chunked in [false, true] {
            for i in 0..VIAS.len() {
                let via = VIAS[(i + round) % VIAS.len()];
                let mut cmd = Command::new(loadgen);
                cmd.arg("upload")
                    .arg(proxies.socket(via).unwrap_or(&sink_socket))
                    .arg(UPLOAD_PATH)
                    .arg(plan.upload_bytes.to_string());
                if chunked {
                    cmd.arg("chunked");
                }
                let out = exec::stdout(&mut cmd)?;
                let json: serde_json::Value =
                    serde_json::from_str(out.trim()).context("loadgen upload output")?;
                let mib_s = json["mib_per_s"]
                    .as_f64()
                    .context("loadgen upload: no mib_per_s")?;
                println!(
                    "  upload {} MiB{} {via:?}: {mib_s:.0} MiB/s",
                    plan.upload_bytes >> 20,
                    if chunked { " chunked" } else { "" }
                );
                uploads.push(Upload {
                    via,
                    chunked,
                    mib_s,
                });
            }
        }
    }
    Ok(uploads)
}

fn start_nginx(dir: &Path, engine: &Path) -> anyhow::Result<Guarded> {
    let conf = dir.join("nginx.conf");
    fs::write(&conf, templates::nginx_conf(dir, engine))?;
    daemon(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("nginx-error.log")),
        &dir.join("nginx.out"),
        engine,
    )
}

/// Starts a daemon of the bench in the foreground, its output in `log`, and waits until it
/// listens on `socket`; it is stopped (SIGTERM by its pid) when the guard drops.
pub(super) fn daemon(
    name: &'static str,
    cmd: &mut Command,
    log: &Path,
    socket: &Path,
) -> anyhow::Result<Guarded> {
    let out = fs::File::create(log)?;
    let mut guard = Guarded::spawn(
        name,
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out),
        Stop::Term(Duration::from_secs(5)),
    )?;
    guard.wait_for_socket(socket, log, Duration::from_secs(20))?;
    println!("xtask bench: {name} ready (pid {})", guard.pid());
    Ok(guard)
}

/// eci-agent's sidecar, HAProxy in its two HTTP modes and in TCP mode, the byte relay and bare
/// hyper, all in front of the same upstream socket.
struct Proxies {
    eci: (Guarded, PathBuf),
    haproxy_close: (Guarded, PathBuf),
    haproxy_keep_alive: (Guarded, PathBuf),
    relay: (Guarded, PathBuf),
    haproxy_tcp: (Guarded, PathBuf),
    hyper: (Guarded, PathBuf),
}

impl Proxies {
    fn start(
        cx: &Context,
        agent: &Path,
        loadgen: &Path,
        dir: &Path,
        upstream: &Path,
        tag: &str,
    ) -> anyhow::Result<Self> {
        let eci_socket = dir.join(format!("eci-{tag}.sock"));
        let cgroup_root = setup::cgroup2_root().unwrap_or("/sys/fs/cgroup");
        let eci = daemon(
            "eci-agent",
            Command::new(agent)
                .arg("run")
                .arg("--settings")
                .arg(cx.root.join("examples/admin-settings.json"))
                .arg("--listen")
                .arg(&eci_socket)
                .arg("--engine")
                .arg(upstream)
                // Pins of its own, so a real agent's are never touched where BPF LSM works.
                .args(["--pin-dir", "/sys/fs/bpf/eci-bench"])
                .args([
                    "--cgroup-root",
                    cgroup_root,
                    "--trust-cgroup",
                    "/",
                    "--allow-no-lsm",
                ]),
            &dir.join(format!("eci-agent-{tag}.log")),
            &eci_socket,
        )?;
        let haproxy = |mode: HaproxyMode, name: &str| -> anyhow::Result<(Guarded, PathBuf)> {
            let socket = dir.join(format!("haproxy-{name}-{tag}.sock"));
            let cfg = dir.join(format!("haproxy-{name}-{tag}.cfg"));
            fs::write(&cfg, templates::haproxy_cfg(&socket, upstream, mode))?;
            let guard = daemon(
                "haproxy",
                Command::new("haproxy").arg("-db").arg("-f").arg(&cfg),
                &dir.join(format!("haproxy-{name}-{tag}.log")),
                &socket,
            )?;
            Ok((guard, socket))
        };
        // The floors, both `loadgen` in front of the same upstream.
        let floor = |mode: &'static str| -> anyhow::Result<(Guarded, PathBuf)> {
            let socket = dir.join(format!("{mode}-{tag}.sock"));
            let guard = daemon(
                mode,
                Command::new(loadgen).arg(mode).arg(&socket).arg(upstream),
                &dir.join(format!("{mode}-{tag}.log")),
                &socket,
            )?;
            Ok((guard, socket))
        };
        Ok(Self {
            eci: (eci, eci_socket),
            haproxy_close: haproxy(HaproxyMode::ServerClose, "close")?,
            haproxy_keep_alive: haproxy(HaproxyMode::KeepAlive, "ka")?,
            relay: floor("relay")?,
            haproxy_tcp: haproxy(HaproxyMode::Tcp, "tcp")?,
            hyper: floor("hyper-proxy")?,
        })
    }

    fn get(&self, via: Via) -> Option<&(Guarded, PathBuf)> {
        match via {
            Via::Direct => None,
            Via::HaproxyClose => Some(&self.haproxy_close),
            Via::HaproxyKeepAlive => Some(&self.haproxy_keep_alive),
            Via::Eci => Some(&self.eci),
            Via::Relay => Some(&self.relay),
            Via::HaproxyTcp => Some(&self.haproxy_tcp),
            Via::Hyper => Some(&self.hyper),
        }
    }

    /// The socket to reach the upstream through `via` (`None`: directly).
    fn socket(&self, via: Via) -> Option<&Path> {
        self.get(via).map(|(_, socket)| socket.as_path())
    }

    fn pid(&self, via: Via) -> Option<u32> {
        self.get(via).map(|(guard, _)| guard.pid())
    }
}
