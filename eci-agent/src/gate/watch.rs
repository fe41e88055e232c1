//! Keeping judgements current: every running container is judged again when the settings or
//! the allowed digests change, and each container the engine starts or removes is judged or
//! forgotten from the engine's own event stream (restart policies start containers without any
//! API call the sidecar could see).

use std::{sync::Arc, time::Duration};

use http_body_util::BodyExt as _;
use tokio::sync::watch;

use super::{SocketMountGate, apply};
use crate::{engine::decode, ids::ContainerId};

/// `filters={"type":["container"]}`, URL-encoded.
const EVENTS: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";

/// Judges every running container now; returns how many are allowed.
pub async fn judge_all(gate: &SocketMountGate) -> anyhow::Result<usize> {
    let body = gate
        .engine
        .get("/containers/json")
        .await?
        .unwrap_or_default();
    let ids = decode::running_ids(&body)?;
    let mut allowed = 0;
    for id in ids {
        match gate.check_start(&id).await {
            Ok(Some(judgement)) => {
                apply(gate, &judgement);
                allowed += usize::from(matches!(&judgement.outcome, Ok(p) if p.reaches_socket()));
            }
            Ok(None) => {} // gone meanwhile
            Err(err) => {
                tracing::warn!(container = %id, "cannot judge: {err:?}");
                if let Some(id) = ContainerId::parse(&id) {
                    gate.containers.revoke(&id);
                }
            }
        }
    }
    Ok(allowed)
}

/// Runs until the process ends: engine events, and a new judgement of everything on each
/// settings or digest change.
pub async fn run<S, D>(
    gate: Arc<SocketMountGate>,
    mut settings: watch::Receiver<S>,
    mut digests: watch::Receiver<D>,
) {
    let events = tokio::spawn(follow_events(gate.clone()));
    loop {
        tokio::select! {
            changed = settings.changed() => if changed.is_err() { break },
            changed = digests.changed() => if changed.is_err() { break },
        }
        match judge_all(&gate).await {
            Ok(n) => tracing::info!(allowed = n, "running containers judged again"),
            Err(err) => tracing::warn!("judging running containers: {err:#}"),
        }
    }
    events.abort();
}

async fn follow_events(gate: Arc<SocketMountGate>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        // Judge what runs now, then follow what changes; after a lost stream, judge again so
        // that nothing started meanwhile is missed.
        if let Err(err) = judge_all(&gate).await {
            tracing::warn!("judging running containers: {err:#}");
        }
        match gate.engine.stream(EVENTS).await {
            Ok(mut body) => {
                backoff = Duration::from_millis(200);
                let mut line = Vec::new();
                while let Some(Ok(frame)) = body.frame().await {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    for &b in data.iter() {
                        if b == b'\n' {
                            on_event(&gate, &line).await;
                            line.clear();
                        } else if line.len() < 1 << 20 {
                            line.push(b);
                        }
                    }
                }
            }
            Err(err) => tracing::debug!("engine events: {err}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn on_event(gate: &SocketMountGate, line: &[u8]) {
    let Some(event) = decode::container_event(line) else {
        return;
    };
    let Some(id) = ContainerId::parse(&event.id) else {
        return;
    };
    match event.action.as_str() {
        "start" => match gate.check_start(id.as_str()).await {
            Ok(Some(judgement)) => apply(gate, &judgement),
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(container = %id, "cannot judge a started container: {err:?}");
                gate.containers.revoke(&id);
            }
        },
        "die" | "destroy" => {
            gate.containers.revoke(&id);
            if let Some(kernel) = &gate.kernel {
                kernel.forget(&id);
            }
        }
        _ => {}
    }
}
