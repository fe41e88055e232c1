//! The engine's JSON → the typed facts the gate judges. The engine writes canonical keys, so
//! plain serde is enough here (unlike request bodies, which follow Go's lenient rules).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::{Digest, image::ImageFacts};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid engine JSON for {what}: {message}")]
    Json { what: &'static str, message: String },
    #[error("engine {what}: {value:?} is not a sha256 digest")]
    Digest { what: &'static str, value: String },
}

fn json<'a, T: Deserialize<'a>>(what: &'static str, body: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::Json {
        what,
        message: e.to_string(),
    })
}

fn digest(what: &'static str, value: &str) -> Result<Digest, DecodeError> {
    value.parse().map_err(|_| DecodeError::Digest {
        what,
        value: value.to_owned(),
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ImageJson {
    id: String,
    repo_digests: Vec<String>,
    #[serde(rename = "RootFS")]
    root_fs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RootFs {
    layers: Vec<String>,
}

/// Which image store the engine uses: it decides whether `RepoDigests` can be believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageStore {
    /// Graphdriver store: `RepoDigests` are written only by pull and push.
    GraphDriver,
    /// containerd store: `RepoDigests` are derived from names, which `docker load` and `docker
    /// tag` set freely, so they prove nothing.
    Containerd,
}

/// `GET /images/{name}/json` → what the image verdict needs.
pub fn image_facts(body: &[u8], store: ImageStore) -> Result<ImageFacts, DecodeError> {
    let j: ImageJson = json("image", body)?;
    let id = digest("image Id", &j.id)?;
    // `name@sha256:…`; anything else is not a recorded digest.
    let recorded: Vec<Digest> = j
        .repo_digests
        .iter()
        .filter_map(|rd| rd.rsplit_once('@'))
        .filter_map(|(_, d)| d.parse().ok())
        .collect();
    let layers = j
        .root_fs
        .map(|r| r.layers)
        .unwrap_or_default()
        .iter()
        .map(|l| digest("image RootFS layer", l))
        .collect::<Result<Vec<_>, _>>()?;
    let local_only = recorded.is_empty();
    Ok(ImageFacts {
        id,
        recorded_digests: match store {
            ImageStore::GraphDriver => recorded,
            ImageStore::Containerd => Vec::new(),
        },
        layers,
        local_only,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeJson {
    driver: String,
    options: Option<BTreeMap<String, String>>,
}

/// `GET /volumes/{name}` → (driver, driver options).
pub fn volume(body: &[u8]) -> Result<(String, BTreeMap<String, String>), DecodeError> {
    let j: VolumeJson = json("volume", body)?;
    Ok((j.driver, j.options.unwrap_or_default()))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListedContainer {
    id: String,
}

/// `GET /containers/json` → the running containers' ids.
pub fn running_ids(body: &[u8]) -> Result<Vec<String>, DecodeError> {
    let j: Vec<ListedContainer> = json("container list", body)?;
    Ok(j.into_iter().map(|c| c.id).collect())
}

/// What `GET /info` says about where containers and images live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    pub cgroup_driver: String,
    pub store: ImageStore,
    /// `DockerRootDir`: the engine's data root (the container-caller profile protects it).
    pub docker_root_dir: String,
    /// `CgroupVersion` (`1` or `2`; empty from engines before API 1.40, which are all v1): on
    /// v1 the engine's default cgroup namespace is the host's.
    pub cgroup_version: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InfoJson {
    cgroup_driver: String,
    driver_status: Vec<Vec<String>>,
    docker_root_dir: String,
    cgroup_version: String,
}

pub fn info(body: &[u8]) -> Result<EngineInfo, DecodeError> {
    let j: InfoJson = json("info", body)?;
    let containerd = j
        .driver_status
        .iter()
        .any(|kv| kv.len() == 2 && kv[0] == "driver-type" && kv[1].contains("snapshotter"));
    Ok(EngineInfo {
        cgroup_driver: j.cgroup_driver,
        docker_root_dir: j.docker_root_dir,
        cgroup_version: j.cgroup_version,
        store: if containerd {
            ImageStore::Containerd
        } else {
            ImageStore::GraphDriver
        },
    })
}

/// One line of `GET /events`: a container event's action and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    pub action: String,
    pub id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventJson {
    #[serde(rename = "Type")]
    typ: String,
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Actor")]
    actor: Option<ActorJson>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ActorJson {
    #[serde(rename = "ID")]
    id: String,
}

/// A container event, or `None` for other event types and unreadable lines.
pub fn container_event(line: &[u8]) -> Option<ContainerEvent> {
    let j: EventJson = serde_json::from_slice(line).ok()?;
    (j.typ == "container").then(|| ContainerEvent {
        action: j.action,
        id: j.actor.map(|a| a.id).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn image_facts_from_a_pulled_and_a_local_image() {
        let pulled = format!(
            r#"{{"Id":"{A}","RepoTags":["x:1"],"RepoDigests":["localhost:5000/x@{B}"],"RootFS":{{"Type":"layers","Layers":["{C}"]}}}}"#
        );
        let f = image_facts(pulled.as_bytes(), ImageStore::GraphDriver).unwrap();
        assert_eq!(f.id, A.parse().unwrap());
        assert_eq!(f.recorded_digests, vec![B.parse().unwrap()]);
        assert_eq!(f.layers, vec![C.parse().unwrap()]);
        assert!(!f.local_only);
        // The containerd store derives RepoDigests from names: not believed.
        let f = image_facts(pulled.as_bytes(), ImageStore::Containerd).unwrap();
        assert!(f.recorded_digests.is_empty());

        let local = format!(r#"{{"Id":"{A}","RepoDigests":[],"RootFS":{{"Layers":[]}}}}"#);
        let f = image_facts(local.as_bytes(), ImageStore::GraphDriver).unwrap();
        assert!(f.local_only && f.layers.is_empty());
    }

    #[test]
    fn bad_engine_json_is_an_error_not_a_pass() {
        assert!(image_facts(b"{", ImageStore::GraphDriver).is_err());
        assert!(image_facts(br#"{"Id":"busybox"}"#, ImageStore::GraphDriver).is_err());
        assert!(running_ids(b"{}").is_err());
    }

    #[test]
    fn container_events() {
        let e = container_event(
            br#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{}}}"#,
        )
        .unwrap();
        assert_eq!((e.action.as_str(), e.id.as_str()), ("start", "abc"));
        assert!(container_event(br#"{"Type":"network","Action":"connect"}"#).is_none());
    }

    #[test]
    fn info_detects_the_containerd_store() {
        let i = info(br#"{"CgroupDriver":"cgroupfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#).unwrap();
        assert_eq!(i.store, ImageStore::Containerd);
        let i =
            info(br#"{"CgroupDriver":"systemd","DriverStatus":[["Backing Filesystem","extfs"]]}"#)
                .unwrap();
        assert_eq!(
            (i.cgroup_driver.as_str(), i.store),
            ("systemd", ImageStore::GraphDriver)
        );
    }
}
