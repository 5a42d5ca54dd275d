//! `install::install_crd` against the real kube-apiserver (tests/support/kube): the CRD goes in by
//! server-side apply (field manager `imageposture`, forced), and the call returns only once the
//! API server reports it Established (set by the server's own naming and establishing
//! controllers). The installer talks through a counting, fault-injecting proxy; it runs as the
//! cluster admin (a CRD is cluster-admin territory, as for a person on a laptop), except where
//! the operator's ServiceAccount (`config/rbac`, no CRD rights) is the point.
//!
//! One test stays on the API double (tests/support/apidouble):
//! `a_crd_accepted_but_never_established_is_a_bounded_clear_error` needs a CRD whose names are
//! accepted but which never becomes Established, a state a healthy real server leaves within
//! milliseconds and a proxy cannot produce (it cannot rewrite the CRD's status in an answer).
//! Its real-server neighbour, `unreadable_crd_is_a_bounded_clear_error`, fails the reads at the
//! proxy instead.

#[path = "support/apidouble/mod.rs"]
mod apidouble;
#[path = "support/kube/mod.rs"]
mod kube;

use std::time::{Duration, Instant};

use ::kube::api::{Api, ListParams, Patch, PatchParams};
use ::kube::CustomResourceExt;
use apidouble::ApiDouble;
use imageposture::model::crd::ImagePosture;
use imageposture::operator::install::{install_crd_within, InstallError};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::cluster::client_for;
use kube::proxy::{ApiProxy, Fault, Rule};
use kube::KubeApi;
use serde_json::{json, Value};

const NAME: &str = "imagepostures.imageposture.io";
const PATH: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/imagepostures.imageposture.io";

/// The server, and a proxy in front of it.
struct World {
    kube: KubeApi,
    proxy: ApiProxy,
}

impl World {
    async fn start() -> Option<World> {
        let kube = KubeApi::start().await?;
        let proxy = ApiProxy::start(&kube.url()).await;
        Some(World { kube, proxy })
    }

    /// The cluster admin, through the proxy.
    async fn admin_via_proxy(&self) -> ::kube::Client {
        client_for(&self.proxy.url, self.kube.admin_token()).await
    }

    fn crds(&self) -> Api<CustomResourceDefinition> {
        Api::all(self.kube.admin())
    }

    /// Requests to the ImagePosture CRD itself (not its collection) with `method`.
    fn to_crd(&self, method: &str) -> Vec<kube::proxy::Seen> {
        self.proxy
            .seen()
            .into_iter()
            .filter(|s| s.method == method && s.path.split('?').next() == Some(PATH))
            .collect()
    }
}

fn conditions(crd: &CustomResourceDefinition) -> Vec<(String, String)> {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect()
}

/// Where `have` lacks or differs from what `want` says (`None`: `want` is contained in it). The
/// server adds defaults to what was applied; it must not change or drop anything.
fn missing(have: &Value, want: &Value, at: &str) -> Option<String> {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().find_map(|(k, v)| {
            let at = format!("{at}.{k}");
            match h.get(k) {
                Some(hv) => missing(hv, v, &at),
                None if v.is_null() => None,
                None => Some(format!("{at}: missing")),
            }
        }),
        (Value::Array(h), Value::Array(w)) if h.len() == w.len() => h
            .iter()
            .zip(w)
            .enumerate()
            .find_map(|(i, (hv, wv))| missing(hv, wv, &format!("{at}[{i}]"))),
        _ if have == want => None,
        _ => Some(format!("{at}: {have} instead of {want}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_the_crd_and_waits_until_established() {
    let Some(w) = World::start().await else {
        return;
    };
    let client = w.admin_via_proxy().await;
    // The real server establishes a CRD within milliseconds: the first reads of it fail at the
    // proxy (500: the client retries a 503 by itself), so "returns only once it has read
    // Established" is visible in time and in order.
    w.proxy.inject(Rule {
        method: Some("GET".into()),
        path_contains: PATH.into(),
        fault: Fault::Status(500),
        remaining: Some(3),
    });
    let started = Instant::now();
    install_crd_within(&client, Duration::from_secs(20))
        .await
        .expect("installed");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "returned before reading Established: {:?}",
        started.elapsed()
    );
    let reads: Vec<u16> = w.to_crd("GET").iter().map(|s| s.status).collect();
    assert_eq!(reads[..3], [500, 500, 500], "{reads:?}");
    assert_eq!(reads.last(), Some(&200), "{reads:?}");

    // Established for real: the server serves ImagePostures at once.
    let stored = w.crds().get(NAME).await.expect("stored");
    assert!(
        conditions(&stored).contains(&("Established".into(), "True".into())),
        "{:?}",
        conditions(&stored)
    );
    Api::<ImagePosture>::all(w.kube.admin())
        .list(&ListParams::default())
        .await
        .expect("ImagePostures served");

    // One server-side apply, by our field manager, forced (a CRD applied by kubectl before
    // must not fail start-up with a field conflict).
    let writes = w.proxy.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let applied = &writes[0];
    assert_eq!(applied.method, "PATCH");
    assert!(applied.path.starts_with(PATH), "{applied:?}");
    assert_eq!(applied.content_type, "application/apply-patch+yaml");
    assert!(
        applied.path.contains("fieldManager=imageposture"),
        "{applied:?}"
    );
    assert!(applied.path.contains("force=true"), "{applied:?}");
    assert!(
        applied.status == 200 || applied.status == 201,
        "{applied:?}"
    );

    // What the server holds is the CRD the code generates (the one `imageposture crd` prints),
    // plus the server's defaults; every field of it is ours.
    let want = serde_json::to_value(ImagePosture::crd()).unwrap();
    let have = serde_json::to_value(&stored).unwrap();
    if let Some(diff) = missing(&have["spec"], &want["spec"], "spec") {
        panic!("stored CRD differs from the generated one: {diff}");
    }
    let managers: Vec<_> = stored
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.operation.as_deref() == Some("Apply"))
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["imageposture"]);

    // Already established: a second start applies again (no change: same generation) and
    // returns at once.
    let started = Instant::now();
    install_crd_within(&client, Duration::from_secs(20))
        .await
        .expect("installed again");
    assert!(started.elapsed() < Duration::from_secs(2));
    let again = w.crds().get(NAME).await.expect("stored");
    assert_eq!(again.metadata.generation, stored.metadata.generation);
    assert_eq!(w.to_crd("PATCH").len(), 2);
}

/// A CRD applied before by someone else (kubectl, another field manager) with a different value
/// for a field: the forced apply takes the field over instead of failing with a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_applied_by_kubectl_is_taken_over_without_conflict() {
    let Some(w) = World::start().await else {
        return;
    };
    let mut theirs = serde_json::to_value(ImagePosture::crd()).unwrap();
    theirs["spec"]["names"]["shortNames"] = json!(["ipst"]);
    w.crds()
        .patch(NAME, &PatchParams::apply("kubectl"), &Patch::Apply(&theirs))
        .await
        .expect("kubectl applies");
    let client = w.admin_via_proxy().await;
    install_crd_within(&client, Duration::from_secs(20))
        .await
        .expect("installed over kubectl's");
    let stored = w.crds().get(NAME).await.expect("stored");
    assert_eq!(
        stored.spec.names.short_names,
        Some(vec!["ipost".to_string()])
    );
    let statuses: Vec<u16> = w.to_crd("PATCH").iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200]);
}

/// Another CRD of the group already holds the short name `ipost`: the server's naming
/// controller rejects ours, and the error carries its reason and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_names_fail_with_the_servers_reason() {
    let Some(w) = World::start().await else {
        return;
    };
    let other: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "others.imageposture.io"},
        "spec": {
            "group": "imageposture.io",
            "names": {"kind": "Other", "plural": "others", "shortNames": ["ipost"]},
            "scope": "Cluster",
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object",
                                     "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    w.crds()
        .patch(
            "others.imageposture.io",
            &PatchParams::apply("someone-else"),
            &Patch::Apply(&other),
        )
        .await
        .expect("the other CRD");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w
        .crds()
        .get("others.imageposture.io")
        .await
        .map(|c| conditions(&c).contains(&("NamesAccepted".into(), "True".into())))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "the other CRD's names");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = w.admin_via_proxy().await;
    let err = install_crd_within(&client, Duration::from_secs(20))
        .await
        .unwrap_err();
    match &err {
        InstallError::NamesNotAccepted { reason, message } => {
            assert_eq!(reason, "ShortNamesConflict");
            assert!(message.contains("\"ipost\" is already in use"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("ShortNamesConflict"), "{err}");
}

/// The CRD is applied, but every read of it answers 503 (an overloaded server), which the
/// client retries by itself with a backoff growing to minutes: still a bounded error, naming
/// what was last seen. (Before each read was bounded, this took 6 minutes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_crd_is_a_bounded_clear_error() {
    let Some(w) = World::start().await else {
        return;
    };
    w.proxy.inject(Rule {
        method: Some("GET".into()),
        path_contains: PATH.into(),
        fault: Fault::Status(503),
        remaining: None,
    });
    let client = w.admin_via_proxy().await;
    let started = Instant::now();
    let err = install_crd_within(&client, Duration::from_secs(1))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        matches!(err, InstallError::NotEstablished { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("not Established") && text.contains("did not answer in time"),
        "{text}"
    );
}

/// On the API double: see the module doc. The double accepts the CRD and leaves its status to
/// the test, which plays an establishing controller that accepts the names and never sets
/// Established.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_accepted_but_never_established_is_a_bounded_clear_error() {
    let api = ApiDouble::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(api.client());
    let controller = tokio::spawn(async move {
        loop {
            if let Ok(Some(_)) = crds.get_opt(NAME).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = json!({"status": {"conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "",
             "lastTransitionTime": "2026-12-03T00:00:00Z"}]}});
        crds.patch_status(NAME, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status written");
    });
    let started = Instant::now();
    let err = install_crd_within(&api.client(), Duration::from_secs(1))
        .await
        .unwrap_err();
    controller.await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        matches!(err, InstallError::NotEstablished { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("not Established") && text.contains("NamesAccepted=True"),
        "{text}"
    );
}

/// The operator's ServiceAccount (`config/rbac`) may not write CRDs: the real authorizer's 403
/// becomes the typed error that says how to install it instead. A failing apply (a 500, injected)
/// is an apply error, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_and_failing_applies_are_typed() {
    let Some(w) = World::start().await else {
        return;
    };
    let token = w.kube.operator_token(&[]).await;
    let operator = client_for(&w.proxy.url, &token).await;
    let err = install_crd_within(&operator, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, InstallError::Forbidden(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("kubectl apply -f crds/imageposture.yaml"),
        "{err}"
    );
    assert_eq!(
        w.to_crd("PATCH")
            .iter()
            .map(|s| s.status)
            .collect::<Vec<_>>(),
        [403]
    );

    w.proxy.inject(Rule {
        method: Some("PATCH".into()),
        path_contains: PATH.into(),
        fault: Fault::Status(500),
        remaining: Some(1),
    });
    let admin = w.admin_via_proxy().await;
    let err = install_crd_within(&admin, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, InstallError::Apply(_)), "{err:?}");
    assert!(w.crds().get_opt(NAME).await.expect("get").is_none());
}
