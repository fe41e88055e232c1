//! CPU time from /proc: a process's own (utime + stime of all its threads) and the whole
//! machine's, so that a run can be charged to the processes it measures and thrown away when
//! other processes took a share of the machine during it.

use std::{fs, process::Command};

use anyhow::Context as _;

use crate::exec;

/// User plus system CPU time of a process (all its threads), in clock ticks.
pub fn process_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_process_ticks(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// utime + stime from a /proc/PID/stat line: fields 14 and 15, counted after the `)` that ends
/// the command name (which may itself hold spaces and parentheses).
fn parse_process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU time so far, all cores together, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineTicks {
    /// Every state but idle and iowait.
    pub busy: u64,
    pub total: u64,
}

impl MachineTicks {
    pub fn now() -> anyhow::Result<Self> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        parse_machine_ticks(&stat).context("parsing the cpu line of /proc/stat")
    }

    /// The share of the machine (0..=1) that processes other than `ours` used between `self`
    /// and `later`; `ours` is the ticks of the processes the run measured.
    pub fn others_share(self, later: Self, ours: u64) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        let busy = later.busy.saturating_sub(self.busy);
        busy.saturating_sub(ours) as f64 / total as f64
    }
}

/// The `cpu` line: user nice system idle iowait irq softirq steal (guest time is already in
/// user and nice).
fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some(MachineTicks {
        busy,
        total: busy + idle + iowait,
    })
}

pub fn clock_ticks_per_second() -> f64 {
    exec::stdout(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_are_utime_plus_stime() {
        let stat =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 0 0";
        assert_eq!(parse_process_ticks(stat), Some(325));
        assert_eq!(parse_process_ticks("garbage"), None);
    }

    #[test]
    fn machine_ticks_and_the_share_of_others() {
        let before = parse_machine_ticks("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(
            before,
            MachineTicks {
                busy: 150,
                total: 1000
            }
        );
        let after = parse_machine_ticks("cpu  200 0 100 1000 50 0 0 0 0 0\n").unwrap();
        // 150 busy ticks of 350, 120 of them ours: others took 30 / 350.
        assert!((before.others_share(after, 120) - 30.0 / 350.0).abs() < 1e-9);
        // Ours counted over a longer span than the machine's: never below zero.
        assert_eq!(before.others_share(after, 500), 0.0);
        assert_eq!(parse_machine_ticks("intr 1 2"), None);
    }
}
