//! Judgements of one container can overlap: an engine event, a reload's judgement of every
//! container, a caller the table does not know yet, and a `start` each ask the engine, then
//! write what they found (table, kernel, connections). Each takes a ticket before it asks, and
//! a judgement is applied only if none asked after it was applied first: an answer that lands
//! late never undoes a newer one (a reload's denial undone by an event's allow judged before
//! the reload, or a container's new cgroup left by a "not running" asked before it started).

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::ids::ContainerId;

/// When a judgement asked the engine, relative to the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Default)]
pub struct JudgementOrder {
    next: AtomicU64,
    /// Container → the ticket of the judgement applied last.
    applied: Mutex<HashMap<ContainerId, Ticket>>,
}

/// Held while a judgement is written: no other judgement is checked or written meanwhile, so
/// the check and the writes are one step.
pub struct Applying<'a>(MutexGuard<'a, HashMap<ContainerId, Ticket>>);

impl Applying<'_> {
    /// `id` is gone: its entry goes too, so the map holds containers that exist.
    pub fn forget(mut self, id: &ContainerId) {
        self.0.remove(id);
    }
}

impl JudgementOrder {
    /// Taken before a judgement asks the engine anything.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether the judgement holding `ticket` may be written for `id` now (`None`: one asked
    /// later was written already, and this one is dropped).
    pub fn admit(&self, id: &ContainerId, ticket: Ticket) -> Option<Applying<'_>> {
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if applied.get(id).is_some_and(|last| *last > ticket) {
            return None;
        }
        applied.insert(id.clone(), ticket);
        Some(Applying(applied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContainerId {
        ContainerId::parse(&format!("{n:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn a_judgement_asked_before_the_last_applied_one_is_dropped() {
        let order = JudgementOrder::default();
        let (a, b) = (id(1), id(2));
        let older = order.ticket();
        let newer = order.ticket();
        assert!(order.admit(&a, newer).is_some());
        assert!(order.admit(&a, older).is_none(), "older, landing late");
        // Another container's order is its own; the same ticket again is no newer judgement
        // to lose to.
        assert!(order.admit(&b, older).is_some());
        assert!(order.admit(&a, newer).is_some());
        // Gone: forgotten, and a judgement of it applies again (the engine's 404 decides).
        order.admit(&a, order.ticket()).unwrap().forget(&a);
        assert!(order.admit(&a, older).is_some());
    }
}
