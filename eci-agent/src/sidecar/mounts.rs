//! Step 4b of the pipeline: the gate. `create` is judged on its body before the engine sees it;
//! `start` and `restart` on the engine's own view of the container, by its image ID, and then
//! forwarded by the ID that was judged. A container caller's `start`, `restart`, `exec` and
//! `attach` of an existing container are judged by the container-caller profile on that
//! container's stored configuration (it gets that container's power), and forwarded by ID too.
//! Container callers are served only while their container is allowed. The gate does the work (judge → table → kernel); this only asks and maps the
//! outcome onto the request.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Limited};

use super::{
    admit::Refusal,
    forward::{ProxyBody, full},
    path::RoutePath,
};
use crate::{
    gate::{self, GatePass, GateRefusal, SocketMountGate},
    ids::{CallerKind, ContainerId},
    metrics::Metrics,
    policy::{self, profile::ContainerUse},
};

/// Create bodies are a few KiB; the engine's own decoder has no limit, so be generous.
const MAX_CREATE_BODY: usize = 16 << 20;

/// What the gate made of a request: passed on (with its body, read or not, and for a `start`
/// the container it admitted, to report back once the engine answered), or refused with a
/// reason code for the audit log, and the request as it could still be forwarded (`--dry-run`
/// lets refused requests through; `None` when the body could not be read).
pub enum Gated {
    Pass(Request<ProxyBody>, Option<ContainerId>),
    Refused(Refusal, &'static str, Option<Request<ProxyBody>>),
}

/// Runs the gate for one admitted request. `revoked` is the caller's connection's revocation
/// receiver, when the container was allowed as it connected (see [`still_allowed`]).
#[expect(
    clippy::too_many_arguments,
    reason = "the pipeline's state for one request, each used once"
)]
pub async fn check(
    gate: &SocketMountGate,
    metrics: &Metrics,
    caller: &CallerKind,
    revoked: Option<&tokio::sync::watch::Receiver<bool>>,
    method: &str,
    route: Option<&'static str>,
    path: &RoutePath<'_>,
    req: Request<ProxyBody>,
) -> Gated {
    if !may_use_engine(gate, caller, revoked) {
        return Gated::Refused(
            Refusal::ContainerNotAllowed,
            "container_not_allowed",
            Some(req),
        );
    }
    let container = matches!(caller, CallerKind::Container(_));
    match judged(method, route) {
        Some(Judged::Create) => create(gate, metrics, caller, req).await,
        Some(Judged::Use(ContainerUse::Start)) => {
            let Some((name, action)) = container_action(&path.api_path) else {
                return Gated::Pass(req, None);
            };
            start(gate, metrics, caller, name, action, path, req).await
        }
        // A container caller gets the power of the container it runs a command in or attaches
        // to: the profile judges it (the host's own requests are its business).
        Some(Judged::Use(ContainerUse::Exec)) if container => exec(gate, path, req).await,
        Some(Judged::Use(what @ (ContainerUse::Attach | ContainerUse::Copy))) if container => {
            let Some((name, action)) = container_action(&path.api_path) else {
                return Gated::Pass(req, None);
            };
            admit_use(gate, what, name, action, false, path, req).await
        }
        Some(Judged::ExecStart) if container => {
            let Some(exec_id) = exec_action(&path.api_path) else {
                return Gated::Pass(req, None);
            };
            match gate.admit_exec_start(exec_id).await {
                Ok(()) => Gated::Pass(req, None),
                Err(refusal) => refused(refusal, Some(req)),
            }
        }
        _ => Gated::Pass(req, None),
    }
}

/// Whether [`check`] would pass this request without reading or changing it: the caller may
/// still talk to the engine, and the gate judges nothing in the route. The sidecar's own
/// HTTP/1 path carries only such requests.
pub fn passes_unjudged(
    gate: &SocketMountGate,
    caller: &CallerKind,
    revoked: Option<&tokio::sync::watch::Receiver<bool>>,
    method: &str,
    route: Option<&'static str>,
) -> bool {
    may_use_engine(gate, caller, revoked) && judged(method, route).is_none()
}

/// False for a container caller that has lost its allowance (with ECI on); true for others.
fn may_use_engine(
    gate: &SocketMountGate,
    caller: &CallerKind,
    revoked: Option<&tokio::sync::watch::Receiver<bool>>,
) -> bool {
    match caller {
        CallerKind::Container(id) if gate.eci_enabled() => {
            still_allowed(revoked, || gate.table.is_allowed(id))
        }
        _ => true,
    }
}

/// Whether a container caller still has its allowance. A connection subscribed while the
/// container was allowed holds the table's receiver, which turns true when the allowance goes
/// (and whose sender is dropped when the entry is replaced or removed): reading it is one look
/// under the channel's lock, where `in_table` hashes the 64-byte id under the table's lock on
/// every request. Connections without one (not allowed when they connected, or a dry run) ask
/// the table.
fn still_allowed(
    revoked: Option<&tokio::sync::watch::Receiver<bool>>,
    in_table: impl FnOnce() -> bool,
) -> bool {
    match revoked {
        Some(rx) => rx.has_changed().is_ok() && !*rx.borrow(),
        None => in_table(),
    }
}

/// What the gate judges in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Judged {
    /// The create body: the socket-mount gate, and the profile for container callers.
    Create,
    /// The container the request names: the socket-mount gate at start, and the profile on
    /// what it has for container callers.
    Use(ContainerUse),
    /// Starting (or resizing) an exec by its ID: judged for container callers as its creation
    /// would be, on the engine's record of it.
    ExecStart,
}

/// The routes the gate judges, by method and route template (one table for the sidecar and
/// `explain --request`).
pub fn judged(method: &str, route: Option<&str>) -> Option<Judged> {
    match (method, route?) {
        ("POST", "/containers/create") => Some(Judged::Create),
        ("POST", "/containers/{name:.*}/start" | "/containers/{name:.*}/restart") => {
            Some(Judged::Use(ContainerUse::Start))
        }
        ("POST", "/containers/{name:.*}/exec") => Some(Judged::Use(ContainerUse::Exec)),
        ("POST", "/containers/{name:.*}/attach") | ("GET", "/containers/{name:.*}/attach/ws") => {
            Some(Judged::Use(ContainerUse::Attach))
        }
        ("PUT" | "GET" | "HEAD", "/containers/{name:.*}/archive")
        | ("POST", "/containers/{name:.*}/copy") => Some(Judged::Use(ContainerUse::Copy)),
        ("POST", "/exec/{name:.*}/start" | "/exec/{name:.*}/resize") => Some(Judged::ExecStart),
        _ => None,
    }
}

/// `/containers/{name}/{action}` → (name, action), for the actions the gate judges.
fn container_action(api_path: &str) -> Option<(&str, &'static str)> {
    let rest = api_path.strip_prefix("/containers/")?;
    [
        "attach/ws",
        "attach",
        "exec",
        "start",
        "restart",
        "archive",
        "copy",
    ]
    .into_iter()
    .find_map(|action| {
        let name = rest.strip_suffix(action)?.strip_suffix('/')?;
        (!name.is_empty()).then_some((name, action))
    })
}

/// `/exec/{id}/start` or `/exec/{id}/resize` → the exec's ID.
fn exec_action(api_path: &str) -> Option<&str> {
    let rest = api_path.strip_prefix("/exec/")?;
    let id = rest
        .strip_suffix("/start")
        .or_else(|| rest.strip_suffix("/resize"))?;
    (!id.is_empty()).then_some(id)
}

async fn exec(gate: &SocketMountGate, path: &RoutePath<'_>, req: Request<ProxyBody>) -> Gated {
    let Some((name, action)) = container_action(&path.api_path) else {
        return Gated::Pass(req, None);
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refusal) => return refused(refusal, None),
    };
    let privileged = match policy::wire::decode_exec_privileged(&body) {
        Ok(privileged) => privileged,
        Err(e) => {
            return refused(
                GateRefusal::Unverifiable {
                    message: format!(
                        "enhanced container isolation: cannot read the exec configuration: {e}"
                    ),
                },
                Some(Request::from_parts(parts, full(body))),
            );
        }
    };
    let req = Request::from_parts(parts, full(body));
    admit_use(
        gate,
        ContainerUse::Exec,
        name,
        action,
        privileged,
        path,
        req,
    )
    .await
}

/// Judges a container caller's use of container `name`, and forwards the request by the ID
/// that was judged.
async fn admit_use(
    gate: &SocketMountGate,
    what: ContainerUse,
    name: &str,
    action: &str,
    exec_privileged: bool,
    path: &RoutePath<'_>,
    req: Request<ProxyBody>,
) -> Gated {
    match gate.admit_use(what, name, exec_privileged).await {
        Ok(None) => Gated::Pass(req, None), // the engine answers 404 itself
        Ok(Some(id)) => forward_by_id(req, path, &id, action, None),
        Err(refusal) => refused(refusal, Some(req)),
    }
}

/// Reads a request body the gate judges, up to [`MAX_CREATE_BODY`].
async fn read_body(body: ProxyBody) -> Result<Bytes, GateRefusal> {
    match Limited::new(body, MAX_CREATE_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(GateRefusal::Unverifiable {
            message: format!(
                "enhanced container isolation: cannot read the container configuration: {err}"
            ),
        }),
    }
}

async fn create(
    gate: &SocketMountGate,
    metrics: &Metrics,
    caller: &CallerKind,
    req: Request<ProxyBody>,
) -> Gated {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refusal) => return refused(refusal, None),
    };
    let checked = gate.check_create(caller, &body).await;
    count(metrics, checked.as_ref());
    let req = Request::from_parts(parts, full(body));
    match checked {
        Ok(pass) => {
            log_pass("create", &pass);
            Gated::Pass(req, None)
        }
        Err(refusal) => refused(refusal, Some(req)),
    }
}

async fn start(
    gate: &SocketMountGate,
    metrics: &Metrics,
    caller: &CallerKind,
    name: &str,
    action: &str,
    path: &RoutePath<'_>,
    req: Request<ProxyBody>,
) -> Gated {
    match gate.admit_start(caller, name).await {
        Ok(None) => Gated::Pass(req, None), // the engine answers 404 itself
        Ok(Some((id, pass))) => {
            count(metrics, Ok(&pass));
            log_pass("start", &pass);
            let started = id.clone();
            forward_by_id(req, path, &id, action, Some(started))
        }
        Err(refusal) => {
            count(metrics, Err(&refusal));
            refused(refusal, Some(req))
        }
    }
}

/// Forwarded by the ID that was judged: a rename in between cannot swap containers.
fn forward_by_id(
    mut req: Request<ProxyBody>,
    path: &RoutePath<'_>,
    id: &ContainerId,
    action: &str,
    started: Option<ContainerId>,
) -> Gated {
    match by_id(req.uri(), path, id, action) {
        Some(uri) => {
            *req.uri_mut() = uri;
            Gated::Pass(req, started)
        }
        None => refused(
            GateRefusal::Unverifiable {
                message: "enhanced container isolation: cannot address the container by its ID"
                    .into(),
            },
            Some(req),
        ),
    }
}

/// `/v{version}/containers/{id}/{action}?{query}`.
fn by_id(uri: &Uri, path: &RoutePath<'_>, id: &ContainerId, action: &str) -> Option<Uri> {
    let version = path
        .version
        .as_deref()
        .map_or_else(String::new, |v| format!("/v{v}"));
    let query = uri.query().map_or_else(String::new, |q| format!("?{q}"));
    format!("{version}/containers/{id}/{action}{query}")
        .parse()
        .ok()
}

/// The metrics hook: one socket-mount decision.
fn count(metrics: &Metrics, outcome: Result<&GatePass, &GateRefusal>) {
    use crate::verdict::Verdict;
    let (verdict, reason) = match outcome {
        Ok(pass) => (Verdict::Allow, gate::pass_reason(pass)),
        Err(refusal) => (Verdict::Deny, refusal.reason()),
    };
    metrics.mount_decision(verdict, reason);
}

fn log_pass(step: &str, pass: &GatePass) {
    if pass.reaches_socket() {
        tracing::info!(step, rule = %gate::rule_of(pass), "socket mount allowed");
    }
}

fn refused(refusal: GateRefusal, req: Option<Request<ProxyBody>>) -> Gated {
    let reason = refusal.reason();
    match refusal {
        GateRefusal::ImageNotAllowed { message, .. } => {
            Gated::Refused(Refusal::SocketMountDenied { message }, reason, req)
        }
        GateRefusal::Refused { message, .. } => {
            Gated::Refused(Refusal::GateRefused { message }, reason, req)
        }
        GateRefusal::Unverifiable { message } => {
            Gated::Refused(Refusal::Unverifiable { message }, reason, req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_keeps_its_allowance_only_while_its_receiver_says_so() {
        let no_table = || panic!("the table is asked only without a receiver");
        let (tx, rx) = tokio::sync::watch::channel(false);
        assert!(still_allowed(Some(&rx), no_table));
        tx.send_replace(true);
        assert!(!still_allowed(Some(&rx), no_table));
        // The table replaced (or removed) the entry: its sender went.
        let (tx, rx) = tokio::sync::watch::channel(false);
        drop(tx);
        assert!(!still_allowed(Some(&rx), no_table));
        // Without a receiver the table decides.
        assert!(still_allowed(None, || true));
        assert!(!still_allowed(None, || false));
    }

    #[test]
    fn the_container_and_action_a_path_names() {
        for (path, want) in [
            ("/containers/web/start", Some(("web", "start"))),
            ("/containers/web/restart", Some(("web", "restart"))),
            ("/containers/web/exec", Some(("web", "exec"))),
            ("/containers/web/attach", Some(("web", "attach"))),
            ("/containers/web/attach/ws", Some(("web", "attach/ws"))),
            ("/containers/a/b/exec", Some(("a/b", "exec"))),
            ("/containers//exec", None),
            ("/containers/web/kill", None),
            ("/images/web/start", None),
            ("/containers/web/archive", Some(("web", "archive"))),
            ("/containers/web/copy", Some(("web", "copy"))),
        ] {
            assert_eq!(container_action(path), want, "{path}");
        }
        for (path, want) in [
            ("/exec/abc/start", Some("abc")),
            ("/exec/abc/resize", Some("abc")),
            ("/exec//start", None),
            ("/exec/abc/json", None),
        ] {
            assert_eq!(exec_action(path), want, "{path}");
        }
        for method in ["PUT", "GET", "HEAD"] {
            assert_eq!(
                judged(method, Some("/containers/{name:.*}/archive")),
                Some(Judged::Use(ContainerUse::Copy))
            );
        }
        assert_eq!(
            judged("POST", Some("/exec/{name:.*}/resize")),
            Some(Judged::ExecStart)
        );
        assert_eq!(judged("GET", Some("/exec/{id:.*}/json")), None);
        assert_eq!(
            judged("GET", Some("/containers/{name:.*}/attach/ws")),
            Some(Judged::Use(ContainerUse::Attach))
        );
        assert_eq!(judged("GET", Some("/containers/{name:.*}/json")), None);
        assert_eq!(judged("POST", None), None);
    }

    #[test]
    fn start_is_forwarded_by_id_with_version_and_query() {
        let id = ContainerId::parse(&"b".repeat(64)).unwrap();
        let path = RoutePath {
            version: Some("1.41".into()),
            api_path: "/containers/web/start".into(),
        };
        let uri: Uri = "/v1.41/containers/web/start?detachKeys=ctrl-p"
            .parse()
            .unwrap();
        assert_eq!(
            by_id(&uri, &path, &id, "start").unwrap().to_string(),
            format!("/v1.41/containers/{id}/start?detachKeys=ctrl-p")
        );
        let path = RoutePath {
            version: None,
            api_path: "/containers/web/restart".into(),
        };
        let uri: Uri = "/containers/web/restart".parse().unwrap();
        assert_eq!(
            by_id(&uri, &path, &id, "restart").unwrap().to_string(),
            format!("/containers/{id}/restart")
        );
    }
}
