//! Verdicts and the guard's owner follow cgroups as they are removed (issue 9, life cycle): the
//! `cgroup_rmdir` tracepoint drops a removed cgroup's verdict, so the map holds live cgroups only,
//! and clears the guard's owner when the agent's own cgroup goes. Then a caller that may change
//! cgroups may open the pins until an agent records itself again: a restarted agent in a new
//! cgroup (what systemd gives a restarted unit) adopts its pins. While the owner's cgroup exists,
//! a trusted cgroup outside it is still refused.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use eci_agent::{
    ids::CgroupId,
    kernel::{KernelMaps, PinLayout},
};
use eci_common::{CLASS_PUBLIC, CgroupVerdict, MAP_VERDICTS};

use crate::{
    cases::{PIN_DIR, Report, all, expect},
    fixture::{
        AGENT_CGROUP, Agent, CGROUP_ROOT, CONTAINER_PARENT, Cgroup, TRUSTED, eventually, probe,
    },
    probe::{CONNECTED, EPERM},
};

fn has_verdict(maps: &KernelMaps, id: u64) -> bool {
    maps.verdicts().iter().any(|(cg, _)| *cg == CgroupId(id))
}

/// A container's cgroup (denied at mkdir by `cgroup_mkdir`) and an allowed host cgroup (its verdict
/// written as the agent writes one): both verdicts go with their cgroups.
pub fn removed_cgroups_lose_their_verdicts(r: &mut Report, maps: &mut KernelMaps) {
    r.case(
        "verdicts_removed_with_their_cgroups",
        (|| {
            let container = Cgroup::create(&format!("{CONTAINER_PARENT}/c-gone"));
            let allowed = Cgroup::create("/t-gone");
            let (container_id, allowed_id) = (container.id(), allowed.id());
            maps.set_verdict(
                CgroupId(allowed_id),
                CgroupVerdict {
                    classes: CLASS_PUBLIC,
                    flags: 0,
                },
            )
            .map_err(|e| e.to_string())?;
            if !has_verdict(maps, container_id) || !has_verdict(maps, allowed_id) {
                return Err("the verdicts were not there before the rmdir".into());
            }
            drop((container, allowed));
            all([
                if has_verdict(maps, container_id) {
                    Err(format!(
                        "container cgroup {container_id}: verdict left after rmdir"
                    ))
                } else {
                    Ok(())
                },
                if has_verdict(maps, allowed_id) {
                    Err(format!(
                        "allowed cgroup {allowed_id}: verdict left after rmdir"
                    ))
                } else {
                    Ok(())
                },
            ])
        })(),
    );
}

/// Kills `agent`, removes its cgroup and starts an agent again, which makes its cgroup anew (a new
/// id, as systemd does for a restarted unit). Returns the new agent, if it started.
pub fn restart_in_new_cgroup(
    r: &mut Report,
    agent: Agent,
    maps: &KernelMaps,
    engine: &Path,
    public: &Path,
    unlisted: &Cgroup,
    allowed: &Cgroup,
) -> Option<Agent> {
    let pins = PinLayout::new(Path::new(PIN_DIR));
    let verdicts_pin = pins.map(MAP_VERDICTS);
    let dir = Path::new(CGROUP_ROOT).join(AGENT_CGROUP.trim_start_matches('/'));
    let old_id = fs::metadata(&dir).map(|m| m.ino()).unwrap_or(0);
    crate::fixture::join("/");
    agent.kill();
    let removed = eventually(Duration::from_secs(5), || fs::remove_dir(&dir).is_ok());
    r.case(
        "owner_cgroup_removed_unowns_the_guard",
        all([
            if removed {
                Ok(())
            } else {
                Err(format!("rmdir {}: still busy", dir.display()))
            },
            if has_verdict(maps, old_id) {
                Err("the removed agent cgroup's verdict is still in the map".into())
            } else {
                Ok(())
            },
            expect(
                "trusted → verdicts pin, owner's cgroup removed",
                probe(TRUSTED, "bpf-get", &verdicts_pin, None),
                CONNECTED,
            ),
            expect(
                "unlisted → verdicts pin, owner's cgroup removed",
                probe(&unlisted.rel, "bpf-get", &verdicts_pin, None),
                EPERM,
            ),
        ]),
    );
    let started = Agent::try_start(Path::new(PIN_DIR), engine, public);
    let new_id = fs::metadata(&dir).map(|m| m.ino()).unwrap_or(0);
    let result = match &started {
        Err(err) => Err(format!("the agent in a new cgroup: {err}")),
        Ok(_) if new_id == old_id => Err(format!("the agent's cgroup kept its id {old_id}")),
        Ok(_) => all([
            expect(
                "new agent cgroup → verdicts pin",
                probe(AGENT_CGROUP, "bpf-get", &verdicts_pin, None),
                CONNECTED,
            ),
            // The new owner is recorded: trust is not ownership again.
            expect(
                "trusted → verdicts pin, new owner recorded",
                probe(TRUSTED, "bpf-get", &verdicts_pin, None),
                EPERM,
            ),
            expect(
                "allowed → public after the restart",
                probe(&allowed.rel, "connect", public, None),
                CONNECTED,
            ),
            expect(
                "unlisted → public after the restart",
                probe(&unlisted.rel, "connect", public, None),
                EPERM,
            ),
        ]),
    };
    r.case("restart_in_new_cgroup_adopts_pins", result);
    let agent = started.ok()?;
    crate::fixture::join(AGENT_CGROUP);
    Some(agent)
}
