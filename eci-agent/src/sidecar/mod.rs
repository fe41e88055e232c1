//! The sidecar: serves the Docker Engine API on the public socket and forwards what the policy
//! admits to the real engine, so that no client can tell it from the engine except by what a
//! container is refused.
//!
//! Each request goes through one ordered pipeline ([`handle`]):
//!
//! 1. parse and normalise ([`path`]): hyper parses HTTP/1.1; the path is reduced to the one the
//!    engine would route, or answered the way the engine answers paths it does not route;
//! 2. identify the caller ([`peer`]): done once per connection from the kernel's credentials;
//! 3. classify and 4. decide ([`admit`]): the policy's route table and commandList;
//!    4b. the socket-mount gate ([`mounts`]): `create`, `start` and `restart` of containers that
//!    mount the socket, and container callers served only while their container is allowed;
//! 5. respond ([`respond`], the only place refusals become HTTP) or forward ([`forward`]).
//!
//! Refusals (and, on request, admissions) are written to the audit log ([`audit`]).
//!
//! A connection is first served by the sidecar's own HTTP/1 path ([`plain`]), which carries
//! requests that every parser reads alike and that steps 3–4b admit untouched, bytes as they
//! came. The first request it does not carry hands the connection to hyper for good, and
//! everything below about hyper applies from there.
//!
//! The engine only ever receives requests as hyper parsed them and the pipeline classified them
//! (origin-form target, bodies re-framed), so where hyper is more lenient than Go the two still
//! agree on what runs: a `#…` suffix is dropped before both see it. `Content-Length` with
//! `Transfer-Encoding`, which hyper would read as chunked, is answered 400 ([`framing`]).
//! Hijack requests without an `Upgrade` header (pre-2016 clients, answered by the engine with a
//! bare 200 stream) are not tunnelled.
#![forbid(unsafe_code)]

pub mod admit;
pub mod audit;
pub mod forward;
mod framing;
mod hang_up;
pub mod mounts;
pub mod path;
pub mod peer;
mod plain;
pub mod respond;
mod sniff;

use std::{convert::Infallible, future::Future, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use http::{Request, Response, header};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::UnixStream, sync::watch, task::JoinSet};

pub use crate::ids::CallerKind;
pub use admit::CommandGate;
pub use audit::AuditLog;
pub use peer::{Caller, ContainerAt, IdentifyCaller, ProcIdentity, TrustedCgroups};

use admit::Admission;
use forward::{EngineLink, ProxyBody};
use path::EnginePath;

/// The largest request head accepted (431 above): Go's `DefaultMaxHeaderBytes` plus the 4 KiB
/// slack net/http allows, so the sidecar refuses no head the engine would take.
pub const MAX_HEAD_BYTES: usize = (1 << 20) + 4096;

/// How the sidecar runs; the policy itself arrives separately, live.
#[derive(Clone)]
pub struct SidecarConfig {
    /// The real engine's socket.
    pub engine: PathBuf,
    /// Says who is behind each connection (procfs in production).
    pub identity: Arc<dyn IdentifyCaller>,
    /// Longest time a client may take to send a request head (slowloris bound). Streams,
    /// once a request is admitted, have no timeout at all.
    pub head_timeout: Duration,
    /// Where refused (and optionally admitted) requests are recorded.
    pub audit: Option<AuditLog>,
    /// The socket-mount gate; `None` serves the commandList alone (tests of the proxy layer).
    pub mounts: Option<Arc<crate::gate::SocketMountGate>>,
    /// `--dry-run`: every decision is made, logged and audited, but nothing is refused and no
    /// connection is closed on revocation.
    pub dry_run: bool,
    /// Where requests and gate decisions are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl SidecarConfig {
    /// Production settings: callers identified from `/proc`, trusting `trusted` host cgroups.
    pub fn new(engine: impl Into<PathBuf>, trusted: TrustedCgroups) -> Self {
        Self {
            engine: engine.into(),
            identity: Arc::new(ProcIdentity::new(trusted)),
            head_timeout: Duration::from_secs(30),
            audit: None,
            mounts: None,
            dry_run: false,
            metrics: Arc::default(),
        }
    }
}

impl std::fmt::Debug for SidecarConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarConfig")
            .field("engine", &self.engine)
            .field("head_timeout", &self.head_timeout)
            .field("audit", &self.audit)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Binds `listen` (replacing a stale socket file) and serves until `shutdown` completes.
pub async fn serve<G>(
    listen: &std::path::Path,
    config: SidecarConfig,
    policy: watch::Receiver<Arc<G>>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    G: CommandGate + ?Sized,
{
    remove_stale_socket(listen)?;
    let listener = std::os::unix::net::UnixListener::bind(listen)
        .with_context(|| format!("binding the sidecar socket {}", listen.display()))?;
    serve_listener(listener, config, policy, shutdown).await
}

/// Removes a socket file left at `path` by an earlier run; anything else there is kept (binding
/// then fails with a clear error rather than deleting someone's file).
pub fn remove_stale_socket(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    Ok(())
}

/// Serves on a socket that is already bound and listening (the agent tags the socket inode
/// between bind and listen, then hands it over) until `shutdown` completes; then open
/// connections are closed.
pub async fn serve_listener<G>(
    listener: std::os::unix::net::UnixListener,
    config: SidecarConfig,
    policy: watch::Receiver<Arc<G>>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    G: CommandGate + ?Sized,
{
    listener
        .set_nonblocking(true)
        .context("sidecar socket: set_nonblocking")?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .context("sidecar socket: register with tokio")?;
    let shared = Arc::new(Shared { config, policy });
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%err, "sidecar accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.shutdown().await;
    Ok(())
}

struct Shared<G: ?Sized> {
    config: SidecarConfig,
    policy: watch::Receiver<Arc<G>>,
}

/// What a connection knows while its requests are served one after another.
struct Connection {
    caller: Caller,
    /// A container caller's revocation, when it was allowed as it connected.
    revoked: Option<watch::Receiver<bool>>,
    engine: tokio::sync::Mutex<EngineLink>,
}

async fn serve_connection<G: CommandGate + ?Sized>(stream: UnixStream, shared: Arc<Shared<G>>) {
    // Step 2 of the pipeline, once per connection: the kernel's word on who connected, pinned
    // to the process (not its pid) and resolved through the container table.
    let caller = identify(&stream, &shared.config).await;
    let head_timeout = shared.config.head_timeout;

    let (stream, first) = match tokio::time::timeout(head_timeout, sniff::first_bytes(stream)).await
    {
        Ok(Ok(read)) => read,
        Ok(Err(err)) => {
            tracing::debug!(%err, "connection closed before a request");
            return;
        }
        Err(_) => return,
    };
    if first == sniff::H2_PREFACE {
        sniff::prior_knowledge_h2(stream, first, &caller, &shared.config.engine).await;
        return;
    }

    // A container's connections last only as long as its allowance (a dry run closes none).
    let revoked = match (&shared.config.mounts, &caller.kind) {
        (Some(gate), CallerKind::Container(id)) if !shared.config.dry_run => gate.table.watch(id),
        _ => None,
    };
    let conn = Arc::new(Connection {
        caller,
        revoked: revoked.clone(),
        engine: tokio::sync::Mutex::new(
            EngineLink::new(&shared.config.engine).with_revocation(revoked.clone()),
        ),
    });
    let served = async move {
        let engine = shared.config.engine.clone();
        let carried = plain::serve(stream, first, &engine, head_timeout, |head| {
            carries(head, &conn, &shared)
        })
        .await;
        let plain::Ended::HandOff { read, client } = carried else {
            return Ok(());
        };
        let service = service_fn(move |req| {
            let conn = conn.clone();
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(req, &conn, &shared).await) }
        });
        // A client that stops sending once its request is out is answered, as the engine
        // answers it (hyper then reads nothing more while the answer goes out); one that goes
        // away still ends the exchange, and with it the engine connection ([`hang_up`]).
        let watch = match hang_up::Watch::new(&client) {
            Ok(watch) => watch,
            Err(err) => {
                tracing::debug!(%err, "client connection closed: it cannot be watched");
                return Ok(());
            }
        };
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .half_close(true)
            .serve_connection(
                TokioIo::new(framing::Guarded::new(sniff::Prefixed::new(read, client))),
                service,
            )
            .with_upgrades();
        tokio::select! {
            biased;
            served = connection => served,
            () = watch.gone() => {
                tracing::debug!("client connection ended: the client went away");
                Ok(())
            }
        }
    };
    // A revocable connection is served in a task of its own, which is aborted when the
    // allowance goes: polled side by side in one task, the revocation's future would be polled
    // again on every wake-up of the connection (about 600 instructions per request).
    let Some(revoked) = revoked else {
        if let Err(err) = served.await {
            tracing::debug!(%err, "client connection ended");
        }
        return;
    };
    let mut served = AbortOnDrop(tokio::spawn(served));
    tokio::select! {
        served = served.wait() => if let Ok(Err(err)) = served {
            tracing::debug!(%err, "client connection ended");
        },
        () = revocation(Some(revoked)) => tracing::info!("connection closed: the container lost its allowance"),
    }
}

/// A spawned connection that goes with its owner: when the owner is dropped (revocation, or
/// shutdown aborting the connection set), so is the connection.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn wait(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Who is behind `stream`. A caller whose cgroups look like a container the table does not know
/// yet (one the engine started on its own a moment ago, or one under an unusual cgroup parent)
/// is looked up with the engine once, then identified again: only a container the engine
/// confirms, in the cgroup the engine's answers place it in, is taken for one.
async fn identify(stream: &UnixStream, config: &SidecarConfig) -> Caller {
    use std::os::fd::AsFd as _;
    let pid = stream.peer_cred().ok().and_then(|cred| cred.pid());
    let peer = crate::process::Peer::of_socket(stream.as_fd(), pid);
    let gate = config.mounts.as_deref();
    let containers = gate.map(|g| g as &dyn ContainerAt);
    let caller = config.identity.identify(&peer, containers);
    match (&caller.kind, &caller.candidate, gate) {
        (CallerKind::Unknown, Some(candidate), Some(gate)) => {
            gate.rejudge(candidate).await;
            config.identity.identify(&peer, containers)
        }
        _ => caller,
    }
}

/// Completes when the container behind a connection loses its allowance; never for others.
async fn revocation(revoked: Option<watch::Receiver<bool>>) {
    match revoked {
        Some(mut rx) => {
            let _ = rx.wait_for(|revoked| *revoked).await;
        }
        None => std::future::pending().await,
    }
}

/// The pipeline for one request, in order.
async fn handle<G: CommandGate + ?Sized>(
    req: Request<Incoming>,
    conn: &Connection,
    shared: &Shared<G>,
) -> Response<ProxyBody> {
    use http_body_util::BodyExt as _;
    let req = req.map(|body| body.boxed());
    // 1. Parse and normalise: the path the engine would route, or its own answer.
    // Borrowed, not copied: the URI's bytes are shared with hyper's parse (a reference count),
    // and a standard method is a small enum.
    let uri = req.uri().clone();
    let raw_target = raw_target(&uri);
    let method = req.method().clone();
    let method = method.as_str();
    let route_path = match path::engine_path(uri.path(), uri.query()) {
        Ok(EnginePath::Route(route_path)) => route_path,
        Ok(EnginePath::Redirect { location }) => return respond::redirect(&location),
        Err(err) => return respond::malformed_target(&err),
    };

    // 2. The caller was identified when the connection was accepted.
    let caller = &conn.caller;

    // 3, 4. Classify and decide, on the policy in force now.
    let gate = shared.policy.borrow().clone();
    let admission = admit::admit(
        &*gate,
        &caller.kind,
        method,
        &route_path,
        uri.query(),
        &raw_target,
    );
    drop(gate);
    let (mut decision, mut refusal) = match admission {
        Admission::Admitted(decision) => (decision, None),
        Admission::Refused(refusal, decision) => (decision, Some(refusal)),
    };

    // 4b. The socket-mount gate, for what the commandList let through.
    let mut req = req;
    if decision.reads_form {
        // Go would read a form body's values before the query's, and could run another command
        // than the one the query names (an import by its body under a pull's query).
        req.headers_mut().remove(header::CONTENT_TYPE);
    }
    let mut body_read = false;
    let mut started = None;
    if refusal.is_none()
        && let Some(gate) = &shared.config.mounts
    {
        match mounts::check(
            gate,
            &shared.config.metrics,
            &caller.kind,
            conn.revoked.as_ref(),
            method,
            decision.route,
            &route_path,
            req,
        )
        .await
        {
            mounts::Gated::Pass(passed, admitted) => {
                req = passed;
                started = admitted;
            }
            mounts::Gated::Refused(gate_refusal, reason, rest) => {
                decision.reason = reason;
                refusal = Some(gate_refusal);
                req = rest.unwrap_or_else(|| {
                    body_read = true;
                    Request::new(forward::full(bytes::Bytes::new()))
                });
            }
        }
    }
    // A dry run forwards what the policy refuses, unless there is nothing left to forward.
    let verdict = match &refusal {
        None => audit::Verdict::Allow,
        Some(_) if shared.config.dry_run && !body_read => audit::Verdict::WouldDeny,
        Some(_) => audit::Verdict::Deny,
    };
    shared.config.metrics.request(verdict, decision.command);
    if let Some(audit) = &shared.config.audit {
        audit.record(&audit::Entry {
            caller,
            method,
            raw_target: &raw_target,
            decision: &decision,
            verdict,
        });
    }
    if verdict == audit::Verdict::WouldDeny {
        tracing::warn!(pid = ?caller.pid, cgroup = ?caller.cgroup, %method, target = %raw_target.escape_debug(),
            rule = decision.rule.map(tracing::field::display), reason = decision.reason, "dry run: request would be refused; forwarded");
        refusal = None;
    }

    // 5. Respond or forward.
    if let Some(refusal) = refusal {
        tracing::info!(pid = ?caller.pid, cgroup = ?caller.cgroup, %method, target = %raw_target.escape_debug(),
            rule = decision.rule.map(tracing::field::display), reason = decision.reason, "request refused");
        return if body_read {
            respond::refused(&refusal)
        } else {
            respond::refuse(req, &refusal).await
        };
    }
    let hijack = is_hijack(method, decision.route) && req.headers().contains_key(header::UPGRADE);
    let mut engine = conn.engine.lock().await;
    let forwarded = if hijack {
        engine.forward_upgrade(req).await
    } else {
        engine.forward(req).await
    };
    drop(engine);
    // A `start` the gate admitted: the engine made the container's cgroup (record it), or the
    // start failed (what was prepared for it goes).
    if let (Some(id), Some(gate)) = (started, &shared.config.mounts) {
        gate.started(&id).await;
    }
    forwarded.unwrap_or_else(|err| {
        tracing::debug!(%err, "forwarding failed");
        respond::forward_failed(&err)
    })
}

/// Steps 1–4b for a plain head ([`plain`]): true when the request is admitted as it is, with
/// nothing for the gate to judge, no form to strip and no connection to hijack (it is then
/// counted and audited here, as [`handle`] would); false hands it to [`handle`].
fn carries<G: CommandGate + ?Sized>(
    head: &plain::PlainHead<'_>,
    conn: &Connection,
    shared: &Shared<G>,
) -> bool {
    // By byte, not `split_once('?')`, whose char searcher cost more than the rest of the
    // split for a target this short.
    let (path, query) = match head.target.bytes().position(|b| b == b'?') {
        Some(q) => (&head.target[..q], Some(&head.target[q + 1..])),
        None => (head.target, None),
    };
    let Ok(EnginePath::Route(route_path)) = path::engine_path(path, query) else {
        return false;
    };
    let caller = &conn.caller;
    let admission = admit::admit(
        &**shared.policy.borrow(),
        &caller.kind,
        head.method,
        &route_path,
        query,
        head.target,
    );
    let Admission::Admitted(decision) = admission else {
        return false;
    };
    if decision.reads_form || is_hijack(head.method, decision.route) {
        return false;
    }
    if let Some(gate) = &shared.config.mounts
        && !mounts::passes_unjudged(
            gate,
            &caller.kind,
            conn.revoked.as_ref(),
            head.method,
            decision.route,
        )
    {
        return false;
    }
    let verdict = audit::Verdict::Allow;
    shared.config.metrics.request(verdict, decision.command);
    if let Some(audit) = &shared.config.audit {
        audit.record(&audit::Entry {
            caller,
            method: head.method,
            raw_target: head.target,
            decision: &decision,
            verdict,
        });
    }
    true
}

/// The request target as the client wrote it (hyper keeps it verbatim up to any `#`), for the
/// refusal text and the audit log.
fn raw_target(uri: &http::Uri) -> std::borrow::Cow<'_, str> {
    if uri.scheme().is_some() {
        uri.to_string().into()
    } else {
        uri.path_and_query()
            .map_or_else(|| uri.path(), |pq| pq.as_str())
            .into()
    }
}

/// The engine routes that hijack their connection; only these may become a tunnel, and only
/// after the engine itself answered 101.
fn is_hijack(method: &str, route: Option<&str>) -> bool {
    matches!(
        (method, route),
        (
            "POST",
            Some("/containers/{name:.*}/attach" | "/exec/{name:.*}/start" | "/session" | "/grpc")
        ) | ("GET", Some("/containers/{name:.*}/attach/ws"))
    )
}
