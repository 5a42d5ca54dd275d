//! One test's cluster: the real API server (its own, with RBAC on), the ImagePosture CRD
//! installed, and the operator's client — the ServiceAccount bound to `config/rbac` — talking
//! through a counting, fault-injecting [`ApiProxy`]. Pods are real objects: created by the
//! admin, their status set through the status subresource as a kubelet would.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use super::proxy::{ApiProxy, Seen};
use super::KubeApi;
use imageposture::model::crd::ImagePosture;

pub struct Cluster {
    pub kube: KubeApi,
    pub proxy: ApiProxy,
    operator: Client,
    /// The ServiceAccount token the operator's client uses.
    pub token: String,
}

impl Cluster {
    /// The server, the CRD, and the operator's client (RBAC from `config/rbac` plus `extra`
    /// component dirs). `None` when the API server binaries are missing (the harness says why).
    pub async fn start_with(extra: &[&str]) -> Option<Cluster> {
        let kube = KubeApi::start().await?;
        kube.install_crd().await;
        let token = kube.operator_token(extra).await;
        let proxy = ApiProxy::start(&kube.url()).await;
        let operator = client_for(&proxy.url, &token).await;
        Some(Cluster {
            kube,
            proxy,
            operator,
            token,
        })
    }

    pub async fn start() -> Option<Cluster> {
        Cluster::start_with(&[]).await
    }

    /// The operator's client (its ServiceAccount, through the proxy).
    pub fn client(&self) -> Client {
        self.operator.clone()
    }

    pub fn admin(&self) -> Client {
        self.kube.admin()
    }

    /// Every ImagePosture as stored (managedFields included), read by the admin.
    pub async fn image_postures(&self) -> Vec<Value> {
        let api: Api<ImagePosture> = Api::all(self.admin());
        let list = api.list(&ListParams::default()).await.expect("list");
        list.items
            .iter()
            .map(|cr| serde_json::to_value(cr).expect("json"))
            .collect()
    }

    pub async fn image_posture(&self, name: &str) -> Option<Value> {
        let api: Api<ImagePosture> = Api::all(self.admin());
        let cr = api.get_opt(name).await.expect("get")?;
        Some(serde_json::to_value(cr).expect("json"))
    }

    /// The operator's writes (through the proxy) since the last reset.
    pub fn writes(&self) -> Vec<Seen> {
        self.proxy.writes()
    }

    /// The operator's writes of ImagePostures with `method`.
    pub fn image_posture_writes(&self, method: &str) -> usize {
        self.writes()
            .iter()
            .filter(|s| s.method == method && s.path.contains("/imagepostures"))
            .count()
    }

    pub fn reset_counters(&self) {
        self.proxy.reset();
    }

    /// `events.k8s.io/v1` Events in every namespace, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let api: Api<Event> = Api::all(self.admin());
        let mut list = api
            .list(&ListParams::default())
            .await
            .expect("events")
            .items;
        list.sort_by_key(|e| {
            e.event_time.as_ref().map(|t| t.0).or(e
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        });
        list.iter()
            .map(|e| serde_json::to_value(e).expect("json"))
            .collect()
    }

    /// Creates each pod as a user would (spec), adds its ephemeral containers through their
    /// subresource, then writes its status as the kubelet would.
    pub async fn put_pods(&self, pods: &[Pod]) {
        let namespaces: BTreeSet<String> = pods
            .iter()
            .filter_map(|p| p.metadata.namespace.clone())
            .collect();
        for ns in namespaces {
            self.kube.ensure_namespace(&ns).await;
        }
        for pod in pods {
            put_pod(&self.admin(), pod).await;
        }
    }

    pub async fn delete_pod(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().expect("pod name");
        let api: Api<Pod> = Api::namespaced(self.admin(), ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        api.delete(name, &params).await.expect("delete pod");
    }

    /// The pods as the operator's client lists them (its RBAC applies).
    pub async fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::all(self.client());
        api.list(&ListParams::default())
            .await
            .expect("the operator lists pods")
            .items
    }
}

/// A client for `url` with a bearer token (plain HTTP: the proxy).
pub async fn client_for(url: &str, token: &str) -> Client {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n\
         users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    \
         cluster: c\n    user: u\ncurrent-context: x\n"
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// Writes a kubeconfig to `path` for `url` (plain HTTP: an [`ApiProxy`]) with a bearer token,
/// for running the real `imageposture run` process (`KUBECONFIG=`) through a proxy.
pub fn write_kubeconfig(path: &std::path::Path, url: &str, token: &str) -> std::path::PathBuf {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n\
         users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context:\n    \
         cluster: c\n    user: u\ncurrent-context: x\n"
    );
    std::fs::write(path, yaml).expect("kubeconfig");
    path.to_path_buf()
}

/// One pod: spec by create (ephemeral containers through their subresource, as `kubectl
/// debug` adds them), then the status as a kubelet would write it.
pub async fn put_pod(admin: &Client, pod: &Pod) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.clone().expect("pod name");
    let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let mut spec = serde_json::to_value(pod.spec.clone().expect("pod spec")).expect("json");
    let ephemeral = spec
        .as_object_mut()
        .and_then(|m| m.remove("ephemeralContainers"))
        .filter(|e| e.as_array().is_some_and(|a| !a.is_empty()));
    let mut meta = json!({ "name": name, "namespace": ns });
    if let Some(owners) = &pod.metadata.owner_references {
        meta["ownerReferences"] = serde_json::to_value(owners).expect("owners");
    }
    if let Some(labels) = &pod.metadata.labels {
        meta["labels"] = serde_json::to_value(labels).expect("labels");
    }
    let body: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
    }))
    .expect("pod");
    api.create(&PostParams::default(), &body)
        .await
        .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"));
    if let Some(ephemeral) = ephemeral {
        let mut with: Vec<Value> = Vec::new();
        for c in ephemeral.as_array().into_iter().flatten() {
            let mut c = c.clone();
            c["imagePullPolicy"] = json!("IfNotPresent");
            c["terminationMessagePolicy"] = json!("File");
            with.push(c);
        }
        let patch = json!({ "spec": { "ephemeralContainers": with } });
        let pp = PatchParams::default();
        api.patch_subresource("ephemeralcontainers", &name, &pp, &Patch::Strategic(&patch))
            .await
            .unwrap_or_else(|e| panic!("ephemeral containers of {ns}/{name}: {e}"));
    }
    if let Some(status) = &pod.status {
        let status = serde_json::to_value(status).expect("status");
        let patch = json!({ "status": status });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("status of {ns}/{name}: {e}"));
    }
}
