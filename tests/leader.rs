//! Leader election against the API double: the real HTTP round trips, `resourceVersion`
//! preconditions and 409s that `decide`'s unit tests cannot reach.

mod apidouble;

use std::time::Duration;

use apidouble::ApiDouble;
use imageposture::leader::LeaderElector;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;

const NS: &str = "imageposture-system";
const LEASE: &str = "imageposture-leader";

fn elector(double: &ApiDouble, identity: &str, lease_secs: u64) -> LeaderElector {
    let api = Api::namespaced(double.client(), NS);
    LeaderElector::new(api, LEASE, identity, Duration::from_secs(lease_secs))
}

async fn lease(double: &ApiDouble) -> Lease {
    let api: Api<Lease> = Api::namespaced(double.client(), NS);
    api.get(LEASE).await.expect("lease exists")
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
    let double = ApiDouble::start().await;
    let a = elector(&double, "pod-a", 15);
    let b = elector(&double, "pod-b", 15);

    assert!(a.try_acquire_or_renew().await.unwrap());
    let created = lease(&double).await;
    assert_eq!(holder(&created), Some("pod-a"));
    assert_eq!(transitions(&created), Some(0));
    assert_eq!(
        created.spec.as_ref().unwrap().lease_duration_seconds,
        Some(15)
    );

    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert!(a.try_acquire_or_renew().await.unwrap());
    let renewed = lease(&double).await;
    assert_eq!(holder(&renewed), Some("pod-a"));
    assert_eq!(transitions(&renewed), Some(0));
    assert_ne!(
        renewed.metadata.resource_version,
        created.metadata.resource_version
    );
    assert!(renewed.spec.as_ref().unwrap().renew_time >= created.spec.as_ref().unwrap().renew_time);
}

#[tokio::test]
async fn expired_lease_is_taken_over_once() {
    let double = ApiDouble::start().await;
    let a = elector(&double, "pod-a", 1);
    let b = elector(&double, "pod-b", 1);
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    let taken = lease(&double).await;
    assert_eq!(holder(&taken), Some("pod-b"));
    assert_eq!(transitions(&taken), Some(1));
    // The old holder, back too late, now waits.
    assert!(!a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn losing_a_write_race_is_not_leadership() {
    let double = ApiDouble::start().await;
    let a = elector(&double, "pod-a", 15);
    double.fail_next_writes_with_conflict(1);
    assert!(!a.try_acquire_or_renew().await.unwrap(), "409 on create");
    assert!(a.try_acquire_or_renew().await.unwrap());
    double.fail_next_writes_with_conflict(1);
    assert!(!a.try_acquire_or_renew().await.unwrap(), "409 on renew");
    double.fail_next_writes_with(500, 1);
    assert!(
        a.try_acquire_or_renew().await.is_err(),
        "other errors surface"
    );
    assert!(a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn release_hands_over_without_waiting() {
    let double = ApiDouble::start().await;
    let a = elector(&double, "pod-a", 15);
    let b = elector(&double, "pod-b", 15);
    assert!(a.try_acquire_or_renew().await.unwrap());
    a.release().await;
    assert_eq!(holder(&lease(&double).await), None);
    // Released for good: `a` does not take it back.
    assert!(!a.try_acquire_or_renew().await.unwrap());
    assert!(b.try_acquire_or_renew().await.unwrap());
    let taken = lease(&double).await;
    assert_eq!(holder(&taken), Some("pod-b"));
    assert_eq!(transitions(&taken), Some(1));
    // Releasing a lease we do not hold leaves it alone.
    a.release().await;
    assert_eq!(holder(&lease(&double).await), Some("pod-b"));
}

#[tokio::test]
async fn spawned_loops_elect_one_and_fail_over_on_release() {
    let double = ApiDouble::start().await;
    let a = elector(&double, "pod-a", 15);
    let mut a_rx = a.clone().spawn(Duration::from_millis(50));
    wait_for(&mut a_rx, true, Duration::from_secs(5)).await;

    let b = elector(&double, "pod-b", 15);
    let mut b_rx = b.clone().spawn(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!*b_rx.borrow(), "two leaders");
    assert!(*a_rx.borrow());

    a.release().await;
    wait_for(&mut a_rx, false, Duration::from_secs(5)).await;
    wait_for(&mut b_rx, true, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn failing_renewals_step_down_within_the_lease() {
    let double = ApiDouble::start().await;
    let a = elector(&double, "pod-a", 1);
    let mut rx = a.spawn(Duration::from_millis(100));
    wait_for(&mut rx, true, Duration::from_secs(5)).await;

    double.fail_next_writes_with(500, 10_000);
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
    double.reset_counters();
    wait_for(&mut rx, true, Duration::from_secs(5)).await;
}

/// Our own earlier create landed while this round still read no Lease: the create answers 409
/// AlreadyExists, but the Lease names us, so this round holds it (it must not step down and
/// then fight its own Lease). Another identity's 409 stays a lost round
/// (`losing_a_write_race_is_not_leadership`).
#[tokio::test]
async fn already_exists_on_our_own_create_is_not_a_lost_round() {
    let double = ApiDouble::start().await;
    let first = elector(&double, "pod-a", 15);
    let again = elector(&double, "pod-a", 15);
    // Both creates are held a moment, so both rounds read "no Lease" before either lands.
    double.delay_writes_to("leases", Duration::from_millis(200), 2);
    let (a, b) = tokio::join!(first.try_acquire_or_renew(), again.try_acquire_or_renew());
    assert_eq!(holder(&lease(&double).await), Some("pod-a"));
    let creates = double
        .writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.contains("/leases"))
        .map(|w| w.status)
        .collect::<Vec<_>>();
    assert_eq!(creates, [201, 409], "both rounds created");
    assert_eq!((a.unwrap(), b.unwrap()), (true, true));
}
