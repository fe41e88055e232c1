//! The socket-mount gate at the edge: the pure rules of [`crate::policy::mount`] and
//! [`crate::policy::image`] applied to what the engine and the host say, at `create`, at
//! `start`, and to every running container whenever the policy or the allowed digests change.
//!
//! The gate owns each event end to end — `create`, `start`/`restart`, an engine event, a
//! reload: judge → [`table`] → [`kernel`] → outcome — so the sidecar only asks and forwards.
//!
//! - [`host`]: resolving mount sources on the host.
//! - [`placement`]: where a container's cgroup is, and which parents are refused (pure).
//! - [`table`]: the one container table, the identity source of the agent.
//! - [`kernel`]: verdicts in the kernel, only on recorded cgroups.
//! - [`outcome`]: what the gate answers, a pass or a refusal, and their reason codes.
//! - [`watch`]: judging running containers again on reload, refresh and engine events.
#![forbid(unsafe_code)]

pub mod host;
pub mod kernel;
mod order;
pub mod outcome;
pub mod placement;
pub mod table;
pub mod watch;

#[cfg(test)]
mod gate_tests;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::sync::{OnceCell, watch as tokio_watch};

use crate::{
    engine::{
        EngineApi,
        api::segment,
        decode::{self, EngineInfo},
    },
    ids::{CallerKind, ContainerId},
    kernel::cgroup::CgroupTree,
    policy::{
        image::{AllowedBy, AllowedDigests, ImageFacts},
        messages,
        mount::{self, MountVerdict, Reach, SocketGate},
        profile::{
            Breach, ContainerUse, CreateRequest, HostLayout, Joined, Namespace, Origin,
            ParentPlacement,
        },
        wire::{self, HostConfig, InspectedContainer, MountSpec},
    },
    settings::PolicySnapshot,
};

pub use kernel::KernelSync;
pub use outcome::{
    GatePass, GateRefusal, Judgement, allowed_reason, display_name, outcome_reason, pass_reason,
    rule_of,
};
pub use table::{ContainerRecord, ContainerTable, Standing};

/// Where cgroups are, and which ones lend standing: the agent's own and the trusted ones.
#[derive(Clone, Debug)]
pub struct Cgroups {
    pub tree: CgroupTree,
    /// The agent's own cgroup, relative to the cgroup2 mount.
    pub agent: Option<PathBuf>,
    /// `--trust-cgroup` paths.
    pub trusted: Vec<PathBuf>,
}

pub struct SocketMountGate {
    engine: EngineApi,
    sockets: SocketGate,
    host: Box<dyn mount::HostPaths + Send + Sync>,
    policy: tokio_watch::Receiver<Arc<PolicySnapshot>>,
    info: OnceCell<EngineInfo>,
    /// What the profile protects on this host, its paths resolved, for the settings it was
    /// made from (a reload makes it again).
    layout: std::sync::Mutex<Option<(Arc<crate::settings::Settings>, Arc<HostLayout>)>>,
    cgroups: Option<Cgroups>,
    /// The one container table (see [`table`]).
    pub table: Arc<ContainerTable>,
    pub kernel: Option<KernelSync>,
    /// Which of overlapping judgements of a container is written (see [`order`]).
    order: order::JudgementOrder,
}

impl SocketMountGate {
    pub fn new(
        engine: EngineApi,
        sockets: SocketGate,
        policy: tokio_watch::Receiver<Arc<PolicySnapshot>>,
        kernel: Option<KernelSync>,
    ) -> Self {
        Self {
            engine,
            sockets,
            host: Box::new(host::RealHost),
            policy,
            info: OnceCell::new(),
            layout: std::sync::Mutex::new(None),
            cgroups: None,
            table: ContainerTable::new(),
            kernel,
            order: order::JudgementOrder::default(),
        }
    }

    /// Where containers' cgroups are found. Without it no container gets a recorded cgroup, so
    /// no caller is ever taken for a container (they are all refused or trusted by the sidecar).
    #[must_use]
    pub fn with_cgroups(mut self, cgroups: Cgroups) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    pub fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref()
    }

    /// The policy in force: settings and digests from one snapshot, so one decision never
    /// mixes a reload's settings with the digests of the one before.
    fn snapshot(&self) -> Arc<PolicySnapshot> {
        self.policy.borrow().clone()
    }

    /// False when `enhancedContainerIsolation.value` is false: nothing is restricted.
    pub fn eci_enabled(&self) -> bool {
        self.policy.borrow().settings.eci_enabled
    }

    /// `GET target` from the engine (`None` for its 404): an engine that cannot be asked leaves
    /// the request unverified, so it is refused.
    async fn ask(&self, target: &str) -> Result<Option<bytes::Bytes>, GateRefusal> {
        self.engine
            .get(target)
            .await
            .map_err(GateRefusal::unverifiable)
    }

    async fn info(&self) -> Result<&EngineInfo, GateRefusal> {
        self.info
            .get_or_try_init(|| async {
                let body = self
                    .ask("/info")
                    .await?
                    .ok_or_else(|| GateRefusal::unverifiable("the engine has no /info"))?;
                decode::info(&body).map_err(GateRefusal::unverifiable)
            })
            .await
    }

    /// `POST /containers/create`: judges the body before the engine sees it.
    pub async fn check_create(
        &self,
        caller: &CallerKind,
        body: &[u8],
    ) -> Result<GatePass, GateRefusal> {
        let policy = self.snapshot();
        let create = wire::decode_create_body(body)
            .map_err(|e| GateRefusal::unverifiable(format!("the container configuration: {e}")))?;
        // The cgroup is the container's identity, ECI on or off: never inside the agent, a
        // trusted cgroup or another container.
        let parent = create
            .host_config
            .as_ref()
            .map_or("", |hc| hc.cgroup_parent.as_str());
        self.check_parent(parent).await?;
        if !policy.settings.eci_enabled {
            return Ok(GatePass::EciOff);
        }
        let mut mounts = Vec::new();
        for m in create.mounts() {
            self.expand(m, &mut mounts).await?;
        }
        // A container that holds the socket may not create anything more powerful than the
        // profile allows; the host's own requests are its business. The profile's engine
        // questions (the containers whose namespaces it joins) and the image's, when it mounts
        // the socket, are asked side by side: one engine round trip instead of two.
        let verdict = self.sockets.check(&mounts, self.host.as_ref());
        let profile = async {
            match caller {
                CallerKind::Container(_) => {
                    self.profile_breaches(
                        &policy,
                        create.host_config.as_ref(),
                        &mounts,
                        parent,
                        Origin::Request,
                    )
                    .await
                }
                _ => Ok(Vec::new()),
            }
        };
        let facts = async {
            match &verdict {
                MountVerdict::Reaches(_) => self.image_facts(&create.image).await,
                MountVerdict::Clear => Ok(None),
            }
        };
        let (breaches, facts) = tokio::join!(profile, facts);
        if let Some(breach) = breaches?.into_iter().next() {
            return Err(GateRefusal::profile(&breach, &policy.settings.location()));
        }
        let reach = match verdict {
            MountVerdict::Clear => return Ok(GatePass::Clear),
            MountVerdict::Reaches(reach) => reach,
        };
        let Some(facts) = facts? else {
            // No such image: the engine refuses the create itself (and the CLI pulls and asks
            // again, which comes back here). `start` judges the image the container really got.
            return Ok(GatePass::Clear);
        };
        self.decide(&policy, &create.image, &facts, reach).await
    }

    /// Everything the container-caller profile refuses in a create body, for `explain --create`
    /// (the body's mounts expanded as at `create`).
    pub async fn explain_profile(&self, body: &[u8]) -> Result<Vec<Breach>, GateRefusal> {
        let policy = self.snapshot();
        let create = wire::decode_create_body(body)
            .map_err(|e| GateRefusal::unverifiable(format!("the container configuration: {e}")))?;
        let mut mounts = Vec::new();
        for m in create.mounts() {
            self.expand(m, &mut mounts).await?;
        }
        let hc = create.host_config.as_ref();
        let parent = hc.map_or("", |hc| hc.cgroup_parent.as_str());
        self.profile_breaches(&policy, hc, &mounts, parent, Origin::Request)
            .await
    }

    /// The profile's verdict on what a container caller asks for (a create body) or would get
    /// (an existing container's stored configuration): `mounts` expanded, the namespaces it
    /// joins resolved with the engine.
    async fn profile_breaches(
        &self,
        policy: &PolicySnapshot,
        host_config: Option<&HostConfig>,
        mounts: &[MountSpec],
        cgroup_parent: &str,
        origin: Origin,
    ) -> Result<Vec<Breach>, GateRefusal> {
        let info = self.info().await?;
        let layout = self.layout(policy, info);
        let joined = match host_config {
            Some(hc) => self.joined(hc).await?,
            None => Vec::new(),
        };
        let request = CreateRequest {
            host_config,
            mounts,
            parent: container_parent(&info.cgroup_driver, cgroup_parent),
            joined: &joined,
            origin,
        };
        Ok(policy
            .settings
            .policy
            .profile
            .breaches(&request, &layout, self.host.as_ref()))
    }

    /// The protected host paths for `policy`'s settings, resolved once per settings (the data
    /// root is the engine's, asked once too).
    fn layout(&self, policy: &PolicySnapshot, info: &EngineInfo) -> Arc<HostLayout> {
        if let Ok(cached) = self.layout.lock()
            && let Some((settings, layout)) = cached.as_ref()
            && Arc::ptr_eq(settings, &policy.settings)
        {
            return layout.clone();
        }
        let settings_dir = policy
            .settings
            .path
            .parent()
            .filter(|d| d != &Path::new("/") && !d.as_os_str().is_empty())
            .map(|d| d.display().to_string());
        let mut layout = HostLayout::new(
            &info.docker_root_dir,
            policy.settings.policy.profile.exec_root(),
            settings_dir.as_slice(),
            &policy.settings.policy.profile.protected_paths,
            self.sockets.public().cloned(),
        );
        layout.resolve(self.host.as_ref());
        let layout = Arc::new(layout);
        if let Ok(mut cached) = self.layout.lock() {
            *cached = Some((policy.settings.clone(), layout.clone()));
        }
        layout
    }

    /// The namespaces `hc` shares with other containers (`--pid=container:X`), each as that
    /// container has it: one inspect per container named, its own joins followed. A container
    /// the engine does not have is left out (the engine refuses the request itself).
    async fn joined(&self, hc: &HostConfig) -> Result<Vec<Joined>, GateRefusal> {
        /// Further than any chain the engine builds; deeper (or a loop) is not judged.
        const MAX_HOPS: usize = 8;
        let mut out = Vec::new();
        for ns in Namespace::ALL {
            let Some(first) = ns.joins(hc) else { continue };
            let mut name = first.to_owned();
            let mut hops = 0;
            let mode = loop {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(GateRefusal::unverifiable(format!(
                        "the {} namespace of container {first:?}: more than {MAX_HOPS} containers joined in a row",
                        ns.as_str()
                    )));
                }
                let Some(joined) = self.inspect(&name).await? else {
                    break None;
                };
                match ns.joins(&joined.host_config) {
                    Some(next) => name = next.to_owned(),
                    None => break Some(ns.mode(&joined.host_config).to_owned()),
                }
            };
            if let Some(mode) = mode {
                out.push(Joined {
                    ns,
                    container: first.to_owned(),
                    mode,
                });
            }
        }
        Ok(out)
    }

    /// The engine's view of a container (a name or an ID); `None` when it has no such container.
    async fn inspect(&self, name: &str) -> Result<Option<InspectedContainer>, GateRefusal> {
        let target = format!("/containers/{}/json", segment(name));
        let Some(body) = self.ask(&target).await? else {
            return Ok(None);
        };
        wire::decode_container_inspect(&body)
            .map(Some)
            .map_err(|e| GateRefusal::unverifiable(format!("the engine's container JSON: {e}")))
    }

    /// A container caller's use of an existing container (`start`, `exec`, `attach`): it gets
    /// that container's power, so the profile judges the container as the engine stored it,
    /// and an exec's own `--privileged`. ECI off: nothing is judged.
    async fn check_use(
        &self,
        what: ContainerUse,
        name: &str,
        container: &InspectedContainer,
        exec_privileged: bool,
    ) -> Result<(), GateRefusal> {
        let policy = self.snapshot();
        if !policy.settings.eci_enabled {
            return Ok(());
        }
        let breach = match policy.settings.policy.profile.exec_breach(exec_privileged) {
            Some(b) => Some(b),
            None => self
                .stored_breaches(&policy, container)
                .await?
                .into_iter()
                .next(),
        };
        match breach {
            Some(b) => Err(GateRefusal::profile_use(
                what,
                name,
                &b,
                &policy.settings.location(),
            )),
            None => Ok(()),
        }
    }

    /// Everything the profile refuses in an existing container, for `explain --container`:
    /// what a container caller may not start, exec in or attach to.
    pub async fn explain_stored(
        &self,
        container: &InspectedContainer,
    ) -> Result<Vec<Breach>, GateRefusal> {
        self.stored_breaches(&self.snapshot(), container).await
    }

    async fn stored_breaches(
        &self,
        policy: &PolicySnapshot,
        container: &InspectedContainer,
    ) -> Result<Vec<Breach>, GateRefusal> {
        let mut mounts = Vec::new();
        for m in &container.mounts {
            self.expand(m.clone(), &mut mounts).await?;
        }
        let origin = Origin::Stored {
            cgroupns_host_default: self.info().await?.cgroup_version != "2",
        };
        self.profile_breaches(
            policy,
            Some(&container.host_config),
            &mounts,
            &container.cgroup_parent,
            origin,
        )
        .await
    }

    /// `exec` and `attach` from a container caller: judged by [`Self::check_use`] on one
    /// inspect. Returns the ID the request must be forwarded by, so a rename in between cannot
    /// swap containers; `None`: no such container (the engine answers 404 itself).
    pub async fn admit_use(
        &self,
        what: ContainerUse,
        name: &str,
        exec_privileged: bool,
    ) -> Result<Option<ContainerId>, GateRefusal> {
        let Some(container) = self.inspect(name).await? else {
            return Ok(None);
        };
        let id = ContainerId::parse(&container.id).ok_or_else(|| {
            GateRefusal::unverifiable(format!("the engine's container ID {:?}", container.id))
        })?;
        self.check_use(what, name, &container, exec_privileged)
            .await?;
        Ok(Some(id))
    }

    /// `POST /exec/{id}/start` and `…/resize` from a container caller. An exec is created by
    /// one request and started by another, by ID, by anyone: the host's `docker exec
    /// --privileged`, or an exec in a container the profile refuses. Starting it gives what it
    /// was created with, so it is judged as its creation would be, on the engine's record of it
    /// (its container and `--privileged`). `Ok(())` also when the engine has no such exec or
    /// container (it answers 404 itself); execs cannot move between containers, so nothing
    /// needs re-addressing.
    pub async fn admit_exec_start(&self, exec_id: &str) -> Result<(), GateRefusal> {
        let target = format!("/exec/{}/json", segment(exec_id));
        let Some(body) = self.ask(&target).await? else {
            return Ok(());
        };
        let exec = wire::decode_exec_inspect(&body)
            .map_err(|e| GateRefusal::unverifiable(format!("the engine's exec JSON: {e}")))?;
        let Some(container) = self.inspect(&exec.container_id).await? else {
            return Ok(());
        };
        let name = container.name.trim_start_matches('/');
        let name = if name.is_empty() { &container.id } else { name };
        self.check_use(ContainerUse::Exec, name, &container, exec.privileged)
            .await
    }

    /// Judges a container (a name or an ID) from the engine's view of it, without acting on
    /// the verdict (`explain`). `None` when the engine has no such container.
    pub async fn judge(&self, name: &str) -> Result<Option<Judgement>, GateRefusal> {
        let Some(container) = self.inspect(name).await? else {
            return Ok(None);
        };
        let outcome = match self.check_parent(&container.cgroup_parent).await {
            Ok(()) => self.judge_mounts(&container).await,
            Err(refusal) => Err(refusal),
        };
        Ok(Some(Judgement { container, outcome }))
    }

    /// `POST /containers/{name}/start` (and `restart`) through the sidecar: judged on the
    /// engine's view by its immutable image ID, recorded, and prepared in the kernel before the
    /// engine sees the request. The ID returned is what the request must be forwarded by, so a
    /// rename in between cannot start another container, with the pass. `None`: no such
    /// container (the engine answers 404 itself).
    pub async fn admit_start(
        &self,
        caller: &CallerKind,
        name: &str,
    ) -> Result<Option<(ContainerId, GatePass)>, GateRefusal> {
        let ticket = self.order.ticket();
        let Some(judgement) = self.judge(name).await? else {
            return Ok(None);
        };
        // A container caller gets the started container's power: the profile judges it.
        if let CallerKind::Container(_) = caller {
            self.check_use(ContainerUse::Start, name, &judgement.container, false)
                .await?;
        }
        let id = ContainerId::parse(&judgement.container.id).ok_or_else(|| {
            GateRefusal::unverifiable(format!(
                "the engine's container ID {:?}",
                judgement.container.id
            ))
        })?;
        let approval = self.apply(&id, ticket, &judgement).await;
        let pass = judgement.outcome?;
        // Before the engine sees `start`: an allowed container is approved in the kernel (its
        // cgroup is allowed at birth), and the verdict map has room for the cgroup the start
        // makes. Either missing is a refusal, never a container that runs unjudged.
        if let Some(kernel) = &self.kernel {
            approval.and_then(|()| kernel.check_room()).map_err(|err| {
                // Not started: nothing is left approved for it.
                kernel.withdraw(&id);
                GateRefusal::kernel(&id, &err)
            })?;
        }
        Ok(Some((id, pass)))
    }

    /// The engine answered a `start` the gate admitted: the container's cgroup exists now (its
    /// verdict is recorded), or the start failed (nothing runs; an allowed container keeps its
    /// approval until it is judged denied or is gone).
    pub async fn started(&self, id: &ContainerId) {
        self.rejudge(id).await;
    }

    /// Judges container `id` again and acts on it: table, kernel, connections. Engine events,
    /// reloads and callers the table does not know yet come here. Returns whether it is allowed.
    pub async fn rejudge(&self, id: &ContainerId) -> bool {
        let ticket = self.order.ticket();
        match self.judge(id.as_str()).await {
            Ok(Some(judgement)) => {
                // A failed approval is logged where it happens; the verdict still stands.
                let _ = self.apply(id, ticket, &judgement).await;
                // What the table holds now: this judgement, or a newer one.
                self.table.get(id).is_some_and(|r| r.standing.is_allowed())
            }
            Ok(None) => {
                self.forget_in_order(id, ticket);
                false
            }
            Err(err) => {
                // Unverifiable now: whatever it had, it loses (fail closed).
                tracing::warn!(container = %id, "cannot judge: {err:?}");
                let Some(_applying) = self.order.admit(id, ticket) else {
                    return false;
                };
                if let Some(mut record) = self.table.get(id) {
                    record.standing = Standing::Denied {
                        reason: err.reason(),
                    };
                    if self.table.record(record.clone()) {
                        tracing::warn!(container = %id, "container no longer allowed to use the socket; its connections are closed");
                    }
                    let _ = self.write_verdict(id, &record, false);
                }
                false
            }
        }
    }

    /// The container is gone: out of the table, its kernel approval withdrawn and its cgroup
    /// retired (see [`KernelSync::forget`]).
    pub fn forget(&self, id: &ContainerId) {
        self.forget_in_order(id, self.order.ticket());
    }

    fn forget_in_order(&self, id: &ContainerId, ticket: order::Ticket) {
        let Some(applying) = self.order.admit(id, ticket) else {
            tracing::debug!(container = %id, "a newer judgement was written; this \"gone\" is stale");
            return;
        };
        self.table.remove(id);
        if let Some(kernel) = &self.kernel {
            kernel.forget(id);
        }
        applying.forget(id);
    }

    /// Records a judgement in the table and the kernel. The cgroup recorded is the one the
    /// engine's answers place the container in, verified to exist — never what the container's
    /// processes report about themselves (`/proc/PID/cgroup` is theirs to change). Returns
    /// whether an allowed container's approval could be written (see [`KernelSync::approve`]).
    /// A judgement asked before one already written (`ticket`) is dropped: it would undo it.
    async fn apply(
        &self,
        id: &ContainerId,
        ticket: order::Ticket,
        judgement: &Judgement,
    ) -> Result<(), crate::kernel::KernelError> {
        let c = &judgement.container;
        let driver = match self.info().await {
            Ok(info) => info.cgroup_driver.clone(),
            Err(_) => String::new(),
        };
        let cgroup = if c.running {
            self.locate(id, &driver, &c.cgroup_parent)
        } else {
            None
        };
        let standing = match &judgement.outcome {
            _ if judgement.allowed() => Standing::Allowed {
                rule: judgement.outcome.as_ref().map(rule_of).unwrap_or_default(),
            },
            Ok(_) => Standing::Denied {
                reason: "no_socket_mount",
            },
            Err(refusal) => Standing::Denied {
                reason: refusal.reason(),
            },
        };
        let record = ContainerRecord {
            id: id.clone(),
            image: c.config_image.clone(),
            image_id: c.image_id.clone(),
            init_pid: c.pid,
            driver,
            cgroup_parent: c.cgroup_parent.clone(),
            cgroup,
            standing,
        };
        let Some(_applying) = self.order.admit(id, ticket) else {
            tracing::debug!(container = %id, "a newer judgement was written; this one is stale");
            return Ok(());
        };
        let allowed = record.standing.is_allowed();
        if self.table.record(record.clone()) {
            tracing::warn!(container = %id, image = %c.config_image, "container no longer allowed to use the socket; its connections are closed");
        }
        self.write_verdict(id, &record, allowed)
    }

    /// The container's approval follows its standing, and its recorded cgroup gets its verdict.
    fn write_verdict(
        &self,
        id: &ContainerId,
        record: &ContainerRecord,
        allowed: bool,
    ) -> Result<(), crate::kernel::KernelError> {
        let Some(kernel) = &self.kernel else {
            return Ok(());
        };
        let approval = if allowed {
            kernel.approve(id).inspect_err(|err| {
                tracing::error!(container = %id, "approving an allowed container in the kernel: {err}; its new cgroups are denied at birth until the map has room");
            })
        } else {
            kernel.withdraw(id);
            Ok(())
        };
        let at = placement::container_cgroup(&record.driver, &record.cgroup_parent, id);
        match (record.cgroup, at) {
            (Some(cgroup), Ok(rel)) => {
                if let Err(err) = kernel.set(id, cgroup, &rel, allowed) {
                    tracing::error!(container = %id, "kernel verdict: {err:#}");
                }
            }
            // Not running, or its cgroup is not where the engine says: nothing to allow, and
            // what was written for it goes once its cgroup is gone.
            _ => kernel.unset(id, allowed),
        }
        approval
    }

    /// The container's cgroup as the engine's answers place it, if it exists now.
    fn locate(
        &self,
        id: &ContainerId,
        driver: &str,
        cgroup_parent: &str,
    ) -> Option<crate::ids::CgroupId> {
        let cgroups = self.cgroups.as_ref()?;
        let rel = placement::container_cgroup(driver, cgroup_parent, id).ok()?;
        match cgroups.tree.id(&rel) {
            Ok(cgroup) => Some(cgroup),
            Err(err) => {
                tracing::debug!(container = %id, cgroup = %rel.display(), "no cgroup: {err:#}");
                None
            }
        }
    }

    /// Refuses a `CgroupParent` that would put a container inside the agent's cgroup, a trusted
    /// cgroup or another container's cgroup.
    async fn check_parent(&self, cgroup_parent: &str) -> Result<(), GateRefusal> {
        let Some(cgroups) = &self.cgroups else {
            return Ok(());
        };
        let driver = self.info().await?.cgroup_driver.clone();
        let parent = placement::parent_path(&driver, cgroup_parent)
            .map_err(|e| GateRefusal::placement(&e))?;
        placement::check_parent(
            &driver,
            &parent,
            cgroup_parent,
            cgroups.agent.as_deref(),
            &cgroups.trusted,
        )
        .map_err(|e| GateRefusal::placement(&e))?;
        // Every existing ancestor of the parent: none may be a container's cgroup.
        let mut dir: &Path = &parent;
        loop {
            if let Ok(cgroup) = cgroups.tree.id(dir)
                && let Some(other) = self.table.at_cgroup(cgroup)
            {
                return Err(GateRefusal::placement(
                    &placement::PlacementError::InsideContainer(cgroup_parent.to_owned(), other),
                ));
            }
            match dir.parent() {
                Some(up) if !up.as_os_str().is_empty() => dir = up,
                _ => break,
            }
        }
        Ok(())
    }

    async fn judge_mounts(&self, inspected: &InspectedContainer) -> Result<GatePass, GateRefusal> {
        let policy = self.snapshot();
        if !policy.settings.eci_enabled {
            return Ok(GatePass::EciOff);
        }
        let mut mounts = Vec::new();
        for m in &inspected.mounts {
            self.expand(m.clone(), &mut mounts).await?;
        }
        let reach = match self.sockets.check(&mounts, self.host.as_ref()) {
            MountVerdict::Clear => return Ok(GatePass::Clear),
            MountVerdict::Reaches(reach) => reach,
        };
        let facts = self
            .image_facts(&inspected.image_id)
            .await?
            .ok_or_else(|| {
                GateRefusal::unverifiable(format!("image {} not found", inspected.image_id))
            })?;
        self.decide(&policy, &inspected.config_image, &facts, reach)
            .await
    }

    /// Fills in what a mount spec leaves to the engine: a named volume's driver options, the
    /// mounts of a `VolumesFrom` container.
    async fn expand(&self, m: MountSpec, out: &mut Vec<MountSpec>) -> Result<(), GateRefusal> {
        match m {
            MountSpec::Volume {
                name,
                driver,
                options: None,
            } => {
                let target = format!("/volumes/{}", segment(&name));
                let found = self.ask(&target).await?;
                let (driver, options) = match found {
                    Some(body) => decode::volume(&body).map_err(GateRefusal::unverifiable)?,
                    // Not there yet: the engine creates it with the request's driver and no
                    // options. If it appears before `start`, `start` looks again.
                    None => (driver, BTreeMap::new()),
                };
                out.push(MountSpec::Volume {
                    name,
                    driver,
                    options: Some(options),
                });
            }
            MountSpec::VolumesFrom { container } => {
                if let Some(inspected) = self.inspect(&container).await? {
                    // Its `.Mounts` already hold what it got from its own VolumesFrom.
                    for inner in inspected.mounts {
                        if !matches!(inner, MountSpec::VolumesFrom { .. }) {
                            Box::pin(self.expand(inner, out)).await?;
                        }
                    }
                }
                // No such container: the engine refuses the create itself.
            }
            other => out.push(other),
        }
        Ok(())
    }

    /// The engine's facts about an image (a name or an ID); `None` when it has no such image.
    async fn image_facts(&self, image: &str) -> Result<Option<ImageFacts>, GateRefusal> {
        let store = self.info().await?.store;
        let target = format!("/images/{}/json", segment(image));
        match self.ask(&target).await? {
            Some(body) => decode::image_facts(&body, store)
                .map(Some)
                .map_err(GateRefusal::unverifiable),
            None => Ok(None),
        }
    }

    /// Candidate bases for the derived-image check: local images one of whose digests is
    /// allowed directly (only those can be a base), with their layers.
    async fn allowed_local_images(
        &self,
        allowed: &AllowedDigests,
    ) -> Result<Vec<ImageFacts>, GateRefusal> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Listed {
            id: String,
            #[serde(default)]
            repo_digests: Option<Vec<String>>,
        }
        let body = self.ask("/images/json").await?.unwrap_or_default();
        let listed: Vec<Listed> =
            serde_json::from_slice(&body).map_err(GateRefusal::unverifiable)?;
        let mut out = Vec::new();
        for l in listed {
            let digests = std::iter::once(l.id.as_str()).chain(
                l.repo_digests
                    .iter()
                    .flatten()
                    .filter_map(|rd| rd.rsplit_once('@').map(|(_, d)| d)),
            );
            let candidate = digests
                .filter_map(|d| d.parse().ok())
                .any(|d| allowed.entry_for(&d).is_some());
            if candidate && let Some(facts) = self.image_facts(&l.id).await? {
                out.push(facts);
            }
        }
        Ok(out)
    }

    /// The image verdict alone, for `eci-agent explain --image`: what a container of `image`
    /// that mounts the socket would get. `None` when the engine has no such image.
    pub async fn judge_image(&self, image: &str) -> Result<Option<AllowedBy>, GateRefusal> {
        let Some(facts) = self.image_facts(image).await? else {
            return Ok(None);
        };
        self.decide_image(&self.snapshot(), image, &facts)
            .await
            .map(Some)
    }

    async fn decide(
        &self,
        policy: &PolicySnapshot,
        image_name: &str,
        facts: &ImageFacts,
        reach: Reach,
    ) -> Result<GatePass, GateRefusal> {
        let by = self.decide_image(policy, image_name, facts).await?;
        Ok(GatePass::Allowed {
            reach: Box::new(reach),
            by,
        })
    }

    async fn decide_image(
        &self,
        snapshot: &PolicySnapshot,
        image_name: &str,
        facts: &ImageFacts,
    ) -> Result<AllowedBy, GateRefusal> {
        let settings = &snapshot.settings;
        let policy = &settings.policy.images;
        let allowed = &snapshot.digests;
        let locals = if policy.needs_local_images() && facts.local_only {
            self.allowed_local_images(allowed).await?
        } else {
            Vec::new()
        };
        match policy.decide(facts, allowed, &locals) {
            crate::policy::Verdict::Allow(by) => Ok(by),
            crate::policy::Verdict::Deny(reason) => Err(GateRefusal::ImageNotAllowed {
                message: messages::socket_mount_denied(
                    &display_name(image_name),
                    &settings.location(),
                ),
                reason: reason.code(),
            }),
        }
    }
}

/// Whether a `CgroupParent` keeps the container inside the engine's default container parent
/// (`docker` under cgroupfs, `system.slice` under systemd) — the only place a container caller
/// may put what it creates (the placement rules refuse the agent's, trusted and containers'
/// cgroups for everyone).
pub fn container_parent(driver: &str, cgroup_parent: &str) -> ParentPlacement {
    if cgroup_parent.is_empty() {
        return ParentPlacement::ContainerParent;
    }
    let inside = match (
        placement::parent_path(driver, cgroup_parent),
        placement::parent_path(driver, ""),
    ) {
        (Ok(parent), Ok(default)) => parent.starts_with(&default),
        _ => false,
    };
    if inside {
        ParentPlacement::ContainerParent
    } else {
        ParentPlacement::Outside(cgroup_parent.to_owned())
    }
}
