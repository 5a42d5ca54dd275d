//! The real kube-apiserver harness (tests/support/kube): pods whose status a test sets, the operator's
//! ServiceAccount bound to config/rbac and judged by the real RBAC authorizer.

#[path = "support/kube/mod.rs"]
mod kube;

use std::time::Duration;

use crate::kube::{KubeApi, OPERATOR_NS};
use ::kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::runtime::events::{Event, EventType, Recorder, Reporter};
use ::kube::Resource as _;
use futures::{StreamExt, TryStreamExt};
use imageposture::core::image::ImageRef;
use imageposture::model::crd::{self, ImagePosture};
use imageposture::model::fields::FIELD_MANAGER_INVENTORY;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde_json::json;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn forbidden<T: std::fmt::Debug>(result: ::kube::Result<T>) -> bool {
    matches!(result, Err(::kube::Error::Api(ref s)) if s.code == 403)
}

#[tokio::test]
async fn real_apiserver_pods_rbac_leases_events() {
    let Some(k) = KubeApi::start().await else {
        return;
    };
    eprintln!("start-up: {:?}", k.startup());
    let ns = "shop";
    k.ensure_namespace(ns).await;
    k.ensure_namespace(ns).await; // idempotent

    // A pod as a kubelet would report it.
    let image = "registry.example/shop/web:1.0";
    let image_id = format!("registry.example/shop/web@{DIGEST}");
    let pod = k
        .create_pod_with(ns, "web", &[("web", image)], &[("init", image)])
        .await;
    assert_eq!(pod.spec.as_ref().unwrap().node_name, None);
    k.set_pod_status(
        ns,
        "web",
        "Running",
        &[("web", image, &image_id), ("init", image, &image_id)],
    )
    .await;

    k.install_crd().await;
    let op = k.operator_client(&[]).await;

    // Pods: list and watch everywhere, never get.
    let pods = Api::<Pod>::all(op.clone());
    let list = pods.list(&ListParams::default()).await.expect("list pods");
    let web = list
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("web"))
        .expect("pod listed");
    let status = web.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!((cs.image_id.as_str(), cs.ready), (image_id.as_str(), true));
    let init = &status.init_container_statuses.as_ref().unwrap()[0];
    assert_eq!(init.name, "init");
    assert!(forbidden(
        Api::<Pod>::namespaced(op.clone(), ns).get("web").await
    ));
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut watch = pods
        .watch(&::kube::api::WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch pods")
        .boxed();
    k.create_pod(ns, "api", &[("api", image)]).await;
    let added = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
        .await
        .expect("watch event in time")
        .expect("watch stream")
        .expect("an event");
    assert!(matches!(added, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("api")));

    // No secrets: the real authorizer says 403.
    assert!(forbidden(
        Api::<Secret>::all(op.clone())
            .list(&ListParams::default())
            .await
    ));
    assert!(forbidden(
        Api::<Secret>::namespaced(op.clone(), ns)
            .list(&ListParams::default())
            .await
    ));

    // ImagePostures: server-side apply, list, watch, delete.
    let postures = Api::<ImagePosture>::all(op.clone());
    let id = ImageRef::parse(&image_id).unwrap().id().unwrap();
    let resource = crd::new_resource(&id);
    let name = resource.metadata.name.clone().unwrap();
    let applied = postures
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER_INVENTORY).force(),
            &Patch::Apply(&resource),
        )
        .await
        .expect("apply ImagePosture");
    assert_eq!(applied.spec, resource.spec);
    let listed = postures.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let mut watch = postures
        .watch(&::kube::api::WatchParams::default().timeout(10), "0")
        .await
        .expect("watch imagepostures")
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.try_next())
        .await
        .expect("watch event in time")
        .expect("watch stream")
        .expect("an event");
    assert!(matches!(first, WatchEvent::Added(p) if p.metadata.name == Some(name.clone())));

    // Events (events.k8s.io/v1): for the cluster-scoped ImagePosture (namespace "default"),
    // twice (the second a series patch), and for the pod in its namespace.
    let recorder = Recorder::new(op.clone(), Reporter::from("imageposture"));
    let ev = Event {
        type_: EventType::Normal,
        reason: "PostureChanged".into(),
        note: Some("checking".into()),
        action: "Verify".into(),
        secondary: None,
    };
    let reference = applied.object_ref(&());
    recorder.publish(&ev, &reference).await.expect("event");
    recorder
        .publish(&ev, &reference)
        .await
        .expect("event series");
    recorder
        .publish(&ev, &web.object_ref(&()))
        .await
        .expect("pod event");
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(k.admin(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    let mine: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&name))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].series.as_ref().map(|s| s.count), Some(2));
    postures
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete ImagePosture");

    // Leases: in the operator's namespace only (config/rbac's Role).
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "imageposture-leader"},
        "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    let leases = Api::<Lease>::namespaced(op.clone(), OPERATOR_NS);
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create Lease");
    leases
        .replace("imageposture-leader", &PostParams::default(), &created)
        .await
        .expect("update Lease");
    assert!(forbidden(
        Api::<Lease>::namespaced(op.clone(), ns)
            .create(&PostParams::default(), &lease)
            .await
    ));
    assert!(forbidden(leases.list(&ListParams::default()).await));

    // A kubeconfig for the operator process: the same identity, the server's CA.
    let path = k.write_kubeconfig(Some(&k.operator_token(&[]).await));
    let config = ::kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let from_file = ::kube::Client::try_from(config).unwrap();
    Api::<Pod>::all(from_file.clone())
        .list(&ListParams::default())
        .await
        .expect("list pods with the kubeconfig");
    assert!(forbidden(
        Api::<Secret>::all(from_file)
            .list(&ListParams::default())
            .await
    ));

    // No kubelet: a pod without a node is deleted at once.
    Api::<Pod>::namespaced(k.admin(), ns)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert!(Api::<Pod>::namespaced(k.admin(), ns)
        .get_opt("web")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn each_test_has_its_own_server() {
    let Some(k) = KubeApi::start().await else {
        return;
    };
    eprintln!("start-up: {:?}", k.startup());
    // The other test's namespace is not here (same etcd, another --etcd-prefix).
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(k.admin());
    assert!(namespaces.get_opt("shop").await.unwrap().is_none());
    // An admin kubeconfig works too.
    let path = k.write_kubeconfig(None);
    let config = ::kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let admin = ::kube::Client::try_from(config).unwrap();
    assert!(Api::<k8s_openapi::api::core::v1::Namespace>::all(admin)
        .get_opt("kube-system")
        .await
        .unwrap()
        .is_some());
}
