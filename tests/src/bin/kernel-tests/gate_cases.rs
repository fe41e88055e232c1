//! The agent's container verdicts (`gate::KernelSync`), through the pinned maps of the running
//! suite: what `eci-agent run` writes when it allows a container at `start`, revokes it on a
//! reload, and forgets it when it is gone.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use eci_agent::{
    gate::{KernelSync, placement::container_cgroup},
    ids::ContainerId,
    kernel::{KernelMaps, PinLayout, cgroup::CgroupTree},
};

use crate::{
    cases::{Report, all, expect},
    fixture::{CGROUP_ROOT, CONTAINER_PARENT, Cgroup, probe},
    probe::{CONNECTED, EPERM},
};

pub fn run(r: &mut Report, pins: &PinLayout, public: &Path) {
    let sync = KernelSync::new(
        Arc::new(Mutex::new(
            KernelMaps::open_pinned(pins).expect("open pinned maps"),
        )),
        CgroupTree::open(Path::new(CGROUP_ROOT)).expect("cgroup2"),
    );
    let id = ContainerId::parse(&"c".repeat(64)).expect("id");
    let tree = CgroupTree::open(Path::new(CGROUP_ROOT)).expect("cgroup2");
    let rel = container_cgroup("cgroupfs", CONTAINER_PARENT, &id).expect("path");
    let rel_str = format!("/{}", rel.display());

    r.case(
        "container_allowed_before_its_first_process",
        (|| {
            // The agent creates the cgroup and allows it before `start` reaches the engine; the
            // runtime then joins the existing cgroup.
            sync.prepare_allowed(&id, "cgroupfs", CONTAINER_PARENT)
                .map_err(|e| format!("prepare_allowed: {e:#}"))?;
            expect(
                "first process in the new container cgroup → public",
                probe(&rel_str, "connect", public, None),
                CONNECTED,
            )
        })(),
    );
    let _created = Cgroup::create(&rel_str);

    r.case(
        "revoked_container_loses_access_at_once",
        (|| {
            let cgroup = tree.id(&rel).map_err(|e| format!("cgroup id: {e:#}"))?;
            sync.set(&id, cgroup, false)
                .map_err(|e| format!("deny: {e:#}"))?;
            let denied = probe(&rel_str, "connect", public, None);
            sync.set(&id, cgroup, true)
                .map_err(|e| format!("allow: {e:#}"))?;
            let allowed_again = probe(&rel_str, "connect", public, None);
            sync.forget(&id);
            // The agent made this cgroup for the start, so forgetting removes it as well as the
            // verdict; one made again under the container parent is a new cgroup (a new id),
            // denied at creation.
            let left = KernelMaps::open_pinned(pins)
                .map_err(|e| format!("open pinned maps: {e:#}"))?
                .verdicts()
                .into_iter()
                .any(|(c, _)| c == cgroup);
            if left {
                return Err(format!(
                    "forgotten: the verdict of cgroup {cgroup} is still there"
                ));
            }
            let _again = Cgroup::create(&rel_str);
            let forgotten = probe(&rel_str, "connect", public, None);
            all([
                expect("after revocation", denied, EPERM),
                expect("allowed again", allowed_again, CONNECTED),
                expect(
                    "forgotten, made again: the container parent's deny",
                    forgotten,
                    EPERM,
                ),
            ])
        })(),
    );

    r.case(
        "probe_says_this_kernel_enforces",
        (|| {
            // What `cargo xtask run` asks before choosing the host over the eci VM.
            let out = std::process::Command::new("/bin/eci-agent")
                .args(["probe", "--bpffs", "/sys/fs/bpf"])
                .output()
                .map_err(|e| format!("spawn: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || !text.contains("enforcement: available") {
                return Err(format!("probe: {:?} {text}", out.status));
            }
            let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
                .map_err(|e| format!("bpffs: {e}"))?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("eci-probe-"))
                .collect();
            if leftovers.is_empty() {
                Ok(())
            } else {
                Err(format!("probe left {leftovers:?}"))
            }
        })(),
    );

    r.case(
        "other_drivers_start_denied",
        (|| {
            // Under the systemd driver the agent cannot create the cgroup in advance: the
            // container starts under its parent's deny until the agent judges it running.
            let other = ContainerId::parse(&"d".repeat(64)).expect("id");
            sync.prepare_allowed(&other, "systemd", CONTAINER_PARENT)
                .map_err(|e| format!("prepare_allowed: {e:#}"))?;
            let scope = Cgroup::create(&format!("{CONTAINER_PARENT}/docker-{other}.scope"));
            expect(
                "unjudged systemd-driver container → public",
                probe(&scope.rel, "connect", public, None),
                EPERM,
            )
        })(),
    );
}
