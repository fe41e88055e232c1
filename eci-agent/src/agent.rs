//! `eci-agent run`: loads the kernel programs, protects the two sockets, then serves the sidecar.

use std::{
    fs,
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use eci_common::CLASS_ENGINE;

use crate::kernel::{
    cgroup::CgroupTree,
    enforce::{KernelConfig, enforce_as},
    sockets::{ProtectedPath, bind_protected, protect_activated},
};

/// dockerd's default group for its socket.
pub const DEFAULT_SOCKET_GROUP: &str = "docker";

/// Settings that cannot be used: `run` stops before binding or loading anything, and the command
/// line exits 64 (a restart would not help).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct BadSettings {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Docker Desktop's admin-settings.json.
    #[arg(long)]
    pub settings: PathBuf,
    #[command(flatten)]
    pub host: crate::host_args::HostArgs,
    /// A registry reached over plain HTTP (HOST:PORT); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Time between two registry refreshes of the allowed digests (e.g. 5m, 30s).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub registry_refresh: Seconds,
    /// One JSON line per refused request to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Run the sidecar without kernel enforcement when BPF LSM is not active (loudly).
    #[arg(long)]
    pub allow_no_lsm: bool,
    /// Group that may use the public socket (mode 0660), as dockerd's own `--group`.
    #[arg(long, short = 'G', default_value = DEFAULT_SOCKET_GROUP)]
    pub group: String,
    /// Serve Prometheus metrics, /healthz and /readyz over HTTP on ADDR (e.g. 127.0.0.1:9431).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Decide, log and audit everything but refuse nothing (see the README for the kernel side).
    #[arg(long)]
    pub dry_run: bool,
}

/// A duration given as `90`, `90s`, `5m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl From<Seconds> for std::time::Duration {
    fn from(s: Seconds) -> Self {
        Self::from_secs(s.0)
    }
}

fn parse_duration(s: &str) -> Result<Seconds, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional s, m or h"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m or h)")),
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(format!("{s:?}: must be between 1s and many years")),
        Some(secs) => Ok(Seconds(secs)),
    }
}

/// `eci-agent run`: settings first (a bad file stops here, before anything is bound or loaded),
/// then the kernel, then the sidecar until SIGINT/SIGTERM; SIGHUP reloads the settings.
pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = crate::settings::load(&args.settings).map_err(|err| BadSettings {
        path: args.settings.clone(),
        message: err.to_string(),
    })?;
    for warning in &settings.warnings {
        tracing::warn!(settings = %args.settings.display(), "{warning}");
    }
    // The socket systemd bound (eci-agent.socket), taken before anything else opens a descriptor.
    let activated = crate::systemd::take_listener(&args.host.listen).with_context(|| {
        format!(
            "the socket passed for --listen {}",
            args.host.listen.display()
        )
    })?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(args, settings, activated))
}

async fn serve(
    args: Args,
    settings: crate::settings::Settings,
    activated: Option<UnixListener>,
) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex, atomic::Ordering::Relaxed};

    use tokio::signal::unix::{SignalKind, signal};

    use crate::{
        engine::EngineApi,
        gate::{KernelSync, SocketMountGate, host::protected_socket},
        listen_plan::Tag,
        policy::mount::SocketGate,
        registry::{DigestCache, RegistryClient, RegistryConfig},
        sidecar::{SidecarConfig, audit::AuditLog, peer::TrustedCgroups},
    };

    if !settings.eci_enabled {
        tracing::warn!(settings = %args.settings.display(), "enhancedContainerIsolation.value is false: socket mounts are not restricted and the command list does not apply");
    }
    let metrics = Arc::new(crate::metrics::Metrics::default());
    metrics.settings_loaded(crate::metrics::Outcome::Success, false);
    if let Some(addr) = args.metrics {
        let bound = crate::metrics::serve::spawn(addr, metrics.clone()).await?;
        tracing::info!(%bound, "metrics, /healthz and /readyz served");
    }
    if args.dry_run {
        tracing::warn!(
            "DRY RUN: every decision is logged and audited, nothing is refused; the kernel does \
             not guard the public socket (the engine socket stays the agent's alone)"
        );
    }
    // A trusted cgroup that does not exist yet (no `user.slice` on a host without logind, or
    // before it starts) gets no verdict, so it stays denied; the agent still starts. Failing
    // here left the host without Docker at every boot (found by the systemd-host tier).
    // (No cgroup2 mount there: the kernel's load says so itself.)
    let trust = match CgroupTree::open(&args.host.cgroup_root) {
        Ok(tree) => {
            let (present, missing) = tree.split_present(&args.host.trust_cgroups);
            for rel in missing {
                tracing::warn!(cgroup = %rel.display(), "--trust-cgroup: not created yet; denied (no verdict) until an agent starts after it exists");
            }
            present
        }
        Err(_) => args.host.trust_cgroups.clone(),
    };
    let kernel = KernelConfig {
        pin_dir: args.host.pin.pin_dir.clone(),
        cgroup_root: args.host.cgroup_root.clone(),
        engine: args.host.engine.clone(),
        trust,
        container_parents: vec![PathBuf::from(
            crate::gate::placement::DEFAULT_CGROUPFS_PARENT,
        )],
    };
    // Under systemd the agent's cgroup is a child of its unit's (Delegate=yes), elsewhere its own.
    let started_in = crate::kernel::cgroup::cgroup_of_pid(std::process::id())
        .context("reading this process's cgroup (/proc/self/cgroup)")?;
    let own_cgroup = crate::systemd::agent_cgroup(
        &started_in,
        crate::systemd::is_service(),
        crate::kernel::enforce::AGENT_CGROUP,
    );
    let mut enforcer = match enforce_as(&kernel, &own_cgroup) {
        Ok(enforcer) => Some(enforcer),
        Err(err) if args.allow_no_lsm => {
            tracing::error!(
                "NO KERNEL ENFORCEMENT: {err:#}. --allow-no-lsm: serving the sidecar alone; \
                 containers that reach the engine socket directly are not stopped"
            );
            None
        }
        Err(err) => {
            return Err(anyhow::Error::new(err).context(
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
    let is_activated = activated.is_some();
    let plan = crate::listen_plan::plan(is_activated, enforcer.is_some(), args.dry_run);
    let listen = &args.host.listen;
    if plan.clear_path {
        // Never defeated by what is at the path: an empty directory the engine made for a
        // container's bind mount goes (loudly), anything else stops us with its name.
        crate::socket_path::clear(listen)?;
    }
    if let Some(enforcer) = enforcer.as_mut() {
        match plan.tag {
            Tag::Protect => {}
            Tag::Untag => enforcer.maps.unprotect(listen)?,
            // A name an earlier run protected would have the kernel tag this socket.
            Tag::UntagName => enforcer.maps.unprotect_name(listen)?,
        }
    }
    let listener = match (activated, enforcer.as_mut()) {
        (Some(listener), Some(enforcer)) if plan.tag == Tag::Protect => {
            protect_activated(listen, &mut enforcer.maps)?;
            listener
        }
        (Some(listener), _) => listener,
        (None, Some(enforcer)) if plan.tag == Tag::Protect => {
            bind_protected(listen, &mut enforcer.maps)?
        }
        (None, _) => {
            UnixListener::bind(listen).with_context(|| format!("binding {}", listen.display()))?
        }
    };
    // systemd set the owner and mode of its socket (SocketGroup=, SocketMode=).
    if !is_activated {
        crate::socket_access::apply(
            &args.host.listen,
            &args.group,
            args.group != DEFAULT_SOCKET_GROUP,
        )?;
    }
    // The kernel state is pinned: the process ending, however it ends, leaves it in place. What
    // the agent keeps is the maps, shared by the engine-socket watch and the container verdicts.
    let mut events = None;
    let maps = match enforcer {
        Some(mut enforcer) => {
            // Read once the gate (and its container table, which names the containers) exists;
            // the ring buffer keeps what comes before.
            events = enforcer.take_events();
            let mut engine =
                ProtectedPath::new(args.host.engine.clone(), CLASS_ENGINE, &mut enforcer.maps)?;
            let maps = Arc::new(Mutex::new(enforcer.maps));
            // The engine re-creates its socket when it restarts; the kernel tags the new inode at
            // creation (the directory's tag). This watch is the second line (see ProtectedPath).
            let engine_path = args.host.engine.clone();
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
    digests.clone().spawn_refresher(
        Arc::new(registry),
        args.registry_refresh.into(),
        metrics.clone(),
    );

    let policy_rx = digests.subscribe();
    crate::reload::spawn(args.settings.clone(), digests.clone(), metrics.clone())
        .context("SIGHUP handler")?;

    let sockets = SocketGate::new(vec![
        protected_socket(&args.host.listen)?,
        protected_socket(&args.host.engine)?,
    ]);
    let tree = CgroupTree::open(&args.host.cgroup_root)?;
    let kernel_sync = match &maps {
        Some(maps) => Some(
            KernelSync::new(maps.clone(), tree.clone()).never_on(
                args.host
                    .trust_cgroups
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
            EngineApi::new(&args.host.engine),
            sockets,
            policy_rx.clone(),
            kernel_sync,
        )
        .with_cgroups(crate::gate::Cgroups {
            tree,
            agent: agent_cgroup,
            trusted: args.host.trust_cgroups.clone(),
        }),
    );
    let table = gate.table.clone();
    metrics.count_allowed_containers(move || table.allowed_count());
    if let Some(events) = events {
        let mut sink = crate::denials::DenialSink::new(
            audit.clone(),
            metrics.clone(),
            &args.host.cgroup_root,
            vec![args.host.listen.clone(), args.host.engine.clone()],
            gate.clone(),
        );
        let failures = metrics.clone();
        tokio::spawn(crate::kernel::events::log_denials(
            events,
            move |event| sink.record(event),
            move |event| failures.kernel_failure(event.hook),
        ));
    }
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
        &args.host.engine,
        TrustedCgroups::new(args.host.trust_cgroups.clone()),
    );
    config.mounts = Some(gate);
    config.audit = audit;
    config.dry_run = args.dry_run;
    config.metrics = metrics.clone();
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
    if let Err(err) = crate::state::write(&args.host.pin.pin_dir, &record) {
        tracing::warn!(pin_dir = %args.host.pin.pin_dir.display(), %err, "cannot record the agent's mode for `eci-agent status`");
    }
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    crate::logging::docker_host(&args.host.listen);
    tracing::info!(listen = %args.host.listen.display(), engine = %args.host.engine.display(), mode = mode.as_str(), socket_activated = is_activated, "serving");
    metrics.health().serving.store(true, Relaxed);
    // Type=notify: `systemctl start` returns now, with the programs pinned, the running
    // containers judged and the socket served, so `eci-agent status --check` passes right away.
    crate::systemd::notify(&format!(
        "READY=1\nSTATUS=serving {} ({})",
        args.host.listen.display(),
        mode.as_str()
    ));
    let served = crate::sidecar::serve_listener(listener, config, policy_rx, shutdown).await;
    crate::systemd::notify("STOPPING=1");
    // systemd's socket stays (it queues connections for the next agent); our own goes.
    if !is_activated {
        let _ = fs::remove_file(&args.host.listen);
    }
    crate::state::clear(&args.host.pin.pin_dir);
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Seconds(90)));
        assert_eq!(parse_duration("5m"), Ok(Seconds(300)));
        assert_eq!(parse_duration("1h"), Ok(Seconds(3600)));
        for bad in ["", "0", "5d", "m", "-1s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
