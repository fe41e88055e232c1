//! Table tests of the gate's decisions end to end (engine answers → judgement → table), over a
//! fake engine on a temporary socket and a cgroup tree in a temporary directory. No root, no
//! dockerd: the host tier runs the same paths against the real engine.

use std::{fs, os::unix::net::UnixListener, sync::Mutex};

use eci_common::CgroupVerdict;

use super::*;
use crate::{
    engine::fake::FakeEngine,
    gate::host::protected_socket,
    kernel::verdicts::{MemoryVerdicts, VerdictStore as _},
    settings::Settings,
};

const IMAGE_ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

struct World {
    _dir: tempfile::TempDir,
    engine: FakeEngine,
    public: PathBuf,
    tree: CgroupTree,
    gate: SocketMountGate,
    _listener: UnixListener,
}

/// A gate whose settings allow `images` to mount the socket, with the agent's cgroup at
/// `/eci-agent` and `/t-trusted` trusted.
fn world(images: &[&str]) -> World {
    world_with(images, None)
}

/// [`world`] with kernel maps in memory (`kernel`), as `run` has them with BPF.
fn world_with(images: &[&str], kernel: Option<Arc<Mutex<MemoryVerdicts>>>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("docker.sock");
    let listener = UnixListener::bind(&public).unwrap();
    let cg = dir.path().join("cgroup");
    fs::create_dir(&cg).unwrap();
    fs::write(cg.join("cgroup.controllers"), "").unwrap();
    let tree = CgroupTree::open(&cg).unwrap();
    tree.create(Path::new("/eci-agent")).unwrap();
    tree.create(Path::new("/t-trusted")).unwrap();
    tree.create(Path::new("/docker")).unwrap();
    let engine = FakeEngine::start();
    engine.answer(
        "/info",
        r#"{"CgroupDriver":"cgroupfs","DockerRootDir":"/var/lib/docker"}"#,
    );
    engine.answer(
        &format!("/images/{IMAGE_ID}/json"),
        &format!(r#"{{"Id":"{IMAGE_ID}","RepoTags":["eci/app:1"],"RepoDigests":[]}}"#),
    );
    let text = serde_json::json!({
        "configurationFileVersion": 2,
        "enhancedContainerIsolation": {
            "locked": true,
            "value": true,
            "dockerSocketMount": { "imageList": { "images": images } },
        },
    })
    .to_string();
    let settings = Settings::from_json_str(&text, &dir.path().join("admin-settings.json")).unwrap();
    let (_tx, policy) = tokio_watch::channel(Arc::new(PolicySnapshot {
        settings: Arc::new(settings),
        digests: Arc::new(AllowedDigests::default()),
    }));
    let gate = SocketMountGate::new(
        EngineApi::new(engine.socket()),
        SocketGate::new(vec![protected_socket(&public).unwrap()]),
        policy,
        kernel.map(|store| KernelSync::new(store, tree.clone())),
    )
    .with_cgroups(Cgroups {
        tree: tree.clone(),
        agent: Some(PathBuf::from("/eci-agent")),
        trusted: vec![PathBuf::from("/t-trusted")],
    });
    World {
        _dir: dir,
        engine,
        public,
        tree,
        gate,
        _listener: listener,
    }
}

fn id(n: u8) -> ContainerId {
    ContainerId::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

impl World {
    /// The engine knows container `id` by `name` too, running, holding the public socket.
    fn container(&self, name: &str, id: &ContainerId) {
        self.container_with(name, id, serde_json::json!({ "CgroupParent": "" }));
    }

    /// [`Self::container`] with this stored `HostConfig`.
    fn container_with(&self, name: &str, id: &ContainerId, host_config: serde_json::Value) {
        self.tree
            .create(&Path::new("/docker").join(id.as_str()))
            .unwrap();
        let json = self.inspect(id, true, true, host_config);
        self.engine
            .answer(&format!("/containers/{name}/json"), &json);
        self.answer(id, &json);
    }

    /// The engine's inspect answer for container `id`: running or not, holding the public
    /// socket or not.
    fn inspect(
        &self,
        id: &ContainerId,
        running: bool,
        holds_socket: bool,
        host_config: serde_json::Value,
    ) -> String {
        let mounts = if holds_socket {
            serde_json::json!([{
                "Type": "bind",
                "Source": self.public,
                "Destination": "/var/run/docker.sock",
            }])
        } else {
            serde_json::json!([])
        };
        serde_json::json!({
            "Id": id.as_str(),
            "State": { "Running": running, "Pid": if running { 4242 } else { 0 } },
            "HostConfig": host_config,
            "Image": IMAGE_ID,
            "Config": { "Image": "eci/app:1" },
            "Mounts": mounts,
        })
        .to_string()
    }

    /// The engine answers `json` for container `id` (by its ID) from now on.
    fn answer(&self, id: &ContainerId, json: &str) {
        self.engine
            .answer(&format!("/containers/{}/json", id.as_str()), json);
    }

    fn standing(&self, id: &ContainerId) -> Option<Standing> {
        self.gate.table.get(id).map(|r| r.standing)
    }
}

#[tokio::test]
async fn a_start_is_forwarded_by_the_id_the_engine_gave_for_the_name() {
    let w = world(&["*"]);
    let c = id(1);
    w.container("web", &c);
    let (judged, _pass) = w
        .gate
        .admit_start(&CallerKind::TrustedHost, "web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(judged, c);
    let record = w.gate.table.get(&c).expect("recorded");
    assert!(record.standing.is_allowed());
    // The cgroup the engine's answers place it in, as an id: the caller's identity.
    let cgroup = w.tree.id(&Path::new("/docker").join(c.as_str())).unwrap();
    assert_eq!(record.cgroup, Some(cgroup));
    assert_eq!(w.gate.table.at_cgroup(cgroup), Some(c));
}

#[tokio::test]
async fn an_unlisted_image_holding_the_socket_is_refused_and_recorded_denied() {
    let w = world(&["eci/other"]);
    let c = id(2);
    w.container("web", &c);
    let refusal = w
        .gate
        .admit_start(&CallerKind::TrustedHost, "web")
        .await
        .unwrap_err();
    assert!(refusal.message().contains("eci/app"), "{refusal:?}");
    assert!(matches!(w.standing(&c), Some(Standing::Denied { .. })));
}

#[tokio::test]
async fn no_such_container_is_the_engines_404_and_records_nothing() {
    let w = world(&["*"]);
    assert!(
        w.gate
            .admit_start(&CallerKind::TrustedHost, "nope")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(w.gate.table.snapshot().len(), 0);
}

#[tokio::test]
async fn a_container_the_engine_cannot_vouch_for_loses_its_standing() {
    let w = world(&["*"]);
    let c = id(3);
    w.container("web", &c);
    assert!(w.gate.rejudge(&c).await);
    // The engine's answer becomes unreadable: fail closed, the record stays but is denied.
    w.engine
        .answer(&format!("/containers/{}/json", c.as_str()), "{not json");
    assert!(!w.gate.rejudge(&c).await);
    assert!(matches!(w.standing(&c), Some(Standing::Denied { .. })));
    // The engine forgets it: so does the table.
    w.engine.forget(&format!("/containers/{}/json", c.as_str()));
    assert!(!w.gate.rejudge(&c).await);
    assert!(w.standing(&c).is_none());
}

#[tokio::test]
async fn the_profile_binds_container_callers_and_leaves_the_host_alone() {
    let w = world(&["*"]);
    let body = br#"{"Image":"eci/app:1","HostConfig":{"Privileged":true}}"#;
    let refusal = w
        .gate
        .check_create(&CallerKind::Container(id(4)), body)
        .await
        .unwrap_err();
    assert!(
        refusal
            .message()
            .contains("privileged containers are not allowed"),
        "{refusal:?}"
    );
    w.gate
        .check_create(&CallerKind::TrustedHost, body)
        .await
        .unwrap();
}

#[tokio::test]
async fn no_caller_may_place_a_container_in_the_agent_a_trusted_cgroup_or_a_container() {
    let w = world(&["*"]);
    let c = id(5);
    w.container("web", &c);
    assert!(w.gate.rejudge(&c).await);
    let inside_container = format!("/docker/{}/x", c.as_str());
    for parent in [
        "/eci-agent",
        "/eci-agent/x",
        "/t-trusted/x",
        &inside_container,
    ] {
        let body = serde_json::json!({
            "Image": "eci/app:1",
            "HostConfig": { "CgroupParent": parent },
        })
        .to_string();
        let refusal = w
            .gate
            .check_create(&CallerKind::TrustedHost, body.as_bytes())
            .await
            .expect_err(parent);
        assert!(
            refusal
                .message()
                .starts_with("enhanced container isolation:"),
            "{parent}: {refusal:?}"
        );
    }
    let body = br#"{"Image":"eci/app:1","HostConfig":{"CgroupParent":"/elsewhere"}}"#;
    w.gate
        .check_create(&CallerKind::TrustedHost, body)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_container_caller_may_not_start_exec_or_attach_to_what_the_profile_refuses() {
    let w = world(&["*"]);
    let held = id(6);
    w.container_with("held", &held, serde_json::json!({ "PidMode": "host" }));
    let plain = id(7);
    w.container("plain", &plain);
    let caller = CallerKind::Container(id(8));
    let location = w.gate.snapshot().settings.location();
    let refusal = w.gate.admit_start(&caller, "held").await.unwrap_err();
    assert_eq!(
        refusal.message(),
        messages::profile_refused_use(
            ContainerUse::Start,
            "held",
            &Breach::HostNamespace(Namespace::Pid),
            &location
        )
    );
    assert_eq!(refusal.reason(), "profile_host_namespace");
    for what in [ContainerUse::Exec, ContainerUse::Attach] {
        let refusal = w.gate.admit_use(what, "held", false).await.unwrap_err();
        assert!(
            refusal.message().contains(what.doing()),
            "{what:?}: {refusal:?}"
        );
    }
    // An ordinary container: served, by the ID the engine gave for the name.
    assert_eq!(
        w.gate
            .admit_start(&caller, "plain")
            .await
            .unwrap()
            .unwrap()
            .0,
        plain
    );
    assert_eq!(
        w.gate
            .admit_use(ContainerUse::Exec, "plain", false)
            .await
            .unwrap(),
        Some(plain.clone())
    );
    // Its own option: exec --privileged.
    let refusal = w
        .gate
        .admit_use(ContainerUse::Exec, "plain", true)
        .await
        .unwrap_err();
    assert!(
        refusal.message().contains("(docker exec --privileged)"),
        "{refusal:?}"
    );
    // No such container: the engine's own 404.
    assert_eq!(
        w.gate
            .admit_use(ContainerUse::Attach, "nope", false)
            .await
            .unwrap(),
        None
    );
    // The host starts it.
    assert_eq!(
        w.gate
            .admit_start(&CallerKind::TrustedHost, "held")
            .await
            .unwrap()
            .unwrap()
            .0,
        held
    );
}

#[tokio::test]
async fn an_exec_is_started_with_what_it_was_created_with() {
    let w = world(&["*"]);
    let held = id(14);
    w.container_with("held", &held, serde_json::json!({ "PidMode": "host" }));
    let plain = id(15);
    w.container("plain", &plain);
    let exec = |exec: &str, container: &ContainerId, privileged: bool| {
        w.engine.answer(
            &format!("/exec/{exec}/json"),
            &serde_json::json!({
                "ID": exec,
                "ContainerID": container.as_str(),
                "ProcessConfig": { "privileged": privileged, "entrypoint": "true" },
            })
            .to_string(),
        );
    };
    exec("e-held", &held, false);
    exec("e-priv", &plain, true);
    exec("e-plain", &plain, false);
    let refusal = w.gate.admit_exec_start("e-held").await.unwrap_err();
    assert_eq!(refusal.reason(), "profile_host_namespace");
    assert!(
        refusal.message().contains(&format!(
            "running a command in container \"{}\"",
            held.as_str()
        )),
        "{refusal:?}"
    );
    let refusal = w.gate.admit_exec_start("e-priv").await.unwrap_err();
    assert!(
        refusal.message().contains("(docker exec --privileged)"),
        "{refusal:?}"
    );
    w.gate.admit_exec_start("e-plain").await.unwrap();
    // No such exec: the engine's own 404.
    w.gate.admit_exec_start("nope").await.unwrap();
}

#[tokio::test]
async fn joining_a_host_namespace_through_a_container_is_refused_to_container_callers() {
    let w = world(&["*"]);
    w.container_with("hostpid", &id(9), serde_json::json!({ "PidMode": "host" }));
    w.container_with(
        "chain",
        &id(10),
        serde_json::json!({ "PidMode": "container:hostpid" }),
    );
    w.container("plain", &id(11));
    w.container_with(
        "loop",
        &id(12),
        serde_json::json!({ "PidMode": "container:loop" }),
    );
    let caller = CallerKind::Container(id(13));
    let create = |via: &str| {
        serde_json::json!({
            "Image": "eci/app:1",
            "HostConfig": { "PidMode": format!("container:{via}") },
        })
        .to_string()
    };
    for (via, refused) in [
        ("hostpid", true),
        ("chain", true),
        ("plain", false),
        ("nope", false),
    ] {
        let body = create(via);
        let got = w.gate.check_create(&caller, body.as_bytes()).await;
        assert_eq!(got.is_err(), refused, "{via}: {got:?}");
        if refused {
            let message = got.unwrap_err().message().to_owned();
            assert!(
                message.contains(&format!(
                    "joining the host's PID namespace through container \"{via}\""
                )),
                "{message}"
            );
        }
        w.gate
            .check_create(&CallerKind::TrustedHost, body.as_bytes())
            .await
            .unwrap();
    }
    // A loop of joins is not judged: fail closed.
    let body = create("loop");
    assert!(matches!(
        w.gate.check_create(&caller, body.as_bytes()).await,
        Err(GateRefusal::Unverifiable { .. })
    ));
}

#[tokio::test]
async fn an_allowed_start_is_approved_in_the_kernel_before_it_is_forwarded() {
    let store = Arc::new(Mutex::new(MemoryVerdicts::default()));
    let w = world_with(&["*"], Some(store.clone()));
    let c = id(9);
    w.container("web", &c);
    w.gate
        .admit_start(&CallerKind::TrustedHost, "web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.lock().unwrap().approvals(),
        [(c.to_string(), kernel::ALLOW)]
    );
    // Gone: the approval goes with it.
    w.gate.forget(&c);
    assert!(store.lock().unwrap().approvals().is_empty());
}

#[tokio::test]
async fn a_full_kernel_map_refuses_the_start_loudly() {
    let full_verdicts = MemoryVerdicts::with_capacity(0);
    let full_approvals = MemoryVerdicts {
        approvals_capacity: Some(0),
        ..MemoryVerdicts::default()
    };
    // An allowed image (approval needed) and an unlisted one without the socket (a verdict
    // needed all the same: a cgroup without one inherits its ancestors' standing).
    for (what, store, images) in [
        (
            "full verdict map, allowed",
            full_verdicts.clone(),
            &["*"][..],
        ),
        (
            "full verdict map, plain",
            full_verdicts,
            &["eci/other:1"][..],
        ),
        ("full approval map", full_approvals, &["*"][..]),
    ] {
        let store = Arc::new(Mutex::new(store));
        let w = world_with(images, Some(store.clone()));
        let c = id(10);
        if images == ["*"] {
            w.container("web", &c);
        } else {
            // Stopped, no mounts: nothing about it is refused but the kernel's lack of room.
            let json = w.inspect(&c, false, false, serde_json::json!({}));
            for name in ["web", c.as_str()] {
                w.engine.answer(&format!("/containers/{name}/json"), &json);
            }
        }
        let refusal = w
            .gate
            .admit_start(&CallerKind::TrustedHost, "web")
            .await
            .expect_err(what);
        assert_eq!(refusal.reason(), "kernel_map_full", "{what}");
        assert!(
            refusal
                .message()
                .starts_with("enhanced container isolation: ")
                && refusal.message().contains("is full"),
            "{what}: {}",
            refusal.message()
        );
        assert!(store.lock().unwrap().approvals().is_empty(), "{what}");
    }
}

/// A judgement can be stale by the time it is applied: a `die` event's inspect answered "not
/// running", then the container was started again and its new cgroup got its verdict, then the
/// stale judgement lands. Removing that live cgroup's entry would let it inherit its parent's
/// standing — under the systemd driver `/system.slice`, which the shipped unit trusts. Only the
/// kernel removes a verdict, when its cgroup goes; the agent removes one only for a cgroup that
/// is already gone.
#[tokio::test]
async fn a_stale_not_running_answer_never_takes_a_live_cgroups_verdict_away() {
    for (what, images, verdict) in [
        ("denied", &["eci/other:1"][..], CgroupVerdict::DENY),
        ("allowed", &["*"][..], kernel::ALLOW),
    ] {
        let store = Arc::new(Mutex::new(MemoryVerdicts::default()));
        let w = world_with(images, Some(store.clone()));
        let c = id(11);
        w.container("web", &c);
        w.gate.rejudge(&c).await;
        let cgroup = w.tree.id(&Path::new("/docker").join(c.as_str())).unwrap();
        assert_eq!(
            store.lock().unwrap().verdicts(),
            [(cgroup, verdict)],
            "{what}"
        );

        // The stale answer: not running, while its cgroup lives on.
        let stopped = w.inspect(&c, false, true, serde_json::json!({ "CgroupParent": "" }));
        w.answer(&c, &stopped);
        w.gate.rejudge(&c).await;
        assert_eq!(
            store.lock().unwrap().verdicts(),
            [(cgroup, verdict)],
            "{what}: a stale stop"
        );
        // Gone (a stale destroy, or a `404`): the same.
        w.gate.forget(&c);
        assert_eq!(
            store.lock().unwrap().verdicts(),
            [(cgroup, CgroupVerdict::DENY)],
            "{what}: a stale destroy leaves the live cgroup denied"
        );

        // Running again, then its cgroup removed for real: its entry goes (the kernel's
        // `cgroup_rmdir` does the same; this keeps the map from filling up should that program
        // miss one).
        w.container("web", &c);
        w.gate.rejudge(&c).await;
        assert_eq!(
            store.lock().unwrap().verdicts(),
            [(cgroup, verdict)],
            "{what}: again"
        );
        w.answer(&c, &stopped);
        fs::remove_dir(w.tree.dir(&Path::new("/docker").join(c.as_str())).unwrap()).unwrap();
        w.gate.rejudge(&c).await;
        assert_eq!(store.lock().unwrap().verdicts(), [], "{what}: removed");
    }
}

/// Judgements of one container overlap (an event, a reload, a caller's lookup, a start): one
/// asked before the last one written lands late and is dropped, so it cannot undo it — here an
/// allow asked before the answer that denies the container.
#[tokio::test]
async fn a_judgement_asked_before_the_last_one_written_never_undoes_it() {
    let store = Arc::new(Mutex::new(MemoryVerdicts::default()));
    let w = world_with(&["*"], Some(store.clone()));
    let c = id(12);
    w.container("web", &c);
    let early = w.gate.order.ticket();
    let allowed = w.gate.judge(c.as_str()).await.unwrap().unwrap();
    assert!(allowed.allowed());

    // Asked later, written first: the container holds no socket any more, so it is denied.
    let without_socket = w.inspect(&c, true, false, serde_json::json!({ "CgroupParent": "" }));
    w.answer(&c, &without_socket);
    assert!(!w.gate.rejudge(&c).await);
    let cgroup = w.tree.id(&Path::new("/docker").join(c.as_str())).unwrap();
    let denied = vec![(cgroup, CgroupVerdict::DENY)];
    assert_eq!(store.lock().unwrap().verdicts(), denied);

    // The early allow lands now: dropped.
    w.gate.apply(&c, early, &allowed).await.unwrap();
    assert!(
        matches!(w.standing(&c), Some(Standing::Denied { .. })),
        "{:?}",
        w.standing(&c)
    );
    assert_eq!(store.lock().unwrap().verdicts(), denied);
    assert!(store.lock().unwrap().approvals().is_empty());
}
