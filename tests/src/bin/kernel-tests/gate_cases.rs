//! The agent's container verdicts (`gate::KernelSync`), through the pinned maps of the running
//! suite: what `eci-agent run` writes when it approves a container before `start` (under either
//! driver), revokes it on a reload, and forgets it when it is gone.

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
    fixture::{CGROUP_ROOT, CONTAINER_PARENT, Cgroup, TRUSTED, probe},
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

    let mut created = None;
    r.case(
        "container_allowed_before_its_first_process",
        (|| {
            // The gate approves the container before `start` reaches the engine; the runtime
            // then makes its cgroup (runc, under the cgroupfs driver), allowed at birth.
            sync.approve(&id).map_err(|e| format!("approve: {e}"))?;
            created = Some(Cgroup::create(&rel_str));
            expect(
                "first process in the new container cgroup → public",
                probe(&rel_str, "connect", public, None),
                CONNECTED,
            )
        })(),
    );

    r.case(
        "revoked_container_loses_access_at_once",
        (|| {
            let cgroup = tree.id(&rel).map_err(|e| format!("cgroup id: {e:#}"))?;
            sync.set(&id, cgroup, &rel, false)
                .map_err(|e| format!("deny: {e:#}"))?;
            let denied = probe(&rel_str, "connect", public, None);
            sync.set(&id, cgroup, &rel, true)
                .map_err(|e| format!("allow: {e:#}"))?;
            let allowed_again = probe(&rel_str, "connect", public, None);
            sync.forget(&id);
            // Gone: its approval goes, so a cgroup made again with its name (a new cgroup, a
            // new id) is denied at creation; its cgroup's entry goes with the cgroup (the
            // kernel's `cgroup_rmdir`), never while it lives.
            if verdict_of(pins, cgroup)?.is_none() {
                return Err(format!(
                    "forgotten while its cgroup lives: cgroup {cgroup} has no entry"
                ));
            }
            let maps =
                KernelMaps::open_pinned(pins).map_err(|e| format!("open pinned maps: {e:#}"))?;
            if maps.approvals().iter().any(|(a, _)| a == id.as_str()) {
                return Err("forgotten: the approval is still there".into());
            }
            drop(created.take());
            if let Some(verdict) = verdict_of(pins, cgroup)? {
                return Err(format!(
                    "cgroup {cgroup} removed: its entry {verdict:?} is still there"
                ));
            }
            let _again = Cgroup::create(&rel_str);
            let forgotten = probe(&rel_str, "connect", public, None);
            all([
                expect("after revocation", denied, EPERM),
                expect("allowed again", allowed_again, CONNECTED),
                expect(
                    "forgotten, made again: denied at creation",
                    forgotten,
                    EPERM,
                ),
            ])
        })(),
    );

    r.case(
        "stale_answers_never_unprotect_a_live_container_cgroup",
        (|| {
            // The systemd driver's shape: a container's scope directly in a trusted slice. Its
            // own entry is all that stands between it and the slice's trust, so an engine
            // answer applied late ("not running", "gone") while the container runs again must
            // not take it away.
            let id = ContainerId::parse(&"f".repeat(64)).expect("id");
            let rel_str = format!("{TRUSTED}/docker-{id}.scope");
            let rel = Path::new(&rel_str);
            let scope = Cgroup::create(&rel_str);
            let cgroup = tree.id(rel).map_err(|e| format!("cgroup id: {e:#}"))?;
            sync.set(&id, cgroup, rel, false)
                .map_err(|e| format!("deny: {e:#}"))?;
            let denied = probe(&scope.rel, "connect", public, None);
            sync.unset(&id, false);
            let after_stale_stop = probe(&scope.rel, "connect", public, None);
            sync.forget(&id);
            let after_stale_destroy = probe(&scope.rel, "connect", public, None);
            drop(scope);
            let checks = all([
                expect("denied", denied, EPERM),
                expect("after a stale \"not running\"", after_stale_stop, EPERM),
                expect("after a stale \"gone\"", after_stale_destroy, EPERM),
            ]);
            match verdict_of(pins, cgroup)? {
                Some(verdict) => Err(format!(
                    "scope removed: its entry {verdict:?} is still there"
                )),
                None => checks,
            }
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
        "systemd_driver_scope_allowed_at_birth",
        (|| {
            // Under the systemd driver, systemd (not the agent) makes `docker-<id>.scope`: the
            // approval alone lets its first process connect; an unapproved scope is denied.
            let approved = ContainerId::parse(&"d".repeat(64)).expect("id");
            let unapproved = ContainerId::parse(&format!("{}e", "d".repeat(63))).expect("id");
            sync.approve(&approved)
                .map_err(|e| format!("approve: {e}"))?;
            let scope = Cgroup::create(&format!("{CONTAINER_PARENT}/docker-{approved}.scope"));
            let other = Cgroup::create(&format!("{CONTAINER_PARENT}/docker-{unapproved}.scope"));
            let checks = all([
                expect(
                    "approved systemd-driver container's first process → public",
                    probe(&scope.rel, "connect", public, None),
                    CONNECTED,
                ),
                expect(
                    "unapproved systemd-driver container → public",
                    probe(&other.rel, "connect", public, None),
                    EPERM,
                ),
            ]);
            sync.forget(&approved);
            checks
        })(),
    );
}

/// The verdict map's entry for `cgroup` now, as the pinned map holds it.
fn verdict_of(
    pins: &PinLayout,
    cgroup: eci_agent::ids::CgroupId,
) -> Result<Option<eci_common::CgroupVerdict>, String> {
    let maps = KernelMaps::open_pinned(pins).map_err(|e| format!("open pinned maps: {e:#}"))?;
    Ok(maps
        .verdicts()
        .into_iter()
        .find_map(|(c, v)| (c == cgroup).then_some(v)))
}
