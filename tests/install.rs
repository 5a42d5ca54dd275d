//! `install::install_crd` over the API double: the CRD goes in by server-side apply (field
//! manager `imageposture`, forced), and the call returns only once the API server reports it
//! Established. The test plays the API server's establishing controller, which sets the
//! conditions on `/status` some time after the CRD was accepted.

mod apidouble;

use std::time::{Duration, Instant};

use apidouble::ApiDouble;
use imageposture::install::{install_crd_within, InstallError};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::CustomResourceExt;
use serde_json::{json, Value};

const NAME: &str = "imagepostures.imageposture.io";
const PATH: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/imagepostures.imageposture.io";

/// Waits for the CRD to appear, then after `after` writes `conditions` to its status.
fn establishing_controller(
    api: &ApiDouble,
    after: Duration,
    conditions: Value,
) -> tokio::task::JoinHandle<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(api.client());
    tokio::spawn(async move {
        loop {
            if let Ok(Some(_)) = crds.get_opt(NAME).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(after).await;
        let status = json!({"status": {"conditions": conditions}});
        crds.patch_status(NAME, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status written");
    })
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-12-03T00:00:00Z"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_the_crd_and_waits_until_established() {
    let api = ApiDouble::start().await;
    let controller = establishing_controller(
        &api,
        Duration::from_millis(600),
        json!([
            condition("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            condition(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted"
            ),
        ]),
    );
    let started = Instant::now();
    install_crd_within(&api.client(), Duration::from_secs(20))
        .await
        .expect("installed");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "returned before Established: {:?}",
        started.elapsed()
    );
    controller.await.unwrap();

    // One server-side apply, by our field manager, forced (a CRD applied by kubectl before
    // must not fail start-up with a field conflict).
    let writes: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.path == PATH)
        .collect();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let w = &writes[0];
    assert_eq!(w.method, "PATCH");
    assert_eq!(w.content_type, "application/apply-patch+yaml");
    assert!(w.query.contains("fieldManager=imageposture"), "{}", w.query);
    assert!(w.query.contains("force=true"), "{}", w.query);
    assert!(w.status == 200 || w.status == 201, "{w:?}");

    // What the server holds is the CRD the code generates (the one `imageposture crd` prints).
    let stored = api
        .objects("apiextensions.k8s.io", "customresourcedefinitions")
        .into_iter()
        .next()
        .expect("stored");
    let want = serde_json::to_value(imageposture::crd::ImagePosture::crd()).unwrap();
    assert_eq!(stored["spec"], want["spec"]);

    // Already established: a second start applies again (no change) and returns at once.
    let started = Instant::now();
    install_crd_within(&api.client(), Duration::from_secs(20))
        .await
        .expect("installed again");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_names_fail_with_the_servers_reason() {
    let api = ApiDouble::start().await;
    let controller = establishing_controller(
        &api,
        Duration::from_millis(100),
        json!([condition(
            "NamesAccepted",
            "False",
            "MultipleNamesConflict",
            "\"ipost\" is already in use"
        )]),
    );
    let err = install_crd_within(&api.client(), Duration::from_secs(20))
        .await
        .unwrap_err();
    controller.await.unwrap();
    match &err {
        InstallError::NamesNotAccepted { reason, message } => {
            assert_eq!(reason, "MultipleNamesConflict");
            assert!(message.contains("already in use"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("MultipleNamesConflict"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_never_established_is_a_bounded_clear_error() {
    let api = ApiDouble::start().await;
    let controller = establishing_controller(
        &api,
        Duration::from_millis(50),
        json!([condition("NamesAccepted", "True", "NoConflicts", "")]),
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_and_failing_applies_are_typed() {
    let api = ApiDouble::start().await;
    api.fail_writes_to("customresourcedefinitions", 403, 1);
    let err = install_crd_within(&api.client(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, InstallError::Forbidden(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("kubectl apply -f crds/imageposture.yaml"),
        "{err}"
    );

    api.fail_writes_to("customresourcedefinitions", 500, 1);
    let err = install_crd_within(&api.client(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, InstallError::Apply(_)), "{err:?}");
    assert!(api
        .objects("apiextensions.k8s.io", "customresourcedefinitions")
        .is_empty());
}
