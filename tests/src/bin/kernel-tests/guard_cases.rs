//! The agent's own BPF objects and pins are its cgroup's alone (issue 9, bpf half). Each attack a
//! privileged process outside the agent's cgroup could make — a `--privileged`, `--pid=host`,
//! `--cgroupns=host` container has the same capabilities and namespaces as these probes, and the
//! hooks judge by cgroup only — is tried from an unlisted cgroup and from the trusted root cgroup:
//! an fd of a map, program or link by id, an fd of a map by pin, rewriting a verdict by id,
//! detaching a pinned link, and unlinking, renaming or removing the pins. Then the agent's cgroup
//! may, and enforcement is still live.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use eci_agent::kernel::PinLayout;
use eci_common::MAP_VERDICTS;

use crate::{
    cases::{Report, all, expect},
    fixture::{Cgroup, probe},
    probe::{CONNECTED, EPERM, NOTSUPP},
};

/// The cgroup the agent runs in (`kernel::enforce::AGENT_CGROUP`).
const AGENT: &str = "/eci-agent";
/// Outside the agent's cgroup: an unlisted one, the trusted root and a trusted cgroup (trust is
/// not ownership, while the owner's cgroup exists).
const OUTSIDE: [&str; 3] = ["/t-unlisted", "/", crate::fixture::TRUSTED];

/// What a `bpf-ids` probe in the agent's cgroup says of the object pinned at `pin`.
fn ids(pin: &Path) -> Result<(u32, u32), String> {
    let out = Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .args(["probe", AGENT, "bpf-ids"])
        .arg(pin)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("spawn a probe: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().map(str::parse::<u32>);
    match (words.next(), words.next()) {
        (Some(Ok(id)), Some(Ok(prog))) => Ok((id, prog)),
        _ => Err(format!(
            "bpf-ids {} in the agent's cgroup: {:?} {text:?}",
            pin.display(),
            out.status
        )),
    }
}

fn by_id(cgroup: &str, kind: &str, id: u32) -> u8 {
    probe(
        cgroup,
        "bpf-by-id",
        Path::new(kind),
        Some(Path::new(&id.to_string())),
    )
}

/// Every probe of `op` from outside the agent's cgroup must end with `want`.
fn outside(what: &str, want: u8, op: impl Fn(&str) -> u8) -> Result<(), String> {
    all(OUTSIDE.map(|cg| expect(&format!("{what} from {cg}"), op(cg), want)))
}

pub fn run(r: &mut Report, pins: &PinLayout, unlisted: &Cgroup, public: &Path) {
    let verdicts_pin = pins.map(MAP_VERDICTS);
    let link_pin = pins.link("unix_stream_connect");
    let (map_id, link_id, prog_id) = match ids(&verdicts_pin)
        .and_then(|(map, _)| ids(&link_pin).map(|(link, prog)| (map, link, prog)))
    {
        Ok(ids) => ids,
        Err(err) => {
            r.case("guard_ids_readable_by_the_agent", Err(err));
            return;
        }
    };
    r.case(
        "guard_map_by_id_refused",
        outside("BPF_MAP_GET_FD_BY_ID of the verdicts", EPERM, |cg| {
            by_id(cg, "map", map_id)
        }),
    );
    r.case(
        "guard_verdict_rewrite_by_id_refused",
        all([
            expect(
                "allow written by id for its own cgroup",
                probe(
                    &unlisted.rel,
                    "bpf-write-verdict",
                    Path::new(&map_id.to_string()),
                    None,
                ),
                EPERM,
            ),
            expect(
                "unlisted → public after the attempt",
                probe(&unlisted.rel, "connect", public, None),
                EPERM,
            ),
        ]),
    );
    r.case(
        "guard_prog_by_id_refused",
        outside("BPF_PROG_GET_FD_BY_ID", EPERM, |cg| {
            by_id(cg, "prog", prog_id)
        }),
    );
    r.case(
        "guard_link_by_id_refused",
        outside("BPF_LINK_GET_FD_BY_ID", EPERM, |cg| {
            by_id(cg, "link", link_id)
        }),
    );
    r.case(
        "guard_map_pin_refused",
        outside("BPF_OBJ_GET of the verdicts pin", EPERM, |cg| {
            probe(cg, "bpf-get", &verdicts_pin, None)
        }),
    );
    // The documented limit: BPF_OBJ_GET of a link pin reaches no hook that knows the object, so it
    // succeeds; what the fd allows is checked instead. Tracing and raw-tracepoint links have no
    // detach (nor update) on 6.1 and 6.12.
    r.case(
        "guard_pinned_link_cannot_be_detached",
        outside("BPF_LINK_DETACH of a pinned link", NOTSUPP, |cg| {
            probe(cg, "bpf-detach", &link_pin, None)
        }),
    );
    let stolen = PathBuf::from("/sys/fs/bpf/eci-stolen");
    let root = pins.root().to_owned();
    r.case(
        "guard_pins_cannot_be_moved_or_removed",
        all([
            outside("rename of a link pin out", EPERM, |cg| {
                probe(cg, "rename", &link_pin, Some(&stolen))
            }),
            outside("rename of the pin directory", EPERM, |cg| {
                probe(cg, "rename", &root, Some(&stolen))
            }),
            outside("rmdir of the links directory", EPERM, |cg| {
                probe(cg, "rmdir", &pins.links_dir(), None)
            }),
            outside("unlink of a map pin", EPERM, |cg| {
                probe(cg, "unlink", &verdicts_pin, None)
            }),
            outside("unlink of a link pin", EPERM, |cg| {
                probe(cg, "unlink", &link_pin, None)
            }),
        ]),
    );
    // Put back whatever an unguarded kernel let through, so the rest of the suite still runs.
    if stolen.exists() {
        let target = if root.exists() { &link_pin } else { &root };
        let _ = std::fs::rename(&stolen, target);
    }
    r.case(
        "guard_enforcement_stays_live",
        stays_denied(unlisted, public, &link_pin),
    );
    r.case(
        "guard_agent_cgroup_may",
        all([
            expect(
                "agent cgroup: BPF_MAP_GET_FD_BY_ID",
                by_id(AGENT, "map", map_id),
                CONNECTED,
            ),
            expect(
                "agent cgroup: BPF_OBJ_GET of the verdicts pin",
                probe(AGENT, "bpf-get", &verdicts_pin, None),
                CONNECTED,
            ),
            expect(
                "agent cgroup: BPF_LINK_GET_FD_BY_ID",
                by_id(AGENT, "link", link_id),
                CONNECTED,
            ),
        ]),
    );
}

/// The link pin is still there and, for 3 s (the kernel releases a detached link from a work
/// queue), an unlisted cgroup still cannot connect.
fn stays_denied(unlisted: &Cgroup, public: &Path, link_pin: &Path) -> Result<(), String> {
    if !link_pin.exists() {
        return Err(format!("{} is gone", link_pin.display()));
    }
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        expect(
            "unlisted → public after the attacks",
            probe(&unlisted.rel, "connect", public, None),
            EPERM,
        )?;
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
