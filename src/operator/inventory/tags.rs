//! Running images tied to a manifest digest in the background for the inventory:
//! - a container not pulled yet names a tag, whose digest one HEAD request tells (cached for
//!   the TTL: the tag may move);
//! - a container whose `imageID` is a bare config digest, or a digest under another name
//!   (`kind load`), is tied through the pod's tag to the manifest that really runs (see
//!   `Verifier::tie`); a tie found is a fact about immutable content and kept while pods use
//!   it, one not found (`checking` / `DigestUnknown`) is tried again on a later pass and no
//!   posture is attributed meanwhile.
//!
//! Resolutions run concurrently in tasks of their own, so no image's write ever waits for
//! another image's registry.

use crate::core::lock::LockExt as _;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore};

use super::Unresolved;
use crate::cache::Observer;
use crate::core::image::ImageId;
use crate::core::posture::Reason;

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
    cache: HashMap<Unresolved, (ImageId, DateTime<Utc>)>,
    in_flight: HashSet<Unresolved>,
    /// Ties the registry refused (`DigestUnknown`), and when: not tried (nor logged) again
    /// within the TTL, for which the walk's registry answers are cached anyway.
    untied: HashMap<Unresolved, (DateTime<Utc>, String)>,
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

    /// The identity of `tag` if known and fresh (a tie never goes stale); otherwise starts
    /// resolving it (once) and answers `None` at once.
    pub fn lookup(self: &Arc<Self>, tag: &Unresolved, now: DateTime<Utc>) -> Option<ImageId> {
        let mut state = self.state.locked();
        if let Some((id, at)) = state.cache.get(tag) {
            let age = now.signed_duration_since(*at).to_std().unwrap_or_default();
            if age < self.ttl || matches!(tag, Unresolved::Tie(_)) {
                return Some(id.clone());
            }
        }
        if let Some((at, _)) = state.untied.get(tag) {
            let age = now.signed_duration_since(*at).to_std().unwrap_or_default();
            if age < self.ttl {
                return None;
            }
        }
        if state.in_flight.insert(tag.clone()) {
            let (me, tag) = (Arc::clone(self), tag.clone());
            tokio::spawn(async move {
                let _slot = me.slots.acquire().await.ok();
                let result = me.observer.resolve_running(&tag, now).await;
                let mut state = me.state.locked();
                state.in_flight.remove(&tag);
                match result {
                    Ok(id) => {
                        state.cache.insert(tag, (id, now));
                        me.resolved.notify_one();
                    }
                    Err(v)
                        if v.reason == Reason::DigestUnknown
                            && matches!(tag, Unresolved::Tie(_)) =>
                    {
                        tracing::warn!(
                            image = %crate::core::text::escape(&tag.to_string()),
                            reason = %v.reason,
                            message = %crate::core::text::escape(&v.message),
                            "running image not tied to a manifest digest: no posture attributed; tried again after the TTL"
                        );
                        let message = crate::core::posture::bound(
                            &v.message,
                            crate::core::posture::MAX_MESSAGE,
                        );
                        state.untied.insert(tag, (now, message));
                        me.resolved.notify_one();
                    }
                    Err(v) => tracing::info!(
                        image = %crate::core::text::escape(&tag.to_string()),
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

    /// Why a running image could not be tied (the `DigestUnknown` message), while that holds.
    pub fn untied(&self, tag: &Unresolved) -> Option<String> {
        self.state.locked().untied.get(tag).map(|(_, m)| m.clone())
    }

    /// Notified after a resolution found a digest, or found that none can be tied.
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
    pub fn retain(&self, live: &HashSet<&Unresolved>) {
        let mut state = self.state.locked();
        state.cache.retain(|tag, _| live.contains(tag));
        state.untied.retain(|tag, _| live.contains(tag));
    }
}
