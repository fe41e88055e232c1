//! `policy-bench`: the image-policy section of `cargo xtask bench` (a benchmark tool, not a
//! test). `policy-bench AGENT_BIN RUNS CHECKS` starts a private dockerd, a docker-registry on
//! 127.0.0.1, makes the policy images (`TestImages::make`), starts the real `eci-agent run` in
//! front of the engine (allowed image listed, `allowDerivedImages: true`, digests resolved before
//! anything is timed) and times the same work through the agent and straight to the engine,
//! interleaved, the order of the two ways alternating:
//!
//! - `docker run --rm` with the socket mounted, RUNS times per way: the allowed image, the
//!   derived one, and the refused one (through the agent: the time until the CLI has the
//!   refusal; straight to the engine: the time until the CLI has the engine's own refusal of a
//!   create whose bind source does not exist, the closest work the engine does for a refused
//!   `run`);
//! - the gate alone, CHECKS requests per way on one kept-alive connection:
//!   `POST /containers/create` whose body mounts the socket (allowed, derived, refused image, and
//!   without the mount) under a name the engine refuses after its own checks and image lookup,
//!   so that nothing is created and the engine's part stays small and equal; and
//!   `POST /containers/{id}/start` of a running container that mounts the socket (the engine
//!   answers 304; the agent first inspects the container and judges its image).
//!
//! Prints one JSON line: `{"cases": {"<case>": {"agent_ms": [...], "direct_ms": [...]}}}`.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{ExitCode, Output},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use eci_tests::{
    agent::Agent,
    dockerd::{Dockerd, docker_at},
    images::{TestImages, docker_on, settings as settings_json},
    registry::Registry,
};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

const USAGE: &str = "usage: policy-bench AGENT_BIN RUNS CHECKS";

/// A name the engine refuses (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) once it has decoded and checked the
/// configuration and looked the image up, before it creates anything.
const REFUSED_NAME: &str = "-eci-bench";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("policy-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Samples of one case, in milliseconds.
#[derive(Default)]
struct Samples {
    agent_ms: Vec<f64>,
    direct_ms: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Agent,
    Direct,
}

impl Way {
    /// Both ways, the first one alternating with `round`.
    fn both(round: usize) -> [Way; 2] {
        if round.is_multiple_of(2) {
            [Way::Agent, Way::Direct]
        } else {
            [Way::Direct, Way::Agent]
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<String> {
    let [agent_bin, runs, checks] = args else {
        bail!("{USAGE}");
    };
    let runs: usize = runs.parse().context("RUNS")?;
    let checks: usize = checks.parse().context("CHECKS")?;

    let engine = Dockerd::start()?;
    let registry = Registry::start()?;
    let images = TestImages::make(&engine, &registry.addr)?;
    let settings = settings_json(&[&images.allowed], true, &[]);
    let agent = Agent::start_logging(
        agent_bin,
        &engine,
        "bench",
        &settings,
        &["--insecure-registry", &registry.addr],
        "info",
    )?;
    // The digest cache is warm before anything is timed.
    agent.wait_log("allowed digests refreshed", 1, Duration::from_secs(60))?;
    let socket = agent.socket().display().to_string();
    eprintln!(
        "policy-bench: engine {}, agent {socket}, registry {}",
        engine.socket().display(),
        registry.addr
    );

    let mut cases: BTreeMap<&str, Samples> = BTreeMap::new();
    docker_runs(&engine, &agent, &images, runs, &mut cases)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(gate_checks(&engine, &agent, &images, checks, &mut cases))?;

    let json: BTreeMap<&str, serde_json::Value> = cases
        .into_iter()
        .map(|(name, s)| {
            (
                name,
                serde_json::json!({"agent_ms": s.agent_ms, "direct_ms": s.direct_ms}),
            )
        })
        .collect();
    Ok(serde_json::json!({ "cases": json }).to_string())
}

/// `docker run --rm --network none MOUNT IMAGE true` against `socket`; its output and duration.
fn docker_run(socket: &Path, mount: &[String], image: &str) -> anyhow::Result<(Output, f64)> {
    let started = Instant::now();
    let out = docker_at(socket)
        .args(["run", "--rm", "--network", "none"])
        .args(mount)
        .args([image, "true"])
        .output()
        .context("docker run")?;
    Ok((out, started.elapsed().as_secs_f64() * 1e3))
}

fn docker_runs(
    engine: &Dockerd,
    agent: &Agent,
    images: &TestImages,
    runs: usize,
    cases: &mut BTreeMap<&str, Samples>,
) -> anyhow::Result<()> {
    let socket_mount = vec![
        "-v".to_owned(),
        format!("{}:/var/run/docker.sock", agent.socket().display()),
    ];
    let missing_mount = vec![
        "--mount".to_owned(),
        "type=bind,source=/nonexistent-eci-bench,target=/s".to_owned(),
    ];
    // (case, image, how it is mounted per way, whether it must succeed).
    let plan: [(&str, &str, [&[String]; 2], bool); 3] = [
        (
            "run_allowed",
            &images.allowed,
            [&socket_mount, &socket_mount],
            true,
        ),
        (
            "run_derived",
            &images.derived,
            [&socket_mount, &socket_mount],
            true,
        ),
        (
            "run_refused",
            &images.unrelated,
            [&socket_mount, &missing_mount],
            false,
        ),
    ];
    // One untimed round first: the agent learns the engine's info, the page cache warms up.
    for round in 0..=runs {
        for (case, image, mounts, succeeds) in &plan {
            for way in Way::both(round) {
                let (socket, mount) = match way {
                    Way::Agent => (agent.socket(), mounts[0]),
                    Way::Direct => (engine.socket(), mounts[1]),
                };
                let (out, ms) = docker_run(socket, mount, image)?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                if out.status.success() != *succeeds {
                    bail!(
                        "{case}: docker run exited {:?}: {stderr}",
                        out.status.code()
                    );
                }
                if !succeeds {
                    let expected = match way {
                        Way::Agent => "docker socket mount denied",
                        Way::Direct => "bind source path does not exist",
                    };
                    if !stderr.contains(expected) {
                        bail!("{case}: expected {expected:?}, got: {stderr}");
                    }
                }
                if round > 0 {
                    let samples = cases.entry(case).or_default();
                    match way {
                        Way::Agent => samples.agent_ms.push(ms),
                        Way::Direct => samples.direct_ms.push(ms),
                    }
                }
            }
        }
    }
    Ok(())
}

/// One kept-alive HTTP/1.1 connection to a socket.
struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    /// Sends one request and reads the whole answer; its status, body and duration in ms.
    async fn send(
        &mut self,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Bytes, f64)> {
        let mut req = Request::post(path).header(header::HOST, "docker");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))?;
        self.sender.ready().await?;
        let started = Instant::now();
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body, started.elapsed().as_secs_f64() * 1e3))
    }
}

/// A container started through the agent from `image`, mounting the socket and idling.
fn running_container(agent: &Agent, image: &str) -> anyhow::Result<String> {
    let out = agent
        .docker()
        .args(["run", "-d", "--network", "none", "-v"])
        .arg(format!("{}:/var/run/docker.sock", agent.socket().display()))
        .args([image, "sleep", "3600"])
        .output()
        .context("docker run -d")?;
    if !out.status.success() {
        bail!(
            "docker run -d {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn gate_checks(
    engine: &Dockerd,
    agent: &Agent,
    images: &TestImages,
    checks: usize,
    cases: &mut BTreeMap<&str, Samples>,
) -> anyhow::Result<()> {
    let bind = format!("{}:/var/run/docker.sock", agent.socket().display());
    let create_body = |image: &str, binds: &[&str]| {
        serde_json::json!({
            "Image": image,
            "Cmd": ["true"],
            "HostConfig": { "Binds": binds, "NetworkMode": "none" },
        })
        .to_string()
    };
    let create_path = format!("/containers/create?name={REFUSED_NAME}");
    let allowed_id = running_container(agent, &images.allowed)?;
    let derived_id = running_container(agent, &images.derived)?;
    let start_path = |id: &str| format!("/containers/{id}/start");
    // (case, path, body, expected status through the agent, and directly).
    let plan: Vec<(&str, String, Option<String>, StatusCode, StatusCode)> = vec![
        (
            "create_check_allowed",
            create_path.clone(),
            Some(create_body(&images.allowed, &[&bind])),
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST,
        ),
        (
            "create_check_derived",
            create_path.clone(),
            Some(create_body(&images.derived, &[&bind])),
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST,
        ),
        (
            "create_check_refused",
            create_path.clone(),
            Some(create_body(&images.unrelated, &[&bind])),
            StatusCode::FORBIDDEN,
            StatusCode::BAD_REQUEST,
        ),
        (
            "create_no_mount",
            create_path.clone(),
            Some(create_body(&images.unrelated, &[])),
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST,
        ),
        (
            "start_check_allowed",
            start_path(&allowed_id),
            None,
            StatusCode::NOT_MODIFIED,
            StatusCode::NOT_MODIFIED,
        ),
        (
            "start_check_derived",
            start_path(&derived_id),
            None,
            StatusCode::NOT_MODIFIED,
            StatusCode::NOT_MODIFIED,
        ),
    ];
    let mut via_agent = Client::connect(agent.socket()).await?;
    let mut direct = Client::connect(engine.socket()).await?;
    // A few untimed rounds first, as for the runs.
    let warmup = 3;
    for round in 0..warmup + checks {
        for (case, path, body, agent_status, direct_status) in &plan {
            for way in Way::both(round) {
                let (client, expected) = match way {
                    Way::Agent => (&mut via_agent, *agent_status),
                    Way::Direct => (&mut direct, *direct_status),
                };
                let (status, answer, ms) = client.send(path, body.as_deref()).await?;
                // The answer must be the one this case measures, not some other refusal.
                let says = |text: &str| String::from_utf8_lossy(&answer).contains(text);
                let right_answer = match status {
                    StatusCode::BAD_REQUEST => says("Invalid container name"),
                    StatusCode::FORBIDDEN => says("docker socket mount denied"),
                    _ => true,
                };
                if status != expected || !right_answer {
                    bail!(
                        "{case}: expected {expected}, got {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                if round >= warmup {
                    let samples = cases.entry(case).or_default();
                    match way {
                        Way::Agent => samples.agent_ms.push(ms),
                        Way::Direct => samples.direct_ms.push(ms),
                    }
                }
            }
        }
    }
    for id in [allowed_id, derived_id] {
        docker_on(engine, &["rm", "-f", &id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ways_alternate_their_order() {
        assert!(Way::both(0) == [Way::Agent, Way::Direct]);
        assert!(Way::both(1) == [Way::Direct, Way::Agent]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(run(&[]).is_err());
        assert!(run(&["bin".into(), "x".into(), "1".into()]).is_err());
    }
}
