//! Who may change which cgroup a process is in (`file_open`, `task_alloc`; eci-ebpf's
//! `cgroupfs.rs`): a protected cgroup (the agent's, a trusted one and what inherits its trust, an
//! allowed container's, the root) takes a process, or a write to any of its files, only from a
//! process that may change cgroups (a trusted cgroup, the agent's, the root). Everything else —
//! denied and unknown cgroups, reading — is untouched.

use std::path::{Path, PathBuf};

use crate::{
    cases::{Report, all, expect},
    fixture::{CGROUP_ROOT, Cgroup, TRUSTED, probe},
    probe::{CONNECTED, EPERM},
};

/// The cgroups of the main suite the cases move probes between.
pub struct Cgroups<'a> {
    pub unlisted: &'a Cgroup,
    pub allowed: &'a Cgroup,
    pub allowed_deep: &'a Cgroup,
    pub trusted_child: &'a Cgroup,
    /// A container's cgroup (explicit deny, under a trusted parent).
    pub container: &'a Cgroup,
    pub denied: &'a Cgroup,
}

fn file(rel: &str, name: &str) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join(rel.trim_start_matches('/'))
        .join(name)
}

pub fn run(r: &mut Report, cg: &Cgroups<'_>) {
    let procs = |rel: &str| file(rel, "cgroup.procs");
    let join = |from: &str, to: &str| probe(from, "write-pid", &procs(to), None);
    let open_write =
        |from: &str, to: &str, name: &str| probe(from, "open-write", &file(to, name), None);

    r.case(
        "cgroup_procs_of_protected_cgroups_refused",
        all([
            expect(
                "unlisted → agent's cgroup.procs",
                join(&cg.unlisted.rel, "/eci-agent"),
                EPERM,
            ),
            expect(
                "unlisted → trusted cgroup.procs",
                join(&cg.unlisted.rel, TRUSTED),
                EPERM,
            ),
            expect(
                "unlisted → cgroup.procs of a trusted cgroup's child (inherited trust)",
                join(&cg.unlisted.rel, &cg.trusted_child.rel),
                EPERM,
            ),
            expect(
                "container → allowed container's cgroup.procs",
                join(&cg.container.rel, &cg.allowed.rel),
                EPERM,
            ),
            expect(
                "container → cgroup.procs below an allowed container",
                join(&cg.container.rel, &cg.allowed_deep.rel),
                EPERM,
            ),
            expect(
                "container → root cgroup.procs",
                join(&cg.container.rel, "/"),
                EPERM,
            ),
            expect(
                "allowed container → trusted cgroup.procs",
                join(&cg.allowed.rel, TRUSTED),
                EPERM,
            ),
            expect(
                "allowed container → agent's cgroup.procs",
                join(&cg.allowed.rel, "/eci-agent"),
                EPERM,
            ),
        ]),
    );
    r.case(
        "other_files_of_protected_cgroups_refused",
        all([
            expect(
                "unlisted → agent's cgroup.threads",
                open_write(&cg.unlisted.rel, "/eci-agent", "cgroup.threads"),
                EPERM,
            ),
            expect(
                "unlisted → allowed container's cgroup.threads",
                open_write(&cg.unlisted.rel, &cg.allowed.rel, "cgroup.threads"),
                EPERM,
            ),
            expect(
                "container → trusted cgroup.subtree_control",
                open_write(&cg.container.rel, TRUSTED, "cgroup.subtree_control"),
                EPERM,
            ),
            expect(
                "container → root cgroup.subtree_control",
                open_write(&cg.container.rel, "/", "cgroup.subtree_control"),
                EPERM,
            ),
            expect(
                "container → agent's cgroup.kill",
                open_write(&cg.container.rel, "/eci-agent", "cgroup.kill"),
                EPERM,
            ),
            expect(
                "unlisted reads the agent's cgroup.procs",
                probe(&cg.unlisted.rel, "read", &procs("/eci-agent"), None),
                CONNECTED,
            ),
        ]),
    );
    r.case("cgroup_made_under_trusted_then_joined_refused", {
        let evil = format!("{TRUSTED}/t-evil");
        let got = probe(
            &cg.container.rel,
            "mkdir-join",
            &Path::new(CGROUP_ROOT).join(evil.trim_start_matches('/')),
            None,
        );
        let _ = std::fs::remove_dir(Path::new(CGROUP_ROOT).join(evil.trim_start_matches('/')));
        expect("container → mkdir under trusted, join it", got, EPERM)
    });
    r.case("cgroup_writers_and_unprotected_cgroups_allowed", {
        let own_sub = Cgroup::create(&format!("{}/t-sub", cg.container.rel));
        all([
            expect(
                "trusted → allowed container's cgroup.procs (runc under systemd)",
                join(TRUSTED, &cg.allowed.rel),
                CONNECTED,
            ),
            expect(
                "root → allowed container's cgroup.procs (runc under a plain init)",
                join("/", &cg.allowed_deep.rel),
                CONNECTED,
            ),
            expect(
                "root → agent's cgroup.procs",
                open_write("/", "/eci-agent", "cgroup.procs"),
                CONNECTED,
            ),
            expect(
                "unlisted → denied cgroup.procs",
                join(&cg.unlisted.rel, &cg.denied.rel),
                CONNECTED,
            ),
            expect(
                "container in its own cgroup namespace → its own child cgroup",
                probe(
                    &cg.container.rel,
                    "cgroupns-write-pid",
                    &procs(&own_sub.rel),
                    None,
                ),
                CONNECTED,
            ),
            expect(
                "container → its own child's cgroup.subtree_control",
                open_write(&cg.container.rel, &own_sub.rel, "cgroup.subtree_control"),
                CONNECTED,
            ),
        ])
    });
    // Moving a process *out* (the agent's pid, seen with --pid=host) into a cgroup that is not
    // protected: refused to a container in the host's cgroup namespace, whatever the target.
    r.case("moving_out_refused_to_containers_in_the_host_cgroupns", {
        let own_sub = Cgroup::create(&format!("{}/t-sub2", cg.container.rel));
        all([
            expect(
                "container (host cgroupns) → denied cgroup.procs",
                join(&cg.container.rel, &cg.denied.rel),
                EPERM,
            ),
            expect(
                "container (host cgroupns) → unlisted cgroup.procs",
                join(&cg.container.rel, &cg.unlisted.rel),
                EPERM,
            ),
            expect(
                "container (host cgroupns) → its own child's cgroup.threads",
                open_write(&cg.container.rel, &own_sub.rel, "cgroup.threads"),
                EPERM,
            ),
            expect(
                "allowed container (host cgroupns) → denied cgroup.procs",
                join(&cg.allowed.rel, &cg.denied.rel),
                EPERM,
            ),
            expect(
                "unlisted host cgroup (no verdict) → denied cgroup.procs",
                join(&cg.unlisted.rel, &cg.denied.rel),
                CONNECTED,
            ),
            expect(
                "trusted → unlisted cgroup.procs",
                join(TRUSTED, &cg.unlisted.rel),
                CONNECTED,
            ),
        ])
    });
    r.case(
        "clone_into_cgroup_only_for_writers",
        all([
            expect(
                "unlisted → clone3 into a denied cgroup",
                probe(
                    &cg.unlisted.rel,
                    "clone-into",
                    &file(&cg.denied.rel, ""),
                    None,
                ),
                EPERM,
            ),
            expect(
                "container → clone3 into an allowed container",
                probe(
                    &cg.container.rel,
                    "clone-into",
                    &file(&cg.allowed.rel, ""),
                    None,
                ),
                EPERM,
            ),
            expect(
                "trusted → clone3 into an allowed container",
                probe(TRUSTED, "clone-into", &file(&cg.allowed.rel, ""), None),
                CONNECTED,
            ),
            expect(
                "root → clone3 into an unlisted cgroup",
                probe("/", "clone-into", &file(&cg.unlisted.rel, ""), None),
                CONNECTED,
            ),
        ]),
    );
}
