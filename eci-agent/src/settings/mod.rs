//! Docker Desktop's `admin-settings.json` → typed [`Settings`] with the compiled
//! [`Policy`](crate::policy::Policy).
//!
//! Only `configurationFileVersion`, `enhancedContainerIsolation` and this agent's own extension
//! object `eciAgent` are read; every other field is reported as a warning (Docker Desktop has many settings this agent does not enforce).
//! Every error names the JSON field it is about, and syntax errors carry line and column, so an
//! administrator can fix the file from the message alone.
#![forbid(unsafe_code)]

pub mod snapshot;

pub use snapshot::PolicySnapshot;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

use crate::policy::{
    CommandPolicy, ImagePolicy, Policy,
    command::{self, CommandError, ListMode, Rule},
    image_ref::{ImagePattern, RefError},
    profile::{self, Confinement, ContainerProfile, Namespace},
};

/// `EX_USAGE`: what the agent exits with on invalid settings.
pub const EXIT_INVALID: u8 = 64;

const SUPPORTED_VERSION: u64 = 2;

/// The settings the agent enforces.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file they came from; refusal messages point administrators at it.
    pub path: PathBuf,
    /// `enhancedContainerIsolation.value`. When false, socket mounts are not restricted and the
    /// commandList does not apply.
    pub eci_enabled: bool,
    /// `enhancedContainerIsolation.locked` (informational: this agent has no user UI to lock).
    pub locked: bool,
    pub policy: Policy,
    pub warnings: Vec<SettingsWarning>,
}

impl Settings {
    /// Where refusal messages tell the user to configure the lists.
    pub fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// Parses settings text; `path` is only recorded (for messages), not read.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let root: Value = serde_json::from_str(text).map_err(|e| SettingsError::Syntax {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: syntax_message(&e),
        })?;
        let mut cx = Cx::default();
        let parsed = parse_root(&mut cx, &root);
        if !cx.errors.is_empty() {
            return Err(SettingsError::Invalid {
                path: path.to_owned(),
                errors: cx.errors,
            });
        }
        let Parsed {
            eci_enabled,
            locked,
            policy,
        } = parsed;
        Ok(Self {
            path: path.to_owned(),
            eci_enabled,
            locked,
            policy,
            warnings: cx.warnings,
        })
    }
}

/// Reads and validates a settings file (startup and every reload).
pub fn load(path: &Path) -> Result<Settings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|cause| SettingsError::Read {
        path: path.to_owned(),
        cause,
    })?;
    Settings::from_json_str(&text, path)
}

/// Why a settings file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    // The cause is in the message and not also a `source()`, which `{:#}` would print again.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{}:{line}:{column}: invalid JSON: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The JSON does not describe valid settings; one entry per offending field.
    #[error("{}: invalid settings: {}", path.display(), join_errors(errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// serde_json appends " at line L column C"; the error already says where.
fn syntax_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path, e.g. `enhancedContainerIsolation.dockerSocketMount.imageList.images[2]`.
    pub field: String,
    pub problem: Problem,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The JSON type is not the one the schema wants.
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: &'static str,
    },
    /// A required field is absent.
    #[error("required field is missing")]
    Missing,
    /// Only version 2 files carry `dockerSocketMount`.
    #[error("unsupported configurationFileVersion {0} (expected {SUPPORTED_VERSION})")]
    UnsupportedVersion(String),
    /// An imageList entry is not a valid reference.
    #[error("invalid image reference: {0}")]
    Image(#[from] RefError),
    /// A commandList entry is not a supported command.
    #[error("{0}")]
    Command(#[from] CommandError),
    /// `commandList.type` is neither `deny` nor `allow`.
    #[error("invalid list type {0:?} (expected \"deny\" or \"allow\")")]
    ListType(String),
    /// A list entry of `eciAgent.containerProfile` that is not one of its names.
    #[error("unknown {kind} {value:?} (expected one of: {expected})")]
    UnknownName {
        kind: &'static str,
        value: String,
        expected: String,
    },
    /// A path that must be absolute is not.
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(String),
}

/// Something the agent accepts but an administrator should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsWarning {
    /// A field this agent does not know (ignored).
    UnknownField {
        field: String,
        hint: Option<&'static str>,
    },
    /// ECI is off or unset: nothing is restricted.
    EciDisabled { field: String },
    /// The same image entry (after normalisation) appears twice.
    DuplicateImage { field: String, entry: String },
    /// The same command appears twice.
    DuplicateCommand { field: String, entry: String },
    /// `"*"` is listed, so the other entries and `allowDerivedImages` change nothing.
    WildcardShadows { field: String },
}

impl fmt::Display for SettingsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownField {
                field,
                hint: Some(h),
            } => write!(f, "{field}: unknown field, ignored (did you mean {h:?}?)"),
            Self::UnknownField { field, hint: None } => {
                write!(f, "{field}: unknown field, ignored")
            }
            Self::EciDisabled { field } => {
                write!(
                    f,
                    "{field}: enhanced container isolation is off: socket mounts are not restricted and the commandList does not apply"
                )
            }
            Self::DuplicateImage { field, entry } => {
                write!(f, "{field}: {entry} is listed more than once")
            }
            Self::DuplicateCommand { field, entry } => {
                write!(f, "{field}: {entry} is listed more than once")
            }
            Self::WildcardShadows { field } => write!(
                f,
                "{field}: \"*\" allows every image; the other entries have no effect"
            ),
        }
    }
}

#[derive(Default)]
struct Cx {
    errors: Vec<FieldError>,
    warnings: Vec<SettingsWarning>,
}

impl Cx {
    fn error(&mut self, field: impl Into<String>, problem: Problem) {
        self.errors.push(FieldError {
            field: field.into(),
            problem,
        });
    }

    fn wrong_type(&mut self, field: &str, expected: &'static str, found: &Value) {
        self.error(
            field,
            Problem::WrongType {
                expected,
                found: type_name(found),
            },
        );
    }

    /// Warns about keys outside `known`, with a hint when only the case differs.
    fn unknown_fields(&mut self, prefix: &str, obj: &Map<String, Value>, known: &[&'static str]) {
        for key in obj.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let hint = known.iter().copied().find(|k| {
                k.eq_ignore_ascii_case(key)
                    || (*k == "allowDerivedImages" && key == "allowedDerivedImages")
            });
            self.warnings.push(SettingsWarning::UnknownField {
                field: join(prefix, key),
                hint,
            });
        }
    }

    fn object<'v>(&mut self, field: &str, v: &'v Value) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.wrong_type(field, "an object", other);
                None
            }
        }
    }

    fn bool(&mut self, field: &str, v: Option<&Value>) -> Option<bool> {
        match v? {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(field, "true or false", other);
                None
            }
        }
    }

    fn strings<'v>(&mut self, field: &str, v: Option<&'v Value>) -> Vec<(String, &'v str)> {
        let Some(v) = v else { return Vec::new() };
        let Value::Array(items) = v else {
            self.wrong_type(field, "an array of strings", v);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{field}[{i}]");
            match item {
                Value::String(s) => out.push((path, s.as_str())),
                other => self.wrong_type(&path, "a string", other),
            }
        }
        out
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

struct Parsed {
    eci_enabled: bool,
    locked: bool,
    policy: Policy,
}

const ECI: &str = "enhancedContainerIsolation";
/// This agent's extension object, beside Docker Desktop's settings (which stay as they are).
const AGENT: &str = "eciAgent";
const PROFILE: &str = "eciAgent.containerProfile";

fn parse_root(cx: &mut Cx, root: &Value) -> Parsed {
    let mut out = Parsed {
        eci_enabled: false,
        locked: false,
        policy: Policy::default(),
    };
    let Some(obj) = cx.object("(top level)", root) else {
        return out;
    };
    match obj.get("configurationFileVersion") {
        None => cx.error("configurationFileVersion", Problem::Missing),
        Some(Value::Number(n)) if n.as_u64() == Some(SUPPORTED_VERSION) => {}
        Some(Value::Number(n)) => cx.error(
            "configurationFileVersion",
            Problem::UnsupportedVersion(n.to_string()),
        ),
        Some(other) => cx.wrong_type("configurationFileVersion", "a number", other),
    }
    // Docker Desktop's other admin settings are not ours to enforce; a warning each is enough.
    cx.unknown_fields("", obj, &["configurationFileVersion", ECI, AGENT]);
    if let Some(agent) = obj.get(AGENT)
        && let Some(agent) = cx.object(AGENT, agent)
    {
        cx.unknown_fields(AGENT, agent, &["containerProfile"]);
        if let Some(v) = agent.get("containerProfile") {
            out.policy.profile = parse_profile(cx, v);
        }
    }
    let Some(eci) = obj.get(ECI) else {
        cx.warnings.push(SettingsWarning::EciDisabled {
            field: ECI.to_owned(),
        });
        return out;
    };
    let Some(eci) = cx.object(ECI, eci) else {
        return out;
    };
    cx.unknown_fields(ECI, eci, &["locked", "value", "dockerSocketMount"]);
    out.locked = cx
        .bool(&join(ECI, "locked"), eci.get("locked"))
        .unwrap_or(false);
    out.eci_enabled = cx
        .bool(&join(ECI, "value"), eci.get("value"))
        .unwrap_or(false);
    if !out.eci_enabled {
        cx.warnings.push(SettingsWarning::EciDisabled {
            field: join(ECI, "value"),
        });
    }
    // Validated even when ECI is off, so that turning it on cannot surface a latent error.
    if let Some(dsm) = eci.get("dockerSocketMount") {
        let prefix = join(ECI, "dockerSocketMount");
        if let Some(dsm) = cx.object(&prefix, dsm) {
            cx.unknown_fields(&prefix, dsm, &["imageList", "commandList"]);
            if let Some(v) = dsm.get("imageList") {
                out.policy.images = parse_image_list(cx, &join(&prefix, "imageList"), v);
            }
            if let Some(v) = dsm.get("commandList") {
                out.policy.commands = parse_command_list(cx, &join(&prefix, "commandList"), v);
            }
        }
    }
    out
}

fn parse_image_list(cx: &mut Cx, prefix: &str, v: &Value) -> ImagePolicy {
    let mut out = ImagePolicy::default();
    let Some(obj) = cx.object(prefix, v) else {
        return out;
    };
    cx.unknown_fields(prefix, obj, &["images", "allowDerivedImages"]);
    out.allow_derived_images = cx
        .bool(
            &join(prefix, "allowDerivedImages"),
            obj.get("allowDerivedImages"),
        )
        .unwrap_or(false);
    for (field, raw) in cx.strings(&join(prefix, "images"), obj.get("images")) {
        match ImagePattern::parse(raw) {
            Ok(p) if out.patterns.contains(&p) => {
                cx.warnings.push(SettingsWarning::DuplicateImage {
                    field,
                    entry: p.to_string(),
                });
            }
            Ok(p) => out.patterns.push(p),
            Err(e) => cx.error(field, Problem::Image(e)),
        }
    }
    if out.patterns.contains(&ImagePattern::Any)
        && (out.patterns.len() > 1 || out.allow_derived_images)
    {
        cx.warnings.push(SettingsWarning::WildcardShadows {
            field: join(prefix, "images"),
        });
    }
    out
}

/// `eciAgent.containerProfile`: each field relaxes one part of the strict default.
fn parse_profile(cx: &mut Cx, v: &Value) -> ContainerProfile {
    let mut out = ContainerProfile::default();
    let Some(obj) = cx.object(PROFILE, v) else {
        return out;
    };
    cx.unknown_fields(
        PROFILE,
        obj,
        &[
            "allowPrivileged",
            "allowHostNamespaces",
            "allowCapabilities",
            "allowDevices",
            "allowUnconfined",
            "allowAnyCgroupParent",
            "allowHostPaths",
            "protectedPaths",
            "engineExecRoot",
        ],
    );
    let flag = |cx: &mut Cx, name: &str| {
        cx.bool(&join(PROFILE, name), obj.get(name))
            .unwrap_or(false)
    };
    out.allow_privileged = flag(cx, "allowPrivileged");
    out.allow_devices = flag(cx, "allowDevices");
    out.allow_any_cgroup_parent = flag(cx, "allowAnyCgroupParent");
    let names = |list: &[&str]| list.join(", ");
    for (field, raw) in cx.strings(
        &join(PROFILE, "allowHostNamespaces"),
        obj.get("allowHostNamespaces"),
    ) {
        match Namespace::parse(raw) {
            Some(ns) => out.allow_host_namespaces.push(ns),
            None => cx.error(
                field,
                Problem::UnknownName {
                    kind: "namespace",
                    value: raw.to_owned(),
                    expected: names(&Namespace::ALL.map(Namespace::as_str)),
                },
            ),
        }
    }
    for (field, raw) in cx.strings(
        &join(PROFILE, "allowCapabilities"),
        obj.get("allowCapabilities"),
    ) {
        let cap = profile::normalize_capability(raw.trim());
        if cap == "ALL" || profile::KNOWN_CAPABILITIES.contains(&cap.as_str()) {
            out.allow_capabilities.push(cap);
        } else {
            cx.error(
                field,
                Problem::UnknownName {
                    kind: "capability",
                    value: raw.to_owned(),
                    expected: "ALL or a Linux capability such as SYS_PTRACE".into(),
                },
            );
        }
    }
    for (field, raw) in cx.strings(
        &join(PROFILE, "allowUnconfined"),
        obj.get("allowUnconfined"),
    ) {
        match Confinement::parse(raw) {
            Some(c) => out.allow_unconfined.push(c),
            None => cx.error(
                field,
                Problem::UnknownName {
                    kind: "confinement",
                    value: raw.to_owned(),
                    expected: names(&Confinement::ALL.map(Confinement::as_str)),
                },
            ),
        }
    }
    // The engine does not report its exec root (`GET /info` has only the data root).
    match obj.get("engineExecRoot") {
        None => {}
        Some(Value::String(raw)) if raw.starts_with('/') => {
            out.engine_exec_root = Some(crate::policy::path_clean::path_clean(raw));
        }
        Some(Value::String(raw)) => cx.error(
            join(PROFILE, "engineExecRoot"),
            Problem::NotAbsolute(raw.clone()),
        ),
        Some(other) => cx.wrong_type(&join(PROFILE, "engineExecRoot"), "a string", other),
    }
    for (name, dst) in [
        ("allowHostPaths", &mut out.allow_host_paths),
        ("protectedPaths", &mut out.protected_paths),
    ] {
        for (field, raw) in cx.strings(&join(PROFILE, name), obj.get(name)) {
            if raw.starts_with('/') {
                dst.push(crate::policy::path_clean::path_clean(raw));
            } else {
                cx.error(field, Problem::NotAbsolute(raw.to_owned()));
            }
        }
    }
    out
}

fn parse_command_list(cx: &mut Cx, prefix: &str, v: &Value) -> CommandPolicy {
    let Some(obj) = cx.object(prefix, v) else {
        return CommandPolicy::default();
    };
    cx.unknown_fields(prefix, obj, &["type", "commands"]);
    let type_field = join(prefix, "type");
    let mode = match obj.get("type") {
        None => ListMode::Deny,
        Some(Value::String(s)) if s == "deny" => ListMode::Deny,
        Some(Value::String(s)) if s == "allow" => ListMode::Allow,
        Some(Value::String(s)) => {
            cx.error(type_field, Problem::ListType(s.clone()));
            ListMode::Deny
        }
        Some(other) => {
            cx.wrong_type(&type_field, "\"deny\" or \"allow\"", other);
            ListMode::Deny
        }
    };
    let mut rules: Vec<Rule> = Vec::new();
    for (field, raw) in cx.strings(&join(prefix, "commands"), obj.get("commands")) {
        match command::parse_rule(raw) {
            Ok(r) if rules.contains(&r) => cx.warnings.push(SettingsWarning::DuplicateCommand {
                field,
                entry: r.to_string(),
            }),
            Ok(r) => rules.push(r),
            Err(e) => cx.error(field, Problem::Command(e)),
        }
    }
    CommandPolicy::new(mode, rules)
}

/// The normalised policy, as `check` prints it.
pub fn render(s: &Settings) -> String {
    use std::fmt::Write as _;
    let Settings {
        path,
        eci_enabled,
        locked,
        policy,
        warnings: _,
    } = s;
    let mut out = String::new();
    let _ = writeln!(out, "settings: {}", path.display());
    let _ = writeln!(
        out,
        "enhanced container isolation: {}{}",
        if *eci_enabled { "on" } else { "off" },
        if *locked { " (locked)" } else { "" }
    );
    let _ = writeln!(
        out,
        "image list (allowDerivedImages: {}):",
        policy.images.allow_derived_images
    );
    if policy.images.patterns.is_empty() {
        let _ = writeln!(out, "  (empty: no container may mount the socket)");
    }
    for p in &policy.images.patterns {
        let what = match p {
            ImagePattern::Any => "every image",
            ImagePattern::AnyTag(_) => "any tag, digests from the registry",
            ImagePattern::Tag(..) => "digests from the registry",
            ImagePattern::Digest(..) => "this digest only",
        };
        let _ = writeln!(out, "  {p}  ({what})");
    }
    let _ = writeln!(out, "command list: {}", policy.commands.mode());
    if policy.commands.rules().is_empty() {
        let _ = writeln!(
            out,
            "  (empty: {})",
            match policy.commands.mode() {
                ListMode::Deny => "every command is allowed",
                ListMode::Allow => "every command is blocked",
            }
        );
    }
    for r in policy.commands.rules() {
        let _ = writeln!(out, "  {r}");
    }
    out.push_str(&profile::render(&policy.profile));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, SettingsError> {
        Settings::from_json_str(text, Path::new("/etc/eci/admin-settings.json"))
    }

    const SEED: &str = r#"{
"configurationFileVersion": 2,
"enhancedContainerIsolation": {
"locked": true,
"value": true,
"dockerSocketMount": {
"imageList": {
"images": [
"docker.io/localstack/localstack:*",
"docker.io/testcontainers/ryuk:*",
"docker:cli"
],
"allowDerivedImages": true
},
"commandList": {
"type": "deny",
"commands": ["push"]
}
}
}
}"#;

    #[test]
    fn seed_example_parses() {
        let s = parse(SEED).unwrap();
        assert!(s.eci_enabled && s.locked);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let shown: Vec<String> = s
            .policy
            .images
            .patterns
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "docker.io/localstack/localstack:*",
                "docker.io/testcontainers/ryuk:*",
                "docker.io/library/docker:cli"
            ]
        );
        assert!(s.policy.images.allow_derived_images);
        assert_eq!(s.policy.commands.mode(), ListMode::Deny);
        assert_eq!(s.policy.commands.rules().len(), 1);
        let text = render(&s);
        assert!(text.contains("docker.io/library/docker:cli"), "{text}");
        assert!(text.contains("command list: deny\n  push\n"), "{text}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true,"dockerSocketMount":{"imageList":{"images":["a","b","Bad:tag"]}}}}"#,
                "enhancedContainerIsolation.dockerSocketMount.imageList.images[2]",
            ),
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true,"dockerSocketMount":{"commandList":{"commands":["ps","compose"]}}}}"#,
                "enhancedContainerIsolation.dockerSocketMount.commandList.commands[1]",
            ),
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true,"dockerSocketMount":{"commandList":{"type":"block"}}}}"#,
                "enhancedContainerIsolation.dockerSocketMount.commandList.type",
            ),
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":"yes"}}"#,
                "enhancedContainerIsolation.value",
            ),
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true,"dockerSocketMount":{"imageList":{"images":"docker:cli"}}}}"#,
                "enhancedContainerIsolation.dockerSocketMount.imageList.images",
            ),
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true,"dockerSocketMount":{"imageList":{"images":[3]}}}}"#,
                "enhancedContainerIsolation.dockerSocketMount.imageList.images[0]",
            ),
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true,"dockerSocketMount":{"imageList":{"allowDerivedImages":1}}}}"#,
                "enhancedContainerIsolation.dockerSocketMount.imageList.allowDerivedImages",
            ),
            (
                r#"{"configurationFileVersion":1}"#,
                "configurationFileVersion",
            ),
            (
                r#"{"enhancedContainerIsolation":{}}"#,
                "configurationFileVersion",
            ),
            (
                r#"{"configurationFileVersion":2,"enhancedContainerIsolation":[]}"#,
                "enhancedContainerIsolation",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":{"allowPrivileged":"yes"}}}"#,
                "eciAgent.containerProfile.allowPrivileged",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":{"allowHostNamespaces":["pid","net"]}}}"#,
                "eciAgent.containerProfile.allowHostNamespaces[1]",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":{"allowCapabilities":["SYS_PTRACE","FLY"]}}}"#,
                "eciAgent.containerProfile.allowCapabilities[1]",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":{"allowUnconfined":["selinux"]}}}"#,
                "eciAgent.containerProfile.allowUnconfined[0]",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":{"allowHostPaths":["sys"]}}}"#,
                "eciAgent.containerProfile.allowHostPaths[0]",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":{"engineExecRoot":"run/docker"}}}"#,
                "eciAgent.containerProfile.engineExecRoot",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":{"engineExecRoot":["/run/docker"]}}}"#,
                "eciAgent.containerProfile.engineExecRoot",
            ),
            (
                r#"{"configurationFileVersion":2,"eciAgent":{"containerProfile":[]}}"#,
                "eciAgent.containerProfile",
            ),
        ];
        for (text, field) in cases {
            match parse(text) {
                Err(SettingsError::Invalid { errors, .. }) => {
                    assert!(
                        errors.iter().any(|e| e.field == *field),
                        "{text}: {errors:?}"
                    );
                    let msg = SettingsError::Invalid {
                        path: "/x".into(),
                        errors: errors.clone(),
                    }
                    .to_string();
                    assert!(msg.contains(field), "{msg}");
                }
                other => panic!("{text}: expected invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let err = parse(
            "{\n  \"configurationFileVersion\": 2,\n  \"enhancedContainerIsolation\": {,}\n}",
        )
        .unwrap_err();
        let SettingsError::Syntax { line, column, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*line, *column), (3, 34));
        assert!(
            err.to_string()
                .starts_with("/etc/eci/admin-settings.json:3:34: invalid JSON"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_warnings() {
        let s = parse(
            r#"{"configurationFileVersion":2,"exposeDockerAPIOnTCP2375":{"value":false},
               "enhancedContainerIsolation":{"value":true,"dockerSocketMount":{"imageList":{"images":[],"allowedDerivedImages":true}}}}"#,
        )
        .unwrap();
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings.iter().any(|w| matches!(
            w,
            SettingsWarning::UnknownField {
                hint: Some("allowDerivedImages"),
                ..
            }
        )));
    }

    #[test]
    fn container_profile_relaxes_and_prints() {
        let strict = parse(SEED).unwrap();
        assert_eq!(strict.policy.profile, ContainerProfile::default());
        let text = render(&strict);
        assert!(text.contains("  privileged: refused\n"), "{text}");
        assert!(
            text.contains("capabilities refused: ALL, CAP_SYS_ADMIN"),
            "{text}"
        );
        let s = parse(
            r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true},
               "eciAgent":{"containerProfile":{"allowPrivileged":true,"allowHostNamespaces":["pid"],
               "allowCapabilities":["sys_ptrace"],"allowDevices":true,"allowUnconfined":["apparmor"],
               "allowAnyCgroupParent":true,"allowHostPaths":["/sys/fs/cgroup/"],"protectedPaths":["/etc"],
               "engineExecRoot":"/srv/docker-exec/"}}}"#,
        )
        .unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let p = &s.policy.profile;
        assert!(p.allow_privileged && p.allow_devices && p.allow_any_cgroup_parent);
        assert_eq!(p.allow_host_namespaces, [Namespace::Pid]);
        assert_eq!(p.allow_capabilities, ["CAP_SYS_PTRACE"]);
        assert_eq!(p.allow_unconfined, [Confinement::AppArmor]);
        assert_eq!(p.allow_host_paths, ["/sys/fs/cgroup"]);
        assert_eq!(p.protected_paths, ["/etc"]);
        assert_eq!(p.exec_root(), "/srv/docker-exec");
        assert_eq!(
            strict.policy.profile.exec_root(),
            crate::policy::profile::DEFAULT_EXEC_ROOT
        );
        let text = render(&s);
        assert!(text.contains("  privileged: allowed\n"), "{text}");
        assert!(text.contains("  host pid namespace: allowed\n"), "{text}");
        assert!(!text.contains("CAP_SYS_PTRACE"), "{text}");
        assert!(
            text.contains("host paths allowed: /sys/fs/cgroup"),
            "{text}"
        );
        assert!(text.contains("exec root (/srv/docker-exec)"), "{text}");
    }

    #[test]
    fn eci_off_is_valid_and_says_so() {
        let s =
            parse(r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":false}}"#)
                .unwrap();
        assert!(!s.eci_enabled);
        assert!(
            s.warnings
                .iter()
                .any(|w| matches!(w, SettingsWarning::EciDisabled { .. }))
        );
        let s = parse(r#"{"configurationFileVersion":2}"#).unwrap();
        assert!(!s.eci_enabled);
    }

    #[test]
    fn defaults_are_deny_and_empty() {
        let s =
            parse(r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"value":true}}"#)
                .unwrap();
        assert!(s.policy.images.patterns.is_empty());
        assert!(!s.policy.images.allow_derived_images);
        assert_eq!(s.policy.commands.mode(), ListMode::Deny);
    }

    #[test]
    fn load_reads_files_and_reports_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("admin-settings.json");
        std::fs::write(&p, SEED).unwrap();
        assert!(load(&p).unwrap().eci_enabled);
        assert!(matches!(
            load(&dir.path().join("nope.json")),
            Err(SettingsError::Read { .. })
        ));
    }
}
