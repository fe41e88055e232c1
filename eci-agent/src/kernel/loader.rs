//! Loads the programs, attaches them and pins maps and links under the pin directory, so that
//! enforcement outlives the agent (SIGKILL included) and a restarted agent adopts the state.
//!
//! Restart and upgrade without a gap: maps are opened from their pins when present (aya's
//! `map_pin_path` creates and pins them otherwise), so the verdicts and tags survive; each new
//! link is pinned under a temporary name and then renamed over the old pin, which detaches the
//! old program only after the new one is attached.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, Lsm, links::FdLink},
};
use eci_common::{
    GLOBAL_OFFSETS, MAP_ADMISSION, MAP_PROTECTED, MAP_PROTECTED_DIRS, MAP_PROTECTED_DIRS_INDEX,
    MAP_PROTECTED_INDEX, MAP_VERDICTS, MAPS,
};

use super::{
    btf,
    maps::KernelMaps,
    object::{Attach, OBJECT, PROGRAMS},
};

/// Why the programs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary was built with `AYA_BUILD_SKIP=1`.
    #[error(
        "this eci-agent was built without its BPF object (AYA_BUILD_SKIP); build it with `cargo xtask build`"
    )]
    NoObject,
    /// `bpf` is not among the active LSMs.
    #[error(
        "BPF LSM is not active on this kernel (/sys/kernel/security/lsm: {active:?}); boot with `lsm=...,bpf` on the kernel command line"
    )]
    LsmInactive { active: String },
    /// The running kernel's BTF lacks a struct member the programs walk (or has it with another
    /// type): the programs would read the wrong memory, so they are not loaded at all.
    #[error(
        "this kernel's BTF ({path}) does not give the layout the programs need: {source}; eci-agent cannot enforce on this kernel"
    )]
    Offsets {
        path: &'static str,
        #[source]
        source: btf::BtfError,
    },
    /// The kernel refused to load or attach a program.
    #[error(
        "this kernel refused the BPF LSM program {program} ({source}); it cannot enforce here: use a kernel with BPF LSM (or `cargo xtask run --vm`)"
    )]
    Refused {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

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

    /// Whether an agent has pinned programs here.
    pub fn is_loaded(&self) -> bool {
        PROGRAMS
            .iter()
            .any(|program| self.link(program.symbol).exists())
    }
}

/// Attached programs and their maps.
pub struct Enforcer {
    pub maps: KernelMaps,
    /// Kept for the ring buffer of events and so that the program fds live as long as we do.
    ebpf: Ebpf,
}

impl Enforcer {
    /// Loads, attaches and pins everything (adopting pinned maps), and returns the maps to fill.
    pub fn load(pins: &PinLayout) -> anyhow::Result<Self> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject.into());
        }
        let active = super::probe::active_lsms().unwrap_or_default();
        if !super::probe::lsm_list_has_bpf(&active) {
            return Err(LoadError::LsmInactive { active }.into());
        }
        for dir in [pins.maps_dir(), pins.links_dir()] {
            fs::create_dir_all(&dir).with_context(|| {
                format!(
                    "creating {} (is bpffs mounted on its parent?)",
                    dir.display()
                )
            })?;
        }
        let btf =
            Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
        // The struct walks of every program but inode_permission use the running kernel's member
        // offsets (see eci-common's KernelOffsets for why not compiled-in ones).
        let offsets = btf::kernel_offsets(&btf::Btf::from_sys_fs()?).map_err(|source| {
            LoadError::Offsets {
                path: btf::VMLINUX,
                source,
            }
        })?;
        let map_paths: Vec<(&str, PathBuf)> =
            MAPS.iter().map(|name| (*name, pins.map(name))).collect();
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf));
        loader.override_global(GLOBAL_OFFSETS, &offsets, true);
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).context("loading the BPF object")?;
        for &super::object::Program {
            symbol: program,
            target,
            attach,
        } in PROGRAMS
        {
            let refused = |source| LoadError::Refused { program, source };
            let found = ebpf
                .program_mut(program)
                .with_context(|| format!("program {program} is missing from the BPF object"))?;
            let link: FdLink = match attach {
                Attach::Lsm => {
                    let lsm: &mut Lsm = found
                        .try_into()
                        .with_context(|| format!("program {program} is not an LSM program"))?;
                    lsm.load(target, &btf).map_err(refused)?;
                    let link_id = lsm.attach().map_err(refused)?;
                    lsm.take_link(link_id).context("taking the link")?.into()
                }
                Attach::BtfTracePoint => {
                    let tp: &mut BtfTracePoint = found.try_into().with_context(|| {
                        format!("program {program} is not a BTF tracepoint program")
                    })?;
                    tp.load(target, &btf).map_err(refused)?;
                    let link_id = tp.attach().map_err(refused)?;
                    tp.take_link(link_id).context("taking the link")?.into()
                }
            };
            let pin = pins.link(program);
            // bpffs refuses names with a dot (EPERM), hence no ".new".
            let staging = pins.link(&format!("{program}_staging"));
            remove_if_exists(&staging)?;
            link.pin(&staging)
                .with_context(|| format!("pinning the {program} link at {}", staging.display()))?;
            fs::rename(&staging, &pin)
                .with_context(|| format!("replacing the pinned link {}", pin.display()))?;
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} is missing from the BPF object"))
        };
        let maps = KernelMaps::from_maps(
            take(&mut ebpf, MAP_PROTECTED)?,
            take(&mut ebpf, MAP_PROTECTED_INDEX)?,
            take(&mut ebpf, MAP_VERDICTS)?,
            take(&mut ebpf, MAP_ADMISSION)?,
            take(&mut ebpf, MAP_PROTECTED_DIRS)?,
            take(&mut ebpf, MAP_PROTECTED_DIRS_INDEX)?,
        )?;
        Ok(Self { maps, ebpf })
    }

    /// The ring buffer of denials (taken once).
    pub fn take_events(&mut self) -> Option<aya::maps::Map> {
        self.ebpf.take_map(eci_common::MAP_EVENTS)
    }
}

/// Detaches the programs and removes every pin (maps, links, the directory itself). The kernel
/// releases a link whose last reference was its pin from a work queue, so the programs stop
/// running shortly after this returns, not at once.
pub fn unload(pins: &PinLayout) -> anyhow::Result<bool> {
    let mut removed = false;
    for dir in [pins.links_dir(), pins.maps_dir()] {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let path = entry?.path();
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed = true;
        }
        fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    match fs::remove_dir(pins.root()) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", pins.root().display())),
    }
    Ok(removed)
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}
