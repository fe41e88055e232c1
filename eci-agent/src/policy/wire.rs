//! The Engine API bodies the gate reads, decoded exactly as the engine decodes them: a
//! `POST /containers/create` body ([`decode_create_body`], Go's `encoding/json` rules from
//! [`super::go_json`]), an exec configuration ([`decode_exec_privileged`]) and the engine's own
//! view of a container (`GET /containers/{id}/json`, [`decode_container_inspect`]); and the
//! mounts they ask for, in the terms the gate judges ([`MountSpec`]).

use std::collections::BTreeMap;

use super::{
    go_json::{
        BodyError, GoJson, GoSlice, Res, dec_bool, dec_map, dec_opaque_structs, dec_ptr, dec_slice,
        dec_string, dec_strings, dec_strslice, dec_struct,
    },
    path_clean::path_clean,
};

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

/// `GET /exec/{id}/json`: the engine's own record of an exec, what starting it gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedExec {
    /// The container it runs in (`ContainerID`).
    pub container_id: String,
    /// `ProcessConfig.privileged`: created with `docker exec --privileged`.
    pub privileged: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ExecInspectJson {
    #[serde(rename = "ContainerID")]
    container_id: String,
    #[serde(rename = "ProcessConfig")]
    process_config: Option<ExecProcessJson>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ExecProcessJson {
    privileged: bool,
}

/// Decodes the engine's `GET /exec/{id}/json` (its own output, so plain serde).
pub fn decode_exec_inspect(body: &[u8]) -> Result<InspectedExec, BodyError> {
    let j: ExecInspectJson =
        serde_json::from_slice(body).map_err(|e| BodyError::Syntax(e.to_string()))?;
    Ok(InspectedExec {
        container_id: j.container_id,
        privileged: j.process_config.is_some_and(|p| p.privileged),
    })
}

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
                    source: path_clean(&m.source),
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
            source: path_clean(source),
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

/// The engine's own view of a container (`GET /containers/{id}/json`), for the check at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedContainer {
    /// The full container ID.
    pub id: String,
    /// `Name`, with the engine's leading `/`.
    pub name: String,
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
    name: String,
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
                source: path_clean(&m.source),
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
        name: j.name,
        running: state.running,
        pid: u32::try_from(state.pid).unwrap_or(0),
        cgroup_parent: j.host_config.map(|h| h.cgroup_parent).unwrap_or_default(),
        image_id: j.image,
        config_image: j.config.map(|c| c.image).unwrap_or_default(),
        mounts,
        host_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn decoder_never_panics(s in "\\PC{0,200}") {
                let _ = decode_create_body(s.as_bytes());
                let _ = decode_container_inspect(s.as_bytes());
            }
        }
    }
}
