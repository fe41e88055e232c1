//! `evm e2e`: the end-to-end suite, inside the eci VM, against the real engine, registry, docker
//! CLI, agent and kernel. The init has started dockerd, the registry and the channel relay; the
//! suite makes its images (no network), starts the agent itself (it kills and restarts it), runs
//! the cases in order (later cases build on the containers earlier ones left), and prints one
//! line per case: `eci-e2e <name> => ok | FAILED <why>`.

mod cases;
pub mod fixture;

use std::{process::ExitCode, time::Instant};

use fixture::Suite;

/// One case: a name for the table and the check.
pub struct Case {
    pub name: &'static str,
    pub run: fn(&mut Suite) -> anyhow::Result<()>,
}

pub fn main() -> std::process::ExitCode {
    let started = Instant::now();
    let mut suite = match Suite::set_up() {
        Ok(suite) => suite,
        Err(err) => {
            println!("eci-e2e: set-up failed: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    crate::guest::mark("e2e set-up done");
    let (mut passed, mut failed) = (0, 0);
    for case in cases::ALL {
        let case_started = Instant::now();
        let result = (case.run)(&mut suite);
        let secs = case_started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                passed += 1;
                println!("eci-e2e {} => ok ({secs:.1} s)", case.name);
            }
            Err(err) => {
                failed += 1;
                println!(
                    "eci-e2e {} => FAILED {}",
                    case.name,
                    one_line(&format!("{err:#}"))
                );
            }
        }
    }
    suite.tear_down();
    println!(
        "eci-e2e: {passed} passed, {failed} failed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn one_line(text: &str) -> String {
    let flat: String = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if flat.len() > 600 {
        format!("{}…", &flat[..flat.floor_char_boundary(600)])
    } else {
        flat
    }
}
