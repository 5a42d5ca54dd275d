//! The pod index fed by the pod watch (what pods run, by difference per event), and the
//! handle the inventory loop reads it through.

use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::{watch, Notify};

use crate::core::lock::LockExt;
use crate::operator::inventory::{Inventory, LeanPod, PodIndex};

/// The index and whether the first pod list is in.
#[derive(Clone)]
pub struct PodFeed {
    pub index: Arc<Mutex<PodIndex>>,
    pub synced: watch::Receiver<bool>,
}

impl PodFeed {
    /// A snapshot of the index (cheap when little changed: see [`PodIndex::inventory`]).
    pub fn inventory(&self) -> Inventory {
        self.index.locked().inventory()
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }
}

/// Pods per page of the first list (the watcher's default page size).
const FIRST_PAGE: usize = 500;

/// Feeds the pod index from the pod watch: each event by difference, a re-list (`Init` ..
/// `InitDone`) into a fresh index swapped in whole. Wakes the inventory loop only when an event
/// changed what some image's resource says (a pod's readiness flipping changes nothing).
pub async fn index_pods<S>(
    stream: S,
    index: Arc<Mutex<PodIndex>>,
    changed: Arc<Notify>,
    synced: tokio::sync::watch::Sender<bool>,
) where
    S: Stream<Item = Result<watcher::Event<LeanPod>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut relist: Option<PodIndex> = None;
    let mut listed = 0usize;
    while let Some(event) = stream.next().await {
        let changes = match event {
            // The first list goes straight into the (empty) index, a page at a time, so the
            // inventory can create resources before it ends; a re-list builds a fresh index.
            // (A first list that restarts part-way is a re-list too: pods deleted in between
            // must not stay in the index.)
            Ok(watcher::Event::Init) => {
                if *synced.borrow() || listed > 0 {
                    relist = Some(index.locked().fresh());
                }
                continue;
            }
            Ok(watcher::Event::InitApply(pod)) => {
                match relist.as_mut() {
                    Some(relist) => {
                        relist.apply(&pod);
                    }
                    None => {
                        index.locked().apply(&pod);
                        listed += 1;
                        if listed.is_multiple_of(FIRST_PAGE) {
                            changed.notify_one();
                        }
                    }
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(fresh) = relist.take() {
                    *index.locked() = fresh;
                }
                synced.send_replace(true);
                changed.notify_one();
                continue;
            }
            Ok(watcher::Event::Apply(pod)) => index.locked().apply(&pod),
            Ok(watcher::Event::Delete(pod)) => index.locked().delete(&pod),
            Err(error) => {
                tracing::warn!(what = "pods", %error, "watch error; retrying with backoff");
                continue;
            }
        };
        if !changes.is_empty() {
            changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const E: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn pod(name: &str, digest: &str, ready: bool) -> LeanPod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "a", "name": name},
            "spec": {"containers": [{"name": "c", "image": format!("nginx@{digest}")}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c",
                "image": "nginx", "imageID": format!("docker.io/library/nginx@{digest}"),
                "ready": ready, "restartCount": 0}]},
        }))
        .unwrap()
    }

    /// Watch events reach the index by difference; a re-list replaces it whole; the inventory
    /// loop is woken only by events that change an image's users.
    #[tokio::test]
    async fn pod_events_feed_the_index() {
        use watcher::Event::*;
        let index = Arc::new(Mutex::new(PodIndex::new(Default::default())));
        let changed = Arc::new(Notify::new());
        let (tx, rx) = tokio::sync::watch::channel(false);
        let (events, stream) = futures::channel::mpsc::unbounded();
        let task = tokio::spawn(index_pods(stream, index.clone(), changed.clone(), tx));
        let send = |e| events.unbounded_send(Ok(e)).unwrap();
        let woken = || async {
            tokio::time::timeout(Duration::from_millis(200), changed.notified())
                .await
                .is_ok()
        };
        // A first list that restarts part-way (p0 deleted in between): p0 does not stay.
        send(Init);
        send(InitApply(pod("p0", E, true)));
        send(Init);
        send(InitApply(pod("p1", D, true)));
        send(InitApply(pod("p2", D, true)));
        assert!(!*rx.borrow(), "not synced before the list ends");
        send(InitDone);
        assert!(woken().await);
        assert!(*rx.borrow());
        assert_eq!(index.locked().len(), 2);
        assert_eq!(index.locked().images(), 1);
        // Readiness flips: nothing an image's resource says moves.
        send(Apply(pod("p1", D, false)));
        assert!(!woken().await, "a readiness flip wakes nobody");
        send(Apply(pod("p3", E, true)));
        assert!(woken().await);
        assert_eq!(index.locked().images(), 2);
        send(Delete(pod("p3", E, true)));
        assert!(woken().await);
        assert_eq!(index.locked().images(), 1);
        // A re-list without p2: the index is exactly the new list.
        send(Init);
        send(InitApply(pod("p1", E, true)));
        send(InitDone);
        assert!(woken().await);
        let inv = index.locked().inventory();
        assert_eq!(inv.images.len(), 1);
        assert!(inv.images.keys().all(|id| id.digest == E));
        drop(events);
        task.await.unwrap();
    }
}
