//! Step 4b of the pipeline: the gate. `create` is judged on its body before the engine sees it;
//! `start` and `restart` on the engine's own view of the container, by its image ID, and then
//! forwarded by the ID that was judged. Container callers are served only while their container
//! is allowed. The gate does the work (judge → table → kernel); this only asks and maps the
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

/// Runs the gate for one admitted request.
pub async fn check(
    gate: &SocketMountGate,
    metrics: &Metrics,
    caller: &CallerKind,
    method: &str,
    route: Option<&'static str>,
    path: &RoutePath,
    req: Request<ProxyBody>,
) -> Gated {
    if let CallerKind::Container(id) = caller
        && gate.eci_enabled()
        && !gate.table.is_allowed(id)
    {
        return Gated::Refused(
            Refusal::ContainerNotAllowed,
            "container_not_allowed",
            Some(req),
        );
    }
    match (method, route) {
        ("POST", Some("/containers/create")) => create(gate, metrics, caller, req).await,
        ("POST", Some("/containers/{name:.*}/start" | "/containers/{name:.*}/restart")) => {
            let Some((name, action)) = path
                .api_path
                .strip_prefix("/containers/")
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                return Gated::Pass(req, None);
            };
            start(gate, metrics, name, action, path, req).await
        }
        _ => Gated::Pass(req, None),
    }
}

async fn create(
    gate: &SocketMountGate,
    metrics: &Metrics,
    caller: &CallerKind,
    req: Request<ProxyBody>,
) -> Gated {
    let (parts, body) = req.into_parts();
    let body: Bytes = match Limited::new(body, MAX_CREATE_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return refused(
                GateRefusal::Unverifiable {
                    message: format!(
                        "enhanced container isolation: cannot read the container configuration: {err}"
                    ),
                },
                None,
            );
        }
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
    name: &str,
    action: &str,
    path: &RoutePath,
    mut req: Request<ProxyBody>,
) -> Gated {
    match gate.admit_start(name).await {
        Ok(None) => Gated::Pass(req, None), // the engine answers 404 itself
        Ok(Some((id, pass))) => {
            count(metrics, Ok(&pass));
            log_pass("start", &pass);
            // Forwarded by the ID that was judged: a rename in between cannot swap containers.
            match by_id(req.uri(), path, &id, action) {
                Some(uri) => {
                    *req.uri_mut() = uri;
                    Gated::Pass(req, Some(id))
                }
                None => refused(
                    GateRefusal::Unverifiable {
                        message:
                            "enhanced container isolation: cannot address the container by its ID"
                                .into(),
                    },
                    Some(req),
                ),
            }
        }
        Err(refusal) => {
            count(metrics, Err(&refusal));
            refused(refusal, Some(req))
        }
    }
}

/// `/v{version}/containers/{id}/{action}?{query}`.
fn by_id(uri: &Uri, path: &RoutePath, id: &ContainerId, action: &str) -> Option<Uri> {
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
