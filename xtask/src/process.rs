//! The one guard for the child processes xtask starts (daemons, QEMU, `cargo xtask run`): it
//! stops its child when dropped — whatever path the caller leaves by, an error included — by
//! the child's own pid or process group, never by name, and reaps it.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// How a child is asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL at once (QEMU: the guest's disk is a snapshot, nothing is lost).
    Kill,
    /// SIGTERM, then SIGKILL after the grace period (daemons that clean up after themselves).
    Term(Duration),
    /// SIGINT to the child's process group, as a terminal's Ctrl-C, then SIGKILL to the group
    /// after the grace period (the child must have been spawned with `process_group(0)`).
    InterruptGroup(Duration),
}

/// A child process that is stopped and reaped when the guard drops.
#[derive(Debug)]
pub struct Guarded {
    name: &'static str,
    child: Child,
    stop: Stop,
}

impl Guarded {
    /// Spawns `cmd` under a guard.
    pub fn spawn(name: &'static str, cmd: &mut Command, stop: Stop) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Self::new(name, child, stop))
    }

    /// Guards a child that is already running.
    pub fn new(name: &'static str, child: Child, stop: Stop) -> Self {
        Self { name, child, stop }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child itself (for its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status, if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `socket` accepts connections; fails if the child exits first (quoting `log`)
    /// or after `timeout`.
    pub fn wait_for_socket(
        &mut self,
        socket: &Path,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Some(status) = self.try_wait() {
                anyhow::bail!(
                    "{} exited ({status}): {}",
                    self.name,
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not listen on {} within {} s",
                    self.name,
                    socket.display(),
                    timeout.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Sends SIGINT to the child's process group, as a terminal's Ctrl-C does.
    pub fn interrupt_group(&self) {
        signal("-INT", &format!("-{}", self.pid()));
    }

    /// Stops the child as its [`Stop`] says (nothing if it has exited) and reaps it.
    pub fn stop(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        let pid = self.pid().to_string();
        let grace = match self.stop {
            Stop::Kill => None,
            Stop::Term(grace) => {
                signal("-TERM", &pid);
                Some(grace)
            }
            Stop::InterruptGroup(grace) => {
                self.interrupt_group();
                Some(grace)
            }
        };
        if let Some(grace) = grace {
            if self.wait_timeout(grace).is_some() {
                return;
            }
            println!(
                "xtask: {} did not stop within {} s; killing it",
                self.name,
                grace.as_secs()
            );
        }
        if self.stop == Stop::Kill || matches!(self.stop, Stop::Term(_)) {
            let _ = self.child.kill();
        } else {
            signal("-KILL", &format!("-{pid}"));
        }
        let _ = self.child.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `kill SIGNAL -- TARGET` (a pid, or `-PGID` for a process group).
fn signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg("--")
        .arg(target)
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_stops_and_reaps_its_child() {
        for stop in [Stop::Kill, Stop::Term(Duration::from_secs(5))] {
            let guard = Guarded::spawn("sleep", Command::new("sleep").arg("600"), stop).unwrap();
            let pid = guard.pid();
            drop(guard);
            // Reaped, so not even a zombie is left under this pid.
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{stop:?}");
        }
    }

    #[test]
    fn a_group_is_interrupted_as_a_whole() {
        use std::os::unix::process::CommandExt as _;
        let mut guard = Guarded::spawn(
            "sh",
            Command::new("sh")
                .args(["-c", "sleep 600; true"])
                .process_group(0),
            Stop::InterruptGroup(Duration::from_secs(5)),
        )
        .unwrap();
        assert_eq!(guard.try_wait(), None);
        guard.stop();
        assert!(guard.try_wait().is_some());
    }
}
