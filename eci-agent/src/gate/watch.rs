//! Keeping judgements current: every running container is judged again when the settings or
//! the allowed digests change, and each container the engine starts or removes is judged or
//! forgotten from the engine's own event stream (restart policies start containers without any
//! API call the sidecar could see).

use std::{sync::Arc, time::Duration};

use http_body_util::BodyExt as _;
use tokio::sync::{oneshot, watch};

use super::{KernelSync, SocketMountGate};
use crate::{engine::decode, ids::ContainerId};

/// `filters={"type":["container"]}`, URL-encoded.
const EVENTS: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";

/// Judges every running container now, and every recorded one that no longer runs; returns
/// how many are allowed.
pub async fn judge_all(gate: &SocketMountGate) -> anyhow::Result<usize> {
    let body = gate
        .engine
        .get("/containers/json")
        .await?
        .unwrap_or_default();
    let running: Vec<ContainerId> = decode::running_ids(&body)?
        .iter()
        .filter_map(|id| ContainerId::parse(id))
        .collect();
    let mut allowed = 0;
    for id in &running {
        allowed += usize::from(gate.rejudge(id).await);
    }
    // Stopped or removed since: their verdicts and connections go.
    for record in gate.table.snapshot() {
        if !running.contains(&record.id) {
            gate.rejudge(&record.id).await;
        }
    }
    if let Some(kernel) = &gate.kernel {
        sweep_approvals(gate, kernel).await;
    }
    Ok(allowed)
}

/// Approvals of containers that no longer exist go (see [`KernelSync::withdraw_all_but`]). Only
/// on the engine's full answer: an approval the engine cannot vouch against stays.
async fn sweep_approvals(gate: &SocketMountGate, kernel: &KernelSync) {
    let listed = match gate.engine.get("/containers/json?all=1").await {
        Ok(Some(body)) => decode::running_ids(&body),
        Ok(None) => return,
        Err(err) => {
            tracing::warn!("listing every container to sweep approvals: {err}");
            return;
        }
    };
    match listed {
        Ok(ids) => {
            let existing: Vec<ContainerId> =
                ids.iter().filter_map(|id| ContainerId::parse(id)).collect();
            let gone = kernel.withdraw_all_but(&existing);
            if gone > 0 {
                tracing::warn!(
                    approvals = gone,
                    "withdrew the kernel approvals of containers removed while no agent followed the engine"
                );
            }
        }
        Err(err) => tracing::warn!("listing every container to sweep approvals: {err}"),
    }
}

/// Runs until the process ends: engine events, and a new judgement of everything on each
/// change of the policy in force (settings or digests, published together). `adopted` fires once the containers running now have been judged
/// (or the engine could not be asked): a restarted agent rebuilds its table and rewrites the
/// kernel verdicts before it serves.
pub async fn run<P>(
    gate: Arc<SocketMountGate>,
    mut policy: watch::Receiver<P>,
    adopted: oneshot::Sender<()>,
) {
    let events = tokio::spawn(follow_events(gate.clone(), adopted));
    // One snapshot of settings and digests: a reload is one change, one judgement.
    while policy.changed().await.is_ok() {
        match judge_all(&gate).await {
            Ok(n) => tracing::info!(allowed = n, "running containers judged again"),
            Err(err) => tracing::warn!("judging running containers: {err:#}"),
        }
    }
    events.abort();
}

async fn follow_events(gate: Arc<SocketMountGate>, adopted: oneshot::Sender<()>) {
    let mut adopted = Some(adopted);
    let mut backoff = Duration::from_millis(200);
    loop {
        // Subscribe first, then judge what runs now, then follow what changed since the
        // subscription: nothing that starts in between is missed. After a lost stream, the same
        // again.
        let stream = gate.engine.stream(EVENTS).await;
        match judge_all(&gate).await {
            Ok(n) => tracing::info!(allowed = n, "running containers judged"),
            Err(err) => tracing::warn!("judging running containers: {err:#}"),
        }
        if let Some(tx) = adopted.take() {
            let _ = tx.send(());
        }
        match stream {
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
                // Until it is back, containers that stop or start are only caught by the next
                // judgement; new callers are still verified with the engine one by one.
                tracing::error!(
                    "the engine's event stream was lost; judging every container again once it is back"
                );
            }
            Err(err) => tracing::warn!("engine events: {err}"),
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
        // Stopped containers keep their record (a restart re-judges them) but lose their
        // cgroup and its verdict.
        "start" | "die" => {
            gate.rejudge(&id).await;
        }
        "destroy" => gate.forget(&id),
        _ => {}
    }
}
