//! The containers currently allowed to use the socket, shared by the gate (which adds and
//! removes them), the sidecar (which serves only them among container callers, and closes their
//! connections when they are revoked) and the kernel sync.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use tokio::sync::watch;

use crate::ids::ContainerId;

/// Why a container is allowed, for logs and `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedContainer {
    /// The image name as the container was created with it.
    pub image: String,
    /// The rule that allowed it (`"*"`, an imageList entry, derived from …, ECI off).
    pub rule: String,
}

struct Entry {
    info: AllowedContainer,
    /// Flipped to `true` when the container loses its allowance: its connections end.
    revoked: watch::Sender<bool>,
}

#[derive(Default)]
pub struct ContainerTable {
    allowed: RwLock<HashMap<ContainerId, Entry>>,
}

impl ContainerTable {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn allow(&self, id: ContainerId, info: AllowedContainer) {
        if let Ok(mut map) = self.allowed.write() {
            match map.get_mut(&id) {
                Some(entry) => entry.info = info,
                None => {
                    map.insert(
                        id,
                        Entry {
                            info,
                            revoked: watch::Sender::new(false),
                        },
                    );
                }
            }
        }
    }

    /// Removes `id`; its open sidecar connections are told to close. Returns whether it was
    /// allowed.
    pub fn revoke(&self, id: &ContainerId) -> bool {
        let removed = self.allowed.write().ok().and_then(|mut map| map.remove(id));
        match removed {
            Some(entry) => {
                entry.revoked.send_replace(true);
                true
            }
            None => false,
        }
    }

    pub fn is_allowed(&self, id: &ContainerId) -> bool {
        self.allowed.read().is_ok_and(|map| map.contains_key(id))
    }

    /// A receiver that turns `true` when `id` is revoked; `None` when `id` is not allowed now.
    pub fn watch(&self, id: &ContainerId) -> Option<watch::Receiver<bool>> {
        self.allowed
            .read()
            .ok()?
            .get(id)
            .map(|entry| entry.revoked.subscribe())
    }

    pub fn snapshot(&self) -> Vec<(ContainerId, AllowedContainer)> {
        self.allowed
            .read()
            .map(|map| {
                map.iter()
                    .map(|(id, e)| (id.clone(), e.info.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> ContainerId {
        ContainerId::parse(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn revoking_tells_every_watcher_once() {
        let table = ContainerTable::new();
        assert!(table.watch(&id('a')).is_none());
        table.allow(
            id('a'),
            AllowedContainer {
                image: "x".into(),
                rule: "*".into(),
            },
        );
        let mut w = table.watch(&id('a')).unwrap();
        assert!(table.is_allowed(&id('a')));
        assert!(!*w.borrow_and_update());
        assert!(table.revoke(&id('a')));
        assert!(*w.borrow_and_update());
        assert!(!table.is_allowed(&id('a')));
        assert!(!table.revoke(&id('a')));
    }
}
