//! `eci-agent status` and `eci-agent unload`: they work from the pins alone, with or without a
//! running agent. The pins are the agent's cgroup's alone (`guard.rs`), so both first move the
//! CLI into that cgroup: an admin shell may, a container may not.

use std::path::Path;

use eci_common::{CLASS_CGROUPS, CLASS_ENGINE, CLASS_PUBLIC, VERDICT_EXACT};

use super::{
    cgroup::CgroupTree,
    enforce::AGENT_CGROUP,
    error::Result,
    guard, lsm,
    maps::KernelMaps,
    object::PROGRAMS,
    pins::{self, PinLayout},
};

pub fn status(pin_dir: &Path) -> Result<()> {
    let pins = PinLayout::new(pin_dir);
    if pins.is_loaded() {
        join_agent(&pins)?;
    }
    let lsms = lsm::active_lsms().unwrap_or_else(|err| format!("unreadable: {err}"));
    println!(
        "BPF LSM active: {} ({})",
        lsm::lsm_list_has_bpf(&lsms),
        lsms
    );
    if !pins.is_loaded() {
        println!(
            "enforcement: off (no programs pinned under {})",
            pin_dir.display()
        );
        return Ok(());
    }
    for program in PROGRAMS {
        let state = if pins.link(program.symbol).exists() {
            "attached"
        } else {
            "MISSING"
        };
        println!(
            "program {} on {} ({:?}): {state}",
            program.symbol, program.target, program.attach
        );
    }
    let maps = KernelMaps::open_pinned(&pins)?;
    println!("protected sockets:");
    for (key, tag) in maps.protected() {
        println!(
            "  dev {} ino {}: {}",
            key.dev,
            key.ino,
            socket_class(tag.class)
        );
    }
    println!("protected names (the kernel tags whatever is created under one, at creation):");
    for name in maps.protected_names() {
        let now = match name.now {
            None => "nothing there now".to_owned(),
            Some((key, Some(tag))) => {
                format!("now ino {} tagged {}", key.ino, socket_class(tag.class))
            }
            Some((key, None)) => format!("now ino {} NOT TAGGED", key.ino),
        };
        println!(
            "  {}: {}; {now}",
            name.path.display(),
            socket_class(name.class)
        );
    }
    let tree = CgroupTree::open(Path::new("/sys/fs/cgroup"))
        .or_else(|_| CgroupTree::open(Path::new("/sys/fs/cgroup/unified")))
        .ok();
    println!("container parents (each new child cgroup starts denied):");
    for id in maps.container_parents() {
        let path = tree
            .as_ref()
            .and_then(|tree| tree.path_of(id))
            .map_or_else(|| "(gone)".to_owned(), |p| p.display().to_string());
        println!("  {id} {path}");
    }
    println!("cgroup verdicts (every other cgroup is denied):");
    for (id, verdict) in maps.verdicts() {
        let path = tree
            .as_ref()
            .and_then(|tree| tree.path_of(id))
            .map_or_else(|| "(gone)".to_owned(), |p| p.display().to_string());
        let scope = if verdict.flags & VERDICT_EXACT != 0 {
            " (this cgroup only)"
        } else {
            ""
        };
        println!("  {id} {path}: {}{scope}", class_names(verdict.classes));
    }
    println!("enforcement: on");
    Ok(())
}

pub fn unload(pin_dir: &Path) -> Result<()> {
    let pins = PinLayout::new(pin_dir);
    if pins.is_loaded() {
        join_agent(&pins)?;
    }
    // The agent's mode record sits beside the pins (see `state.rs`), in a guarded directory.
    let _ = std::fs::remove_file(crate::state::path(pin_dir));
    if pins::unload(&pins)? {
        println!(
            "eci-agent: programs detached, pins under {} removed",
            pin_dir.display()
        );
    } else {
        println!("eci-agent: nothing pinned under {}", pin_dir.display());
    }
    Ok(())
}

/// Acts as the agent: its pins are its cgroup's alone (`guard.rs`).
fn join_agent(pins: &PinLayout) -> Result<()> {
    match guard::join_agent_cgroup(pins, Path::new(AGENT_CGROUP))? {
        Some(dir) => tracing::debug!(cgroup = %dir.display(), "joined the agent's cgroup"),
        None => eprintln!(
            "eci-agent: no agent cgroup ({AGENT_CGROUP}) under /sys/fs/cgroup; the kernel refuses \
             the pins to any other cgroup"
        ),
    }
    Ok(())
}

/// What a protected socket's tag says it is.
fn socket_class(class: u32) -> String {
    match class {
        CLASS_PUBLIC => "public socket".to_owned(),
        CLASS_ENGINE => "engine socket".to_owned(),
        other => format!("class {other:#x}"),
    }
}

fn class_names(classes: u32) -> String {
    let mut names = Vec::new();
    if classes & CLASS_PUBLIC != 0 {
        names.push("public socket");
    }
    if classes & CLASS_ENGINE != 0 {
        names.push("engine socket");
    }
    if classes & CLASS_CGROUPS != 0 {
        names.push("cgroup changes");
    }
    if names.is_empty() {
        "deny".to_owned()
    } else {
        format!("allow {}", names.join(" + "))
    }
}
