//! The audit log: one JSON line per refused request (and, when asked, per admitted one), and
//! one per access the kernel refused.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{admit::Decision, peer::Caller};

/// Where audit lines go; cheap to clone, shared by all connections.
#[derive(Clone)]
pub struct AuditLog {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    allowed_too: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("allowed_too", &self.allowed_too)
            .finish_non_exhaustive()
    }
}

pub use crate::verdict::Verdict;

/// One audited request.
pub struct Entry<'a> {
    pub caller: &'a Caller,
    pub method: &'a str,
    pub raw_target: &'a str,
    pub decision: &'a Decision,
    pub verdict: Verdict,
}

/// One access to a protected socket the kernel refused.
pub struct KernelDenial<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub cgroup_id: u64,
    /// The cgroup's path, when it still exists.
    pub cgroup: Option<&'a str>,
    pub container_id: Option<&'a str>,
    /// The protected socket's path, when the inode is one the agent protected by path.
    pub path: Option<&'a str>,
    pub dev: u64,
    pub ino: u64,
    pub hook: &'a str,
}

impl AuditLog {
    pub fn new(out: Box<dyn Write + Send>, allowed_too: bool) -> Self {
        Self {
            out: Arc::new(Mutex::new(out)),
            allowed_too,
        }
    }

    /// `-` is standard output; anything else a file appended to.
    pub fn open(target: &std::path::Path, allowed_too: bool) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = if target.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(target)?,
            )
        };
        Ok(Self::new(out, allowed_too))
    }

    pub fn record(&self, entry: &Entry<'_>) {
        if entry.verdict == Verdict::Allow && !self.allowed_too {
            return;
        }
        let Entry {
            caller,
            method,
            raw_target,
            decision,
            verdict,
        } = entry;
        let container = match &caller.kind {
            crate::ids::CallerKind::Container(id) => Some(id.as_str()),
            _ => None,
        };
        // serde_json escapes CR/LF and quotes, so an attacker's target cannot forge a line.
        let line = serde_json::json!({
            "time": rfc3339_now(),
            "pid": caller.pid,
            "cgroup": caller.cgroup,
            "container_id": container,
            "method": method,
            "target": raw_target,
            "route": decision.route,
            "command": decision.command,
            "verdict": verdict.as_str(),
            "rule": decision.rule.map(|r| r.to_string()),
            "reason": decision.reason,
        });
        self.write(&line);
    }

    /// A kernel denial: always recorded (there is no "allowed" counterpart).
    pub fn record_kernel_denial(&self, d: &KernelDenial<'_>) {
        let line = serde_json::json!({
            "time": rfc3339_now(),
            "source": "kernel",
            "pid": d.pid,
            "comm": d.comm,
            "cgroup_id": d.cgroup_id,
            "cgroup": d.cgroup,
            "container_id": d.container_id,
            "path": d.path,
            "dev": d.dev,
            "ino": d.ino,
            "hook": d.hook,
            "verdict": Verdict::Deny.as_str(),
            "reason": "kernel_denied",
        });
        self.write(&line);
    }

    fn write(&self, line: &serde_json::Value) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // One `write` per record: formatted straight into the file, a line is many small
        // writes, and an agent killed between them (or a second agent appending to the same
        // file) leaves a torn line that is not JSON.
        let mut text = line.to_string();
        text.push('\n');
        if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(%err, "cannot write the audit log");
        }
    }
}

/// UTC time with millisecond precision, e.g. `2026-05-07T21:09:36.123Z`.
fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Howard Hinnant's days-since-epoch → proleptic Gregorian date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the `write` calls it gets, as a file would see them.
    struct Writes(Arc<Mutex<Vec<usize>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_record_is_one_write() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let log = AuditLog::new(Box::new(Writes(writes.clone())), true);
        log.record_kernel_denial(&KernelDenial {
            pid: 7,
            comm: "sh",
            cgroup_id: 42,
            cgroup: Some("/docker/abc"),
            container_id: None,
            path: Some("/run/eci/engine.sock"),
            dev: 1,
            ino: 2,
            hook: "unix_stream_connect",
        });
        let writes = writes.lock().unwrap();
        assert_eq!(writes.len(), 1, "a record in {} writes", writes.len());
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
