//! The registry edge: resolves imageList entries to the digests they allow, and keeps the last
//! good set in memory, refreshed in the background.
//!
//! - [`client`]: reqwest (rustls) client for the distribution API and token auth.
//! - [`DigestCache`]: the in-memory allowed set; a failed refresh keeps the previous digests of
//!   an entry, and an entry never resolved allows nothing.
#![forbid(unsafe_code)]

pub mod client;

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

pub use client::{RegistryClient, RegistryConfig};
use tokio::sync::{Notify, watch};

use crate::{
    policy::{
        image::{AllowedDigests, ImagePolicy},
        image_ref::{Digest, ImagePattern},
    },
    settings::{PolicySnapshot, Settings},
};

/// Default time between two background refreshes.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);

/// Why an entry could not be resolved this time.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: unauthorized (only anonymous pulls are supported)")]
    Unauthorized { url: String },
    #[error("{url}: rate limited{}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        url: String,
        retry_after: Option<Duration>,
    },
    #[error("{url}: bad digest {value:?}")]
    BadDigest { url: String, value: String },
    #[error("{url}: invalid JSON: {message}")]
    Json { url: String, message: String },
    #[error("{url}: manifest too large")]
    TooLarge { url: String },
    #[error("{url}: tag list pagination does not end")]
    TooManyPages { url: String },
    #[error("internal lock poisoned")]
    Poisoned,
}

/// Where allowed digests come from; a fake in tests, [`RegistryClient`] in production.
pub trait DigestSource: Send + Sync {
    /// The digests one entry allows now. An entry the registry does not know resolves to an
    /// empty set; an error means "could not ask" and keeps the previous set.
    fn resolve(
        &self,
        pattern: &ImagePattern,
    ) -> impl Future<Output = Result<BTreeSet<Digest>, RegistryError>> + Send;
}

/// The outcome of one refresh, for logs.
#[derive(Debug, Default)]
pub struct RefreshReport {
    pub resolved: Vec<(ImagePattern, usize)>,
    pub failed: Vec<(ImagePattern, String)>,
}

struct State {
    settings: Arc<Settings>,
    resolved: HashMap<ImagePattern, BTreeSet<Digest>>,
}

impl State {
    fn policy(&self) -> &ImagePolicy {
        &self.settings.policy.images
    }
}

impl State {
    fn snapshot(&self) -> PolicySnapshot {
        PolicySnapshot {
            settings: self.settings.clone(),
            digests: Arc::new(AllowedDigests::build(self.policy(), &self.resolved)),
        }
    }
}

/// The policy in force: the settings and the digests resolved for their imageList, published as
/// one [`PolicySnapshot`] to the sidecar, the gate and the kernel sync.
pub struct DigestCache {
    state: RwLock<State>,
    snapshot: watch::Sender<Arc<PolicySnapshot>>,
    wake: Notify,
}

impl DigestCache {
    pub fn new(settings: Arc<Settings>) -> Self {
        let state = State {
            settings,
            resolved: HashMap::new(),
        };
        let snapshot = watch::Sender::new(Arc::new(state.snapshot()));
        Self {
            state: RwLock::new(state),
            snapshot,
            wake: Notify::new(),
        }
    }

    /// The current allowed set (cheap: an `Arc` clone).
    pub fn allowed(&self) -> Arc<AllowedDigests> {
        self.snapshot.borrow().digests.clone()
    }

    /// Notified once per change of the settings or the allowed set, with both.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicySnapshot>> {
        self.snapshot.subscribe()
    }

    /// A settings reload: entries no longer listed are dropped at once, new ones allow nothing
    /// until resolved, and the background task is woken to resolve them. Readers see the new
    /// settings and the matching digests in one change.
    pub fn set_settings(&self, settings: Arc<Settings>) {
        if let Ok(mut st) = self.state.write() {
            let policy = &settings.policy.images;
            st.resolved.retain(|p, _| policy.patterns.contains(p));
            st.settings = settings;
            self.publish(&st);
        }
        self.wake.notify_one();
    }

    fn publish(&self, st: &State) {
        self.snapshot.send_replace(Arc::new(st.snapshot()));
    }

    /// Resolves every registry entry once. Failures keep that entry's last good digests.
    pub async fn refresh<S: DigestSource>(&self, source: &S) -> RefreshReport {
        let entries: Vec<ImagePattern> = match self.state.read() {
            Ok(st) => st.policy().registry_entries().cloned().collect(),
            Err(_) => return RefreshReport::default(),
        };
        let mut report = RefreshReport::default();
        let mut fresh = Vec::new();
        for p in entries {
            match source.resolve(&p).await {
                Ok(set) => {
                    report.resolved.push((p.clone(), set.len()));
                    fresh.push((p, set));
                }
                Err(e) => report.failed.push((p, e.to_string())),
            }
        }
        if let Ok(mut st) = self.state.write() {
            let mut changed = false;
            for (p, set) in fresh {
                // The policy may have changed while we were asking.
                if st.policy().patterns.contains(&p) && st.resolved.get(&p) != Some(&set) {
                    st.resolved.insert(p, set);
                    changed = true;
                }
            }
            // Only a change wakes the readers (each wake judges every running container).
            if changed {
                self.publish(&st);
            }
        }
        report
    }

    /// Refreshes now, then every `interval` and whenever the policy changes, until dropped.
    pub fn spawn_refresher<S: DigestSource + 'static>(
        self: Arc<Self>,
        source: Arc<S>,
        interval: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let report = self.refresh(source.as_ref()).await;
                for (p, n) in &report.resolved {
                    tracing::debug!(entry = %p, digests = n, "image list entry resolved");
                }
                for (p, e) in &report.failed {
                    tracing::warn!(entry = %p, error = %e, "image list entry not refreshed; keeping the last good digests");
                }
                let allowed = self.allowed();
                metrics.registry_refresh(report.failed.len(), allowed.len());
                tracing::info!(
                    digests = allowed.len(),
                    unresolved = allowed.unresolved().len(),
                    failed = report.failed.len(),
                    "allowed digests refreshed"
                );
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = self.wake.notified() => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A registry that answers from a table, or fails for everything when `down`.
    #[derive(Default)]
    struct Fake {
        table: Mutex<HashMap<ImagePattern, BTreeSet<Digest>>>,
        down: Mutex<bool>,
    }

    impl DigestSource for Fake {
        async fn resolve(&self, p: &ImagePattern) -> Result<BTreeSet<Digest>, RegistryError> {
            if *self.down.lock().unwrap() {
                return Err(RegistryError::Status {
                    url: "fake".into(),
                    status: 503,
                });
            }
            Ok(self
                .table
                .lock()
                .unwrap()
                .get(p)
                .cloned()
                .unwrap_or_default())
        }
    }

    fn d(n: u8) -> Digest {
        Digest::from_bytes([n; 32])
    }

    fn policy(entries: &[&str]) -> Arc<Settings> {
        let json = serde_json::json!({
            "configurationFileVersion": 2,
            "enhancedContainerIsolation": {"value": true, "dockerSocketMount": {
                "imageList": {"images": entries}}},
        });
        Arc::new(
            Settings::from_json_str(&json.to_string(), std::path::Path::new("/t.json")).unwrap(),
        )
    }

    #[tokio::test]
    async fn keeps_last_good_and_allows_nothing_unresolved() {
        let cli = ImagePattern::parse("docker:cli").unwrap();
        let pinned = format!("alpine@{}", d(9));
        let cache = DigestCache::new(policy(&["docker:cli", &pinned]));
        // Never resolved: only the pinned digest is allowed.
        assert!(cache.allowed().entry_for(&d(1)).is_none());
        assert!(cache.allowed().entry_for(&d(9)).is_some());
        assert_eq!(cache.allowed().unresolved(), std::slice::from_ref(&cli));

        let fake = Fake::default();
        *fake.down.lock().unwrap() = true;
        let r = cache.refresh(&fake).await;
        assert_eq!(r.failed.len(), 1);
        assert!(cache.allowed().entry_for(&d(1)).is_none());

        *fake.down.lock().unwrap() = false;
        fake.table
            .lock()
            .unwrap()
            .insert(cli.clone(), BTreeSet::from([d(1), d(2)]));
        let mut rx = cache.subscribe();
        cache.refresh(&fake).await;
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().digests.entry_for(&d(2)), Some(&cli));
        // The same answer again changes nothing, and wakes no one.
        cache.refresh(&fake).await;
        assert!(!rx.has_changed().unwrap());

        // Registry down after a good refresh: the last good set stays.
        *fake.down.lock().unwrap() = true;
        cache.refresh(&fake).await;
        assert!(cache.allowed().entry_for(&d(1)).is_some());

        // Reload without the entry: its digests go at once.
        let new = policy(&[&pinned]);
        cache.set_settings(new.clone());
        let snapshot = rx.borrow_and_update().clone();
        assert!(
            Arc::ptr_eq(&snapshot.settings, &new),
            "settings and digests in one change"
        );
        assert!(snapshot.digests.entry_for(&d(1)).is_none());
        assert!(cache.allowed().entry_for(&d(1)).is_none());
        assert!(cache.allowed().unresolved().is_empty());
    }
}
