//! Tags resolved in the background for the inventory: a container whose `imageID` carries no
//! manifest digest (a locally loaded image: `sha256:<config>`) names a tag, whose digest one
//! HEAD request to the registry tells. Resolutions run concurrently in tasks of their own and
//! are cached for the TTL, so no image's write ever waits for another image's registry.

use crate::lock::LockExt as _;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use crate::image::{ImageId, ImageRef};
use crate::observer::Observer;

/// Tag resolutions in flight at once.
const IN_FLIGHT: usize = 8;

pub struct TagResolver {
    observer: Arc<Observer>,
    ttl: Duration,
    state: Mutex<State>,
    slots: Semaphore,
    /// Told after every resolution that found a digest (the inventory runs again).
    resolved: Arc<Notify>,
    /// Told whenever the last resolution in flight ends.
    idle: Notify,
}

#[derive(Default)]
struct State {
    cache: HashMap<ImageRef, (ImageId, DateTime<Utc>)>,
    in_flight: HashSet<ImageRef>,
}

impl TagResolver {
    pub fn new(observer: Arc<Observer>, ttl: Duration) -> Arc<Self> {
        Arc::new(TagResolver {
            observer,
            ttl,
            state: Mutex::default(),
            slots: Semaphore::new(IN_FLIGHT),
            resolved: Arc::new(Notify::new()),
            idle: Notify::new(),
        })
    }

    /// The digest of `tag` if known and fresh; otherwise starts resolving it (once) and answers
    /// `None` at once.
    pub fn lookup(self: &Arc<Self>, tag: &ImageRef, now: DateTime<Utc>) -> Option<ImageId> {
        let mut state = self.state.locked();
        if let Some((id, at)) = state.cache.get(tag) {
            let age = now.signed_duration_since(*at).to_std().unwrap_or_default();
            if age < self.ttl {
                return Some(id.clone());
            }
        }
        if state.in_flight.insert(tag.clone()) {
            let (me, tag) = (Arc::clone(self), tag.clone());
            tokio::spawn(async move {
                let _slot = me.slots.acquire().await.ok();
                let result = me.observer.resolve(&tag, now).await;
                let mut state = me.state.locked();
                state.in_flight.remove(&tag);
                match result {
                    Ok(id) => {
                        state.cache.insert(tag, (id, now));
                        me.resolved.notify_one();
                    }
                    Err(v) => tracing::info!(
                        image = %tag,
                        reason = %v.reason,
                        "tag not resolved yet; retried on a later pass"
                    ),
                }
                if state.in_flight.is_empty() {
                    me.idle.notify_waiters();
                }
            });
        }
        None
    }

    /// Notified after a resolution found a digest.
    pub fn resolved(&self) -> Arc<Notify> {
        self.resolved.clone()
    }

    /// Waits until no resolution is in flight (tests, `scan`).
    pub async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            if self.state.locked().in_flight.is_empty() {
                return;
            }
            idle.await;
        }
    }

    /// Forgets tags no pod names any more.
    pub fn retain(&self, live: &HashSet<&ImageRef>) {
        self.state
            .locked()
            .cache
            .retain(|tag, _| live.contains(tag));
    }
}
