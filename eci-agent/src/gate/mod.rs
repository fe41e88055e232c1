//! The socket-mount gate at the edge: the pure rules of [`crate::policy::mount`] and
//! [`crate::policy::image`] applied to what the engine and the host say, at `create`, at
//! `start`, and to every running container whenever the policy or the allowed digests change.
//!
//! - [`host`]: resolving mount sources on the host.
//! - [`containers`]: the containers allowed now (the sidecar serves only them).
//! - [`kernel`]: their verdicts in the kernel.
//! - [`watch`]: judging running containers again on reload, refresh and engine events.
#![forbid(unsafe_code)]

pub mod containers;
pub mod host;
pub mod kernel;
pub mod watch;

use std::{collections::BTreeMap, sync::Arc};

use tokio::sync::{OnceCell, watch as tokio_watch};

use crate::{
    engine::{
        EngineApi, EngineError,
        api::segment,
        decode::{self, ContainerState, EngineInfo},
    },
    ids::ContainerId,
    policy::{
        image::{AllowedBy, AllowedDigests, ImageFacts},
        image_ref::AnyReference,
        messages::{self, ReasonCode},
        mount::{self, MountSpec, MountVerdict, Reach, SocketGate},
    },
    settings::Settings,
};

pub use containers::{AllowedContainer, ContainerTable};
pub use kernel::KernelSync;

/// Why a container may not start (or be created) as asked.
#[derive(Clone, Debug)]
pub enum GateRefusal {
    /// Docker Desktop's refusal: the image may not mount the socket.
    ImageNotAllowed { message: String, reason: ReasonCode },
    /// The request or the engine's answer could not be read, or the engine could not be asked:
    /// nothing is let through unverified.
    Unverifiable { message: String },
}

impl GateRefusal {
    fn unverifiable(what: impl std::fmt::Display) -> Self {
        Self::Unverifiable {
            message: format!(
                "enhanced container isolation: cannot verify the container's socket mounts: {what}"
            ),
        }
    }
}

/// A container the gate let through, and why.
#[derive(Clone, Debug)]
pub enum GatePass {
    /// No mount reaches a protected socket (or the engine will refuse the request itself).
    Clear,
    /// ECI is off: socket mounts are not restricted.
    EciOff,
    /// Its mounts reach the socket and its image is allowed.
    Allowed { reach: Box<Reach>, by: AllowedBy },
}

impl GatePass {
    /// Whether the container may reach the socket (and so gets the allow verdict).
    pub fn reaches_socket(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// A judged container, for `start` and for running containers.
#[derive(Clone, Debug)]
pub struct Judgement {
    pub state: ContainerState,
    pub image: String,
    pub outcome: Result<GatePass, GateRefusal>,
}

pub struct SocketMountGate {
    engine: EngineApi,
    sockets: SocketGate,
    host: Box<dyn mount::HostPaths + Send + Sync>,
    settings: tokio_watch::Receiver<Arc<Settings>>,
    digests: tokio_watch::Receiver<Arc<AllowedDigests>>,
    info: OnceCell<EngineInfo>,
    pub containers: Arc<ContainerTable>,
    pub kernel: Option<KernelSync>,
}

impl SocketMountGate {
    pub fn new(
        engine: EngineApi,
        sockets: SocketGate,
        settings: tokio_watch::Receiver<Arc<Settings>>,
        digests: tokio_watch::Receiver<Arc<AllowedDigests>>,
        kernel: Option<KernelSync>,
    ) -> Self {
        Self {
            engine,
            sockets,
            host: Box::new(host::RealHost),
            settings,
            digests,
            info: OnceCell::new(),
            containers: ContainerTable::new(),
            kernel,
        }
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    /// False when `enhancedContainerIsolation.value` is false: nothing is restricted.
    pub fn eci_enabled(&self) -> bool {
        self.settings.borrow().eci_enabled
    }

    /// Before an allowed container starts: its cgroup allowed in the kernel (cgroupfs driver).
    pub async fn prepare_kernel(
        &self,
        id: &ContainerId,
        cgroup_parent: &str,
    ) -> Result<(), GateRefusal> {
        let Some(kernel) = &self.kernel else {
            return Ok(());
        };
        let driver = self.info().await?.cgroup_driver.clone();
        kernel
            .prepare_allowed(id, &driver, cgroup_parent)
            .map_err(|e| GateRefusal::unverifiable(format!("{e:#}")))
    }

    async fn info(&self) -> Result<&EngineInfo, GateRefusal> {
        self.info
            .get_or_try_init(|| async {
                let body = self
                    .engine
                    .get("/info")
                    .await
                    .map_err(GateRefusal::unverifiable)?
                    .ok_or_else(|| GateRefusal::unverifiable("the engine has no /info"))?;
                decode::info(&body).map_err(GateRefusal::unverifiable)
            })
            .await
    }

    /// `POST /containers/create`: judges the body before the engine sees it.
    pub async fn check_create(&self, body: &[u8]) -> Result<GatePass, GateRefusal> {
        let settings = self.settings();
        if !settings.eci_enabled {
            return Ok(GatePass::EciOff);
        }
        let create = mount::decode_create_body(body)
            .map_err(|e| GateRefusal::unverifiable(format!("the container configuration: {e}")))?;
        let mut mounts = Vec::new();
        for m in create.mounts() {
            self.expand(m, &mut mounts).await?;
        }
        let reach = match self.sockets.check(&mounts, self.host.as_ref()) {
            MountVerdict::Clear => return Ok(GatePass::Clear),
            MountVerdict::Reaches(reach) => reach,
        };
        let Some(facts) = self.image_facts(&create.image).await? else {
            // No such image: the engine refuses the create itself (and the CLI pulls and asks
            // again, which comes back here). `start` judges the image the container really got.
            return Ok(GatePass::Clear);
        };
        self.decide(&settings, &create.image, &facts, reach).await
    }

    /// `POST /containers/{name}/start` (and `restart`): judges the engine's own view of the
    /// container, by its immutable image ID.
    pub async fn check_start(&self, name: &str) -> Result<Option<Judgement>, GateRefusal> {
        let target = format!("/containers/{}/json", segment(name));
        let Some(body) = self
            .engine
            .get(&target)
            .await
            .map_err(GateRefusal::unverifiable)?
        else {
            return Ok(None); // the engine answers 404 itself
        };
        self.judge_inspected(&body).await.map(Some)
    }

    /// Judges a container from its inspect JSON.
    pub async fn judge_inspected(&self, body: &[u8]) -> Result<Judgement, GateRefusal> {
        let state = decode::container_state(body).map_err(GateRefusal::unverifiable)?;
        let inspected = mount::decode_container_inspect(body)
            .map_err(|e| GateRefusal::unverifiable(format!("the engine's container JSON: {e}")))?;
        let image = inspected.config_image.clone();
        let outcome = self.judge_mounts(&inspected).await;
        Ok(Judgement {
            state,
            image,
            outcome,
        })
    }

    async fn judge_mounts(
        &self,
        inspected: &mount::InspectedContainer,
    ) -> Result<GatePass, GateRefusal> {
        let settings = self.settings();
        if !settings.eci_enabled {
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
        self.decide(&settings, &inspected.config_image, &facts, reach)
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
                let found = self
                    .engine
                    .get(&target)
                    .await
                    .map_err(GateRefusal::unverifiable)?;
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
                let target = format!("/containers/{}/json", segment(&container));
                if let Some(body) = self
                    .engine
                    .get(&target)
                    .await
                    .map_err(GateRefusal::unverifiable)?
                {
                    let inspected = mount::decode_container_inspect(&body).map_err(|e| {
                        GateRefusal::unverifiable(format!("container {container}: {e}"))
                    })?;
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
        match self.engine.get(&target).await {
            Ok(Some(body)) => decode::image_facts(&body, store)
                .map(Some)
                .map_err(GateRefusal::unverifiable),
            Ok(None) => Ok(None),
            Err(err) => Err(GateRefusal::unverifiable(err)),
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
        let body = self
            .engine
            .get("/images/json")
            .await
            .map_err(GateRefusal::unverifiable)?
            .unwrap_or_default();
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
        self.decide_image(&self.settings(), image, &facts)
            .await
            .map(Some)
    }

    async fn decide(
        &self,
        settings: &Settings,
        image_name: &str,
        facts: &ImageFacts,
        reach: Reach,
    ) -> Result<GatePass, GateRefusal> {
        let by = self.decide_image(settings, image_name, facts).await?;
        Ok(GatePass::Allowed {
            reach: Box::new(reach),
            by,
        })
    }

    async fn decide_image(
        &self,
        settings: &Settings,
        image_name: &str,
        facts: &ImageFacts,
    ) -> Result<AllowedBy, GateRefusal> {
        let policy = &settings.policy.images;
        let allowed = self.digests.borrow().clone();
        let locals = if policy.needs_local_images() && facts.local_only {
            self.allowed_local_images(&allowed).await?
        } else {
            Vec::new()
        };
        match policy.decide(facts, &allowed, &locals) {
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

/// The image as the refusal names it: the normalised repository without tag or digest
/// (`docker.io/library/docker`), or the ID as given.
pub fn display_name(image: &str) -> String {
    match AnyReference::parse(image) {
        Ok(AnyReference::Named(r)) => r.name.to_string(),
        Ok(AnyReference::Id(d)) => d.to_string(),
        Err(_) => image.to_owned(),
    }
}

/// The rule that let a container through, for the table and logs.
pub fn rule_of(pass: &GatePass) -> String {
    match pass {
        GatePass::Clear => "no socket mount".into(),
        GatePass::EciOff => "eci off".into(),
        GatePass::Allowed { by, .. } => match by {
            AllowedBy::EveryImage => "\"*\"".into(),
            AllowedBy::Digest { entry, .. } => entry.to_string(),
            AllowedBy::Derived { entry, base } => format!("{entry} (derived from {base})"),
        },
    }
}

/// A stable snake_case code for a pass, for metrics and `explain`.
pub fn pass_reason(pass: &GatePass) -> &'static str {
    match pass {
        GatePass::Clear => "no_socket_mount",
        GatePass::EciOff => "eci_disabled",
        GatePass::Allowed { by, .. } => allowed_reason(by),
    }
}

/// A stable snake_case code for why an image passed.
pub fn allowed_reason(by: &AllowedBy) -> &'static str {
    match by {
        AllowedBy::EveryImage => "every_image",
        AllowedBy::Digest { .. } => "image_allowed",
        AllowedBy::Derived { .. } => "derived_image",
    }
}

impl From<EngineError> for GateRefusal {
    fn from(err: EngineError) -> Self {
        Self::unverifiable(err)
    }
}

/// Marks `id` allowed (or not) in the table and the kernel after a judgement.
pub fn apply(gate: &SocketMountGate, judgement: &Judgement) {
    let Some(id) = ContainerId::parse(&judgement.state.id) else {
        return;
    };
    let allowed = matches!(&judgement.outcome, Ok(p) if p.reaches_socket())
        || matches!(&judgement.outcome, Ok(GatePass::EciOff));
    if allowed {
        let rule = judgement.outcome.as_ref().map(rule_of).unwrap_or_default();
        gate.containers.allow(
            id.clone(),
            AllowedContainer {
                image: judgement.image.clone(),
                rule,
            },
        );
    } else if gate.containers.revoke(&id) {
        tracing::warn!(container = %id, image = %judgement.image, "container no longer allowed to use the socket; its connections are closed");
    }
    if let Some(kernel) = &gate.kernel
        && judgement.state.running
        && judgement.state.pid != 0
        && let Err(err) = kernel.judge_running(&id, judgement.state.pid, allowed)
    {
        tracing::warn!(container = %id, "kernel verdict: {err:#}");
    }
}
