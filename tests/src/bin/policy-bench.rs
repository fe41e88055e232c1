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
//! - the container-caller profile, CHECKS requests per way from a real container caller: the
//!   same static binary (`CLIENT_BIN`, `policy-bench client …`) runs in a container of the
//!   allowed image that holds the agent's socket and, for the baseline, the engine's own; it
//!   sends `POST /containers/create` bodies that exercise the profile (a bind of a host
//!   directory and of the socket, added capabilities, a shared PID namespace that the gate must
//!   resolve, a security option) under the refused name, and the same body with `Privileged`,
//!   which the profile refuses.
//!
//! - `profile_decision`: the profile's decision alone, in process, on the body
//!   `create_profile_allowed` sends (decode and judge, against decode alone).
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

const USAGE: &str =
    "usage: policy-bench AGENT_BIN RUNS CHECKS CLIENT_BIN | policy-bench client CHECKS PLAN_JSON";

/// Where the client finds the agent's socket and the engine's inside its container.
const CLIENT_AGENT_SOCKET: &str = "/var/run/docker.sock";
const CLIENT_ENGINE_SOCKET: &str = "/engine.sock";

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
    if let [client, checks, plan] = args
        && client == "client"
    {
        return run_client(checks, plan);
    }
    let [agent_bin, runs, checks, client_bin] = args else {
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

    let mut cases: BTreeMap<String, Samples> = BTreeMap::new();
    docker_runs(&engine, &agent, &images, runs, &mut cases)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(gate_checks(&engine, &agent, &images, checks, &mut cases))?;
    profile_checks(&engine, &agent, &images, checks, client_bin, &mut cases)?;
    Ok(cases_json(cases))
}

/// `{"cases": {"<case>": {"agent_ms": [...], "direct_ms": [...]}}}`.
fn cases_json(cases: BTreeMap<String, Samples>) -> String {
    let json: BTreeMap<String, serde_json::Value> = cases
        .into_iter()
        .map(|(name, s)| {
            (
                name,
                serde_json::json!({"agent_ms": s.agent_ms, "direct_ms": s.direct_ms}),
            )
        })
        .collect();
    serde_json::json!({ "cases": json }).to_string()
}

/// `policy-bench client CHECKS PLAN_JSON`, inside a container caller: times the plan through
/// the agent's socket and straight to the engine's, and prints the samples.
fn run_client(checks: &str, plan: &str) -> anyhow::Result<String> {
    let checks: usize = checks.parse().context("CHECKS")?;
    let plan: Vec<Check> = serde_json::from_str(plan).context("PLAN_JSON")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut cases = BTreeMap::new();
    runtime.block_on(async {
        let mut via_agent = Client::connect(Path::new(CLIENT_AGENT_SOCKET)).await?;
        let mut direct = Client::connect(Path::new(CLIENT_ENGINE_SOCKET)).await?;
        measure(&plan, &mut via_agent, &mut direct, checks, &mut cases).await
    })?;
    Ok(cases_json(cases))
}

/// The profile cases, timed by [`run_client`] in a container of the allowed image that holds
/// the agent's socket (so the agent takes it for an allowed container caller) and the engine's.
fn profile_checks(
    engine: &Dockerd,
    agent: &Agent,
    images: &TestImages,
    checks: usize,
    client_bin: &str,
    cases: &mut BTreeMap<String, Samples>,
) -> anyhow::Result<()> {
    let shared = running_container(agent, &images.allowed)?;
    let data = engine.scratch("bench-data");
    let body = |privileged: bool| {
        serde_json::json!({
            "Image": images.allowed,
            "Cmd": ["true"],
            "HostConfig": {
                "Binds": [
                    format!("{}:/var/run/docker.sock", agent.socket().display()),
                    format!("{}:/data:ro", data.display()),
                ],
                "CapAdd": ["NET_ADMIN", "CHOWN"],
                "CapDrop": ["MKNOD"],
                "SecurityOpt": ["no-new-privileges"],
                "PidMode": format!("container:{shared}"),
                "IpcMode": "private",
                "NetworkMode": "none",
                "Privileged": privileged,
            },
        })
        .to_string()
    };
    let path = format!("/containers/create?name={REFUSED_NAME}");
    let refused_name = (400, "Invalid container name".to_owned());
    let plan = vec![
        Check {
            case: "create_profile_allowed".into(),
            path: path.clone(),
            body: Some(body(false)),
            agent: refused_name.clone(),
            direct: refused_name.clone(),
        },
        Check {
            case: "create_profile_refused".into(),
            path,
            body: Some(body(true)),
            agent: (403, "privileged containers are not allowed".into()),
            direct: refused_name,
        },
    ];
    let mut client = engine.docker();
    client
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!(
            "{}:{CLIENT_AGENT_SOCKET}",
            agent.socket().display()
        ))
        .arg("-v")
        .arg(format!(
            "{}:{CLIENT_ENGINE_SOCKET}",
            engine.socket().display()
        ))
        .arg("-v")
        .arg(format!("{client_bin}:/policy-bench:ro"))
        .args(["--entrypoint", "/policy-bench", &images.allowed, "client"])
        .arg(checks.to_string())
        .arg(serde_json::to_string(&plan)?);
    let line = stdout_of(&mut client, "the client in a container")?;
    let json: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("the client said {line:?}"))?;
    let measured = json["cases"]
        .as_object()
        .context("the client measured nothing")?;
    let list = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .map(|xs| xs.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    for (case, v) in measured {
        cases.insert(
            case.clone(),
            Samples {
                agent_ms: list(&v["agent_ms"]),
                direct_ms: list(&v["direct_ms"]),
            },
        );
    }
    decision(engine, agent, &body(false), &shared, checks * 10, cases)?;
    docker_on(engine, &["rm", "-f", &shared])?;
    Ok(())
}

/// `profile_decision`: the container-caller profile's decision alone, in this process, on the
/// body `create_profile_allowed` sends (value: decoding the body and judging it, host paths
/// resolved on this host; baseline: decoding it alone, what any proxy that reads the body pays).
/// The engine's part of a create from a container caller (the inspect of the container whose
/// PID namespace is joined) is answered beforehand (the gate asks it per request), and the
/// protected paths are resolved once, as the gate keeps them.
fn decision(
    engine: &Dockerd,
    agent: &Agent,
    body: &str,
    joined: &str,
    rounds: usize,
    cases: &mut BTreeMap<String, Samples>,
) -> anyhow::Result<()> {
    use eci_agent::{
        gate::host::{RealHost, protected_socket},
        policy::{
            profile::{
                ContainerProfile, CreateRequest, HostLayout, Joined, Namespace, Origin,
                ParentPlacement,
            },
            wire,
        },
    };
    let data_root = engine
        .socket()
        .parent()
        .context("the engine's directory")?
        .join("data");
    let mut layout = HostLayout::new(
        &data_root.display().to_string(),
        eci_agent::policy::profile::DEFAULT_EXEC_ROOT,
        &[],
        &[],
        Some(protected_socket(agent.socket())?),
    );
    // As the gate keeps it: resolved once per settings.
    layout.resolve(&RealHost);
    let profile = ContainerProfile::default();
    let joined = [Joined {
        ns: Namespace::Pid,
        container: joined.to_owned(),
        mode: "private".into(),
    }];
    let samples = cases.entry("profile_decision".into()).or_default();
    for round in 0..rounds + 10 {
        let started = Instant::now();
        let create = wire::decode_create_body(body.as_bytes())?;
        let mounts = create.mounts();
        let decode_ms = started.elapsed().as_secs_f64() * 1e3;
        let started = Instant::now();
        let create = wire::decode_create_body(body.as_bytes())?;
        let mounts_again = create.mounts();
        let breaches = profile.breaches(
            &CreateRequest {
                host_config: create.host_config.as_ref(),
                mounts: &mounts_again,
                parent: ParentPlacement::ContainerParent,
                joined: &joined,
                origin: Origin::Request,
            },
            &layout,
            &RealHost,
        );
        let judged_ms = started.elapsed().as_secs_f64() * 1e3;
        if !breaches.is_empty() || mounts.len() != 2 {
            bail!("profile_decision: the bench body should pass the profile: {breaches:?}");
        }
        if round >= 10 {
            samples.agent_ms.push(judged_ms);
            samples.direct_ms.push(decode_ms);
        }
    }
    Ok(())
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
    cases: &mut BTreeMap<String, Samples>,
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
                    let samples = cases.entry((*case).to_owned()).or_default();
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
    let mut run = agent.docker();
    run.args(["run", "-d", "--network", "none", "-v"])
        .arg(format!("{}:/var/run/docker.sock", agent.socket().display()))
        .args([image, "sleep", "3600"]);
    Ok(stdout_of(&mut run, &format!("docker run -d {image}"))?
        .trim()
        .to_owned())
}

/// Runs `cmd` to the end: its stdout, or an error with its stderr.
fn stdout_of(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| what.to_owned())?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One timed request: what is sent, and the answer each way must give (its status, and a
/// phrase its body holds), so that what is timed is the answer this case measures.
#[derive(serde::Serialize, serde::Deserialize)]
struct Check {
    case: String,
    path: String,
    body: Option<String>,
    agent: (u16, String),
    direct: (u16, String),
}

/// Times `plan`, CHECKS rounds after a few untimed ones, the two ways interleaved.
async fn measure(
    plan: &[Check],
    via_agent: &mut Client,
    direct: &mut Client,
    checks: usize,
    cases: &mut BTreeMap<String, Samples>,
) -> anyhow::Result<()> {
    let warmup = 3;
    for round in 0..warmup + checks {
        for c in plan {
            for way in Way::both(round) {
                let (client, (expected, says)) = match way {
                    Way::Agent => (&mut *via_agent, &c.agent),
                    Way::Direct => (&mut *direct, &c.direct),
                };
                let (status, answer, ms) = client.send(&c.path, c.body.as_deref()).await?;
                let answer = String::from_utf8_lossy(&answer);
                if status.as_u16() != *expected || !answer.contains(says.as_str()) {
                    bail!(
                        "{}: expected {expected} saying {says:?}, got {status}: {answer}",
                        c.case
                    );
                }
                if round >= warmup {
                    let samples = cases.entry(c.case.clone()).or_default();
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

async fn gate_checks(
    engine: &Dockerd,
    agent: &Agent,
    images: &TestImages,
    checks: usize,
    cases: &mut BTreeMap<String, Samples>,
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
    let name_refused = || (400, "Invalid container name".to_owned());
    let check = |case: &str, path: &str, body: Option<String>, agent: (u16, String)| Check {
        case: case.into(),
        path: path.into(),
        body,
        agent,
        direct: name_refused(),
    };
    let not_modified = || (304, String::new());
    let plan = vec![
        check(
            "create_check_allowed",
            &create_path,
            Some(create_body(&images.allowed, &[&bind])),
            name_refused(),
        ),
        check(
            "create_check_derived",
            &create_path,
            Some(create_body(&images.derived, &[&bind])),
            name_refused(),
        ),
        check(
            "create_check_refused",
            &create_path,
            Some(create_body(&images.unrelated, &[&bind])),
            (403, "docker socket mount denied".into()),
        ),
        check(
            "create_no_mount",
            &create_path,
            Some(create_body(&images.unrelated, &[])),
            name_refused(),
        ),
        Check {
            direct: not_modified(),
            ..check(
                "start_check_allowed",
                &start_path(&allowed_id),
                None,
                not_modified(),
            )
        },
        Check {
            direct: not_modified(),
            ..check(
                "start_check_derived",
                &start_path(&derived_id),
                None,
                not_modified(),
            )
        },
    ];
    let mut via_agent = Client::connect(agent.socket()).await?;
    let mut direct = Client::connect(engine.socket()).await?;
    measure(&plan, &mut via_agent, &mut direct, checks, cases).await?;
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
        assert!(run(&["bin".into(), "x".into(), "1".into(), "client".into()]).is_err());
        assert!(run(&["client".into(), "1".into(), "not json".into()]).is_err());
    }
}
