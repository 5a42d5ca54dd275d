//! End-to-end against a real cluster (kind or k3d). Ignored by default: these machines have no
//! API server. Run with a throwaway cluster:
//!
//! ```sh
//! kind create cluster --name imageposture
//! cargo build && KUBECONFIG=~/.kube/config cargo test --test e2e -- --ignored --nocapture
//! ```
//!
//! It installs the CRD, runs `imageposture run` as a subprocess (leader election on, so the
//! Lease path is exercised too) and waits until every image the cluster's pods run has an
//! ImagePosture with a posture. Without registry access the postures are `checking`, which is
//! the honest answer; with it, kind's images read `not-signed` or `signed`.

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use imageposture::model::crd::ImagePosture;
use imageposture::model::naming::ResourceName as _;
use imageposture::operator::inventory::{Inventory, NamespaceFilter};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, CustomResourceExt};

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs a cluster: KUBECONFIG=… cargo test --test e2e -- --ignored"]
async fn every_running_image_gets_an_imageposture() {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a cluster");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "imagepostures.imageposture.io",
        &PatchParams::apply("imageposture-e2e").force(),
        &Patch::Apply(ImagePosture::crd()),
    )
    .await
    .expect("CRD applied");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "imageposture-system"}});
    namespaces
        .patch(
            "imageposture-system",
            &PatchParams::apply("imageposture-e2e"),
            &Patch::Apply(ns),
        )
        .await
        .expect("namespace");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let _operator = Operator(
        Command::new(env!("CARGO_BIN_EXE_imageposture"))
            .args([
                "run",
                "--install-crd=false",
                "--metrics-addr",
                "127.0.0.1:0",
                "--debounce",
                "1s",
                "--resync",
                "10s",
                "--image-timeout",
                "10s",
            ])
            .env("POD_NAMESPACE", "imageposture-system")
            .env("POD_NAME", "e2e")
            .spawn()
            .expect("operator starts"),
    );

    let pods: Api<Pod> = Api::all(client.clone());
    let listed = pods.list(&ListParams::default()).await.expect("pods").items;
    let want: BTreeSet<String> = Inventory::from_pods(&listed, &NamespaceFilter::default())
        .images
        .keys()
        .map(|id| id.resource_name())
        .collect();
    assert!(!want.is_empty(), "the cluster runs pods with pulled images");

    let postures: Api<ImagePosture> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let have: BTreeSet<String> = postures
            .list(&ListParams::default())
            .await
            .expect("imagepostures")
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.posture).is_some())
            .filter_map(|p| p.metadata.name)
            .collect();
        let missing: Vec<_> = want.difference(&have).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ImagePosture with a posture yet for {missing:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    for p in postures.list(&ListParams::default()).await.unwrap().items {
        let s = p.status.unwrap_or_default();
        eprintln!(
            "{:<60} {:?} {:?} {:?}",
            p.spec.image, s.posture, s.signer, s.reason
        );
    }
}
