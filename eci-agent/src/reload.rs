//! Settings reload: on SIGHUP and whenever the file changes on disk. A file that does not load
//! keeps the running policy, and says why.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::signal::unix::{SignalKind, signal};

use crate::{metrics::Outcome, registry::DigestCache};

/// How often the file is looked at. Editors replace files by rename, which inotify on the old
/// inode misses; a cheap stat of the path sees every kind of change.
const POLL: Duration = Duration::from_secs(1);

/// What identifies one version of the file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

/// Reloads `path` on SIGHUP or change, publishing each good version to `policy` and `digests`.
pub fn spawn(
    path: PathBuf,
    policy: Arc<DigestCache>,
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut last = stamp(&path);
        let mut tick = tokio::time::interval(POLL);
        loop {
            let why = tokio::select! {
                sig = hangup.recv() => match sig { Some(()) => "SIGHUP", None => break },
                _ = tick.tick() => {
                    let now = stamp(&path);
                    if now == last || now.is_none() {
                        continue;
                    }
                    last = now;
                    "file changed"
                }
            };
            match crate::settings::load(&path) {
                Ok(new) => {
                    for warning in &new.warnings {
                        tracing::warn!(settings = %path.display(), "{warning}");
                    }
                    if !new.eci_enabled {
                        tracing::warn!(settings = %path.display(), "enhancedContainerIsolation.value is false: socket mounts are not restricted and the command list does not apply");
                    }
                    tracing::info!(settings = %path.display(), why, "settings reloaded");
                    metrics.settings_loaded(Outcome::Success, true);
                    policy.set_settings(Arc::new(new));
                }
                Err(err) => {
                    metrics.settings_loaded(Outcome::Failure, true);
                    tracing::error!(
                        settings = %path.display(), why,
                        "reload refused, the running policy stays: {err}"
                    );
                }
            }
        }
    });
    Ok(())
}
