//! Loads the programs, attaches them and pins maps and links under the pin directory (`pins.rs`), so that
//! enforcement outlives the agent (SIGKILL included) and a restarted agent adopts the state.
//!
//! Restart and upgrade without a gap: maps are opened from their pins when present (aya's
//! `map_pin_path` creates and pins them otherwise), so the verdicts and tags survive; each new
//! link is pinned under a temporary name and then renamed over the old pin, which detaches the
//! old program only after the new one is attached.

use std::{fs, path::PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, Lsm, links::FdLink},
};
use eci_common::{
    GLOBAL_OFFSETS, MAP_ADMISSION, MAP_APPROVALS, MAP_PROTECTED, MAP_PROTECTED_DIRS,
    MAP_PROTECTED_DIRS_INDEX, MAP_PROTECTED_INDEX, MAP_VERDICTS, MAPS,
};

use super::{
    btf,
    error::{KernelError, LoadError, Result},
    lsm,
    maps::KernelMaps,
    object::{Attach, OBJECT, PROGRAMS},
    pins::{self, PinLayout},
};

/// The programs and links one load attached (their kernel ids), which the guard records as the
/// agent's (`guard.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attached {
    pub progs: Vec<u32>,
    pub links: Vec<u32>,
}

/// Attached programs and their maps.
pub struct Enforcer {
    pub maps: KernelMaps,
    /// The ids of the programs and links this load attached, for the guard (`guard.rs`).
    pub attached: Attached,
    /// Kept for the ring buffer of events and so that the program fds live as long as we do.
    ebpf: Ebpf,
}

impl Enforcer {
    /// Loads, attaches and pins everything (adopting pinned maps), and returns the maps to fill.
    pub fn load(pins: &PinLayout) -> Result<Self> {
        if OBJECT.is_empty() {
            return Err(LoadError::NoObject.into());
        }
        let active = lsm::active_lsms().unwrap_or_default();
        if !lsm::lsm_list_has_bpf(&active) {
            return Err(LoadError::LsmInactive { active }.into());
        }
        for dir in [pins.maps_dir(), pins.links_dir()] {
            // Most often bpffs is not mounted on the pin directory's parent.
            fs::create_dir_all(&dir).map_err(KernelError::io("creating (on bpffs)", &dir))?;
        }
        let btf = Btf::from_sys_fs().map_err(|cause| KernelError::Btf {
            path: btf::VMLINUX.into(),
            cause: Box::new(cause),
        })?;
        // The programs' struct walks use the running kernel's member offsets (see eci-common's
        // KernelOffsets for why not compiled-in ones).
        let own_btf = btf::Btf::from_sys_fs().map_err(|cause| KernelError::Btf {
            path: btf::VMLINUX.into(),
            cause: Box::new(cause),
        })?;
        let offsets = btf::kernel_offsets(&own_btf).map_err(|cause| LoadError::Offsets {
            path: btf::VMLINUX,
            cause,
        })?;
        let map_paths: Vec<(&str, PathBuf)> =
            MAPS.iter().map(|name| (*name, pins.map(name))).collect();
        let mut loader = EbpfLoader::new();
        loader.btf(Some(&btf));
        loader.override_global(GLOBAL_OFFSETS, &offsets, true);
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|err| KernelError::Object(Box::new(err)))?;
        let mut attached = Attached::default();
        for &super::object::Program {
            symbol: program,
            target,
            attach,
        } in PROGRAMS
        {
            let refused = |cause| LoadError::Refused { program, cause };
            let missing = |what| KernelError::Missing {
                what,
                name: program.to_owned(),
            };
            let found = ebpf.program_mut(program).ok_or(missing("program"))?;
            let link: FdLink = match attach {
                Attach::Lsm => {
                    let lsm: &mut Lsm = found.try_into().map_err(|_| missing("LSM program"))?;
                    lsm.load(target, &btf).map_err(refused)?;
                    let link_id = lsm.attach().map_err(refused)?;
                    lsm.take_link(link_id)
                        .map_err(|cause| KernelError::Link { program, cause })?
                        .into()
                }
                Attach::BtfTracePoint => {
                    let tp: &mut BtfTracePoint = found
                        .try_into()
                        .map_err(|_| missing("BTF tracepoint program"))?;
                    tp.load(target, &btf).map_err(refused)?;
                    let link_id = tp.attach().map_err(refused)?;
                    tp.take_link(link_id)
                        .map_err(|cause| KernelError::Link { program, cause })?
                        .into()
                }
            };
            let info = link.info().map_err(|cause| KernelError::Info {
                object: format!("the {program} link"),
                cause: Box::new(cause),
            })?;
            attached.links.push(info.id());
            attached.progs.push(info.program_id());
            let pin = pins.link(program);
            // bpffs refuses names with a dot (EPERM), hence no ".new".
            let staging = pins.link(&format!("{program}_staging"));
            pins::remove_if_exists(&staging)?;
            link.pin(&staging).map_err(|cause| KernelError::Pin {
                program,
                path: staging.clone(),
                cause,
            })?;
            fs::rename(&staging, &pin)
                .map_err(KernelError::io("replacing the pinned link", &pin))?;
        }
        // Only now, with every program of this object attached: a program an older agent pinned
        // and this one no longer has would otherwise stay attached for good.
        pins::retire_stale_links(pins)?;
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name).ok_or_else(|| KernelError::Missing {
                what: "map",
                name: name.to_owned(),
            })
        };
        let maps = KernelMaps::from_maps(
            take(&mut ebpf, MAP_PROTECTED)?,
            take(&mut ebpf, MAP_PROTECTED_INDEX)?,
            take(&mut ebpf, MAP_VERDICTS)?,
            take(&mut ebpf, MAP_ADMISSION)?,
            take(&mut ebpf, MAP_PROTECTED_DIRS)?,
            take(&mut ebpf, MAP_PROTECTED_DIRS_INDEX)?,
            take(&mut ebpf, MAP_APPROVALS)?,
        )?;
        Ok(Self {
            maps,
            attached,
            ebpf,
        })
    }

    /// The ring buffer of denials (taken once).
    pub fn take_events(&mut self) -> Option<aya::maps::Map> {
        self.ebpf.take_map(eci_common::MAP_EVENTS)
    }
}
