//! What `eci-agent run` sets up in the kernel before it serves: the programs loaded and pinned,
//! the agent in its own cgroup, the verdicts of the agent, the trusted cgroups and the container
//! parents, and the engine socket protected.

use std::path::{Path, PathBuf};

use eci_common::{
    CLASS_ALL, CLASS_CGROUPS, CLASS_ENGINE, CLASS_PUBLIC, CgroupVerdict, VERDICT_EXACT,
};

use super::{
    cgroup::CgroupTree,
    error::{KernelError, Result},
    guard,
    loader::Enforcer,
    pins::PinLayout,
};

/// The agent's own cgroup (relative to the cgroup2 mount): the only one that reaches the engine.
pub const AGENT_CGROUP: &str = "eci-agent";

/// What the kernel side of the agent needs to know.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    pub pin_dir: PathBuf,
    pub cgroup_root: PathBuf,
    /// The engine socket (only the agent's cgroup may reach it).
    pub engine: PathBuf,
    /// Host cgroups trusted to reach the public socket.
    pub trust: Vec<PathBuf>,
    /// Parents under which the engine creates container cgroups (e.g. `docker`, dockerd's
    /// `--cgroup-parent`).
    pub container_parents: Vec<PathBuf>,
}

/// Loads and pins the programs, moves this process into its own cgroup ([`AGENT_CGROUP`]) and
/// writes the verdicts; then protects the engine socket. See [`load_defaults`].
pub fn enforce(cfg: &KernelConfig) -> Result<Enforcer> {
    enforce_as(cfg, Path::new(AGENT_CGROUP))
}

/// [`enforce`] with the agent's cgroup at `agent` (relative to the cgroup2 mount): under systemd
/// a child of the unit's own cgroup (`systemd::agent_cgroup`).
///
/// Who opens the pins matters (`guard.rs`): once an earlier agent recorded its objects, they open
/// only from its cgroup, or, once that cgroup was removed (the guard is unowned), from any cgroup
/// that may change cgroups. So when the agent's cgroup already exists (it may be the recorded
/// owner) the agent enters it before anything is opened; when it is new (a new id, never the
/// owner: under systemd a restarted unit's) the agent loads from where it was started (a trusted
/// cgroup, or the root) and enters its cgroup after its verdict is written. Then this load is
/// recorded as the agent's own.
pub fn enforce_as(cfg: &KernelConfig, agent: &Path) -> Result<Enforcer> {
    let tree = CgroupTree::open(&cfg.cgroup_root)?;
    let existed = tree.dir(agent)?.exists();
    let before = super::cgroup::cgroup_of_pid(std::process::id()).ok();
    let loaded = tree.create(agent).and_then(|_| {
        if existed {
            tree.move_pid(agent, std::process::id())?;
        }
        load_defaults(cfg)
    });
    let mut enforcer = match loaded {
        Ok(enforcer) => enforcer,
        Err(err) => {
            // Nothing is enforced, so the agent has no cgroup of its own to keep (`run
            // --allow-no-lsm` goes on without the kernel): back where it was, and its cgroup
            // removed by the rule of [`leave_agent_cgroup`].
            leave_agent_cgroup(cfg, &tree, agent, before.as_deref());
            return Err(err);
        }
    };
    let own = tree.id(agent)?;
    // The verdict before the move: in a new cgroup, it is what lets the agent open its pins in
    // `record` while the guard is unowned.
    enter_agent_cgroup(cfg, &mut enforcer, agent)?;
    guard::record(
        &PinLayout::new(&cfg.pin_dir),
        own,
        &tree.dir(agent)?,
        &enforcer.attached,
    )?;
    // The name first, so that an engine restarting right now is covered either way.
    enforcer.maps.protect_name(&cfg.engine, CLASS_ENGINE)?;
    enforcer.maps.protect(&cfg.engine, CLASS_ENGINE)?;
    Ok(enforcer)
}

/// Moves this process back to `before` (where it was started) and removes the agent's cgroup
/// `agent` if it is empty and nothing pinned names it ([`removable`]). Agents started side by side
/// (tests, a crash loop) share the cgroup; each one that leaves tries, so the last one out removes
/// it, whoever made it. Best effort: what is left is an empty cgroup, never a wrong verdict.
fn leave_agent_cgroup(cfg: &KernelConfig, tree: &CgroupTree, agent: &Path, before: Option<&Path>) {
    if let Some(before) = before {
        let _ = tree.move_pid(before, std::process::id());
    }
    let Ok(dir) = tree.dir(agent) else {
        return;
    };
    let recorded = std::fs::read_link(PinLayout::new(&cfg.pin_dir).agent_cgroup_record()).ok();
    if removable(&dir, recorded.as_deref()) {
        // The kernel refuses to remove a cgroup with processes or children (EBUSY), which is the
        // emptiness check, without a race against an agent that just joined it.
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Whether the agent's cgroup `dir` may go once empty: not while the pins record it as the
/// agent's (`recorded`, the link beside them): the guard over them is that cgroup's, and a
/// restarted agent adopts them from there.
fn removable(dir: &Path, recorded: Option<&Path>) -> bool {
    recorded != Some(dir)
}

/// Creates the agent's cgroup `agent`, gives it the only verdict that reaches the engine, and
/// moves this process into it.
pub fn enter_agent_cgroup(cfg: &KernelConfig, enforcer: &mut Enforcer, agent: &Path) -> Result<()> {
    let tree = CgroupTree::open(&cfg.cgroup_root)?;
    let own = tree.create(agent)?;
    enforcer.maps.set_verdict(
        own,
        CgroupVerdict {
            classes: CLASS_ALL,
            flags: VERDICT_EXACT,
        },
    )?;
    tree.move_pid(agent, std::process::id())
}

/// Loads and pins the programs and writes the verdicts that hold with no agent running (what
/// `eci-agent load` leaves at boot, before any Docker socket exists): the trusted cgroups and the
/// container parents. Everything else has no verdict, and no verdict is denied.
///
/// Admission race: a container cgroup is created by the runtime before the agent can know its id.
/// Its verdict is inherited from the nearest ancestor until the agent writes its own. The container
/// parents therefore get an explicit deny, even when a trusted cgroup contains them, and are
/// registered so that the kernel's `cgroup_mkdir` program gives each new child (and each new
/// `docker-<id>.scope` of the systemd driver, wherever it is made) an explicit deny of its own at
/// creation; the existing ones get it from a scan. A new container starts denied (fail closed) and
/// gains access only when the agent allows its cgroup (see `kernel/admission.rs`).
pub fn load_defaults(cfg: &KernelConfig) -> Result<Enforcer> {
    let tree = CgroupTree::open(&cfg.cgroup_root)?;
    let mut enforcer = Enforcer::load(&PinLayout::new(&cfg.pin_dir))?;
    let root = tree.id(Path::new("/"))?;
    for rel in &cfg.trust {
        let id = tree.id(rel).map_err(|cause| KernelError::Cgroup {
            role: "--trust-cgroup",
            path: rel.clone(),
            cause: Box::new(cause),
        })?;
        // The root is trusted only exactly: every cgroup on the host descends from it.
        let flags = if id == root { VERDICT_EXACT } else { 0 };
        // Trusted host cgroups may also change cgroups (CLASS_CGROUPS): under systemd the engine,
        // containerd and runc run in one (system.slice), and runc moves each container's first
        // process and every `docker exec` into the container's (protected) cgroup.
        enforcer.maps.set_verdict(
            id,
            CgroupVerdict {
                classes: CLASS_PUBLIC | CLASS_CGROUPS,
                flags,
            },
        )?;
    }
    for rel in &cfg.container_parents {
        // Created if the engine has not yet, so the deny is there before its first container.
        let id = tree.create(rel).map_err(|cause| KernelError::Cgroup {
            role: "container cgroup parent",
            path: rel.clone(),
            cause: Box::new(cause),
        })?;
        enforcer.maps.set_verdict(id, CgroupVerdict::DENY)?;
        enforcer.maps.admit_children_denied(id)?;
    }
    super::admission::deny_unadmitted(&tree, &mut enforcer.maps)?;
    Ok(enforcer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_cgroup_named_by_the_pins_stays() {
        let dir = Path::new("/sys/fs/cgroup/eci-agent");
        assert!(!removable(dir, Some(dir)));
        assert!(removable(dir, None));
        assert!(removable(
            dir,
            Some(Path::new("/sys/fs/cgroup/other/eci-agent"))
        ));
    }
}
