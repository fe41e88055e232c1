//! Where enforcement is pinned under `--pin-dir` (bpffs), and removing it. Pins are what make
//! enforcement outlive the agent: a link whose last reference is its pin stays attached.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{
    error::{KernelError, Result},
    object::PROGRAMS,
};

/// Where things are pinned under `--pin-dir`.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.links_dir().join(program)
    }

    /// A symlink to the agent's cgroup directory, which `status` and `unload` join (`guard.rs`).
    pub fn agent_cgroup_record(&self) -> PathBuf {
        self.root.join("agent_cgroup")
    }

    /// Whether an agent has pinned programs here.
    pub fn is_loaded(&self) -> bool {
        PROGRAMS
            .iter()
            .any(|program| self.link(program.symbol).exists())
    }
}

/// Detaches the programs and removes every pin (maps, links, the directory itself). The kernel
/// releases a link whose last reference was its pin from a work queue, so the programs stop
/// running shortly after this returns, not at once.
pub fn unload(pins: &PinLayout) -> Result<bool> {
    let mut removed = false;
    for dir in [pins.links_dir(), pins.maps_dir()] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(KernelError::io("listing", &dir)(err)),
        };
        for entry in entries {
            let path = entry.map_err(KernelError::io("listing", &dir))?.path();
            fs::remove_file(&path).map_err(KernelError::io("removing", &path))?;
            removed = true;
        }
        fs::remove_dir(&dir).map_err(KernelError::io("removing", &dir))?;
    }
    remove_if_exists(&pins.agent_cgroup_record())?;
    match fs::remove_dir(pins.root()) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(KernelError::io("removing", pins.root())(err)),
    }
    Ok(removed)
}

/// Removes every link pin that is not one of [`PROGRAMS`] (a program an older agent pinned, or a
/// staging pin left by a crash), which detaches it.
pub(super) fn retire_stale_links(pins: &PinLayout) -> Result<()> {
    let dir = pins.links_dir();
    let entries = fs::read_dir(&dir).map_err(KernelError::io("listing", &dir))?;
    for entry in entries {
        let entry = entry.map_err(KernelError::io("listing", &dir))?;
        let name = entry.file_name();
        if !PROGRAMS
            .iter()
            .any(|p| name.as_encoded_bytes() == p.symbol.as_bytes())
        {
            remove_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

pub(super) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(KernelError::io("removing", path)(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_link_pins_are_retired_current_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let pins = PinLayout::new(root.path());
        fs::create_dir_all(pins.links_dir()).unwrap();
        for name in [
            "inode_permission",
            "file_receive_staging",
            "unix_stream_connect",
        ] {
            fs::write(pins.link(name), "").unwrap();
        }
        retire_stale_links(&pins).unwrap();
        let mut left: Vec<String> = fs::read_dir(pins.links_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["unix_stream_connect"]);
    }
}
