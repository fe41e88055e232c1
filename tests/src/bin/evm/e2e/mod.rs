//! `evm e2e`: the end-to-end suite, inside the eci VM, against the real engine, registry, docker
//! CLI, agent and kernel. The init has started dockerd, the registry and the channel relay; the
//! suite makes its images (no network), starts the agent itself (it kills and restarts it), runs
//! the cases in order (later cases build on the containers earlier ones left), and prints one
//! line per case: `eci-e2e <name> => ok | FAILED <why> | pending <why>`.
//!
//! `pending` is for a case that needs agent work not yet on main (see [`Needs`]): it is reported
//! but not counted as a failure, until that work lands and the escape is removed here.

mod cases;
mod fixture;

use std::{process::ExitCode, time::Instant};

use fixture::Suite;

/// Agent features a case depends on that main does not have yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// The sidecar's socket-mount gate at create and start (403 with the ECI message).
    Gate,
    /// Container → kernel verdicts: allowed containers' cgroups reach the public socket,
    /// re-judged on reload.
    VerdictSync,
}

impl Needs {
    /// What is still missing on main. Empty this list as the features land.
    const PENDING: &[Needs] = &[Needs::Gate, Needs::VerdictSync];

    /// The features `needs` still lacks on main, or None when it lacks none.
    fn pending(needs: &[Needs]) -> Option<Vec<Needs>> {
        let missing: Vec<Needs> = needs
            .iter()
            .copied()
            .filter(|n| Self::PENDING.contains(n))
            .collect();
        (!missing.is_empty()).then_some(missing)
    }
}

/// One case: a name for the table, what it needs, and the check.
pub struct Case {
    pub name: &'static str,
    pub needs: &'static [Needs],
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
    let (mut passed, mut failed, mut pending) = (0, 0, 0);
    for case in cases::ALL {
        let case_started = Instant::now();
        let result = (case.run)(&mut suite);
        let secs = case_started.elapsed().as_secs_f64();
        match (result, Needs::pending(case.needs)) {
            (Ok(()), _) => {
                passed += 1;
                println!("eci-e2e {} => ok ({secs:.1} s)", case.name);
            }
            (Err(err), Some(needs)) => {
                pending += 1;
                println!(
                    "eci-e2e {} => pending (needs {}, not on main yet): {}",
                    case.name,
                    needs
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join("+"),
                    one_line(&format!("{err:#}"))
                );
            }
            (Err(err), None) => {
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
        "eci-e2e: {passed} passed, {failed} failed, {pending} pending in {:.0} s",
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
