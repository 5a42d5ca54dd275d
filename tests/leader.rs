//! Leader election against the real kube-apiserver (tests/support/kube): real `coordination.k8s.io/v1`
//! Leases, the real `resourceVersion` preconditions and the real 409s (AlreadyExists on a
//! create, Conflict on a stale update) that `decide`'s unit tests cannot reach. The electors
//! are the operator's ServiceAccount, bound to `config/rbac` (a Role on Leases in
//! `imageposture-system`), talking through a counting, fault-injecting proxy: a race is staged
//! by holding one request at the proxy while another writer lands first; only a 500 is
//! injected (the real server does not fail on demand).

#[path = "support/kube/mod.rs"]
mod kube;

use std::time::Duration;

use ::kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use imageposture::operator::leader::LeaderElector;
use k8s_openapi::api::coordination::v1::Lease;
use kube::cluster::client_for;
use kube::proxy::{ApiProxy, Fault, Rule};
use kube::{KubeApi, OPERATOR_NS};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = OPERATOR_NS;
const LEASE: &str = "imageposture-leader";

/// The server, and the operator's ServiceAccount client through a proxy.
struct World {
    kube: KubeApi,
    proxy: ApiProxy,
    operator: ::kube::Client,
}

impl World {
    async fn start() -> Option<World> {
        let kube = KubeApi::start().await?;
        let token = kube.operator_token(&[]).await;
        let proxy = ApiProxy::start(&kube.url()).await;
        let operator = client_for(&proxy.url, &token).await;
        Some(World {
            kube,
            proxy,
            operator,
        })
    }

    fn elector(&self, identity: &str, lease_secs: u64) -> LeaderElector {
        let api = Api::namespaced(self.operator.clone(), NS);
        LeaderElector::new(api, LEASE, identity, Duration::from_secs(lease_secs))
    }

    /// The Lease as stored, read by the admin (not through the proxy).
    async fn lease(&self) -> Lease {
        self.leases().get(LEASE).await.expect("lease exists")
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.kube.admin(), NS)
    }

    /// Holds the next `method` request to the Lease at the proxy for `hold`.
    fn hold_next(&self, method: &str, hold: Duration, count: usize) {
        self.proxy.inject(Rule {
            method: Some(method.into()),
            path_contains: "/leases".into(),
            fault: Fault::Delay(hold),
            remaining: Some(count),
        });
    }

    /// Waits until the proxy holds `n` requests in all.
    async fn held(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.proxy.held() < n {
            assert!(tokio::time::Instant::now() < deadline, "no request held");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The answers to the writes of Leases with `method`, in order.
    fn lease_writes(&self, method: &str) -> Vec<u16> {
        self.proxy
            .writes()
            .iter()
            .filter(|w| w.method == method && w.path.contains("/leases"))
            .map(|w| w.status)
            .collect()
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

fn transitions(lease: &Lease) -> Option<i32> {
    lease.spec.as_ref()?.lease_transitions
}

async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool, within: Duration) {
    tokio::time::timeout(within, rx.wait_for(|v| *v == want))
        .await
        .unwrap_or_else(|_| panic!("watch did not become {want} within {within:?}"))
        .expect("election task alive");
}

#[tokio::test]
async fn first_creates_second_waits_holder_renews() {
    let Some(w) = World::start().await else {
        return;
    };
    let a = w.elector("pod-a", 15);
    let b = w.elector("pod-b", 15);

    assert!(a.try_acquire_or_renew().await.unwrap());
    let created = w.lease().await;
    assert_eq!(holder(&created), Some("pod-a"));
    assert_eq!(transitions(&created), Some(0));
    assert_eq!(
        created.spec.as_ref().unwrap().lease_duration_seconds,
        Some(15)
    );

    w.proxy.reset();
    assert!(!b.try_acquire_or_renew().await.unwrap());
    // A replica waiting for a live Lease only reads it.
    assert!(w.proxy.writes().is_empty(), "{:?}", w.proxy.writes());
    assert!(a.try_acquire_or_renew().await.unwrap());
    let renewed = w.lease().await;
    assert_eq!(holder(&renewed), Some("pod-a"));
    assert_eq!(transitions(&renewed), Some(0));
    assert_ne!(
        renewed.metadata.resource_version,
        created.metadata.resource_version
    );
    assert!(renewed.spec.as_ref().unwrap().renew_time >= created.spec.as_ref().unwrap().renew_time);
    assert_eq!(w.lease_writes("PUT"), [200], "one renewal, an update");
}

#[tokio::test]
async fn expired_lease_is_taken_over_once() {
    let Some(w) = World::start().await else {
        return;
    };
    let a = w.elector("pod-a", 1);
    let b = w.elector("pod-b", 1);
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    let taken = w.lease().await;
    assert_eq!(holder(&taken), Some("pod-b"));
    assert_eq!(transitions(&taken), Some(1));
    // The old holder, back too late, now waits.
    assert!(!a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn losing_a_write_race_is_not_leadership() {
    let Some(w) = World::start().await else {
        return;
    };
    let a = w.elector("pod-a", 15);

    // 409 AlreadyExists on create: `a` read no Lease, and pod-b's create lands while `a`'s is
    // held at the proxy.
    w.hold_next("POST", Duration::from_millis(300), 1);
    let (won, ()) = tokio::join!(a.try_acquire_or_renew(), async {
        w.held(1).await;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": LEASE},
            "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
        }))
        .unwrap();
        w.leases()
            .create(&PostParams::default(), &lease)
            .await
            .expect("pod-b creates the Lease");
    });
    assert!(!won.unwrap(), "409 on create");
    assert_eq!(w.lease_writes("POST"), [409]);
    assert_eq!(holder(&w.lease().await), Some("pod-b"));

    // pod-b's Lease gone, `a` creates its own.
    w.leases()
        .delete(LEASE, &DeleteParams::default())
        .await
        .expect("delete");
    assert!(a.try_acquire_or_renew().await.unwrap());

    // 409 Conflict on renew: another write to the Lease lands between `a`'s read and its update,
    // so the resourceVersion `a` read is stale.
    w.hold_next("PUT", Duration::from_millis(300), 1);
    let (won, ()) = tokio::join!(a.try_acquire_or_renew(), async {
        w.held(2).await;
        let patch = json!({"metadata": {"labels": {"touched": "by-another-writer"}}});
        w.leases()
            .patch(LEASE, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("another write");
    });
    assert!(!won.unwrap(), "409 on renew");
    assert_eq!(w.lease_writes("PUT"), [409]);

    // Other errors surface (the real server does not fail on demand: injected).
    w.proxy.inject(Rule {
        method: Some("PUT".into()),
        path_contains: "/leases".into(),
        fault: Fault::Status(500),
        remaining: Some(1),
    });
    assert!(
        a.try_acquire_or_renew().await.is_err(),
        "other errors surface"
    );
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert_eq!(holder(&w.lease().await), Some("pod-a"));
}

#[tokio::test]
async fn release_hands_over_without_waiting() {
    let Some(w) = World::start().await else {
        return;
    };
    let a = w.elector("pod-a", 15);
    let b = w.elector("pod-b", 15);
    assert!(a.try_acquire_or_renew().await.unwrap());
    a.release().await;
    assert_eq!(holder(&w.lease().await), None);
    // Released for good: `a` does not take it back.
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert!(b.try_acquire_or_renew().await.unwrap());
    let taken = w.lease().await;
    assert_eq!(holder(&taken), Some("pod-b"));
    assert_eq!(transitions(&taken), Some(1));
    // Releasing a lease we do not hold leaves it alone (and writes nothing).
    w.proxy.reset();
    a.release().await;
    assert_eq!(holder(&w.lease().await), Some("pod-b"));
    assert!(w.proxy.writes().is_empty(), "{:?}", w.proxy.writes());
}

#[tokio::test]
async fn spawned_loops_elect_one_and_fail_over_on_release() {
    let Some(w) = World::start().await else {
        return;
    };
    let a = w.elector("pod-a", 15);
    let mut a_rx = a.clone().spawn(Duration::from_millis(50));
    wait_for(&mut a_rx, true, Duration::from_secs(5)).await;

    let b = w.elector("pod-b", 15);
    let mut b_rx = b.clone().spawn(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!*b_rx.borrow(), "two leaders");
    assert!(*a_rx.borrow());

    a.release().await;
    wait_for(&mut a_rx, false, Duration::from_secs(5)).await;
    wait_for(&mut b_rx, true, Duration::from_secs(5)).await;
    assert_eq!(holder(&w.lease().await), Some("pod-b"));
}

#[tokio::test]
async fn failing_renewals_step_down_within_the_lease() {
    let Some(w) = World::start().await else {
        return;
    };
    let a = w.elector("pod-a", 1);
    let mut rx = a.spawn(Duration::from_millis(100));
    wait_for(&mut rx, true, Duration::from_secs(5)).await;

    // Every renewal fails (reads still answer).
    w.proxy.inject(Rule {
        method: Some("PUT".into()),
        path_contains: "/leases".into(),
        fault: Fault::Status(500),
        remaining: None,
    });
    let failing_since = tokio::time::Instant::now();
    wait_for(&mut rx, false, Duration::from_secs(3)).await;
    // The loop steps down at (start of last good round + 1s), before `failing_since`; the slack
    // is only for waking this task on a busy machine.
    assert!(
        failing_since.elapsed() <= Duration::from_millis(1600),
        "claimed leadership past the lease: {:?}",
        failing_since.elapsed()
    );

    // Once the API answers again, the loop wins the lease back.
    w.proxy.clear_faults();
    wait_for(&mut rx, true, Duration::from_secs(5)).await;
}

/// Our own earlier create landed while this round still read no Lease: the create answers 409
/// AlreadyExists, but the Lease names us, so this round holds it (it must not step down and
/// then fight its own Lease). Another identity's 409 stays a lost round
/// (`losing_a_write_race_is_not_leadership`).
#[tokio::test]
async fn already_exists_on_our_own_create_is_not_a_lost_round() {
    let Some(w) = World::start().await else {
        return;
    };
    let first = w.elector("pod-a", 15);
    let again = w.elector("pod-a", 15);
    // Both creates are held a moment, so both rounds read "no Lease" before either lands.
    w.hold_next("POST", Duration::from_millis(200), 2);
    let (a, b) = tokio::join!(first.try_acquire_or_renew(), again.try_acquire_or_renew());
    assert_eq!(holder(&w.lease().await), Some("pod-a"));
    let mut creates = w.lease_writes("POST");
    creates.sort();
    assert_eq!(creates, [201, 409], "both rounds created");
    assert_eq!((a.unwrap(), b.unwrap()), (true, true));
}
