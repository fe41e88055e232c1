//! Step 4b of the pipeline: the socket-mount gate. `create` is judged on its body before the
//! engine sees it; `start` and `restart` on the engine's own view of the container, by its image
//! ID. Container callers are served only while their container is allowed.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Limited};

use super::{
    admit::Refusal,
    forward::{ProxyBody, full},
    peer::CallerKind,
};
use crate::gate::{self, GatePass, GateRefusal, SocketMountGate};

/// Create bodies are a few KiB; the engine's own decoder has no limit, so be generous.
const MAX_CREATE_BODY: usize = 16 << 20;

/// What the gate made of a request: passed on (with its body, read or not), or refused with a
/// reason code for the audit log, and the request as it could still be forwarded (`--dry-run`
/// lets refused requests through; `None` when the body could not be read).
pub enum Gated {
    Pass(Request<ProxyBody>),
    Refused(Refusal, &'static str, Option<Request<ProxyBody>>),
}

/// Runs the gate for one admitted request.
pub async fn check(
    gate: &SocketMountGate,
    caller: &CallerKind,
    method: &str,
    route: Option<&'static str>,
    api_path: &str,
    req: Request<ProxyBody>,
) -> Gated {
    if let CallerKind::Container(id) = caller
        && gate.eci_enabled()
        && !gate.containers.is_allowed(id)
    {
        return Gated::Refused(
            Refusal::ContainerNotAllowed,
            "container_not_allowed",
            Some(req),
        );
    }
    match (method, route) {
        ("POST", Some("/containers/create")) => create(gate, req).await,
        ("POST", Some("/containers/{name:.*}/start" | "/containers/{name:.*}/restart")) => {
            let name = api_path
                .strip_prefix("/containers/")
                .and_then(|rest| rest.rsplit_once('/'))
                .map_or("", |(name, _)| name);
            start(gate, name, req).await
        }
        _ => Gated::Pass(req),
    }
}

async fn create(gate: &SocketMountGate, req: Request<ProxyBody>) -> Gated {
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
    let checked = gate.check_create(&body).await;
    count(checked.as_ref());
    let req = Request::from_parts(parts, full(body));
    match checked {
        Ok(pass) => {
            log_pass("create", &pass);
            Gated::Pass(req)
        }
        Err(refusal) => refused(refusal, Some(req)),
    }
}

async fn start(gate: &SocketMountGate, name: &str, req: Request<ProxyBody>) -> Gated {
    let checked = gate.check_start(name).await;
    match &checked {
        Ok(Some(judgement)) => count(judgement.outcome.as_ref()),
        Err(refusal) => count(Err(refusal)),
        Ok(None) => {}
    }
    match checked {
        Ok(None) => Gated::Pass(req),
        Ok(Some(judgement)) => match &judgement.outcome {
            Ok(pass) => {
                log_pass("start", pass);
                gate::apply(gate, &judgement);
                if pass.reaches_socket()
                    && let Some(id) = crate::ids::ContainerId::parse(&judgement.state.id)
                    && let Err(refusal) = gate
                        .prepare_kernel(&id, &judgement.state.cgroup_parent)
                        .await
                {
                    return refused(refusal, Some(req));
                }
                Gated::Pass(req)
            }
            Err(refusal) => {
                gate::apply(gate, &judgement);
                refused(refusal.clone(), Some(req))
            }
        },
        Err(refusal) => refused(refusal, Some(req)),
    }
}

/// The metrics hook: one socket-mount decision.
fn count(outcome: Result<&GatePass, &GateRefusal>) {
    use crate::sidecar::audit::Verdict;
    let (verdict, reason) = match outcome {
        Ok(pass) => (Verdict::Allow, gate::pass_reason(pass)),
        Err(GateRefusal::ImageNotAllowed { reason, .. }) => (Verdict::Deny, reason.as_str()),
        Err(GateRefusal::Unverifiable { .. }) => (Verdict::Deny, "mount_unverifiable"),
    };
    crate::metrics::global().mount_decision(verdict, reason);
}

fn log_pass(step: &str, pass: &GatePass) {
    if pass.reaches_socket() {
        tracing::info!(step, rule = %gate::rule_of(pass), "socket mount allowed");
    }
}

fn refused(refusal: GateRefusal, req: Option<Request<ProxyBody>>) -> Gated {
    match refusal {
        GateRefusal::ImageNotAllowed { message, reason } => {
            Gated::Refused(Refusal::SocketMountDenied { message }, reason.as_str(), req)
        }
        GateRefusal::Unverifiable { message } => {
            Gated::Refused(Refusal::Unverifiable { message }, "mount_unverifiable", req)
        }
    }
}
