//! `eci-agent run`: loads the kernel programs, protects the two sockets, then serves the sidecar.

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use eci_common::{CLASS_ALL, CLASS_ENGINE, CLASS_PUBLIC, CgroupVerdict, VERDICT_EXACT};

use crate::{
    cli::RunArgs,
    kernel::{Enforcer, KernelMaps, PinLayout, cgroup::CgroupTree},
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

/// Loads and pins the programs, moves this process into its own cgroup and writes the verdicts.
///
/// Admission race: a container cgroup is created by the runtime before the agent can know its id.
/// Its verdict is inherited from the nearest ancestor until the agent writes its own. The container
/// parents therefore get an explicit deny, even when a trusted cgroup contains them, and are
/// registered so that the kernel's `cgroup_mkdir` program gives each new child (and each new
/// `docker-<id>.scope` of the systemd driver, wherever it is made) an explicit deny of its own at
/// creation; the existing ones get it from a scan. A new container starts denied (fail closed) and
/// gains access only when the agent allows its cgroup (see `kernel/admission.rs`).
pub fn enforce(cfg: &KernelConfig) -> anyhow::Result<Enforcer> {
    let tree = CgroupTree::open(&cfg.cgroup_root)?;
    let mut enforcer = Enforcer::load(&PinLayout::new(&cfg.pin_dir))?;
    let own = tree.create(Path::new(AGENT_CGROUP))?;
    enforcer.maps.set_verdict(
        own,
        CgroupVerdict {
            classes: CLASS_ALL,
            flags: VERDICT_EXACT,
        },
    )?;
    tree.move_pid(Path::new(AGENT_CGROUP), std::process::id())?;
    let root = tree.id(Path::new("/"))?;
    for rel in &cfg.trust {
        let id = tree
            .id(rel)
            .with_context(|| format!("--trust-cgroup {}", rel.display()))?;
        // The root is trusted only exactly: every cgroup on the host descends from it.
        let flags = if id == root { VERDICT_EXACT } else { 0 };
        enforcer.maps.set_verdict(
            id,
            CgroupVerdict {
                classes: CLASS_PUBLIC,
                flags,
            },
        )?;
    }
    for rel in &cfg.container_parents {
        // Created if the engine has not yet, so the deny is there before its first container.
        let id = tree
            .create(rel)
            .with_context(|| format!("container cgroup parent {}", rel.display()))?;
        enforcer.maps.set_verdict(id, CgroupVerdict::DENY)?;
        enforcer.maps.admit_children_denied(id)?;
    }
    crate::kernel::admission::deny_unadmitted(&tree, &mut enforcer.maps)?;
    // The name first, so that an engine restarting right now is covered either way.
    enforcer.maps.protect_name(&cfg.engine, CLASS_ENGINE)?;
    enforcer.maps.protect(&cfg.engine, CLASS_ENGINE)?;
    Ok(enforcer)
}

/// Binds the public socket so that it is protected before anyone can connect: it is bound in a
/// private (0700) directory beside `path`, tagged, and only then renamed into place (a rename keeps
/// the inode, and with it the tag). The name `path` is protected too, so that a socket someone
/// else binds there later (the agent gone) is tagged by the kernel at creation.
pub fn bind_protected(path: &Path, maps: &mut KernelMaps) -> anyhow::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(".eci-agent-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))?;
    let result = (|| {
        let tmp = staging.join("sock");
        let listener =
            UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
        maps.protect(&tmp, CLASS_PUBLIC)?;
        maps.protect_name(path, CLASS_PUBLIC)?;
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("removing stale {}", path.display()));
            }
        }
        fs::rename(&tmp, path)
            .with_context(|| format!("moving the socket to {}", path.display()))?;
        Ok(listener)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// A protected socket path. The tag belongs to the inode, and a socket re-created at the path
/// (the engine restarted) is a new inode. The kernel tags it itself, at creation, from the tag on
/// its directory (`KernelMaps::protect_name`), with or without a running agent; this watch is the
/// second line: it tags the inode at the path when that did not happen (the directory itself was
/// replaced, so its new inode carries no tag; or the kernel could not store the tag), and tags a
/// replaced directory again.
#[derive(Debug)]
pub struct ProtectedPath {
    path: PathBuf,
    class: u32,
    key: Option<eci_common::InodeKey>,
    dir: Option<eci_common::InodeKey>,
}

/// What [`ProtectedPath::refresh`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// Nothing new (or nothing at the path now).
    Unchanged,
    /// A new inode, already tagged by the kernel when it was created.
    TaggedByKernel,
    /// A new inode without a tag, tagged now (it was reachable until now).
    TaggedNow,
}

impl ProtectedPath {
    /// Protects the name `path` (its directory's tag) and the inode there now, and remembers both.
    pub fn new(path: PathBuf, class: u32, maps: &mut KernelMaps) -> anyhow::Result<Self> {
        // The name first: a socket re-created between the two steps is then tagged by the kernel.
        let dir = maps.protect_name(&path, class)?;
        let key = maps.protect(&path, class)?;
        Ok(Self {
            path,
            class,
            key: Some(key),
            dir: Some(dir),
        })
    }

    /// Tags the directory again when it was replaced, and the inode at the path when it is another
    /// one than the tagged one. A missing path is not an error: the engine may be restarting.
    pub fn refresh(&mut self, maps: &mut KernelMaps) -> anyhow::Result<Refreshed> {
        use std::os::unix::fs::MetadataExt as _;
        if let Ok(dir) = crate::kernel::maps::name_dir(&self.path)
            && self.dir != Some(dir)
        {
            if let Some(old) = self.dir.take() {
                maps.forget_dir(&old);
            }
            self.dir = Some(maps.protect_name(&self.path, self.class)?);
            tracing::warn!(path = %self.path.display(), "the socket's directory was replaced; protected the name in the new one");
        }
        let Ok(meta) = fs::metadata(&self.path) else {
            return Ok(Refreshed::Unchanged);
        };
        let now = eci_common::InodeKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if self.key == Some(now) {
            return Ok(Refreshed::Unchanged);
        }
        let by_kernel = maps
            .tag_of(&self.path)?
            .is_some_and(|tag| tag.class == self.class);
        if let Some(old) = self.key.take() {
            maps.forget(&old);
        }
        // Also when the kernel tagged it: this records it in the index `status` reads.
        self.key = Some(maps.protect(&self.path, self.class)?);
        if by_kernel {
            tracing::info!(path = %self.path.display(), "socket re-created; the kernel protected the new inode at creation");
            Ok(Refreshed::TaggedByKernel)
        } else {
            tracing::warn!(path = %self.path.display(), "socket re-created without a tag (its directory was replaced?); protected the new inode now");
            Ok(Refreshed::TaggedNow)
        }
    }
}

/// `eci-agent run`: settings first (a bad file stops here, before anything is bound or loaded),
/// then the kernel, then the sidecar until SIGINT/SIGTERM; SIGHUP reloads the settings.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = crate::settings::load(&args.settings)
        .map_err(|err| anyhow::anyhow!("{}: {err}", args.settings.display()))?;
    for warning in &settings.warnings {
        tracing::warn!(settings = %args.settings.display(), "{warning}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(args, settings))
}

async fn serve(args: RunArgs, settings: crate::settings::Settings) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex, atomic::Ordering::Relaxed};

    use tokio::signal::unix::{SignalKind, signal};

    use crate::{
        engine::EngineApi,
        gate::{KernelSync, SocketMountGate, host::protected_socket},
        policy::mount::SocketGate,
        registry::{DigestCache, RegistryClient, RegistryConfig},
        sidecar::{SidecarConfig, audit::AuditLog, peer::TrustedCgroups},
    };

    if !settings.eci_enabled {
        tracing::warn!(settings = %args.settings.display(), "enhancedContainerIsolation.value is false: socket mounts are not restricted and the command list does not apply");
    }
    let metrics = crate::metrics::global();
    metrics.settings_loaded(crate::metrics::Outcome::Success, false);
    if let Some(addr) = args.metrics {
        let bound = crate::metrics::serve::spawn(addr).await?;
        tracing::info!(%bound, "metrics, /healthz and /readyz served");
    }
    if args.dry_run {
        tracing::warn!(
            "DRY RUN: every decision is logged and audited, nothing is refused; the kernel does \
             not guard the public socket (the engine socket stays the agent's alone)"
        );
    }
    let kernel = KernelConfig {
        pin_dir: args.pin.pin_dir.clone(),
        cgroup_root: args.cgroup_root.clone(),
        engine: args.engine.clone(),
        trust: args.trust_cgroups.clone(),
        container_parents: vec![PathBuf::from(
            crate::gate::placement::DEFAULT_CGROUPFS_PARENT,
        )],
    };
    let mut enforcer = match enforce(&kernel) {
        Ok(enforcer) => Some(enforcer),
        Err(err) if args.allow_no_lsm => {
            tracing::error!(
                "NO KERNEL ENFORCEMENT: {err:#}. --allow-no-lsm: serving the sidecar alone; \
                 containers that reach the engine socket directly are not stopped"
            );
            None
        }
        Err(err) => {
            return Err(err.context(
                "kernel enforcement is unavailable (--allow-no-lsm runs the sidecar alone)",
            ));
        }
    };
    let kernel_on = enforcer.is_some();
    metrics.health().dry_run.store(args.dry_run, Relaxed);
    metrics
        .health()
        .kernel_enforcing
        .store(kernel_on && !args.dry_run, Relaxed);
    metrics
        .health()
        .kernel_waived
        .store(!kernel_on || args.dry_run, Relaxed);
    let audit = match &args.audit_log {
        Some(target) => Some(
            AuditLog::open(target, false)
                .with_context(|| format!("opening the audit log {}", target.display()))?,
        ),
        None => None,
    };
    let listener = match enforcer.as_mut() {
        // A dry run leaves the public socket untagged: the kernel refuses none of its clients.
        Some(enforcer) if !args.dry_run => bind_protected(&args.listen, &mut enforcer.maps)?,
        enforcer => {
            // A name an earlier run protected would have the kernel tag this socket at bind.
            if let Some(enforcer) = enforcer {
                enforcer.maps.unprotect_name(&args.listen)?;
            }
            crate::sidecar::remove_stale_socket(&args.listen)?;
            UnixListener::bind(&args.listen)
                .with_context(|| format!("binding {}", args.listen.display()))?
        }
    };
    crate::socket_access::apply(
        &args.listen,
        &args.group,
        args.group != crate::cli::DEFAULT_SOCKET_GROUP,
    )?;
    // The kernel state is pinned: the process ending, however it ends, leaves it in place. What
    // the agent keeps is the maps, shared by the engine-socket watch and the container verdicts.
    let maps = match enforcer {
        Some(mut enforcer) => {
            if let Some(events) = enforcer.take_events() {
                let mut sink = crate::denials::DenialSink::new(
                    audit.clone(),
                    &args.cgroup_root,
                    vec![args.listen.clone(), args.engine.clone()],
                );
                tokio::spawn(crate::kernel::events::log_denials(events, move |event| {
                    sink.record(event);
                }));
            }
            let mut engine =
                ProtectedPath::new(args.engine.clone(), CLASS_ENGINE, &mut enforcer.maps)?;
            let maps = Arc::new(Mutex::new(enforcer.maps));
            // The engine re-creates its socket when it restarts; the kernel tags the new inode at
            // creation (the directory's tag). This watch is the second line (see ProtectedPath).
            let engine_path = args.engine.clone();
            let watched = maps.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Ok(mut maps) = watched.lock() else { break };
                    if let Err(err) = engine.refresh(&mut maps) {
                        tracing::error!("re-protecting {}: {err:#}", engine_path.display());
                    }
                }
            });
            Some(maps)
        }
        None => None,
    };

    // Allowed digests: resolved in the background, refreshed, replaced on reload.
    let digests = Arc::new(DigestCache::new(Arc::new(settings)));
    let registry = RegistryClient::new(RegistryConfig {
        insecure: args.insecure_registries.iter().cloned().collect(),
        ..RegistryConfig::default()
    })
    .context("building the registry client")?;
    digests
        .clone()
        .spawn_refresher(Arc::new(registry), args.registry_refresh.into());

    let policy_rx = digests.subscribe();
    crate::reload::spawn(args.settings.clone(), digests.clone()).context("SIGHUP handler")?;

    let sockets = SocketGate::new(vec![
        protected_socket(&args.listen)?,
        protected_socket(&args.engine)?,
    ]);
    let tree = CgroupTree::open(&args.cgroup_root)?;
    let kernel_sync = match &maps {
        Some(maps) => Some(
            KernelSync::new(maps.clone(), tree.clone()).never_on(
                args.trust_cgroups
                    .iter()
                    .filter_map(|rel| tree.id(rel).ok()),
            ),
        ),
        None => None,
    };
    // The agent's own cgroup, wherever the kernel set-up left it: no container goes inside it.
    let agent_cgroup = crate::kernel::cgroup::cgroup_of_pid(std::process::id())
        .ok()
        .map(|p| p.strip_prefix("/").map(Path::to_path_buf).unwrap_or(p));
    let gate = Arc::new(
        SocketMountGate::new(
            EngineApi::new(&args.engine),
            sockets,
            policy_rx.clone(),
            kernel_sync,
        )
        .with_cgroups(crate::gate::Cgroups {
            tree,
            agent: agent_cgroup,
            trusted: args.trust_cgroups.clone(),
        }),
    );
    let table = gate.table.clone();
    metrics.count_allowed_containers(move || table.allowed_count());
    let (adopted_tx, adopted) = tokio::sync::oneshot::channel();
    tokio::spawn(crate::gate::watch::run(
        gate.clone(),
        policy_rx.clone(),
        adopted_tx,
    ));
    // Adoption: the containers running now are judged (table, kernel verdicts) before the
    // sidecar serves; an engine that is not up yet is caught up with once it is.
    if tokio::time::timeout(std::time::Duration::from_secs(20), adopted)
        .await
        .is_err()
    {
        tracing::warn!("serving before every running container could be judged");
    }

    let mut config = SidecarConfig::new(
        &args.engine,
        TrustedCgroups::new(args.trust_cgroups.clone()),
    );
    config.mounts = Some(gate);
    config.audit = audit;
    config.dry_run = args.dry_run;
    let mode = if args.dry_run {
        crate::state::Mode::DryRun
    } else {
        crate::state::Mode::Enforce
    };
    let record = crate::state::AgentState {
        mode,
        pid: std::process::id(),
        kernel: kernel_on,
    };
    // Only `status` reads it: without bpffs (--allow-no-lsm on a host without it) say so and
    // serve anyway.
    if let Err(err) = crate::state::write(&args.pin.pin_dir, &record) {
        tracing::warn!(pin_dir = %args.pin.pin_dir.display(), %err, "cannot record the agent's mode for `eci-agent status`");
    }
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    println!("export DOCKER_HOST=unix://{}", args.listen.display());
    tracing::info!(listen = %args.listen.display(), engine = %args.engine.display(), mode = mode.as_str(), "serving");
    metrics.health().serving.store(true, Relaxed);
    let served = crate::sidecar::serve_listener(listener, config, policy_rx, shutdown).await;
    let _ = fs::remove_file(&args.listen);
    crate::state::clear(&args.pin.pin_dir);
    served
}
