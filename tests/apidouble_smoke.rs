//! The API double behaves like an API server for the calls the operator makes.

#[path = "support/apidouble/mod.rs"]
mod apidouble;

use apidouble::ApiDouble;
use futures::{StreamExt, TryStreamExt};
use imageposture::core::image::ImageRef;
use imageposture::core::posture::{Posture, Reason};
use imageposture::model::crd::{self, ImagePosture, ImagePostureStatus};
use imageposture::model::fields::FIELD_MANAGER_INVENTORY as FIELD_MANAGER;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde_json::json;

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn resource() -> ImagePosture {
    let id = ImageRef::parse(&format!("nginx@{D}"))
        .unwrap()
        .id()
        .unwrap();
    crd::new_resource(&id)
}

fn api_status(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn apply_status_get_delete() {
    let double = ApiDouble::start().await;
    let api: Api<ImagePosture> = Api::all(double.client());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut ip = resource();
    let name = ip.metadata.name.clone().unwrap();
    // Status on the main endpoint is ignored (status subresource).
    ip.status = Some(ImagePostureStatus {
        posture: Some(Posture::Signed),
        ..Default::default()
    });
    let created = api.patch(&name, &pp, &Patch::Apply(&ip)).await.unwrap();
    assert_eq!(created.spec, ip.spec);
    assert!(created.status.is_none());
    assert_eq!(created.metadata.generation, Some(1));
    let rv1 = created.metadata.resource_version.clone().unwrap();

    // Same apply again: a no-op does not bump the resourceVersion.
    let again = api.patch(&name, &pp, &Patch::Apply(&ip)).await.unwrap();
    assert_eq!(
        again.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );

    let status = json!({
        "apiVersion": ImagePosture::api_version(&()),
        "kind": ImagePosture::kind(&()),
        "status": ImagePostureStatus {
            posture: Some(Posture::NotSigned),
            reason: Some(Reason::NoSignature),
            ..Default::default()
        },
    });
    let patched = api
        .patch_status(&name, &pp, &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().unwrap().posture,
        Some(Posture::NotSigned)
    );
    assert_ne!(
        patched.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );

    // Merge patch of status, and labels via apply on the main endpoint.
    let merged = api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"message": "hello"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.status.as_ref().unwrap().message, "hello");
    assert_eq!(
        merged.status.as_ref().unwrap().posture,
        Some(Posture::NotSigned)
    );

    let got = api.get(&name).await.unwrap();
    assert_eq!(got, merged);
    assert_eq!(
        got.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "imageposture"
    );
    let listed = api
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=imageposture"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());
    let none = api
        .list(&ListParams::default().labels("imageposture.io/posture=signed"))
        .await
        .unwrap();
    assert!(none.items.is_empty());

    assert_eq!(double.image_postures().len(), 1);
    let path = format!("/apis/imageposture.io/v1alpha1/imagepostures/{name}");
    assert_eq!(double.write_count("PATCH", &path), 2);
    assert_eq!(double.write_count("PATCH", &format!("{path}/status")), 2);

    api.delete(&name, &DeleteParams::default()).await.unwrap();
    assert!(double.image_postures().is_empty());
    let (code, reason) = api_status(
        api.delete(&name, &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, _) = api_status(api.get(&name).await.unwrap_err());
    assert_eq!(code, 404);
    // The status subresource of an absent object is 404, never an implicit create.
    let (code, _) = api_status(
        api.patch_status(&name, &pp, &Patch::Apply(&status))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);

    double.reset_counters();
    assert!(double.writes().is_empty());
}

#[tokio::test]
async fn conflicts_injected_and_from_stale_resource_version() {
    let double = ApiDouble::start().await;
    let api: Api<ImagePosture> = Api::all(double.client());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let ip = resource();
    let name = ip.metadata.name.clone().unwrap();
    api.patch(&name, &pp, &Patch::Apply(&ip)).await.unwrap();

    double.fail_next_writes_with_conflict(2);
    for _ in 0..2 {
        let (code, reason) =
            api_status(api.patch(&name, &pp, &Patch::Apply(&ip)).await.unwrap_err());
        assert_eq!((code, reason.as_str()), (409, "Conflict"));
    }
    api.patch(&name, &pp, &Patch::Apply(&ip)).await.unwrap();

    // A body carrying a stale resourceVersion is a conflict.
    let mut stale = ip.clone();
    stale.metadata.resource_version = Some("1".into());
    let (code, _) = api_status(
        api.patch(&name, &pp, &Patch::Apply(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    let writes = double.writes();
    assert_eq!(writes.iter().filter(|w| w.status == 409).count(), 3);
    assert!(writes
        .iter()
        .all(|w| w.query.contains("fieldManager=imageposture")));

    // Apply without apiVersion/kind is rejected, like the real server does.
    let bare = json!({"metadata": {"name": name}, "spec": ip.spec});
    let (code, _) = api_status(
        api.patch(&name, &pp, &Patch::Apply(&bare))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
}

#[tokio::test]
async fn recorder_events_and_watch() {
    let double = ApiDouble::start().await;
    let client = double.client();
    let api: Api<ImagePosture> = Api::all(client.clone());

    // A watcher sees the object appear and change.
    let mut stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let ip = resource();
    let name = ip.metadata.name.clone().unwrap();
    let writer = api.clone();
    let applied = ip.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        writer
            .patch(
                applied.metadata.name.as_deref().unwrap(),
                &pp,
                &Patch::Apply(&applied),
            )
            .await
            .unwrap();
    });
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), stream.try_next())
        .await
        .expect("watch event in time")
        .unwrap()
        .unwrap();
    assert_eq!(seen.metadata.name.as_deref(), Some(name.as_str()));

    let recorder = Recorder::new(client, Reporter::from("imageposture"));
    let reference: ObjectReference = api.get(&name).await.unwrap().object_ref(&());
    let ev = Event {
        type_: EventType::Warning,
        reason: "PostureChanged".into(),
        note: Some("not-signed".into()),
        action: "Verify".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    // The same event again becomes a series: a merge patch of the stored event.
    recorder.publish(&ev, &reference).await.unwrap();
    let events = double.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "PostureChanged");
    assert_eq!(events[0]["regarding"]["name"], name.as_str());
    assert_eq!(events[0]["metadata"]["namespace"], "default");
    assert_eq!(events[0]["series"]["count"], 2);
}
