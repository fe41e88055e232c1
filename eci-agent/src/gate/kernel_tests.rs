//! Table tests of the gate's kernel verdicts, over a verdict map in memory and a cgroup tree in a
//! temporary directory: where a container's verdict may go, what replaces and removes it, and that
//! a full map is an error, not a silent allow. No root, no BPF (the VM suite runs the real map).

use std::{fs, path::PathBuf};

use super::*;
use crate::kernel::verdicts::MemoryVerdicts;

struct World {
    _dir: tempfile::TempDir,
    tree: CgroupTree,
    store: Arc<Mutex<MemoryVerdicts>>,
    sync: KernelSync,
    root: CgroupId,
    /// The agent's own cgroup (this test process's, made in the fake tree) and its parent.
    own: CgroupId,
    own_parent: CgroupId,
    trusted: CgroupId,
}

fn world(store: MemoryVerdicts) -> World {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("cgroup.controllers"), "").unwrap();
    let tree = CgroupTree::open(dir.path()).unwrap();
    // `check_target` walks up from the agent's real cgroup path; the fake tree must have it.
    let own_rel = cgroup_of_pid(std::process::id()).unwrap_or_else(|_| PathBuf::from("/"));
    let own = tree.create(&own_rel).unwrap();
    let own_parent = tree
        .create(own_rel.parent().unwrap_or(Path::new("/")))
        .unwrap();
    let root = tree.id(Path::new("/")).unwrap();
    let trusted = tree.create(Path::new("/t-trusted")).unwrap();
    let store = Arc::new(Mutex::new(store));
    let sync = KernelSync::new(store.clone(), tree.clone()).never_on([trusted]);
    World {
        _dir: dir,
        tree,
        store,
        sync,
        root,
        own,
        own_parent,
        trusted,
    }
}

impl World {
    /// [`KernelSync::set`] with the path the cgroup has in the tree (the gate's placement).
    fn set(&self, id: &ContainerId, cgroup: CgroupId, allowed: bool) -> anyhow::Result<()> {
        let rel = self.tree.path_of(cgroup).unwrap();
        self.sync.set(id, cgroup, &rel, allowed)
    }

    fn remove(&self, rel: &str) {
        fs::remove_dir(self.tree.dir(Path::new(rel)).unwrap()).unwrap();
    }
}

fn container(n: u8) -> ContainerId {
    ContainerId::parse(&format!("{n:02x}").repeat(32)).unwrap()
}

fn entries(w: &World) -> Vec<(CgroupId, CgroupVerdict)> {
    w.store.lock().unwrap().verdicts()
}

#[test]
fn container_verdicts_go_only_where_they_belong() {
    let w = world(MemoryVerdicts::default());
    let c1 = w.tree.create(Path::new("/docker/c1")).unwrap();
    let cases: [(&str, CgroupId, bool, bool); 7] = [
        ("a container's own cgroup, allowed", c1, true, true),
        ("a container's own cgroup, denied", c1, false, true),
        ("a trusted cgroup", w.trusted, true, false),
        ("the cgroup2 root", w.root, true, false),
        ("the agent's own cgroup", w.own, true, false),
        (
            "an ancestor of the agent's cgroup",
            w.own_parent,
            true,
            false,
        ),
        ("the agent's own cgroup, even a deny", w.own, false, false),
    ];
    for (name, cgroup, allowed, accepted) in cases {
        w.store.lock().unwrap().entries.clear();
        let result = w.set(&container(1), cgroup, allowed);
        assert_eq!(result.is_ok(), accepted, "{name}: {result:?}");
        let want = if accepted {
            vec![(cgroup, if allowed { ALLOW } else { CgroupVerdict::DENY })]
        } else {
            vec![]
        };
        assert_eq!(entries(&w), want, "{name}");
    }
}

#[test]
fn a_restarted_container_moves_its_verdict_and_forget_removes_it() {
    let w = world(MemoryVerdicts::default());
    let old = w.tree.create(Path::new("/docker/old")).unwrap();
    let new = w.tree.create(Path::new("/docker/new")).unwrap();
    let other = w.tree.create(Path::new("/docker/other")).unwrap();
    w.set(&container(1), old, true).unwrap();
    w.set(&container(2), other, false).unwrap();
    w.remove("/docker/old");
    w.set(&container(1), new, true).unwrap();
    assert_eq!(
        entries(&w),
        sorted([(new, ALLOW), (other, CgroupVerdict::DENY)])
    );
    w.remove("/docker/new");
    w.sync.forget(&container(1));
    w.sync.forget(&container(3));
    assert_eq!(entries(&w), [(other, CgroupVerdict::DENY)]);
}

/// Only a cgroup that is gone loses its entry: a live one without an entry would inherit its
/// parent's standing (a trusted slice under the systemd driver). Whatever the engine's answer
/// says, a live cgroup keeps an explicit verdict, and loses an allow unless it is allowed.
#[test]
fn a_live_cgroup_never_loses_its_entry() {
    let w = world(MemoryVerdicts::default());
    let old = w.tree.create(Path::new("/docker/old")).unwrap();
    let new = w.tree.create(Path::new("/docker/new")).unwrap();
    let c = container(1);
    w.set(&c, old, true).unwrap();
    // A new cgroup while the old one lives on (processes left behind): the old one is denied.
    w.set(&c, new, true).unwrap();
    assert_eq!(
        entries(&w),
        sorted([(old, CgroupVerdict::DENY), (new, ALLOW)])
    );
    // "Not running" while its cgroup lives (a stale answer): allowed stays allowed, a denied
    // judgement denies, and neither removes the entry.
    w.sync.unset(&c, true);
    assert_eq!(
        entries(&w),
        sorted([(old, CgroupVerdict::DENY), (new, ALLOW)])
    );
    w.sync.unset(&c, false);
    let both_denied = sorted([(old, CgroupVerdict::DENY), (new, CgroupVerdict::DENY)]);
    assert_eq!(entries(&w), both_denied);
    // "Gone" while it lives: denied, kept.
    w.set(&c, new, true).unwrap();
    w.sync.forget(&c);
    assert_eq!(entries(&w), both_denied);
}

#[test]
fn a_full_map_is_an_error_and_nothing_is_recorded() {
    let w = world(MemoryVerdicts::with_capacity(1));
    let c1 = w.tree.create(Path::new("/docker/c1")).unwrap();
    let c2 = w.tree.create(Path::new("/docker/c2")).unwrap();
    w.set(&container(1), c1, false).unwrap();
    let err = w.set(&container(2), c2, true).unwrap_err();
    assert!(
        format!("{err:#}").contains(eci_common::MAP_VERDICTS),
        "{err:#}"
    );
    // Container 2 was not recorded: forgetting it removes nothing of container 1's.
    w.sync.forget(&container(2));
    assert_eq!(entries(&w), [(c1, CgroupVerdict::DENY)]);
}

#[test]
fn an_approval_lasts_while_the_container_exists_and_goes_with_it() {
    let w = world(MemoryVerdicts::default());
    let c1 = w.tree.create(Path::new("/docker/c1")).unwrap();
    w.sync.approve(&container(1)).unwrap();
    w.sync.approve(&container(2)).unwrap();
    w.set(&container(1), c1, true).unwrap();
    // Stopped: its cgroup's verdict goes, the approval stays (a restart is allowed at birth).
    w.remove("/docker/c1");
    w.sync.unset(&container(1), true);
    assert!(entries(&w).is_empty());
    assert_eq!(approvals(&w), [container(1), container(2)]);
    // Judged denied, or gone: the approval goes.
    w.sync.withdraw(&container(2));
    w.sync.forget(&container(1));
    w.sync.forget(&container(9));
    assert!(approvals(&w).is_empty());
}

#[test]
fn approvals_of_containers_gone_while_nobody_watched_are_swept() {
    let w = world(MemoryVerdicts::default());
    for n in 1..=3 {
        w.sync.approve(&container(n)).unwrap();
    }
    // Containers 1 and 3 were removed while the agent was down: no destroy event will come.
    assert_eq!(w.sync.withdraw_all_but(&[container(2), container(7)]), 2);
    assert_eq!(approvals(&w), [container(2)]);
    assert_eq!(w.sync.withdraw_all_but(&[container(2)]), 0);
}

#[test]
fn a_full_map_refuses_what_a_start_needs_and_leaves_nothing_behind() {
    // A full approval map: an allowed container cannot be approved (the gate refuses its start).
    let full_approvals = MemoryVerdicts {
        approvals_capacity: Some(1),
        ..MemoryVerdicts::default()
    };
    let w = world(full_approvals);
    w.sync.approve(&container(1)).unwrap();
    w.sync.approve(&container(1)).unwrap();
    let err = w.sync.approve(&container(2)).unwrap_err();
    assert!(err.is_map_full(), "{err}");
    assert!(err.to_string().contains(eci_common::MAP_APPROVALS), "{err}");
    assert_eq!(approvals(&w), [container(1)]);

    // A full verdict map: no start has room for its cgroup's verdict.
    let w = world(MemoryVerdicts::with_capacity(1));
    w.sync.check_room().unwrap();
    assert!(entries(&w).is_empty(), "the room probe leaves no entry");
    let c1 = w.tree.create(Path::new("/docker/c1")).unwrap();
    w.set(&container(1), c1, true).unwrap();
    let err = w.sync.check_room().unwrap_err();
    assert!(err.is_map_full(), "{err}");
    assert!(err.to_string().contains(eci_common::MAP_VERDICTS), "{err}");
    assert_eq!(entries(&w), [(c1, ALLOW)]);
}

fn approvals(w: &World) -> Vec<ContainerId> {
    w.store
        .lock()
        .unwrap()
        .approvals()
        .into_iter()
        .map(|(id, v)| {
            assert_eq!(v, ALLOW);
            ContainerId::parse(&id).unwrap()
        })
        .collect()
}

fn sorted<const N: usize>(mut v: [(CgroupId, CgroupVerdict); N]) -> Vec<(CgroupId, CgroupVerdict)> {
    v.sort_by_key(|(id, _)| *id);
    v.to_vec()
}
