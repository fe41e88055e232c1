//! What a running agent tells `eci-agent status`: its mode, its pid and whether the kernel
//! enforces. Kept beside the pins, as a symlink whose target is the record (`mode=dry-run
//! pid=123 kernel=on`): bpffs holds pins, directories and symlinks, but no regular files, and a
//! symlink is replaced atomically by a rename.
//!
//! The record says what the agent was started with; the pins say what the kernel enforces.
//! `status` reads both, and checks that the pid still runs.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
};

/// How the agent treats what the policy refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Refuse it.
    Enforce,
    /// Log and audit it, refuse nothing (`--dry-run`).
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }
}

/// The running agent's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentState {
    pub mode: Mode,
    pub pid: u32,
    /// The BPF LSM programs are loaded and the agent's verdicts are in force (false with
    /// `--allow-no-lsm` when the kernel could not enforce).
    pub kernel: bool,
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode={} pid={} kernel={}",
            self.mode.as_str(),
            self.pid,
            if self.kernel { "on" } else { "off" }
        )
    }
}

impl AgentState {
    pub fn parse(s: &str) -> Option<Self> {
        let (mut mode, mut pid, mut kernel) = (None, None, None);
        for field in s.split_whitespace() {
            match field.split_once('=')? {
                ("mode", "enforce") => mode = Some(Mode::Enforce),
                ("mode", "dry-run") => mode = Some(Mode::DryRun),
                ("pid", n) => pid = n.parse().ok(),
                ("kernel", "on") => kernel = Some(true),
                ("kernel", "off") => kernel = Some(false),
                _ => {}
            }
        }
        Some(Self {
            mode: mode?,
            pid: pid?,
            kernel: kernel?,
        })
    }

    /// Whether the recorded process still runs (in this pid namespace; a reused pid would
    /// fool it, which is why `status` says "pid N running", not more).
    pub fn running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// Where the record lives (bpffs refuses names with a dot).
pub fn path(pin_dir: &Path) -> PathBuf {
    pin_dir.join("agent_state")
}

/// Records `state`, creating the pin directory if the kernel side did not.
pub fn write(pin_dir: &Path, state: &AgentState) -> io::Result<()> {
    fs::create_dir_all(pin_dir)?;
    let tmp = pin_dir.join(format!("agent_state_{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(state.to_string(), &tmp)?;
    fs::rename(&tmp, path(pin_dir))
}

pub fn read(pin_dir: &Path) -> Option<AgentState> {
    let target = fs::read_link(path(pin_dir)).ok()?;
    AgentState::parse(&target.to_string_lossy())
}

/// Removes the record, and the pin directory with it when nothing else is pinned there.
pub fn clear(pin_dir: &Path) {
    let _ = fs::remove_file(path(pin_dir));
    let _ = fs::remove_dir(pin_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins");
        let state = AgentState {
            mode: Mode::DryRun,
            pid: std::process::id(),
            kernel: false,
        };
        write(&pins, &state).unwrap();
        assert_eq!(
            fs::read_link(path(&pins)).unwrap().to_string_lossy(),
            format!("mode=dry-run pid={} kernel=off", std::process::id())
        );
        assert_eq!(read(&pins), Some(state));
        clear(&pins);
        assert!(!pins.exists());
        assert_eq!(AgentState::parse("mode=bogus pid=1 kernel=on"), None);
        assert_eq!(AgentState::parse("garbage"), None);
    }
}
