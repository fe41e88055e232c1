//! Prometheus metrics and health: one registry for the process, bumped by one call at each
//! decision point, and read by the HTTP endpoint ([`serve`]) as the text exposition format.
//!
//! One registry per agent, made by `run` and handed to each part that counts (sidecar, registry
//! refresher, reload, kernel denials, the HTTP endpoint) as an `Arc<Metrics>`: no global, so a
//! test or a second agent in one process counts only its own. Counters are atomics or small
//! label maps; the label values are bounded (verdicts, reason codes, command
//! names of the route table), so no series grows with traffic.
//!
//! A hand-written exposition: a dozen series do not need a metrics framework's dependency tree,
//! and the format (text 0.0.4) is small and stable.

pub mod serve;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use crate::verdict::Verdict;

/// Whether a refresh or a reload worked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

type AllowedCount = Box<dyn Fn() -> usize + Send + Sync>;

#[derive(Default)]
pub struct Metrics {
    /// Keyed by the command's static name: counting a request allocates nothing.
    requests: Mutex<BTreeMap<(Verdict, &'static str), u64>>,
    mount_decisions: Mutex<BTreeMap<(Verdict, &'static str), u64>>,
    kernel_denials: AtomicU64,
    /// By hook name (a bounded set): the kernel's failures, e.g. a new container cgroup whose
    /// verdict did not fit in the map.
    kernel_failures: Mutex<BTreeMap<&'static str, u64>>,
    refreshes: Mutex<BTreeMap<&'static str, u64>>,
    /// Unix seconds of the last refresh that resolved every entry; 0 = never.
    last_good_refresh: AtomicU64,
    allowed_digests: AtomicU64,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
    /// 1 when the last load of the settings (start or reload) was good.
    last_reload_good: AtomicBool,
    last_reload_time: AtomicU64,
    allowed_containers: OnceLock<AllowedCount>,
    health: Health,
}

/// What `/readyz` needs to know; set once by `eci-agent run` as it comes up.
#[derive(Default)]
pub struct Health {
    pub serving: AtomicBool,
    pub digests_tried: AtomicBool,
    pub kernel_enforcing: AtomicBool,
    pub kernel_waived: AtomicBool,
    pub dry_run: AtomicBool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    *map.entry(key).or_default() += 1;
}

impl Metrics {
    /// One sidecar request, as the pipeline decided it.
    pub fn request(&self, verdict: Verdict, command: Option<&'static str>) {
        bump(&self.requests, (verdict, command.unwrap_or("unknown")));
    }

    /// One socket-mount gate decision (`create`, `start`), with its reason code.
    pub fn mount_decision(&self, verdict: Verdict, reason: &'static str) {
        bump(&self.mount_decisions, (verdict, reason));
    }

    pub fn kernel_denial(&self) {
        self.kernel_denials.fetch_add(1, Ordering::Relaxed);
    }

    /// A program reported that it could not do its job (`hook`: an `eci_common::Hook` number).
    pub fn kernel_failure(&self, hook: u32) {
        let name = eci_common::Hook::from_u32(hook).map_or("unknown", eci_common::Hook::name);
        bump(&self.kernel_failures, name);
    }

    /// One registry refresh round: `failed` entries could not be resolved; `digests` are
    /// allowed now.
    pub fn registry_refresh(&self, failed: usize, digests: usize) {
        let outcome = if failed == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        bump(&self.refreshes, outcome.as_str());
        if outcome == Outcome::Success {
            self.last_good_refresh.store(now_secs(), Ordering::Relaxed);
        }
        self.allowed_digests
            .store(digests as u64, Ordering::Relaxed);
        self.health.digests_tried.store(true, Ordering::Relaxed);
    }

    /// A load of the settings file: the initial one (not counted as a reload) or a reload.
    pub fn settings_loaded(&self, outcome: Outcome, reload: bool) {
        if reload {
            bump(&self.reloads, outcome.as_str());
        }
        self.last_reload_good
            .store(outcome == Outcome::Success, Ordering::Relaxed);
        self.last_reload_time.store(now_secs(), Ordering::Relaxed);
    }

    /// Where the number of allowed containers comes from (read at scrape time).
    pub fn count_allowed_containers(&self, count: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.allowed_containers.set(Box::new(count));
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Why the agent is not ready, if it is not.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let h = &self.health;
        let mut why = Vec::new();
        if !h.serving.load(Ordering::Relaxed) {
            why.push("the sidecar is not serving yet");
        }
        if !h.digests_tried.load(Ordering::Relaxed) {
            why.push("the allowed digests have not been resolved once yet");
        }
        if !h.kernel_enforcing.load(Ordering::Relaxed) && !h.kernel_waived.load(Ordering::Relaxed) {
            why.push("kernel enforcement is not live");
        }
        why
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let h = &self.health;
        {
            let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            family(
                &mut out,
                "eci_requests_total",
                "counter",
                "Engine API requests through the sidecar, by verdict and docker command.",
            );
            for ((verdict, command), n) in requests.iter() {
                sample(
                    &mut out,
                    "eci_requests_total",
                    &[("verdict", verdict.as_str()), ("command", command)],
                    *n,
                );
            }
        }
        {
            let decisions = self
                .mount_decisions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            family(
                &mut out,
                "eci_socket_mount_decisions_total",
                "counter",
                "Socket-mount gate decisions at container create and start, by verdict and reason.",
            );
            for ((verdict, reason), n) in decisions.iter() {
                sample(
                    &mut out,
                    "eci_socket_mount_decisions_total",
                    &[("verdict", verdict.as_str()), ("reason", reason)],
                    *n,
                );
            }
        }
        family(
            &mut out,
            "eci_kernel_denials_total",
            "counter",
            "Accesses to a protected socket the kernel refused.",
        );
        sample(
            &mut out,
            "eci_kernel_denials_total",
            &[],
            self.kernel_denials.load(Ordering::Relaxed),
        );
        {
            let failures = self
                .kernel_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            family(
                &mut out,
                "eci_kernel_failures_total",
                "counter",
                "Reports of a kernel program that could not do its job (e.g. cgroup_mkdir: a new \
                 container cgroup's verdict did not fit in the full map), by hook.",
            );
            for (hook, n) in failures.iter() {
                sample(&mut out, "eci_kernel_failures_total", &[("hook", hook)], *n);
            }
        }
        outcome_family(
            &mut out,
            "eci_registry_refreshes_total",
            "Refreshes of the allowed digests; failure when any imageList entry could not be resolved.",
            &self.refreshes,
        );
        family(
            &mut out,
            "eci_registry_allowed_digests",
            "gauge",
            "Digests allowed now (pinned and resolved).",
        );
        sample(
            &mut out,
            "eci_registry_allowed_digests",
            &[],
            self.allowed_digests.load(Ordering::Relaxed),
        );
        let last = self.last_good_refresh.load(Ordering::Relaxed);
        if last != 0 {
            // Absent until one refresh resolved every entry: there is no age before that.
            family(
                &mut out,
                "eci_registry_digest_set_age_seconds",
                "gauge",
                "Seconds since every imageList entry was last resolved.",
            );
            sample(
                &mut out,
                "eci_registry_digest_set_age_seconds",
                &[],
                now_secs().saturating_sub(last),
            );
        }
        outcome_family(
            &mut out,
            "eci_policy_reloads_total",
            "Settings reloads (SIGHUP or file change); failure keeps the running policy.",
            &self.reloads,
        );
        family(
            &mut out,
            "eci_policy_last_reload_success",
            "gauge",
            "1 when the last load of the settings file succeeded.",
        );
        sample(
            &mut out,
            "eci_policy_last_reload_success",
            &[],
            u64::from(self.last_reload_good.load(Ordering::Relaxed)),
        );
        family(
            &mut out,
            "eci_policy_last_reload_timestamp_seconds",
            "gauge",
            "When the settings file was last loaded (or a load was refused).",
        );
        sample(
            &mut out,
            "eci_policy_last_reload_timestamp_seconds",
            &[],
            self.last_reload_time.load(Ordering::Relaxed),
        );
        family(
            &mut out,
            "eci_allowed_containers",
            "gauge",
            "Containers allowed to use the socket now.",
        );
        let allowed = self.allowed_containers.get().map_or(0, |count| count());
        sample(&mut out, "eci_allowed_containers", &[], allowed as u64);
        for (name, help, value) in [
            (
                "eci_kernel_enforcement",
                "1 when the BPF LSM programs enforce the verdicts.",
                &h.kernel_enforcing,
            ),
            (
                "eci_dry_run",
                "1 when decisions are logged and audited but nothing is refused.",
                &h.dry_run,
            ),
        ] {
            family(&mut out, name, "gauge", help);
            sample(
                &mut out,
                name,
                &[],
                u64::from(value.load(Ordering::Relaxed)),
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn outcome_family(
    out: &mut String,
    name: &str,
    help: &str,
    map: &Mutex<BTreeMap<&'static str, u64>>,
) {
    family(out, name, "counter", help);
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    // Both series always exist, so a rate() over failures works before the first failure.
    for outcome in [Outcome::Success, Outcome::Failure] {
        let n = map.get(outcome.as_str()).copied().unwrap_or(0);
        sample(out, name, &[("result", outcome.as_str())], n);
    }
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and line feed.
fn escape(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_labelled_counters_and_both_outcomes() {
        let m = Metrics::default();
        m.request(Verdict::Deny, Some("push"));
        m.request(Verdict::Deny, Some("push"));
        m.request(Verdict::Allow, None);
        m.mount_decision(Verdict::Deny, "image_not_allowed");
        m.registry_refresh(1, 3);
        m.settings_loaded(Outcome::Failure, true);
        m.count_allowed_containers(|| 2);
        let text = m.render();
        for line in [
            "eci_requests_total{verdict=\"deny\",command=\"push\"} 2",
            "eci_requests_total{verdict=\"allow\",command=\"unknown\"} 1",
            "eci_socket_mount_decisions_total{verdict=\"deny\",reason=\"image_not_allowed\"} 1",
            "eci_registry_refreshes_total{result=\"success\"} 0",
            "eci_registry_refreshes_total{result=\"failure\"} 1",
            "eci_registry_allowed_digests 3",
            "eci_policy_reloads_total{result=\"failure\"} 1",
            "eci_policy_last_reload_success 0",
            "eci_allowed_containers 2",
            "eci_kernel_denials_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        // No age before a refresh that resolved everything.
        assert!(!text.contains("eci_registry_digest_set_age_seconds "));
        m.registry_refresh(0, 3);
        assert!(m.render().contains("eci_registry_digest_set_age_seconds 0"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn ready_only_when_serving_resolved_and_enforcing_or_waived() {
        let m = Metrics::default();
        assert_eq!(m.not_ready().len(), 3);
        m.health().serving.store(true, Ordering::Relaxed);
        m.registry_refresh(0, 0);
        assert_eq!(m.not_ready(), ["kernel enforcement is not live"]);
        m.health().kernel_waived.store(true, Ordering::Relaxed);
        assert!(m.not_ready().is_empty());
    }
}
