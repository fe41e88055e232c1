//! An in-process sidecar for integration tests: served on its own socket by a runtime on a
//! background thread, with a policy the test can swap while it runs.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use eci_agent::{
    engine::EngineApi,
    gate::{Cgroups, ContainerRecord, SocketMountGate, Standing, host::protected_socket},
    ids::ContainerId,
    kernel::cgroup::CgroupTree,
    policy::{image::AllowedDigests, mount::SocketGate},
    process::Peer,
    settings::{PolicySnapshot, Settings},
    sidecar::{
        self, AuditLog, Caller, CallerKind, ContainerAt, IdentifyCaller, SidecarConfig,
        TrustedCgroups,
    },
};
use tokio::sync::{oneshot, watch};

use crate::dockerd::Dockerd;

/// Settings from admin-settings.json text; `path` is what refusals quote.
pub fn settings(json: &str) -> Settings {
    Settings::from_json_str(json, Path::new(SETTINGS_PATH))
        .unwrap_or_else(|e| panic!("test settings: {e}"))
}

/// The settings path refusals quote in tests.
pub const SETTINGS_PATH: &str = "/etc/eci/admin-settings.json";

/// ECI on, every image may mount the socket, and this commandList.
pub fn command_list(kind: &str, commands: &[&str]) -> Settings {
    let json = serde_json::json!({
        "configurationFileVersion": 2,
        "enhancedContainerIsolation": {
            "locked": true,
            "value": true,
            "dockerSocketMount": {
                "imageList": { "images": ["*"] },
                "commandList": { "type": kind, "commands": commands },
            },
        },
    });
    settings(&json.to_string())
}

/// `settings` with no resolved digests (the tests' imageLists are `"*"`).
fn snapshot(settings: Settings) -> Arc<PolicySnapshot> {
    Arc::new(PolicySnapshot {
        settings: Arc::new(settings),
        digests: Arc::new(AllowedDigests::default()),
    })
}

pub struct Sidecar {
    dir: PathBuf,
    socket: PathBuf,
    audit: PathBuf,
    policy: watch::Sender<Arc<PolicySnapshot>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sidecar {
    /// Serves `engine`'s socket on a fresh one; host processes are trusted, containers get
    /// `policy`. Its files live in the engine's scratch space, so they go when the engine does.
    pub fn start(engine: &Dockerd, policy: Settings) -> Self {
        Self::start_with(engine, policy, |_| {})
    }

    /// Like [`Sidecar::start`], letting the test adjust the configuration first. The sidecar
    /// has the agent's gate (image ["*"]-style policies allow every image; the container table
    /// learns containers from the engine as they call), without the kernel.
    pub fn start_with(
        engine: &Dockerd,
        policy: Settings,
        adjust: impl FnOnce(&mut SidecarConfig),
    ) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = engine.scratch(&format!("sidecar{n}"));
        let engine = engine.socket();
        let socket = dir.join("docker.sock");
        let audit = dir.join("audit.jsonl");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let (policy_tx, policy_rx) = watch::channel(snapshot(policy));
        let gate = SocketMountGate::new(
            EngineApi::new(engine),
            SocketGate::new(vec![
                protected_socket(&socket).unwrap(),
                protected_socket(engine).unwrap(),
            ]),
            policy_rx.clone(),
            None,
        )
        .with_cgroups(Cgroups {
            tree: CgroupTree::open(Path::new(crate::agent::cgroup2_root())).unwrap(),
            agent: None,
            trusted: vec![PathBuf::from("/")],
        });
        let mut config = SidecarConfig::new(engine, TrustedCgroups::new([PathBuf::from("/")]));
        config.mounts = Some(Arc::new(gate));
        config.audit = Some(AuditLog::open(&audit, true).unwrap());
        adjust(&mut config);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(sidecar::serve_listener(
                    listener,
                    config,
                    policy_rx,
                    async {
                        let _ = shutdown_rx.await;
                    },
                ))
                .unwrap();
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        Self {
            dir,
            socket,
            audit,
            policy: policy_tx,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Like [`Sidecar::start`], but every connection is taken for one allowed container
    /// ([`AS_CONTAINER`]), so raw requests from the test process are judged as a container
    /// caller's: what no CLI command sends (an exec started by ID, odd bodies) can be tried.
    pub fn start_as_container(engine: &Dockerd, policy: Settings) -> Self {
        Self::start_with(engine, policy, as_container)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Replaces the running policy; the next request is judged by it.
    pub fn set_policy(&self, policy: Settings) {
        self.policy.send_replace(snapshot(policy));
    }

    /// An allowed container caller: runs `script` with busybox sh in a container of the CLI
    /// image (allowed by the tests' `"*"` imageLists) whose /var/run/docker.sock is this
    /// sidecar's socket, started by the host on `engine`.
    pub fn in_container(&self, engine: &Dockerd, script: &str) -> Output {
        engine
            .docker()
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "-e",
                "DOCKER_BUILDKIT=0",
                "-v",
            ])
            .arg(format!("{}:/var/run/docker.sock", self.socket.display()))
            .args([engine.cli_image(), "sh", "-c", script])
            .output()
            .expect("docker run")
    }

    /// The static docker CLI talking to this sidecar.
    pub fn docker(&self) -> Command {
        crate::dockerd::docker_at(&self.socket)
    }

    /// The audit log's lines so far, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
            .collect()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes `config` take every connection for the one container [`as_container_id`], recorded
/// allowed in the gate's table as if the gate had judged it.
pub fn as_container(config: &mut SidecarConfig) {
    config.identity = Arc::new(AsContainer);
    if let Some(gate) = &config.mounts {
        gate.table.record(ContainerRecord {
            id: as_container_id(),
            image: "test".into(),
            image_id: String::new(),
            init_pid: 0,
            driver: "cgroupfs".into(),
            cgroup_parent: String::new(),
            cgroup: None,
            standing: Standing::Allowed { rule: "*".into() },
        });
    }
}

/// Takes every connection for the one container [`as_container_id`], allowed.
struct AsContainer;

impl IdentifyCaller for AsContainer {
    fn identify(&self, peer: &Peer, _: Option<&dyn ContainerAt>) -> Caller {
        Caller {
            pid: peer.pid(),
            cgroup: Some("/docker/test".into()),
            kind: CallerKind::Container(as_container_id()),
            candidate: None,
        }
    }
}

/// The container [`Sidecar::start_as_container`] takes every caller for.
pub fn as_container_id() -> ContainerId {
    ContainerId::parse(&"c1".repeat(32)).expect("a valid container ID")
}

/// Sends one HTTP/1.1 request (`Connection: close` added) to `socket` and returns the status and
/// the whole answer.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let answer = String::from_utf8_lossy(&out).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}
