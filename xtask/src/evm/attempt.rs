//! Reading an eci VM boot's serial console, and the one retry a boot may get.
//!
//! A boot has two phases, told apart by the init's `evm: t=… workload start` marker (printed just
//! before it hands over to the suite or the bench). A failure of the machine before it — a kernel
//! panic, a timeout while the kernel or the engine comes up, the guest stopping on its own — says
//! nothing about the project and is retried once, loudly. Nothing after the marker is retried: a
//! failed case stays a failure, and so does a second failed boot.

use std::time::{Duration, Instant};

use super::boot::{self, Vm};

/// The label of the init's mark that ends the boot phase (`evm: t=<uptime> workload start`).
pub const WORKLOAD_START: &str = "workload start";

/// How long the boot phase may take: it takes 10–30 s under TCG on two busy cores, and the init
/// gives up by itself after ~155 s (dockerd 120 s, the registry 30 s), so its own error comes
/// first. Short enough that a hung first boot and its retry stay far inside CI's budget.
pub const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// Why a boot failed, and whether that may be retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The machine's failure before the workload started (see the module's comment).
    pub infrastructure: bool,
}

impl Failure {
    fn infrastructure(message: String) -> Self {
        Self {
            message,
            infrastructure: true,
        }
    }

    /// A failure of the suite or the bench, or of the project's own init: never retried.
    pub fn workload(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            infrastructure: false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One line of the console, or the guest's end.
pub enum Next {
    Line(String),
    Stopped,
}

/// `evm: t=<uptime> <label>` → (uptime as printed, label).
pub fn parse_mark(line: &str) -> Option<(&str, &str)> {
    line.strip_prefix("evm: t=")?.split_once(' ')
}

/// Whether an init error line is one of its readiness timeouts (`guest::wait_for`): the engine
/// or the registry too slow to come up, which is the machine's problem.
fn is_readiness_timeout(line: &str) -> bool {
    line.starts_with("init: error:") && line.contains("not ready after")
}

/// The console as a boot's phases see it.
pub struct Console<'a> {
    vm: &'a Vm,
    started: bool,
    boot_deadline: Instant,
    deadline: Instant,
    /// The init's error line, if it printed one before the workload started.
    init_error: Option<String>,
    /// (label, host seconds since QEMU started, guest uptime as printed) of every mark.
    pub marks: Vec<(String, f64, String)>,
}

impl<'a> Console<'a> {
    /// `limit` bounds the whole boot; the boot phase is bounded by [`BOOT_LIMIT`] as well.
    pub fn new(vm: &'a Vm, limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            vm,
            started: false,
            boot_deadline: now + BOOT_LIMIT.min(limit),
            deadline: now + limit,
            init_error: None,
            marks: Vec::new(),
        }
    }

    /// The next line; a panic or a timeout is a failure, classified by the phase it came in.
    pub fn next(&mut self) -> Result<Next, Failure> {
        let deadline = if self.started {
            self.deadline
        } else {
            self.boot_deadline
        };
        let line = match self.vm.next_line(deadline) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(Next::Stopped),
            Err(err) => {
                return Err(classify(
                    self.started,
                    format!(
                        "{err:#} ({})",
                        if self.started {
                            "after the workload started"
                        } else {
                            "while booting, before the workload started"
                        }
                    ),
                    true,
                ));
            }
        };
        if boot::is_panic(&line) {
            return Err(classify(
                self.started,
                format!("kernel panic: {line}"),
                true,
            ));
        }
        if let Some((uptime, label)) = parse_mark(&line) {
            self.marks
                .push((label.to_owned(), self.vm.elapsed(), uptime.to_owned()));
            if label == WORKLOAD_START {
                self.started = true;
            }
        } else if !self.started && line.starts_with("init: error:") {
            self.init_error = Some(line.clone());
        }
        Ok(Next::Line(line))
    }

    /// The failure for a guest that stopped before the caller had what it needed (`what`).
    pub fn stopped(&self, what: &str) -> Failure {
        stopped(self.started, self.init_error.as_deref(), what)
    }
}

/// A failure in phase `started`: only a machine failure before the workload is retryable.
fn classify(started: bool, message: String, machine: bool) -> Failure {
    if machine && !started {
        Failure::infrastructure(message)
    } else {
        Failure::workload(message)
    }
}

/// A guest that stopped early: before the workload it is the machine's fault unless the init
/// reported an error of its own (other than a readiness timeout).
fn stopped(started: bool, init_error: Option<&str>, what: &str) -> Failure {
    match init_error {
        Some(line) if !started => classify(
            started,
            format!("{what}: {line}"),
            is_readiness_timeout(line),
        ),
        _ => classify(
            started,
            format!(
                "{what} (the guest stopped {})",
                if started {
                    "after the workload started"
                } else {
                    "while booting, before the workload started"
                }
            ),
            true,
        ),
    }
}

/// Something a boot produced that may carry a failure.
pub trait Attempt {
    fn failure(&self) -> Option<&Failure>;
}

/// Runs `boot` once, and once more only if its failure is the machine's before the workload
/// started. Returns the last attempt and, when there was a retry, why.
pub fn with_one_retry<T: Attempt>(
    what: &str,
    mut boot: impl FnMut(u32) -> anyhow::Result<T>,
) -> anyhow::Result<(T, Option<String>)> {
    let first = boot(1)?;
    let reason = match first.failure() {
        Some(failure) if failure.infrastructure => failure.message.clone(),
        _ => return Ok((first, None)),
    };
    println!();
    println!(
        "xtask {what}: RETRYING the boot once: it failed before the workload started: {reason}"
    );
    println!();
    Ok((boot(2)?, Some(reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks() {
        assert_eq!(
            parse_mark("evm: t=10.05 engine ready"),
            Some(("10.05", "engine ready"))
        );
        assert_eq!(
            parse_mark("evm: t=3.1 workload start").map(|m| m.1),
            Some(WORKLOAD_START)
        );
        assert_eq!(parse_mark("evm: ready (agent pid 7)"), None);
    }

    #[test]
    fn machine_failures_retry_only_before_the_workload() {
        assert!(classify(false, "panic".into(), true).infrastructure);
        assert!(!classify(true, "panic".into(), true).infrastructure);
        assert!(!classify(false, "bad mode".into(), false).infrastructure);
    }

    #[test]
    fn a_stopped_guest_is_judged_by_its_phase_and_the_init_error() {
        assert!(stopped(false, None, "no summary").infrastructure);
        assert!(!stopped(true, None, "no summary").infrastructure);
        let timeout = "init: error: dockerd: not ready after 120 s";
        assert!(stopped(false, Some(timeout), "x").infrastructure);
        // The project's own init failing (a bad mount, a bad command line) is not the machine.
        let own = "init: error: mounting cgroup2 on /sys/fs/cgroup: EINVAL";
        assert!(!stopped(false, Some(own), "x").infrastructure);
        assert!(stopped(false, Some(own), "x").message.contains("EINVAL"));
    }

    struct Fake(Option<Failure>);

    impl Attempt for Fake {
        fn failure(&self) -> Option<&Failure> {
            self.0.as_ref()
        }
    }

    fn run(results: Vec<Option<Failure>>) -> (Option<Failure>, Option<String>, u32) {
        let mut results = results.into_iter();
        let mut boots = 0;
        let (last, why) = with_one_retry("test", |n| {
            boots = n;
            Ok(Fake(results.next().expect("no more boots planned")))
        })
        .unwrap();
        (last.0, why, boots)
    }

    #[test]
    fn retries_once_and_only_the_machine() {
        let infra = || Some(Failure::infrastructure("kernel panic: x".into()));
        let case = || Some(Failure::workload("a case failed"));
        assert_eq!(run(vec![None]), (None, None, 1));
        assert_eq!(run(vec![case()]), (case(), None, 1));
        assert_eq!(
            run(vec![infra(), None]),
            (None, Some("kernel panic: x".into()), 2)
        );
        // The second boot's failure stands, whatever it is: no third boot.
        assert_eq!(
            run(vec![infra(), infra()]),
            (infra(), Some("kernel panic: x".into()), 2)
        );
        assert_eq!(
            run(vec![infra(), case()]),
            (case(), Some("kernel panic: x".into()), 2)
        );
    }
}
