//! Images waiting for a free slot of their registry. A reconcile that finds every slot of its
//! registry taken leaves its resource name here and returns, instead of polling (polling left
//! slots idle between retries and cost a reconcile per image per retry); each reconcile that
//! gets its answer from the observer wakes one waiter of its registry through the Controller's
//! `reconcile_on` trigger. The newest waiter goes first, so a new pod's image is not queued
//! behind a cold start's backlog; every waiter also has a fallback requeue, so a lost wake-up
//! only delays it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::Stream;
use tokio::sync::mpsc;

use crate::core::lock::LockExt as _;

#[derive(Default)]
pub struct Waiting {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per registry, a stack of resource names (the newest on top).
    by_registry: HashMap<String, Vec<String>>,
    /// Every name on some stack: a name waits once.
    queued: HashSet<String>,
    wake: Option<mpsc::UnboundedSender<String>>,
}

impl Waiting {
    /// `name` waits for a slot of `registry`.
    pub fn park(&self, registry: &str, name: &str) {
        let mut inner = self.inner.locked();
        if inner.queued.insert(name.to_string()) {
            inner
                .by_registry
                .entry(registry.to_string())
                .or_default()
                .push(name.to_string());
        }
    }

    /// A slot of `registry` was freed: the newest waiter is reconciled next.
    pub fn wake_one(&self, registry: &str) {
        let mut guard = self.inner.locked();
        let inner = &mut *guard;
        let Some(stack) = inner.by_registry.get_mut(registry) else {
            return;
        };
        let mut next = None;
        while let Some(name) = stack.pop() {
            // Names reconciled meanwhile by another trigger left the queue already.
            if inner.queued.remove(&name) {
                next = Some(name);
                break;
            }
        }
        if stack.is_empty() {
            inner.by_registry.remove(registry);
        }
        if let (Some(name), Some(tx)) = (next, &inner.wake) {
            let _ = tx.send(name);
        }
    }

    /// `name` got its turn by another trigger (a watch event, its fallback requeue).
    pub fn unpark(&self, name: &str) {
        self.inner.locked().queued.remove(name);
    }

    /// How many images wait, over all registries.
    pub fn len(&self) -> usize {
        self.inner.locked().queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The names to reconcile now, for the Controller's trigger; a new subscription (a new
    /// leadership term's Controller) replaces the old one.
    pub fn subscribe(&self) -> impl Stream<Item = String> + Send + 'static {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.inner.locked().wake = Some(tx);
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn newest_waiter_first_once_each_per_registry() {
        let w = Waiting::default();
        let mut woken = w.subscribe();
        w.park("a", "one");
        w.park("a", "two");
        w.park("a", "one");
        w.park("b", "three");
        w.park("b", "four");
        w.unpark("four");
        assert_eq!(w.len(), 3);
        w.wake_one("a");
        w.wake_one("a");
        w.wake_one("a");
        w.wake_one("b");
        assert_eq!(woken.next().await.as_deref(), Some("two"));
        assert_eq!(woken.next().await.as_deref(), Some("one"));
        assert_eq!(woken.next().await.as_deref(), Some("three"));
        assert!(w.is_empty());
    }
}
