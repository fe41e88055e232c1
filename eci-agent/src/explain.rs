//! `eci-agent explain`: the decision the policy in a settings file makes for a request, an image
//! or an existing container, and the rule that made it — through the same code the running agent
//! enforces with: the sidecar's path normalisation and admission (`sidecar::path`,
//! `sidecar::admit`) for a request; the socket-mount gate (`gate::SocketMountGate`) with digests
//! resolved by the registry client for an image or a container.
//!
//! Exit status: 0 allowed, 1 refused, 2 undecidable (the engine could not be asked), 64 bad
//! settings or arguments.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use crate::{
    gate::{self, GatePass, GateRefusal, SocketMountGate},
    ids::{CallerKind, ContainerId},
    policy::{
        image::AllowedBy,
        mount::{ReachKind, SocketGate},
        profile::Breach,
        route::{self, RouteKind},
    },
    settings::{self, Settings},
    sidecar::{
        admit::{self, Admission, Refusal},
        mounts::{self, Judged},
        path::{self, EnginePath},
    },
};

/// The deployment's private engine socket (deploy/systemd), protected by default when present.
pub const DEPLOYED_ENGINE_SOCKET: &str = "/run/eci/engine.sock";

const EXIT_REFUSED: u8 = 1;
const EXIT_UNDECIDED: u8 = 2;

/// A decision and how it was reached, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// `None`: no decision could be made (the engine could not be asked).
    pub allowed: Option<bool>,
    pub facts: Vec<(&'static str, String)>,
}

impl Explanation {
    fn new(allowed: Option<bool>) -> Self {
        Self {
            allowed,
            facts: Vec::new(),
        }
    }

    fn fact(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.facts.push((key, value.into()));
        self
    }

    pub fn render(&self) -> String {
        let decision = match self.allowed {
            Some(true) => "allow",
            Some(false) => "deny",
            None => "undecided",
        };
        let mut out = format!("decision: {decision}\n");
        for (k, v) in &self.facts {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out
    }

    fn exit_code(&self) -> ExitCode {
        match self.allowed {
            Some(true) => ExitCode::SUCCESS,
            Some(false) => ExitCode::from(EXIT_REFUSED),
            None => ExitCode::from(EXIT_UNDECIDED),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["image", "container", "request", "create"])))]
pub struct Args {
    #[arg(long)]
    pub settings: PathBuf,
    /// May a container of this image mount the socket? (a reference or an image ID)
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The gate's judgement of an existing container (name or ID).
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// May a container send this request? e.g. 'POST /v1.47/images/x/push?tag=1'
    #[arg(long, value_name = "'METHOD PATH'")]
    pub request: Option<String>,
    /// What happens to this `POST /containers/create` body (a file, or - for stdin) sent by a
    /// container that holds the socket: the container-caller profile and the socket-mount gate.
    #[arg(long, value_name = "FILE|-")]
    pub create: Option<PathBuf>,
    /// The Engine API asked about images and containers; through a running agent the host is
    /// trusted, so the public socket works.
    #[arg(long, default_value = "/var/run/docker.sock")]
    pub engine: PathBuf,
    /// A socket a container's mounts must not reach; repeatable. Default: --engine, plus the
    /// deployment's engine socket /run/eci/engine.sock when it exists.
    #[arg(long = "protect", value_name = "PATH")]
    pub protect: Vec<PathBuf>,
    /// A registry reached over plain HTTP (HOST:PORT); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
}

pub fn command(args: &Args) -> ExitCode {
    let settings = match settings::load(&args.settings) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("eci-agent: {}: {err}", args.settings.display());
            return ExitCode::from(settings::EXIT_INVALID);
        }
    };
    if let Some(spec) = &args.request {
        return match explain_request(&settings, spec) {
            Ok(e) => {
                print!("{}", e.render());
                e.exit_code()
            }
            Err(err) => {
                eprintln!("eci-agent: --request {spec:?}: {err}");
                ExitCode::from(settings::EXIT_INVALID)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("eci-agent: starting the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(explain_with_engine(args, settings)) {
        Ok(e) => {
            print!("{}", e.render());
            e.exit_code()
        }
        Err(err) => {
            eprintln!("eci-agent: {err:#}");
            ExitCode::from(EXIT_UNDECIDED)
        }
    }
}

/// `--request 'METHOD TARGET'`: what the sidecar does with it from a container allowed to mount
/// the socket (host callers in trusted cgroups are not filtered).
pub fn explain_request(settings: &Settings, spec: &str) -> Result<Explanation, String> {
    let mut words = spec.split_whitespace();
    let (Some(method), Some(target), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected 'METHOD TARGET', e.g. 'POST /v1.47/images/x/push?tag=1'".into());
    };
    let uri: http::Uri = target.parse().map_err(|e| format!("{target:?}: {e}"))?;
    let route_path = match path::engine_path(uri.path(), uri.query()) {
        Ok(EnginePath::Route(p)) => p,
        Ok(EnginePath::Redirect { location }) => {
            // The engine routes nothing for it; the sidecar answers the same redirect.
            return Ok(Explanation::new(Some(true))
                .fact(
                    "route",
                    "none: the engine answers 301 for a path that is not clean",
                )
                .fact("location", location));
        }
        Err(err) => {
            return Ok(Explanation::new(Some(false))
                .fact("route", "none: the engine answers 400")
                .fact("reason", err.to_string()));
        }
    };
    // Any container id: the commandList is one list for all containers.
    let caller = CallerKind::Container(ContainerId::parse(&"0".repeat(64)).expect("valid id"));
    let method = method.to_ascii_uppercase();
    let (allowed, decision, refusal) =
        match admit::admit(settings, &caller, &method, &route_path, uri.query(), target) {
            Admission::Admitted(d) => (true, d, None),
            Admission::Refused(r, d) => (false, d, Some(r)),
        };
    let mut e = Explanation::new(Some(allowed))
        .fact("caller", "a container allowed to mount the socket")
        .fact(
            "route",
            route::classify(&method, &route_path.api_path, uri.query())
                .map_or_else(|| "unknown".to_owned(), ToString::to_string),
        )
        .fact("command", decision.command.unwrap_or_default())
        .fact(
            "rule",
            decision.rule.as_ref().map_or_else(
                || format!("none ({})", list_mode(settings)),
                |r| {
                    format!(
                        "{:?} in the commandList ({})",
                        r.to_string(),
                        list_mode(settings)
                    )
                },
            ),
        )
        .fact("reason", decision.reason);
    if let Some(route) = route::classify(&method, &route_path.api_path, uri.query()) {
        e = e.fact("route kind", route.kind().as_str());
        if route.reads_form() {
            e = e.fact(
                "split by",
                "the fromImage form value (a pull with it, an import without): the query decides, a form body's Content-Type is removed",
            );
        }
        if let (Some(rule), Some(command)) = (&decision.rule, &decision.command) {
            let why = match route.kind() {
                RouteKind::Is => format!("this request is `{command}`'s own effect"),
                RouteKind::Needs | RouteKind::Closed => format!("`{command}` needs this request"),
            };
            e = e.fact(
                if allowed { "granted by" } else { "blocked by" },
                format!("{:?}: {why}", rule.to_string()),
            );
        } else if route.kind() == RouteKind::Closed && !allowed {
            e = e.fact(
                "blocked by",
                "closed to containers: it starts what the create gate never judges; name its command in an allow list to open it",
            );
        }
    }
    if let Some(Refusal::CommandBlocked { message }) = refusal {
        e = e.fact("message", message);
    }
    if allowed && settings.eci_enabled {
        let then = match mounts::judged(&method, decision.route) {
            Some(Judged::Create) => Some(
                "the container-caller profile and the socket-mount gate judge the body (eci-agent explain --create FILE)",
            ),
            Some(Judged::Use(_)) => Some(
                "the container-caller profile judges the container it names, as the engine stored it (eci-agent explain --container NAME)",
            ),
            Some(Judged::ExecStart) => Some(
                "the container-caller profile judges the exec as its creation would be: the engine's record of it (--privileged) and its container (eci-agent explain --container NAME)",
            ),
            None => None,
        };
        if let Some(then) = then {
            e = e.fact("then", then);
        }
    }
    Ok(e)
}

fn list_mode(settings: &Settings) -> String {
    if settings.eci_enabled {
        format!("{} list", settings.policy.commands.mode())
    } else {
        "ECI is off".into()
    }
}

async fn explain_with_engine(args: &Args, settings: Settings) -> anyhow::Result<Explanation> {
    use crate::{
        engine::EngineApi,
        gate::host::protected_socket,
        registry::{DigestCache, RegistryClient, RegistryConfig},
    };
    use anyhow::Context as _;

    let cache = Arc::new(DigestCache::new(Arc::new(settings)));
    let registry = RegistryClient::new(RegistryConfig {
        insecure: args.insecure_registries.iter().cloned().collect(),
        ..RegistryConfig::default()
    })
    .context("building the registry client")?;
    let report = cache.refresh(&registry).await;
    let mut protect: Vec<PathBuf> = vec![args.engine.clone()];
    if args.protect.is_empty() {
        protect.extend(
            [PathBuf::from(DEPLOYED_ENGINE_SOCKET)]
                .into_iter()
                .filter(|p| p.exists()),
        );
    } else {
        protect.extend(args.protect.iter().cloned());
    }
    let sockets = protect
        .iter()
        .map(|p| protected_socket(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gate = SocketMountGate::new(
        EngineApi::new(&args.engine),
        SocketGate::new(sockets),
        cache.subscribe(),
        None,
    );
    let mut e = if let Some(image) = &args.image {
        explain_image(&gate, image).await
    } else if let Some(container) = &args.container {
        explain_container(&gate, container).await
    } else if let Some(file) = &args.create {
        let body = if file.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
        } else {
            std::fs::read(file)
        }
        .with_context(|| format!("reading the create body {}", file.display()))?;
        explain_create(&gate, &body).await
    } else {
        unreachable!("clap requires one of --image, --container, --request, --create")
    };
    for (entry, err) in &report.failed {
        e = e.fact("registry", format!("{entry} not resolved: {err}"));
    }
    Ok(e)
}

/// `--create FILE|-`: the gate's answer to a create body from a container caller (every option the
/// profile refuses, then the first refusal as the sidecar sends it), and from the host.
async fn explain_create(gate: &SocketMountGate, body: &[u8]) -> Explanation {
    let caller = CallerKind::Container(ContainerId::parse(&"0".repeat(64)).expect("valid id"));
    let outcome = gate.check_create(&caller, body).await;
    let mut e = Explanation::new(match &outcome {
        Ok(_) => Some(true),
        Err(GateRefusal::Unverifiable { .. }) => None,
        Err(_) => Some(false),
    })
    .fact("caller", "a container allowed to mount the socket");
    if gate.eci_enabled()
        && let Ok(breaches) = gate.explain_profile(body).await
    {
        e = profile_facts(e, "profile", &breaches);
    }
    e = e.fact("reason", gate::outcome_reason(&outcome));
    match &outcome {
        Ok(pass) => e = e.fact("rule", gate::rule_of(pass)),
        Err(refusal) => e = e.fact("message", refusal.message().to_owned()),
    }
    let host = gate.check_create(&CallerKind::TrustedHost, body).await;
    e.fact(
        "from the host",
        format!(
            "{} ({})",
            if host.is_ok() { "allow" } else { "deny" },
            gate::outcome_reason(&host)
        ),
    )
}

/// One fact per option the profile refuses, or "nothing refused".
fn profile_facts(mut e: Explanation, key: &'static str, breaches: &[Breach]) -> Explanation {
    if breaches.is_empty() {
        return e.fact(key, "nothing refused");
    }
    for b in breaches {
        e = e.fact(
            key,
            format!(
                "{} (refused; relax with eciAgent.containerProfile.{})",
                crate::policy::messages::profile_option(b),
                b.relax_field()
            ),
        );
    }
    e
}

/// `--image REF`: the verdict a container of this image that mounts the socket gets.
async fn explain_image(gate: &SocketMountGate, image: &str) -> Explanation {
    if !gate.eci_enabled() {
        return Explanation::new(Some(true))
            .fact("image", image)
            .fact(
                "rule",
                "enhancedContainerIsolation.value is false: socket mounts are not restricted",
            )
            .fact("reason", gate::pass_reason(&GatePass::EciOff));
    }
    match gate.judge_image(image).await {
        Ok(Some(by)) => Explanation::new(Some(true))
            .fact("image", image)
            .fact("rule", allowed_by(&by))
            .fact("reason", gate::allowed_reason(&by)),
        Ok(None) => Explanation::new(None).fact("image", image).fact(
            "reason",
            "the engine has no such image: decisions are made on the image's digests, so pull it first",
        ),
        Err(refusal) => refused(Explanation::new(Some(false)).fact("image", image), &refusal),
    }
}

/// `--container ID`: the gate's judgement of an existing container, as at `start` and after a
/// reload.
async fn explain_container(gate: &SocketMountGate, name: &str) -> Explanation {
    match gate.judge(name).await {
        Ok(None) => Explanation::new(None).fact("container", format!("{name}: no such container")),
        Ok(Some(j)) => {
            let mut e = Explanation::new(Some(j.outcome.is_ok()))
                .fact("container", j.container.id.clone())
                .fact("image", j.container.config_image.clone())
                .fact("running", j.container.running.to_string());
            if gate.eci_enabled()
                && let Ok(breaches) = gate.explain_stored(&j.container).await
            {
                e = profile_facts(e, "profile (start, exec, attach by a container)", &breaches);
            }
            match &j.outcome {
                Ok(pass) => {
                    let mut e = e
                        .fact(
                            "socket",
                            if pass.reaches_socket() {
                                "mounted"
                            } else {
                                "not mounted"
                            },
                        )
                        .fact("rule", gate::rule_of(pass))
                        .fact("reason", gate::pass_reason(pass));
                    if let GatePass::Allowed { reach, .. } = pass {
                        e = e.fact(
                            "mount",
                            format!("{:?} ({})", reach.mount, reach_kind(&reach.kind)),
                        );
                    }
                    e
                }
                Err(refusal) => refused(e.fact("socket", "mounted"), refusal),
            }
        }
        Err(refusal) => refused(
            Explanation::new(Some(false)).fact("container", name),
            &refusal,
        ),
    }
}

fn refused(e: Explanation, refusal: &GateRefusal) -> Explanation {
    match refusal {
        GateRefusal::ImageNotAllowed { message, reason } => e
            .fact("rule", "no imageList entry allows its digests")
            .fact("reason", reason.as_str())
            .fact("message", message.clone()),
        GateRefusal::Refused { message, reason } => {
            e.fact("reason", *reason).fact("message", message.clone())
        }
        GateRefusal::Unverifiable { message } => e
            .fact("reason", "mount_unverifiable")
            .fact("message", message.clone()),
    }
}

fn allowed_by(by: &AllowedBy) -> String {
    match by {
        AllowedBy::EveryImage => "\"*\" in the imageList".into(),
        AllowedBy::Digest { entry, digest } => {
            format!("imageList entry {entry} (digest {digest})")
        }
        AllowedBy::Derived { entry, base } => {
            format!(
                "imageList entry {entry}, derived from the local image {base} (allowDerivedImages)"
            )
        }
    }
}

fn reach_kind(kind: &ReachKind) -> &'static str {
    match kind {
        ReachKind::IsSocket => "the socket itself",
        ReachKind::Ancestor => "a directory above the socket",
        ReachKind::ProcFs => "under /proc",
        ReachKind::BindVolume(_) => "a volume bind-mounting it",
        ReachKind::Unresolved => "not resolvable",
        ReachKind::Unverifiable => "host path not verifiable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: &str, commands: &[&str]) -> Settings {
        let json = serde_json::json!({
            "configurationFileVersion": 2,
            "enhancedContainerIsolation": {
                "locked": true, "value": true,
                "dockerSocketMount": {
                    "imageList": { "images": [] },
                    "commandList": { "type": kind, "commands": commands },
                },
            },
        });
        Settings::from_json_str(&json.to_string(), std::path::Path::new("/etc/eci/a.json")).unwrap()
    }

    #[test]
    fn request_explained_with_rule_and_message() {
        let s = settings("deny", &["push", "build"]);
        let e = explain_request(&s, "POST /v1.47/images/x/push?tag=1").unwrap();
        assert_eq!(e.allowed, Some(false));
        let text = e.render();
        assert!(text.contains("rule: \"push\" in the commandList"), "{text}");
        assert!(text.contains("reason: command_listed"), "{text}");
        assert!(
            text.contains(
                "message: enhanced container isolation: docker command \"/v1.47/images/x/push?tag=1\" is blocked"
            ),
            "{text}"
        );
        let e = explain_request(&s, "GET /containers/json").unwrap();
        assert_eq!(e.allowed, Some(true));
        let e = explain_request(&s, "HEAD /_ping").unwrap();
        assert_eq!(e.allowed, Some(true));
        assert!(e.render().contains("reason: ping"));
    }

    #[test]
    fn request_says_which_entry_granted_it_and_why() {
        let s = settings("allow", &["build", "run"]);
        let text = explain_request(&s, "POST /v1.47/containers/abc/wait")
            .unwrap()
            .render();
        assert!(
            text.contains("granted by: \"run\": `run` needs this request"),
            "{text}"
        );
        let e = explain_request(&s, "POST /v1.47/build").unwrap();
        assert!(
            e.render()
                .contains("granted by: \"build\": this request is `build`'s own effect"),
            "{}",
            e.render()
        );
        let e = explain_request(&s, "POST /v1.47/images/x/push").unwrap();
        assert_eq!(e.allowed, Some(false));
        let e = explain_request(&settings("deny", &[]), "POST /plugins/pull").unwrap();
        assert_eq!(e.allowed, Some(false));
        assert!(e.render().contains("blocked by: closed to containers"));
    }

    #[test]
    fn import_is_named_apart_from_pull() {
        let said = |s: &Settings, request| explain_request(s, request).unwrap().render();
        let s = settings("allow", &["pull"]);
        let text = said(&s, "POST /v1.47/images/create?fromSrc=-&repo=x");
        assert!(
            text.contains("POST /images/create (no fromImage)") && text.contains("import"),
            "{text}"
        );
        assert!(
            !explain_request(&s, "POST /v1.47/images/create?fromSrc=-")
                .unwrap()
                .allowed
                .unwrap()
        );
        let text = said(&s, "POST /v1.47/images/create?fromImage=alpine&tag=3");
        assert!(
            text.contains("granted by: \"pull\": `pull` needs this request"),
            "{text}"
        );
        let text = said(
            &settings("allow", &["import"]),
            "POST /images/create?fromSrc=-",
        );
        assert!(
            text.contains("granted by: \"import\": this request is `import`'s own effect"),
            "{text}"
        );
    }

    #[test]
    fn allow_list_and_odd_paths() {
        let s = settings("allow", &["ps"]);
        assert_eq!(
            explain_request(&s, "GET /v1.41/containers/json")
                .unwrap()
                .allowed,
            Some(true)
        );
        let e = explain_request(&s, "GET /images/json").unwrap();
        assert_eq!(e.allowed, Some(false));
        assert!(e.render().contains("reason: command_not_listed"));
        // Not clean: the engine redirects and runs nothing.
        let e = explain_request(&s, "POST //images/x/push").unwrap();
        assert!(
            e.render().contains("location: /images/x/push"),
            "{}",
            e.render()
        );
        assert!(explain_request(&s, "GET").is_err());
        assert!(explain_request(&s, "GET / extra").is_err());
    }

    #[test]
    fn request_says_what_the_gate_judges_next() {
        let said = |s: &Settings, request| explain_request(s, request).unwrap().render();
        let s = settings("deny", &[]);
        let exec = said(&s, "POST /v1.47/containers/web/exec");
        assert!(exec.starts_with("decision: allow"), "{exec}");
        assert!(
            exec.contains("then: the container-caller profile judges the container it names"),
            "{exec}"
        );
        let create = said(&s, "POST /v1.47/containers/create?name=x");
        assert!(
            create.contains("then: the container-caller profile and the socket-mount gate"),
            "{create}"
        );
        let list = said(&s, "GET /v1.47/containers/json");
        assert!(!list.contains("then:"), "{list}");
        // Refused by the commandList: nothing comes next.
        let refused = said(
            &settings("deny", &["exec"]),
            "POST /v1.47/containers/web/exec",
        );
        assert!(refused.starts_with("decision: deny"), "{refused}");
        assert!(!refused.contains("then:"), "{refused}");
    }
}
