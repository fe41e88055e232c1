//! Can a container's mounts reach a protected socket?
//!
//! Two halves, both pure:
//! - decoding the mounts out of a `POST /containers/create` body exactly as the engine's Go
//!   `encoding/json` would (see [`decode_create_body`]), and out of the engine's own view of a
//!   container (`GET /containers/{id}/json`, [`decode_container_inspect`]);
//! - the gate ([`SocketGate::check`]): a bind source reaches the socket when, after resolving
//!   symlinks on the host, it is the socket (same device and inode: also catches hard links),
//!   or an ancestor directory of it. The resolving is I/O, so it is behind [`HostPaths`].
//!
//! Anything the gate cannot judge (an unexpanded `VolumesFrom`, a volume whose options are
//! unknown, a path that cannot be resolved) counts as reaching the socket: the image check then
//! decides, so an allowed image still works and nothing unknown slips through.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

// ---------------------------------------------------------------------------------------------
// JSON with Go's decoding rules

/// A JSON value that keeps object members in order, duplicates included, so that Go's
/// "decode each member into the matching field, in order" can be replayed.
#[derive(Clone, Debug, PartialEq)]
pub enum GoJson {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<GoJson>),
    Object(Vec<(String, GoJson)>),
}

impl<'de> Deserialize<'de> for GoJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GoJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<GoJson, E> {
                Ok(GoJson::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<GoJson, E> {
                Ok(GoJson::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<GoJson, E> {
                Ok(GoJson::Number(n.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<GoJson, E> {
                Ok(GoJson::Number(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<GoJson, E> {
                Ok(GoJson::Number(n.to_string()))
            }
            fn visit_str<E>(self, s: &str) -> Result<GoJson, E> {
                Ok(GoJson::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<GoJson, E> {
                Ok(GoJson::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<GoJson, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(GoJson::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GoJson, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = map.next_entry::<String, GoJson>()? {
                    v.push((k, x));
                }
                Ok(GoJson::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Why a body could not be decoded the way the engine would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not one JSON value (the engine answers 400; the proxy refuses to guess).
    #[error("invalid JSON body: {0}")]
    Syntax(String),
    /// A field the gate needs has the wrong JSON type (the engine answers 400 too).
    #[error("field {0} has the wrong type")]
    Type(&'static str),
}

/// Go's `foldName`: ASCII folds to upper case, and the two non-ASCII runes whose fold set holds
/// an ASCII letter (KELVIN SIGN, LATIN SMALL LETTER LONG S) fold to it. Anything else cannot
/// match our ASCII field names, so it folds to `None`.
fn go_fold(key: &str) -> Option<String> {
    key.chars()
        .map(|c| match c {
            'a'..='z' => Some(c.to_ascii_uppercase()),
            '\u{212A}' => Some('K'),
            '\u{017F}' => Some('S'),
            c if c.is_ascii() => Some(c),
            _ => None,
        })
        .collect()
}

/// A Go slice: elements between `len` and the capacity keep their old contents, and Go decodes
/// a JSON array *into* the existing elements (golang/go#21092). Replaying that matters: a
/// second `"mounts"` member can only overwrite fields of the first one's elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoSlice<T> {
    backing: Vec<T>,
    len: usize,
    /// Go tells a nil slice (absent, or `null`) from an empty one (`[]`); the engine does too
    /// (`MaskedPaths: []` unmasks everything, `null` keeps the defaults).
    non_nil: bool,
}

impl<T> GoSlice<T> {
    pub fn items(&self) -> &[T] {
        &self.backing[..self.len]
    }

    /// `false` for a nil slice: the field was absent or its last value was `null`.
    pub fn is_set(&self) -> bool {
        self.non_nil
    }
}

type Res = Result<(), BodyError>;

fn dec_string(dst: &mut String, v: &GoJson, field: &'static str) -> Res {
    match v {
        GoJson::Null => Ok(()),
        GoJson::String(s) => {
            dst.clone_from(s);
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

fn dec_bool(dst: &mut bool, v: &GoJson, field: &'static str) -> Res {
    match v {
        GoJson::Null => Ok(()),
        GoJson::Bool(b) => {
            *dst = *b;
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

/// moby's `strslice.StrSlice` (`CapAdd`): its own `UnmarshalJSON` takes a string or an array
/// of strings and always *replaces* the value (`null` clears it), unlike a plain Go slice.
fn dec_strslice(dst: &mut Vec<String>, v: &GoJson, field: &'static str) -> Res {
    match v {
        GoJson::Null => dst.clear(),
        GoJson::String(s) => *dst = vec![s.clone()],
        GoJson::Array(items) => {
            *dst = items
                .iter()
                .map(|x| match x {
                    // `[]string` decoding leaves a null element as "".
                    GoJson::Null => Ok(String::new()),
                    GoJson::String(s) => Ok(s.clone()),
                    _ => Err(BodyError::Type(field)),
                })
                .collect::<Result<_, _>>()?;
        }
        _ => return Err(BodyError::Type(field)),
    }
    Ok(())
}

/// A slice of structs whose contents the gate does not read, only how many there are.
fn dec_opaque_structs(dst: &mut GoSlice<()>, v: &GoJson, field: &'static str) -> Res {
    dec_slice(dst, v, field, |_, x| dec_struct(x, field, |_, _| Ok(())))
}

fn dec_strings(dst: &mut GoSlice<String>, v: &GoJson, field: &'static str) -> Res {
    dec_slice(dst, v, field, |s, x| dec_string(s, x, field))
}

fn dec_slice<T: Default>(
    dst: &mut GoSlice<T>,
    v: &GoJson,
    field: &'static str,
    mut elem: impl FnMut(&mut T, &GoJson) -> Res,
) -> Res {
    match v {
        GoJson::Null => {
            *dst = GoSlice {
                backing: Vec::new(),
                len: 0,
                non_nil: false,
            };
            Ok(())
        }
        GoJson::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i >= dst.backing.len() {
                    dst.backing.push(T::default());
                }
                elem(&mut dst.backing[i], item)?;
            }
            dst.len = items.len();
            dst.non_nil = true;
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

/// A struct: each member, in order, is decoded into the field its folded name selects.
fn dec_struct(
    v: &GoJson,
    field: &'static str,
    mut member: impl FnMut(&str, &GoJson) -> Res,
) -> Res {
    match v {
        GoJson::Null => Ok(()),
        GoJson::Object(members) => {
            for (k, x) in members {
                if let Some(folded) = go_fold(k) {
                    member(&folded, x)?;
                }
            }
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

/// A pointer to a struct: `null` clears it, an object is merged into the existing value.
fn dec_ptr<T: Default>(
    dst: &mut Option<T>,
    v: &GoJson,
    field: &'static str,
    f: impl FnOnce(&mut T, &GoJson) -> Res,
) -> Res {
    match v {
        GoJson::Null => {
            *dst = None;
            Ok(())
        }
        GoJson::Object(_) => f(dst.get_or_insert_with(T::default), v),
        _ => Err(BodyError::Type(field)),
    }
}

/// `map[string]string`: keys are exact (no folding); an existing map is added to.
fn dec_map(dst: &mut Option<BTreeMap<String, String>>, v: &GoJson, field: &'static str) -> Res {
    match v {
        GoJson::Null => {
            *dst = None;
            Ok(())
        }
        GoJson::Object(members) => {
            let map = dst.get_or_insert_with(BTreeMap::new);
            for (k, x) in members {
                let mut s = String::new();
                dec_string(&mut s, x, field)?;
                map.insert(k.clone(), s);
            }
            Ok(())
        }
        _ => Err(BodyError::Type(field)),
    }
}

/// The parts of `POST /containers/create` the gate reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateBody {
    /// `Config.Image` as the client wrote it (a name or an ID).
    pub image: String,
    pub host_config: Option<HostConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub binds: GoSlice<String>,
    pub mounts: GoSlice<MountBody>,
    pub volumes_from: GoSlice<String>,
    pub volume_driver: String,
    /// Where the container's cgroup goes: the identity of a container is its cgroup.
    pub cgroup_parent: String,
    // What the container-caller profile judges (`policy::profile`).
    pub privileged: bool,
    pub pid_mode: String,
    pub ipc_mode: String,
    pub cgroupns_mode: String,
    pub userns_mode: String,
    pub network_mode: String,
    pub cap_add: Vec<String>,
    pub devices: GoSlice<()>,
    pub device_cgroup_rules: GoSlice<String>,
    pub device_requests: GoSlice<()>,
    pub security_opt: GoSlice<String>,
    pub masked_paths: GoSlice<String>,
    pub readonly_paths: GoSlice<String>,
}

/// One `HostConfig.Mounts` element.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountBody {
    pub typ: String,
    pub source: String,
    pub target: String,
    pub volume_options: Option<VolumeOptionsBody>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeOptionsBody {
    pub driver_config: Option<DriverBody>,
    pub subpath: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverBody {
    pub name: String,
    pub options: Option<BTreeMap<String, String>>,
}

/// Decodes a create body with Go's `encoding/json` rules: keys match fields case-insensitively
/// (Go's folding), members are applied in order so the last duplicate wins, and objects and
/// arrays are decoded *into* what an earlier duplicate left (maps merge, slices reuse elements).
pub fn decode_create_body(body: &[u8]) -> Result<CreateBody, BodyError> {
    let root: GoJson =
        serde_json::from_slice(body).map_err(|e| BodyError::Syntax(e.to_string()))?;
    let mut out = CreateBody::default();
    dec_struct(&root, "(body)", |k, v| match k {
        "IMAGE" => dec_string(&mut out.image, v, "Image"),
        "HOSTCONFIG" => dec_ptr(&mut out.host_config, v, "HostConfig", dec_host_config),
        _ => Ok(()),
    })?;
    Ok(out)
}

fn dec_host_config(hc: &mut HostConfig, v: &GoJson) -> Res {
    dec_struct(v, "HostConfig", |k, v| match k {
        "BINDS" => dec_slice(&mut hc.binds, v, "HostConfig.Binds", |s, x| {
            dec_string(s, x, "HostConfig.Binds[]")
        }),
        "VOLUMESFROM" => dec_slice(&mut hc.volumes_from, v, "HostConfig.VolumesFrom", |s, x| {
            dec_string(s, x, "HostConfig.VolumesFrom[]")
        }),
        "VOLUMEDRIVER" => dec_string(&mut hc.volume_driver, v, "HostConfig.VolumeDriver"),
        "CGROUPPARENT" => dec_string(&mut hc.cgroup_parent, v, "HostConfig.CgroupParent"),
        "MOUNTS" => dec_slice(&mut hc.mounts, v, "HostConfig.Mounts", dec_mount),
        "PRIVILEGED" => dec_bool(&mut hc.privileged, v, "HostConfig.Privileged"),
        "PIDMODE" => dec_string(&mut hc.pid_mode, v, "HostConfig.PidMode"),
        "IPCMODE" => dec_string(&mut hc.ipc_mode, v, "HostConfig.IpcMode"),
        "CGROUPNSMODE" => dec_string(&mut hc.cgroupns_mode, v, "HostConfig.CgroupnsMode"),
        "USERNSMODE" => dec_string(&mut hc.userns_mode, v, "HostConfig.UsernsMode"),
        "NETWORKMODE" => dec_string(&mut hc.network_mode, v, "HostConfig.NetworkMode"),
        "CAPADD" => dec_strslice(&mut hc.cap_add, v, "HostConfig.CapAdd"),
        "DEVICES" => dec_opaque_structs(&mut hc.devices, v, "HostConfig.Devices"),
        "DEVICECGROUPRULES" => dec_strings(
            &mut hc.device_cgroup_rules,
            v,
            "HostConfig.DeviceCgroupRules",
        ),
        "DEVICEREQUESTS" => {
            dec_opaque_structs(&mut hc.device_requests, v, "HostConfig.DeviceRequests")
        }
        "SECURITYOPT" => dec_strings(&mut hc.security_opt, v, "HostConfig.SecurityOpt"),
        "MASKEDPATHS" => dec_strings(&mut hc.masked_paths, v, "HostConfig.MaskedPaths"),
        "READONLYPATHS" => dec_strings(&mut hc.readonly_paths, v, "HostConfig.ReadonlyPaths"),
        _ => Ok(()),
    })
}

fn dec_mount(m: &mut MountBody, v: &GoJson) -> Res {
    dec_struct(v, "HostConfig.Mounts[]", |k, v| match k {
        "TYPE" => dec_string(&mut m.typ, v, "Mounts[].Type"),
        "SOURCE" => dec_string(&mut m.source, v, "Mounts[].Source"),
        "TARGET" => dec_string(&mut m.target, v, "Mounts[].Target"),
        "VOLUMEOPTIONS" => dec_ptr(
            &mut m.volume_options,
            v,
            "Mounts[].VolumeOptions",
            |vo, v| {
                dec_struct(v, "Mounts[].VolumeOptions", |k, v| match k {
                    "DRIVERCONFIG" => dec_ptr(
                        &mut vo.driver_config,
                        v,
                        "VolumeOptions.DriverConfig",
                        |dc, v| {
                            dec_struct(v, "VolumeOptions.DriverConfig", |k, v| match k {
                                "NAME" => dec_string(&mut dc.name, v, "DriverConfig.Name"),
                                "OPTIONS" => dec_map(&mut dc.options, v, "DriverConfig.Options"),
                                _ => Ok(()),
                            })
                        },
                    ),
                    "SUBPATH" => dec_string(&mut vo.subpath, v, "VolumeOptions.Subpath"),
                    _ => Ok(()),
                })
            },
        ),
        _ => Ok(()),
    })
}

/// `POST /containers/{name}/exec`: whether it asks for a privileged process (Go's rules, as
/// for a create body).
pub fn decode_exec_privileged(body: &[u8]) -> Result<bool, BodyError> {
    let root: GoJson =
        serde_json::from_slice(body).map_err(|e| BodyError::Syntax(e.to_string()))?;
    let mut privileged = false;
    dec_struct(&root, "(body)", |k, v| match k {
        "PRIVILEGED" => dec_bool(&mut privileged, v, "Privileged"),
        _ => Ok(()),
    })?;
    Ok(privileged)
}

// ---------------------------------------------------------------------------------------------
// Mount specs

/// One mount, in the terms the gate judges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSpec {
    /// A host path, cleaned the way the daemon cleans it (symlinks not yet resolved).
    Bind { source: String },
    /// A volume. `options` are its driver options when known (inline, or looked up by the edge
    /// with `GET /volumes/{name}`); `None` means "not looked up yet".
    Volume {
        name: String,
        driver: String,
        options: Option<BTreeMap<String, String>>,
    },
    /// `VolumesFrom`: the edge replaces it with that container's mounts.
    VolumesFrom { container: String },
    /// tmpfs, image, npipe, cluster: nothing from the host's filesystem.
    NoHostPath,
}

impl CreateBody {
    /// Every mount this request asks for, in the daemon's order (VolumesFrom, Binds, Mounts).
    pub fn mounts(&self) -> Vec<MountSpec> {
        let Some(hc) = &self.host_config else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for vf in hc.volumes_from.items() {
            // `container[:ro|rw]`
            let container = vf.split_once(':').map_or(vf.as_str(), |(c, _)| c);
            out.push(MountSpec::VolumesFrom {
                container: container.to_owned(),
            });
        }
        for b in hc.binds.items() {
            out.push(parse_bind(b, &hc.volume_driver));
        }
        for m in hc.mounts.items() {
            out.push(match m.typ.as_str() {
                "bind" => MountSpec::Bind {
                    source: clean_path(&m.source),
                },
                "volume" => {
                    let dc = m
                        .volume_options
                        .as_ref()
                        .and_then(|vo| vo.driver_config.as_ref());
                    let driver = dc
                        .map(|d| d.name.clone())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| hc.volume_driver.clone());
                    // An anonymous volume is new: its inline options are all it has.
                    let options = match (dc.and_then(|d| d.options.clone()), m.source.is_empty()) {
                        (Some(o), _) => Some(o),
                        (None, true) => Some(BTreeMap::new()),
                        (None, false) => None,
                    };
                    MountSpec::Volume {
                        name: m.source.clone(),
                        driver,
                        options,
                    }
                }
                "tmpfs" | "image" | "npipe" | "cluster" => MountSpec::NoHostPath,
                // The daemon rejects other types; if it ever does not, judge it as unknown.
                _ => MountSpec::Volume {
                    name: m.source.clone(),
                    driver: String::new(),
                    options: None,
                },
            });
        }
        out
    }
}

/// `HostConfig.Binds` entry, like moby's linux `ParseMountRaw`: an absolute source is a bind,
/// anything else names a volume.
fn parse_bind(raw: &str, volume_driver: &str) -> MountSpec {
    let parts: Vec<&str> = raw.splitn(4, ':').collect();
    let source = if parts.len() >= 2 { parts[0] } else { "" };
    if source.starts_with('/') {
        MountSpec::Bind {
            source: clean_path(source),
        }
    } else if source.is_empty() {
        // `/dst` alone: an anonymous volume, created fresh.
        MountSpec::Volume {
            name: String::new(),
            driver: volume_driver.to_owned(),
            options: Some(BTreeMap::new()),
        }
    } else {
        MountSpec::Volume {
            name: source.to_owned(),
            driver: volume_driver.to_owned(),
            options: None,
        }
    }
}

/// Go's `path.Clean` for an absolute path (what the daemon stores as the bind source).
pub fn clean_path(p: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            other => stack.push(other),
        }
    }
    let joined = stack.join("/");
    if p.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_owned()
    } else {
        joined
    }
}

/// The engine's own view of a container (`GET /containers/{id}/json`), for the check at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedContainer {
    /// The full container ID.
    pub id: String,
    /// `State.Running`, and `State.Pid` (0 when not running).
    pub running: bool,
    pub pid: u32,
    /// `HostConfig.CgroupParent`.
    pub cgroup_parent: String,
    /// The immutable image ID the container was created from.
    pub image_id: String,
    /// `Config.Image`: the name the user gave (for the refusal message).
    pub config_image: String,
    /// `.Mounts`, which already includes what `VolumesFrom` brought in. Volumes carry
    /// `options: None`: the edge fills them from `GET /volumes/{name}`.
    pub mounts: Vec<MountSpec>,
    /// `HostConfig` as the engine stored it (its defaults filled in), read with the create
    /// body's rules: what the container-caller profile judges at start, exec and attach.
    pub host_config: HostConfig,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InspectJson {
    id: String,
    state: Option<InspectState>,
    host_config: Option<InspectHostConfig>,
    image: String,
    config: Option<InspectConfig>,
    mounts: Option<Vec<InspectMount>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InspectState {
    running: bool,
    pid: i64,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InspectHostConfig {
    cgroup_parent: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InspectConfig {
    image: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InspectMount {
    #[serde(rename = "Type")]
    typ: String,
    name: String,
    source: String,
    driver: String,
}

/// Decodes the engine's container JSON (the engine writes canonical keys, so plain serde).
pub fn decode_container_inspect(body: &[u8]) -> Result<InspectedContainer, BodyError> {
    let j: InspectJson =
        serde_json::from_slice(body).map_err(|e| BodyError::Syntax(e.to_string()))?;
    let mounts = j
        .mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| match m.typ.as_str() {
            "bind" => MountSpec::Bind {
                source: clean_path(&m.source),
            },
            "volume" => MountSpec::Volume {
                name: m.name,
                driver: m.driver,
                options: None,
            },
            "tmpfs" | "image" | "npipe" | "cluster" => MountSpec::NoHostPath,
            _ => MountSpec::Volume {
                name: m.name,
                driver: m.driver,
                options: None,
            },
        })
        .collect();
    let state = j.state.unwrap_or_default();
    let host_config = decode_create_body(body)?.host_config.unwrap_or_default();
    Ok(InspectedContainer {
        id: j.id,
        running: state.running,
        pid: u32::try_from(state.pid).unwrap_or(0),
        cgroup_parent: j.host_config.map(|h| h.cgroup_parent).unwrap_or_default(),
        image_id: j.image,
        config_image: j.config.map(|c| c.image).unwrap_or_default(),
        mounts,
        host_config,
    })
}

// ---------------------------------------------------------------------------------------------
// The gate

/// A socket to protect, as the edge found it on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedSocket {
    /// Its path with every symlink resolved.
    pub real_path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// What the host says about a path after resolving every symlink in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPath {
    Exists {
        real: PathBuf,
        dev: u64,
        ino: u64,
        /// A unix socket (the container-caller profile refuses host sockets).
        socket: bool,
    },
    /// Nothing there: the daemon will create an empty directory.
    Missing,
    /// Could not be resolved (permissions, loops): judged as reaching.
    Unknown,
}

/// The I/O seam: realpath + stat on the host, in the daemon's mount namespace.
pub trait HostPaths {
    fn resolve(&self, path: &Path) -> HostPath;
}

/// Why a mount counts as reaching the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReachKind {
    /// The source is the socket, a symlink to it, or a hard link (same device and inode).
    IsSocket,
    /// The source is a directory above the socket (`/var/run`, `/run`, `/`).
    Ancestor,
    /// Under `/proc`, whose `<pid>/root` links lead to the whole host filesystem.
    ProcFs,
    /// A volume whose options bind-mount a host path that reaches the socket.
    BindVolume(Box<ReachKind>),
    /// Not decided by the gate: an unexpanded VolumesFrom or a volume with unknown options.
    Unresolved,
    /// The host path could not be resolved.
    Unverifiable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    pub mount: MountSpec,
    pub kind: ReachKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountVerdict {
    /// No mount can reach a protected socket.
    Clear,
    /// The first mount that can (then only an allowed image may run).
    Reaches(Reach),
}

#[derive(Clone, Debug, Default)]
pub struct SocketGate {
    sockets: Vec<ProtectedSocket>,
}

impl SocketGate {
    /// `sockets[0]` is the public socket (the one allowed images may mount); the others
    /// (the engine's own socket) are protected as well.
    pub fn new(sockets: Vec<ProtectedSocket>) -> Self {
        Self { sockets }
    }

    /// The public socket: the only host socket a container caller may mount.
    pub fn public(&self) -> Option<&ProtectedSocket> {
        self.sockets.first()
    }

    pub fn check(&self, mounts: &[MountSpec], host: &dyn HostPaths) -> MountVerdict {
        for m in mounts {
            if let Some(kind) = self.reach(m, host) {
                return MountVerdict::Reaches(Reach {
                    mount: m.clone(),
                    kind,
                });
            }
        }
        MountVerdict::Clear
    }

    fn reach(&self, m: &MountSpec, host: &dyn HostPaths) -> Option<ReachKind> {
        match m {
            MountSpec::Bind { source } => self.path_reach(source, host),
            MountSpec::Volume { options: None, .. } | MountSpec::VolumesFrom { .. } => {
                Some(ReachKind::Unresolved)
            }
            MountSpec::Volume {
                driver,
                options: Some(opts),
                ..
            } => {
                // Only the built-in local driver turns options into a host mount; a plugin
                // driver's options are its own business.
                if !(driver.is_empty() || driver == "local") {
                    return None;
                }
                let device = opts.get("device")?;
                let binds = opts.get("o").is_some_and(|o| {
                    o.split(',')
                        .any(|t| t.trim() == "bind" || t.trim() == "rbind")
                });
                if !binds {
                    return None;
                }
                let device = if device.starts_with('/') {
                    clean_path(device)
                } else {
                    clean_path(&format!("/{device}"))
                };
                self.path_reach(&device, host)
                    .map(|k| ReachKind::BindVolume(Box::new(k)))
            }
            MountSpec::NoHostPath => None,
        }
    }

    fn path_reach(&self, source: &str, host: &dyn HostPaths) -> Option<ReachKind> {
        let source = clean_path(source);
        if source == "/proc" || source.starts_with("/proc/") {
            return Some(ReachKind::ProcFs);
        }
        match host.resolve(Path::new(&source)) {
            HostPath::Exists { real, dev, ino, .. } => self.sockets.iter().find_map(|s| {
                if (s.dev, s.ino) == (dev, ino) {
                    Some(ReachKind::IsSocket)
                } else if s.real_path.starts_with(&real) {
                    Some(if s.real_path == real {
                        ReachKind::IsSocket
                    } else {
                        ReachKind::Ancestor
                    })
                } else {
                    None
                }
            }),
            HostPath::Missing => None,
            HostPath::Unknown => Some(ReachKind::Unverifiable),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A fake host: `/run/docker.sock` is the socket (dev 1, ino 42), `/var/run` → `/run`,
    /// `/tmp/link` → the socket, `/tmp/hard` is a hard link to it.
    struct FakeHost(HashMap<&'static str, HostPath>);

    impl FakeHost {
        fn new() -> Self {
            let e = |real: &str, ino| HostPath::Exists {
                real: real.into(),
                dev: 1,
                ino,
                socket: ino == 42,
            };
            Self(HashMap::from([
                ("/", e("/", 2)),
                ("/run", e("/run", 3)),
                ("/var", e("/var", 4)),
                ("/var/run", e("/run", 3)),
                ("/run/docker.sock", e("/run/docker.sock", 42)),
                ("/var/run/docker.sock", e("/run/docker.sock", 42)),
                ("/tmp/link", e("/run/docker.sock", 42)),
                ("/tmp/hard", e("/tmp/hard", 42)),
                ("/srv/data", e("/srv/data", 7)),
                ("/run/user", e("/run/user", 8)),
                ("/locked", HostPath::Unknown),
            ]))
        }
    }

    impl HostPaths for FakeHost {
        fn resolve(&self, path: &Path) -> HostPath {
            self.0
                .get(path.to_str().unwrap_or(""))
                .cloned()
                .unwrap_or(HostPath::Missing)
        }
    }

    fn gate() -> SocketGate {
        SocketGate::new(vec![ProtectedSocket {
            real_path: "/run/docker.sock".into(),
            dev: 1,
            ino: 42,
        }])
    }

    fn check_body(body: &str) -> MountVerdict {
        let b = decode_create_body(body.as_bytes()).unwrap();
        gate().check(&b.mounts(), &FakeHost::new())
    }

    #[test]
    fn gate_table() {
        // (create body, reaches?)
        let cases: &[(&str, bool)] = &[
            (r#"{"Image":"x"}"#, false),
            (
                r#"{"HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["/run/docker.sock:/s:ro"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["//var/run/./docker.sock/:/s"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["/var/run/../run/docker.sock:/s"]}}"#,
                true,
            ),
            (r#"{"HostConfig":{"Binds":["/var/run:/x"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/:/host"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/var:/host"]}}"#, false),
            (r#"{"HostConfig":{"Binds":["/tmp/link:/s"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/tmp/hard:/s"]}}"#, true),
            (
                r#"{"HostConfig":{"Binds":["/proc/1/root/run/docker.sock:/s"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["/srv/data:/data","/run/user:/u"]}}"#,
                false,
            ),
            (r#"{"HostConfig":{"Binds":["/locked:/x"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/new/dir:/x"]}}"#, false),
            (r#"{"HostConfig":{"Binds":["/data"]}}"#, false),
            (r#"{"HostConfig":{"Binds":["namedvol:/data"]}}"#, true),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/var/run/docker.sock","Target":"/s"}]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t"}]}}"#,
                false,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","Target":"/v"}]}}"#,
                false,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/run"}}}}]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Options":{"o":"ro,rbind","device":"/srv/data"}}}}]}}"#,
                false,
            ),
            (r#"{"HostConfig":{"VolumesFrom":["other:ro"]}}"#, true),
            // Go's rules: case-insensitive keys, Kelvin sign folds to K.
            (r#"{"hostconfig":{"binds":["/run:/x"]}}"#, true),
            (r#"{"HOSTCONFIG":{"BINDS":["/run:/x"]}}"#, true),
            (
                r#"{"HostConfig":{"mounts":[{"type":"bind","\u017Fource":"/run"}]}}"#,
                true,
            ),
            // Last duplicate wins...
            (
                r#"{"HostConfig":{"Binds":["/run:/x"],"binds":["/srv/data:/x"]}}"#,
                false,
            ),
            (
                r#"{"HostConfig":{"Binds":["/srv/data:/x"],"binds":["/run:/x"]}}"#,
                true,
            ),
            // ... but merges into what the first left: Type and Source survive a second Mounts.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/run","Target":"/a"}],"mounts":[{"Target":"/b"}]}}"#,
                true,
            ),
            // Stale elements between len and cap come back.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/run","Target":"/a"}],"mounts":[],"MOUNTS":[{"Target":"/b"}]}}"#,
                true,
            ),
            // null resets the slice, so nothing stale is left.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/run","Target":"/a"}],"mounts":null,"MOUNTS":[{"Type":"tmpfs","Target":"/b"}]}}"#,
                false,
            ),
            // A null string element keeps the old value.
            (
                r#"{"HostConfig":{"Binds":["/run:/x"],"binds":[null]}}"#,
                true,
            ),
            // Maps merge across duplicates.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","VolumeOptions":{"DriverConfig":{"Options":{"o":"bind"}}},"volumeoptions":{"driverconfig":{"options":{"device":"/run"}}}}]}}"#,
                true,
            ),
            // HostConfig null clears earlier binds.
            (
                r#"{"HostConfig":{"Binds":["/run:/x"]},"hostConfig":null}"#,
                false,
            ),
        ];
        for (body, want) in cases {
            let v = check_body(body);
            assert_eq!(
                matches!(v, MountVerdict::Reaches(_)),
                *want,
                "{body} -> {v:?}"
            );
        }
    }

    #[test]
    fn body_errors() {
        for bad in [
            "",
            "{",
            "[]x",
            r#"{"HostConfig":{"Binds":"/run:/x"}}"#,
            r#"{"HostConfig":{"Binds":[1]}}"#,
            r#"{"HostConfig":7}"#,
        ] {
            assert!(decode_create_body(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // Fields the gate does not read may hold anything.
        assert!(
            decode_create_body(br#"{"Image":"x","Cmd":[1,{"a":null}],"HostConfig":{"Memory":5}}"#)
                .is_ok()
        );
        assert_eq!(
            decode_create_body(br#"{"image":"a","Image":"b"}"#)
                .unwrap()
                .image,
            "b"
        );
    }

    #[test]
    fn exec_privileged_like_go() {
        for (body, want) in [
            (r#"{"Cmd":["true"]}"#, Ok(false)),
            (r#"{"Privileged":true}"#, Ok(true)),
            (r#"{"privileged":true}"#, Ok(true)),
            (r#"{"Privileged":true,"PRIVILEGED":null}"#, Ok(true)),
            (r#"{"Privileged":true,"privileged":false}"#, Ok(false)),
            (
                r#"{"Privileged":"yes"}"#,
                Err(BodyError::Type("Privileged")),
            ),
        ] {
            assert_eq!(decode_exec_privileged(body.as_bytes()), want, "{body}");
        }
        assert!(decode_exec_privileged(b"").is_err());
    }

    #[test]
    fn clean_path_like_go() {
        for (i, o) in [
            ("/", "/"),
            ("//a//b/", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/../x", "/x"),
            ("/a/..", "/"),
        ] {
            assert_eq!(clean_path(i), o, "{i}");
        }
    }

    #[test]
    fn inspect_mounts() {
        let body = br#"{"Id":"c1","Image":"sha256:abc","Config":{"Image":"docker:cli"},
            "State":{"Running":true,"Pid":42},"HostConfig":{"CgroupParent":"/ci"},
            "Mounts":[{"Type":"bind","Source":"/run/docker.sock","Destination":"/s"},
                      {"Type":"volume","Name":"v1","Source":"/var/lib/docker/volumes/v1/_data","Driver":"local"}]}"#;
        let c = decode_container_inspect(body).unwrap();
        assert_eq!(
            (c.id.as_str(), c.running, c.pid, c.cgroup_parent.as_str()),
            ("c1", true, 42, "/ci")
        );
        assert_eq!(c.image_id, "sha256:abc");
        assert_eq!(c.config_image, "docker:cli");
        assert_eq!(
            c.mounts[0],
            MountSpec::Bind {
                source: "/run/docker.sock".into()
            }
        );
        assert_eq!(
            c.mounts[1],
            MountSpec::Volume {
                name: "v1".into(),
                driver: "local".into(),
                options: None
            }
        );
        assert!(matches!(
            gate().check(&c.mounts, &FakeHost::new()),
            MountVerdict::Reaches(Reach {
                kind: ReachKind::IsSocket,
                ..
            })
        ));
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn decoder_never_panics(s in "\\PC{0,200}") {
                let _ = decode_create_body(s.as_bytes());
                let _ = decode_container_inspect(s.as_bytes());
            }

            #[test]
            fn clean_is_idempotent(s in "/[a-z./]{0,30}") {
                let once = clean_path(&s);
                prop_assert_eq!(clean_path(&once), once);
            }
        }
    }
}
