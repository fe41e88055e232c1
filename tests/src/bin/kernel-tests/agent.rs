//! `kernel-tests agent PIN_DIR ENGINE PUBLIC`: the agent's kernel side through the same library
//! calls as `eci-agent run` (which also serves the sidecar; that is tested elsewhere). It serves
//! PUBLIC with a trivial accept loop, watches the engine path (the second line behind the kernel's
//! own tagging of re-created sockets), prints `agent: ready` and runs until killed.

use std::{path::PathBuf, process::ExitCode, thread, time::Duration};

use eci_agent::kernel::{
    enforce::{KernelConfig, enforce},
    sockets::{ProtectedPath, Refreshed, bind_protected},
};
use eci_common::CLASS_ENGINE;

use crate::fixture::{CGROUP_ROOT, CONTAINER_PARENT, TRUSTED};

pub fn main(args: &[String]) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            println!("agent: error: {err:#}");
            print_denials();
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let [pin_dir, engine, public] = args else {
        anyhow::bail!("usage: kernel-tests agent PIN_DIR ENGINE PUBLIC");
    };
    let cfg = KernelConfig {
        pin_dir: pin_dir.into(),
        cgroup_root: CGROUP_ROOT.into(),
        engine: engine.into(),
        trust: vec!["/".into(), TRUSTED.into()],
        container_parents: vec![CONTAINER_PARENT.into()],
    };
    let mut enforcer = enforce(&cfg)?;
    let listener = bind_protected(&PathBuf::from(public), &mut enforcer.maps)?;
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let mut engine = ProtectedPath::new(cfg.engine.clone(), CLASS_ENGINE, &mut enforcer.maps)?;
    println!("agent: ready");
    loop {
        thread::sleep(Duration::from_millis(100));
        match engine.refresh(&mut enforcer.maps)? {
            Refreshed::Unchanged => {}
            other => println!("agent: engine socket re-created: {other:?}"),
        }
    }
}

/// After a failure, what the programs denied (if they got that far) says why.
fn print_denials() {
    let pins = eci_agent::kernel::PinLayout::new(std::path::Path::new(crate::cases::PIN_DIR));
    let Ok(data) = aya::maps::MapData::from_pin(pins.map(eci_common::MAP_EVENTS)) else {
        return;
    };
    let Ok(map) = aya::maps::Map::from_map_data(data) else {
        return;
    };
    let Ok(mut ring) = aya::maps::RingBuf::try_from(map) else {
        return;
    };
    for event in eci_agent::kernel::events::drain(&mut ring) {
        println!("agent: denial {event:?}");
    }
}
