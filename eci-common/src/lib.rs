//! The kernel/user contract of eci-agent: every BPF map's name, key, value and limit, and the
//! event the programs report. Both eci-ebpf and eci-agent import this crate, so the two sides
//! cannot drift apart; the `const` assertions pin the layouts the verifier and user space rely on.
//!
//! Maps (all pinned under the agent's `--pin-dir`, so enforcement outlives the agent):
//!
//! | map | kind | key → value | written by |
//! |---|---|---|---|
//! | [`MAP_PROTECTED`] | inode storage | socket inode → [`Protected`] | `kernel/maps.rs`, through an `O_PATH` fd of the socket, at start and when a socket is re-created |
//! | [`MAP_VERDICTS`] | hash | cgroup v2 id → [`CgroupVerdict`] | `kernel/maps.rs`: trusted cgroups at start, container cgroups on start/reload/refresh |
//! | [`MAP_EVENTS`] | ring buffer | [`DenyEvent`] | the programs, on every denial |
//! | [`MAP_PROTECTED_INDEX`] | hash | [`InodeKey`] → [`Protected`] | `kernel/maps.rs`, beside every tag |
//! | [`MAP_ADMISSION`] | hash | cgroup v2 id of a container parent → [`ADMIT_CHILDREN_DENIED`] | `kernel/maps.rs`, at start |
//! | [`MAP_PROTECTED_DIRS`] | inode storage | directory inode → [`ProtectedDir`] | `kernel/maps.rs`, through an `O_PATH` fd of the directory of each protected socket |
//! | [`MAP_PROTECTED_DIRS_INDEX`] | hash | [`InodeKey`] of a directory → [`ProtectedDirRecord`] | `kernel/maps.rs`, beside every directory tag |
//! | [`MAP_GUARD`] | hash | [`guard_key`] (kind, id) of each map, program and link of ours, and [`GUARD_AGENT_KEY`] → the agent's cgroup id | `kernel/guard.rs`, at load; `cgroup_rmdir` clears the owner ([`GUARD_UNOWNED`]) |
//! | [`MAP_GUARDED_DIRS`] | inode storage | pin directory inode → [`GUARDED_PIN_DIR`] | `kernel/guard.rs`, at load |
//! | [`MAP_APPROVALS`] | hash | container id ([`ApprovalKey`]) → the [`CgroupVerdict`] its cgroup gets at creation | `kernel/maps.rs`: the gate, before forwarding `start` of an allowed container |
//!
//! Besides the maps, one read-only global, [`GLOBAL_OFFSETS`] ([`KernelOffsets`]), carries the
//! kernel struct member offsets the loader found in the running kernel's BTF.
//!
//! The identity of a protected socket is the inode object itself (inode local storage) of the file
//! it is bound to, not a path: bind mounts, hard links, `/proc/PID/root/...`, symlinks and `O_PATH`
//! fds all reach the same inode, and through it the same listening socket, where a connect (or a
//! datagram) is judged. The storage value carries the device and inode number so that denials can
//! be reported without reading more kernel structs.
//!
//! A socket re-created at a protected path (the engine restarting: unlink, then bind) is a new
//! inode. It is tagged by the kernel itself, from the moment it has a name: the directory of each
//! protected socket carries the names it protects ([`ProtectedDir`]), and the programs give any
//! inode that appears under such a name (`d_instantiate`: `bind(2)`, `mknod(2)`, `link(2)`, a
//! lookup; `inode_rename`: a rename into place) the tag of that name, with or without a running
//! agent.
//!
//! A client socket connected to a protected socket carries the same tag on its own (sockfs)
//! inode: the programs copy it there at `unix_stream_connect`, so that a connected socket handed
//! to another process (`SCM_RIGHTS`, `pidfd_getfd`) is judged at `file_receive` like the socket it
//! reaches.
#![cfg_attr(not(test), no_std)]

/// Inode storage: which protected socket an inode is (see [`Protected`]).
pub const MAP_PROTECTED: &str = "ECI_PROTECTED";
/// Hash: cgroup v2 id → [`CgroupVerdict`].
pub const MAP_VERDICTS: &str = "ECI_VERDICTS";
/// Ring buffer of [`DenyEvent`]s.
pub const MAP_EVENTS: &str = "ECI_EVENTS";
/// Hash: [`InodeKey`] → [`Protected`]. User space's own index of what it tagged (inode storage
/// cannot be listed), so `eci-agent status` and a restarted agent know the protected inodes.
/// The programs never read it.
pub const MAP_PROTECTED_INDEX: &str = "ECI_PROTECTED_INDEX";
/// Hash: cgroup v2 id of a container parent → admission flags ([`ADMIT_CHILDREN_DENIED`]). A
/// cgroup created under such a parent gets an explicit [`CgroupVerdict::DENY`] the moment it is
/// made (`cgroup_mkdir`), before any process can join it.
pub const MAP_ADMISSION: &str = "ECI_ADMISSION";
/// Inode storage: the names a directory protects (see [`ProtectedDir`]).
pub const MAP_PROTECTED_DIRS: &str = "ECI_PROTECTED_DIRS";
/// Hash: [`InodeKey`] of a directory → [`ProtectedDirRecord`]. User space's own index of the
/// directory tags, for `eci-agent status`; the programs never read it.
pub const MAP_PROTECTED_DIRS_INDEX: &str = "ECI_PROTECTED_DIRS_IDX";
/// Hash: [`guard_key`]`(kind, id)` → 0 for every map, program and link the agent loaded, and
/// [`GUARD_AGENT_KEY`] → the agent's cgroup id. Only a process in that cgroup may get an fd of one
/// of these objects (by id or by pin) — see eci-ebpf's `guard.rs`. When that cgroup is removed
/// the owner becomes [`GUARD_UNOWNED`].
pub const MAP_GUARD: &str = "ECI_GUARD";
/// Inode storage: the pin directories (root, `maps`, `links`) → [`GUARDED_PIN_DIR`]. Only the
/// agent's cgroup may unlink, rename or remove an entry there.
pub const MAP_GUARDED_DIRS: &str = "ECI_GUARD_DIRS";
/// Hash: [`ApprovalKey`] (a container id, 64 lowercase hex digits) → [`CgroupVerdict`]. A cgroup
/// created with that container's name under either driver (see [`container_id_of_cgroup_name`]),
/// under any parent, gets this verdict the moment it is made (`cgroup_mkdir`) instead of the deny
/// every other container-named cgroup gets: the gate approves an allowed container before it
/// forwards `start`, so its first process already runs allowed, whoever makes the cgroup (runc
/// under cgroupfs, systemd under the systemd driver).
pub const MAP_APPROVALS: &str = "ECI_APPROVALS";
/// Every map, in the order the loader pins them.
pub const MAPS: [&str; 10] = [
    MAP_PROTECTED,
    MAP_VERDICTS,
    MAP_EVENTS,
    MAP_PROTECTED_INDEX,
    MAP_ADMISSION,
    MAP_PROTECTED_DIRS,
    MAP_PROTECTED_DIRS_INDEX,
    MAP_GUARD,
    MAP_GUARDED_DIRS,
    MAP_APPROVALS,
];
/// How many objects (maps, programs, links, plus the agent's key) [`MAP_GUARD`] holds.
pub const MAX_GUARDED: u32 = 256;
/// [`guard_key`] kinds. Maps, programs and links are numbered by the kernel in separate id spaces,
/// so the kind is part of the key.
pub const GUARD_KIND_AGENT: u32 = 0;
pub const GUARD_KIND_MAP: u32 = 1;
pub const GUARD_KIND_PROG: u32 = 2;
pub const GUARD_KIND_LINK: u32 = 3;
/// The [`MAP_GUARD`] key whose value is the agent's cgroup id.
pub const GUARD_AGENT_KEY: u64 = guard_key(GUARD_KIND_AGENT, 0);
/// The value of [`GUARD_AGENT_KEY`] once the agent's cgroup was removed (the `cgroup_rmdir`
/// program writes it; no cgroup has id 0): until an agent records itself again, any caller that
/// may change cgroups ([`CLASS_CGROUPS`], the cgroup2 root, PID 1) counts as the agent.
pub const GUARD_UNOWNED: u64 = 0;
/// [`MAP_GUARDED_DIRS`] value: a directory holding the agent's pins.
pub const GUARDED_PIN_DIR: u32 = 1 << 0;

/// The [`MAP_GUARD`] key of kernel object `id` of `kind` (`GUARD_KIND_*`).
#[inline(always)]
pub const fn guard_key(kind: u32, id: u32) -> u64 {
    ((kind as u64) << 32) | id as u64
}
/// How many containers can be approved at once in [`MAP_APPROVALS`] (the allowed containers that
/// exist; a full map refuses the start, it never lets one run unjudged).
pub const MAX_APPROVALS: u32 = 4096;
/// The key of [`MAP_APPROVALS`]: a container id as its 64 lowercase hex digits (the bytes of its
/// cgroup name, so the program looks it up without converting).
pub type ApprovalKey = [u8; CONTAINER_ID_LEN];
/// How many container parents can be registered in [`MAP_ADMISSION`].
pub const MAX_ADMISSION_PARENTS: u32 = 64;
/// [`MAP_ADMISSION`] value: every new child cgroup of this parent starts with an explicit deny.
pub const ADMIT_CHILDREN_DENIED: u32 = 1 << 0;

/// The read-only global ([`KernelOffsets`]) the loader fills from the running kernel's BTF.
pub const GLOBAL_OFFSETS: &str = "ECI_OFFSETS";
/// How many sockets can be protected at once.
pub const MAX_PROTECTED: u32 = 64;

/// How many directories can hold protected sockets at once.
pub const MAX_PROTECTED_DIRS: u32 = 16;
/// How many protected names one directory can hold (the public and the engine socket often share
/// one, e.g. `/run`).
pub const MAX_NAMES_PER_DIR: usize = 4;
/// The longest protected name (one path component). A unix socket path, `sun_path`, holds at most
/// 108 bytes, so every socket's own name fits.
pub const PROTECTED_NAME_MAX: usize = 108;
/// Bytes of [`ProtectedName::name`]: [`PROTECTED_NAME_MAX`] rounded up to whole u64 words, so the
/// programs compare names a word at a time and there is always a NUL after the name.
pub const PROTECTED_NAME_BYTES: usize = 112;
/// Bytes of [`ProtectedDirRecord::path`].
pub const DIR_PATH_BYTES: usize = 256;

/// How many cgroups can carry a verdict at once (containers plus trusted host cgroups).
pub const MAX_VERDICTS: u32 = 16_384;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// How deep in the cgroup2 tree the programs look for a verdict. Docker containers sit at depth
/// 1–4; deeper nesting (systemd or Docker inside a container) is still judged by its container.
pub const MAX_CGROUP_DEPTH: u32 = 32;

/// What a denial returns to the caller: `-EPERM`.
pub const DENY_ERRNO: i32 = 1;

/// Bit of [`Protected::class`] and [`CgroupVerdict::classes`]: the public socket the sidecar
/// serves (trusted host callers and allowed containers may reach it).
pub const CLASS_PUBLIC: u32 = 1 << 0;
/// Bit of [`Protected::class`] and [`CgroupVerdict::classes`]: the real engine socket (only the
/// agent's own cgroup may reach it).
pub const CLASS_ENGINE: u32 = 1 << 1;
/// Bit of [`CgroupVerdict::classes`] only (no socket carries it): the cgroup's processes may open
/// for writing the files of a protected cgroup (its `cgroup.procs`, `cgroup.threads`,
/// `cgroup.subtree_control`, …) and create a child in a cgroup of their choice
/// (`clone3(CLONE_INTO_CGROUP)`). The agent's own cgroup and the trusted host cgroups carry it,
/// never a container (see eci-ebpf's `cgroupfs.rs`).
pub const CLASS_CGROUPS: u32 = 1 << 2;
/// Every class; used for masks, and the agent's own verdict.
pub const CLASS_ALL: u32 = CLASS_PUBLIC | CLASS_ENGINE | CLASS_CGROUPS;

/// `CGROUP2_SUPER_MAGIC` (`include/uapi/linux/magic.h`): `s_magic` of every cgroup2 mount.
pub const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;
/// `FMODE_WRITE` (`include/linux/fs.h`): the file is open for writing.
pub const FMODE_WRITE: u32 = 0x2;
/// `CLONE_INTO_CGROUP` (`include/uapi/linux/sched.h`): `clone3(2)` puts the child in the cgroup
/// `clone_args.cgroup` names.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`CgroupVerdict::flags`]: the verdict applies to this cgroup only, never to its descendants.
/// The cgroup2 root, when trusted, is trusted this way: otherwise every cgroup on the host would
/// inherit it.
pub const VERDICT_EXACT: u32 = 1 << 0;

/// The value stored on a protected socket inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protected {
    /// One of the `CLASS_*` bits.
    pub class: u32,
    /// Reserved, zero (explicit so the struct has no implicit padding).
    pub reserved: u32,
    /// `st_dev` of the socket file, as user space saw it (for reports only).
    pub dev: u64,
    /// `st_ino` of the socket file (for reports only).
    pub ino: u64,
}

/// One protected name in a directory. `class` 0 marks a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedName {
    /// The `CLASS_*` bit an inode that appears under this name gets.
    pub class: u32,
    /// Length of the name in bytes.
    pub len: u32,
    /// The name, NUL-padded to the end.
    pub name: [u8; PROTECTED_NAME_BYTES],
}

impl ProtectedName {
    pub const EMPTY: Self = Self {
        class: 0,
        len: 0,
        name: [0; PROTECTED_NAME_BYTES],
    };

    /// `None` for an empty name, one with a `/` or a NUL, or one longer than
    /// [`PROTECTED_NAME_MAX`].
    pub fn new(name: &[u8], class: u32) -> Option<Self> {
        if name.is_empty()
            || name.len() > PROTECTED_NAME_MAX
            || name.iter().any(|&b| b == b'/' || b == 0)
        {
            return None;
        }
        let mut out = Self {
            class,
            len: name.len() as u32,
            name: [0; PROTECTED_NAME_BYTES],
        };
        out.name[..name.len()].copy_from_slice(name);
        Some(out)
    }

    /// The name's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.name[..(self.len as usize).min(PROTECTED_NAME_MAX)]
    }
}

/// The value stored on a directory that holds protected sockets: the names it protects. An inode
/// that gets one of these names in this directory is tagged [`Protected`] with the name's class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedDir {
    /// `st_dev` of the directory, which is that of every inode created in it (for the tags'
    /// reports).
    pub dev: u64,
    pub names: [ProtectedName; MAX_NAMES_PER_DIR],
}

impl ProtectedDir {
    pub const fn new(dev: u64) -> Self {
        Self {
            dev,
            names: [ProtectedName::EMPTY; MAX_NAMES_PER_DIR],
        }
    }

    /// Adds `name` (or changes its class); `false` when every slot is taken by another name.
    pub fn insert(&mut self, name: ProtectedName) -> bool {
        if let Some(slot) = self
            .names
            .iter_mut()
            .find(|slot| slot.class != 0 && slot.bytes() == name.bytes())
        {
            *slot = name;
            return true;
        }
        match self.names.iter_mut().find(|slot| slot.class == 0) {
            Some(slot) => {
                *slot = name;
                true
            }
            None => false,
        }
    }

    /// Removes `name`; whether it was there.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        match self
            .names
            .iter_mut()
            .find(|slot| slot.class != 0 && slot.bytes() == name)
        {
            Some(slot) => {
                *slot = ProtectedName::EMPTY;
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.iter().all(|slot| slot.class == 0)
    }

    /// The protected names in use.
    pub fn used(&self) -> impl Iterator<Item = &ProtectedName> {
        self.names.iter().filter(|slot| slot.class != 0)
    }
}

/// User space's record of a directory tag: the tag and the directory's path (NUL-padded; a path
/// longer than [`DIR_PATH_BYTES`] is cut, it is only shown).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtectedDirRecord {
    pub dir: ProtectedDir,
    pub path: [u8; DIR_PATH_BYTES],
}

/// A socket file's identity as user space sees it: `(st_dev, st_ino)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub dev: u64,
    pub ino: u64,
}

/// The verdict for one cgroup. A cgroup without an entry takes its nearest ancestor's entry
/// (skipping [`VERDICT_EXACT`] ones); with no entry on the way to the root it is denied.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupVerdict {
    /// The `CLASS_*` bits this cgroup may reach; 0 is an explicit deny.
    pub classes: u32,
    /// `VERDICT_*` flags.
    pub flags: u32,
}

impl CgroupVerdict {
    pub const DENY: Self = Self {
        classes: 0,
        flags: 0,
    };

    /// Whether this verdict lets a process at `distance` levels below the cgroup that carries it
    /// reach a socket of `class`; `None` when it does not apply there (exact verdicts only apply
    /// at distance 0), so the search goes on to the next ancestor.
    #[inline(always)]
    pub fn decide(&self, class: u32, distance: u32) -> Option<bool> {
        if distance > 0 && self.flags & VERDICT_EXACT != 0 {
            return None;
        }
        Some(self.classes & class != 0)
    }
}

/// Byte offsets of the kernel struct members the programs walk, as the running kernel's BTF gives
/// them. aya emits no CO-RE relocations, so an offset compiled into the object would only be right
/// for the kernel it was built against; the loader computes these at load time instead and refuses
/// to load when one is missing. Each walk is also checked by the verifier: a load through a
/// BTF-typed pointer at a constant offset must land on a member of the right type (e.g. a
/// `struct inode *`), so a wrong offset is a load error, never a silent misread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct file` → `f_inode` (`struct inode *`).
    pub file_f_inode: u64,
    /// `struct sock` → `sk_socket` (`struct socket *`).
    pub sock_sk_socket: u64,
    /// `struct socket` → `file` (`struct file *`).
    pub socket_file: u64,
    /// `struct socket` → `sk` (`struct sock *`).
    pub socket_sk: u64,
    /// `struct unix_sock` → `path.dentry` (`struct dentry *`): where the socket is bound.
    pub unix_sock_path_dentry: u64,
    /// `struct dentry` → `d_inode` (`struct inode *`).
    pub dentry_d_inode: u64,
    /// `struct cgroup` → `kn` (`struct kernfs_node *`).
    pub cgroup_kn: u64,
    /// `struct kernfs_node` → `id` (`u64`, the cgroup id).
    pub kernfs_node_id: u64,
    /// `struct kernfs_node` → `parent` (`struct kernfs_node *`).
    pub kernfs_node_parent: u64,
    /// `struct kernfs_node` → `name` (`const char *`).
    pub kernfs_node_name: u64,
    /// `struct dentry` → `d_parent` (`struct dentry *`).
    pub dentry_d_parent: u64,
    /// `struct dentry` → `d_name.len` (`u32`).
    pub dentry_d_name_len: u64,
    /// `struct dentry` → `d_name.name` (`const unsigned char *`).
    pub dentry_d_name_name: u64,
    /// `struct inode` → `i_ino` (`unsigned long`).
    pub inode_i_ino: u64,
    /// `struct bpf_map` → `id` (`u32`).
    pub bpf_map_id: u64,
    /// `struct bpf_prog` → `aux` (`struct bpf_prog_aux *`).
    pub bpf_prog_aux: u64,
    /// `struct bpf_prog_aux` → `id` (`u32`).
    pub bpf_prog_aux_id: u64,
    /// `struct file` → `f_mode` (`fmode_t`, a 4-byte integer).
    pub file_f_mode: u64,
    /// `struct file` → `f_path.dentry` (`struct dentry *`): the name the file was opened by.
    pub file_f_path_dentry: u64,
    /// `struct inode` → `i_sb` (`struct super_block *`).
    pub inode_i_sb: u64,
    /// `struct super_block` → `s_magic` (`unsigned long`).
    pub super_block_s_magic: u64,
    /// `struct task_struct` → `nsproxy` (`struct nsproxy *`).
    pub task_struct_nsproxy: u64,
    /// `struct nsproxy` → `cgroup_ns` (`struct cgroup_namespace *`).
    pub nsproxy_cgroup_ns: u64,
    /// `struct cgroup_namespace` → `root_cset` (`struct css_set *`): the namespace's root.
    pub cgroup_namespace_root_cset: u64,
    /// `struct css_set` → `dfl_cgrp` (`struct cgroup *`): its cgroup on the v2 hierarchy.
    pub css_set_dfl_cgrp: u64,
}

impl KernelOffsets {
    /// What the object carries before the loader overrides it. Never loaded as is: the loader
    /// always sets the global, and an offset of 0 would fail the verifier's type check anyway.
    pub const UNSET: Self = Self {
        file_f_inode: 0,
        sock_sk_socket: 0,
        socket_file: 0,
        socket_sk: 0,
        unix_sock_path_dentry: 0,
        dentry_d_inode: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        kernfs_node_parent: 0,
        kernfs_node_name: 0,
        dentry_d_parent: 0,
        dentry_d_name_len: 0,
        dentry_d_name_name: 0,
        inode_i_ino: 0,
        bpf_map_id: 0,
        bpf_prog_aux: 0,
        bpf_prog_aux_id: 0,
        file_f_mode: 0,
        file_f_path_dentry: 0,
        inode_i_sb: 0,
        super_block_s_magic: 0,
        task_struct_nsproxy: 0,
        nsproxy_cgroup_ns: 0,
        cgroup_namespace_root_cset: 0,
        css_set_dfl_cgrp: 0,
    };
}

/// The systemd scope name Docker's systemd cgroup driver gives a container:
/// `docker-<64 hex digits>.scope` (77 bytes). Shared by the `cgroup_mkdir` program and the
/// agent's start-up scan, so both recognise the same cgroups.
pub const CONTAINER_SCOPE_PREFIX: &[u8] = b"docker-";
pub const CONTAINER_SCOPE_SUFFIX: &[u8] = b".scope";
/// Length of a container scope name.
pub const CONTAINER_SCOPE_LEN: usize = 7 + CONTAINER_ID_LEN + 6;

/// The cgroup name Docker's cgroupfs driver gives a container: its id, 64 hex digits, under any
/// parent (`--cgroup-parent` chooses the parent, never the name).
pub const CONTAINER_ID_LEN: usize = 64;

/// Whether `name` (a cgroup directory name, no NUL) is a container's under either driver: a
/// 64-hex-digit id (cgroupfs) or `docker-<id>.scope` (systemd). Shared by the `cgroup_mkdir`
/// program and the agent's start-up scan, so both deny the same cgroups.
#[inline(always)]
pub fn is_container_cgroup_name(name: &[u8]) -> bool {
    container_id_of_cgroup_name(name).is_some()
}

/// The container id a container-named cgroup carries (see [`is_container_cgroup_name`]): the
/// whole name under cgroupfs, the middle of `docker-<id>.scope` under systemd.
#[inline(always)]
pub fn container_id_of_cgroup_name(name: &[u8]) -> Option<&[u8]> {
    if name.len() == CONTAINER_ID_LEN {
        let mut i = 0;
        while i < CONTAINER_ID_LEN {
            if !name[i].is_ascii_hexdigit() {
                return None;
            }
            i += 1;
        }
        return Some(name);
    }
    if is_container_scope(name) {
        let start = CONTAINER_SCOPE_PREFIX.len();
        return Some(&name[start..start + CONTAINER_ID_LEN]);
    }
    None
}

/// Whether `name` (a cgroup directory name, no NUL) is a container scope name.
#[inline(always)]
pub fn is_container_scope(name: &[u8]) -> bool {
    if name.len() != CONTAINER_SCOPE_LEN {
        return false;
    }
    let mut i = 0;
    while i < CONTAINER_SCOPE_PREFIX.len() {
        if name[i] != CONTAINER_SCOPE_PREFIX[i] {
            return false;
        }
        i += 1;
    }
    let mut i = 0;
    while i < CONTAINER_SCOPE_SUFFIX.len() {
        if name[CONTAINER_SCOPE_LEN - CONTAINER_SCOPE_SUFFIX.len() + i] != CONTAINER_SCOPE_SUFFIX[i]
        {
            return false;
        }
        i += 1;
    }
    let mut i = CONTAINER_SCOPE_PREFIX.len();
    while i < CONTAINER_SCOPE_LEN - CONTAINER_SCOPE_SUFFIX.len() {
        if !name[i].is_ascii_hexdigit() {
            return false;
        }
        i += 1;
    }
    true
}

/// Which hook denied. Value 1 was `inode_permission`, retired (the connect is judged where only
/// unix connects go); it is not reused, so an event from an older program is never misnamed.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    FileReceive = 2,
    /// Not a denial: a new inode at a protected name could not be tagged (no memory for its
    /// storage). The agent's watch tags it when it sees it; until then it is unprotected.
    DInstantiate = 3,
    /// A rename into a protected name refused because its inode could not be tagged.
    InodeRename = 4,
    /// A stream or seqpacket `connect(2)` to a protected listener.
    UnixStreamConnect = 5,
    /// A datagram `connect(2)` or send to a protected socket.
    UnixMaySend = 6,
    /// `bpf(2)` on one of the agent's links by id (`BPF_LINK_GET_FD_BY_ID`) from outside the
    /// agent's cgroup. The event's `ino` is the object id, `class` its `GUARD_KIND_*`.
    Bpf = 10,
    /// An fd of one of the agent's maps (by id or pin) asked for from outside its cgroup.
    BpfMap = 11,
    /// An fd of one of the agent's programs (by id) asked for from outside its cgroup.
    BpfProg = 12,
    /// An unlink, rename or rmdir in the agent's pin directory from outside its cgroup (`ino` is
    /// the directory's inode number).
    PinRemove = 13,
    /// A write open of a protected cgroup's file (`cgroup.procs`, …) by a caller that may not
    /// change cgroups; `ino` is the cgroup's id.
    FileOpen = 7,
    /// A `clone3(CLONE_INTO_CGROUP)` by a caller that may not change cgroups.
    TaskAlloc = 8,
    /// Not a denial: a new container cgroup could not get its verdict (the verdict map is full);
    /// `ino` is the cgroup's id.
    CgroupMkdir = 9,
}

impl Hook {
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            2 => Some(Self::FileReceive),
            3 => Some(Self::DInstantiate),
            4 => Some(Self::InodeRename),
            5 => Some(Self::UnixStreamConnect),
            6 => Some(Self::UnixMaySend),
            10 => Some(Self::Bpf),
            11 => Some(Self::BpfMap),
            12 => Some(Self::BpfProg),
            13 => Some(Self::PinRemove),
            7 => Some(Self::FileOpen),
            8 => Some(Self::TaskAlloc),
            9 => Some(Self::CgroupMkdir),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::FileReceive => "file_receive",
            Self::DInstantiate => "d_instantiate",
            Self::InodeRename => "inode_rename",
            Self::UnixStreamConnect => "unix_stream_connect",
            Self::UnixMaySend => "unix_may_send",
            Self::Bpf => "bpf",
            Self::BpfMap => "bpf_map",
            Self::BpfProg => "bpf_prog",
            Self::PinRemove => "pin_remove",
            Self::FileOpen => "file_open",
            Self::TaskAlloc => "task_alloc",
            Self::CgroupMkdir => "cgroup_mkdir",
        }
    }
}

/// One denial, as the programs report it on [`MAP_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyEvent {
    /// `bpf_ktime_get_boot_ns()` at the denial.
    pub boot_ns: u64,
    /// cgroup v2 id of the denied task.
    pub cgroup_id: u64,
    /// Device and inode number of the protected socket (from its [`Protected`] tag).
    pub dev: u64,
    pub ino: u64,
    /// Thread-group id (the pid user space knows) and thread id.
    pub tgid: u32,
    pub pid: u32,
    /// A [`Hook`] as u32.
    pub hook: u32,
    /// The protected socket's class.
    pub class: u32,
    /// Reserved for an access mask (`MAY_*`); no hook in use has one, so 0.
    pub mask: u32,
    pub reserved: u32,
    /// The task's command name, NUL-padded.
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<Protected>() == 24);
const _: () = assert!(core::mem::size_of::<CgroupVerdict>() == 8);
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);
const _: () = assert!(core::mem::size_of::<DenyEvent>() == 72);
const _: () = assert!(core::mem::offset_of!(DenyEvent, comm) == 56);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 200);
const _: () = assert!(core::mem::size_of::<ProtectedName>() == 8 + PROTECTED_NAME_BYTES);
const _: () =
    assert!(PROTECTED_NAME_BYTES.is_multiple_of(8) && PROTECTED_NAME_BYTES > PROTECTED_NAME_MAX);
// The programs read names as u64 words: each name must start 8-byte aligned in the value.
const _: () = assert!(core::mem::offset_of!(ProtectedDir, names).is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<ProtectedName>().is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(ProtectedName, name) == 8);
const _: () = assert!(
    core::mem::size_of::<ProtectedDir>()
        == 8 + MAX_NAMES_PER_DIR * core::mem::size_of::<ProtectedName>()
);
const _: () = assert!(
    core::mem::size_of::<ProtectedDirRecord>()
        == core::mem::size_of::<ProtectedDir>() + DIR_PATH_BYTES
);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] structs of integers with no padding (asserted above).
    unsafe impl aya::Pod for super::Protected {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CgroupVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InodeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above (integers and byte arrays, sizes asserted above).
    unsafe impl aya::Pod for super::ProtectedDir {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProtectedDirRecord {}
}

#[cfg(test)]
mod tests {
    use super::{
        MAX_NAMES_PER_DIR, ProtectedDir, ProtectedName, container_id_of_cgroup_name,
        is_container_cgroup_name, is_container_scope,
    };

    #[test]
    fn protected_names() {
        assert!(ProtectedName::new(b"", 1).is_none());
        assert!(ProtectedName::new(b"a/b", 1).is_none());
        assert!(ProtectedName::new(b"a\0b", 1).is_none());
        assert!(ProtectedName::new(&[b'x'; 109], 1).is_none());
        let long = ProtectedName::new(&[b'x'; 108], 1).unwrap();
        assert_eq!(long.bytes().len(), 108);
        assert_eq!(long.name[108..], [0; 4]);
        let n = ProtectedName::new(b"docker.sock", 2).unwrap();
        assert_eq!(n.bytes(), b"docker.sock");
        assert_eq!(n.len, 11);
    }

    #[test]
    fn directory_slots() {
        let mut dir = ProtectedDir::new(7);
        assert!(dir.is_empty());
        assert!(dir.insert(ProtectedName::new(b"a", 1).unwrap()));
        assert!(dir.insert(ProtectedName::new(b"a", 2).unwrap()));
        assert_eq!(dir.used().count(), 1);
        assert_eq!(dir.used().next().unwrap().class, 2);
        for i in 1..MAX_NAMES_PER_DIR {
            assert!(dir.insert(ProtectedName::new(format!("n{i}").as_bytes(), 1).unwrap()));
        }
        assert!(!dir.insert(ProtectedName::new(b"full", 1).unwrap()));
        assert!(dir.remove(b"a"));
        assert!(!dir.remove(b"a"));
        assert!(dir.insert(ProtectedName::new(b"full", 1).unwrap()));
        for i in 1..MAX_NAMES_PER_DIR {
            assert!(dir.remove(format!("n{i}").as_bytes()));
        }
        assert!(dir.remove(b"full"));
        assert!(dir.is_empty());
    }

    #[test]
    fn container_cgroup_names_under_both_drivers() {
        let id = "0123456789abcdef".repeat(4);
        let scope = format!("docker-{id}.scope");
        let cases: [(&str, Option<&str>); 9] = [
            (&id, Some(&id)),
            (&scope, Some(&id)),
            (&id[1..], None),
            (&format!("{id}0"), None),
            (&format!("{}g", &id[1..]), None),
            (&format!("docker-{id}.slice"), None),
            ("system.slice", None),
            ("", None),
            (&format!("podman-{id}.scope"), None),
        ];
        for (name, want) in cases {
            assert_eq!(
                container_id_of_cgroup_name(name.as_bytes()),
                want.map(str::as_bytes),
                "{name}"
            );
            assert_eq!(is_container_cgroup_name(name.as_bytes()), want.is_some());
        }
    }

    #[test]
    fn container_scope_names() {
        let id = "0123456789abcdef".repeat(4);
        assert!(is_container_scope(format!("docker-{id}.scope").as_bytes()));
        assert!(is_container_scope(
            format!("docker-{}.scope", id.to_uppercase()).as_bytes()
        ));
        assert!(!is_container_scope(b"docker.service"));
        assert!(!is_container_scope(format!("docker-{id}.slice").as_bytes()));
        assert!(!is_container_scope(format!("podman-{id}.scope").as_bytes()));
        assert!(!is_container_scope(
            format!("docker-{}.scope", &id[1..]).as_bytes()
        ));
        let bad = format!("docker-{}g.scope", &id[1..]);
        assert!(!is_container_scope(bad.as_bytes()));
    }
}
