//! Pull secrets (`run --pull-secrets=true`): the credentials of the pods that run an image, as
//! the kubelet would use them — the pod's `imagePullSecrets`, then its ServiceAccount's —
//! `kubernetes.io/dockerconfigjson` and `kubernetes.io/dockercfg`.
//!
//! Which pods run which repository comes from the operator's pod reflector (in memory): per
//! `registry/repository`, a small bounded set of (namespace, ServiceAccount, secret names). An
//! image used from several namespaces may be read with any of their pods' credentials.
//!
//! Only the Secrets and ServiceAccounts pods name are read, with `get` (never list or watch),
//! only when an image is verified against a registry that asks for credentials, and cached for
//! a short TTL; a credential the registry refuses is read again at the next verification.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::runtime::reflector::Store;
use kube::{Api, Client};

use crate::core::image::ImageRef;
use crate::core::lock::LockExt as _;
use crate::operator::inventory::pod::PodView;
use crate::verify::{CredSource, Credential, Found, Keyring, PullSecrets, Target};

/// How long a Secret or ServiceAccount read is reused.
pub const SECRET_TTL: Duration = Duration::from_secs(300);
/// How long the repository → pods index is reused before it is built again from the reflector.
const INDEX_TTL: Duration = Duration::from_secs(5);
/// Distinct (namespace, ServiceAccount, secrets) kept per repository.
const MAX_USERS_PER_IMAGE: usize = 16;
/// Secrets read per image and verification.
const MAX_SECRETS_PER_IMAGE: usize = 32;

/// Who runs a repository: what the kubelet would pull it with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodAccess {
    pub namespace: String,
    pub service_account: String,
    pub secrets: Vec<String>,
}

type Index = HashMap<String, BTreeSet<PodAccess>>;

/// Secrets and ServiceAccounts remembered before expired entries are dropped (an entry is only
/// read within its TTL; a deleted secret's entry would otherwise stay).
const REMEMBERED: usize = 1024;

/// Caches `value` under `key`; past [`REMEMBERED`] entries, the expired ones go first.
fn remember<V>(
    cache: &Mutex<HashMap<NamespacedName, (V, Instant)>>,
    key: NamespacedName,
    value: V,
    ttl: Duration,
) {
    let mut cache = cache.locked();
    if cache.len() >= REMEMBERED {
        cache.retain(|_, (_, at)| at.elapsed() < ttl);
    }
    cache.insert(key, (value, Instant::now()));
}
type NamespacedName = (String, String);

/// A read Secret: its keyring, or why it gives none (names only).
#[derive(Clone)]
enum Read {
    Keyring(Keyring),
    Unusable(String),
}

/// Pull secrets for the verifier, read for the pods in `pods` (the operator's lean pods; tests
/// pass k8s-openapi Pods).
pub struct PullSecretSource<P: kube::Resource<DynamicType = ()> + 'static> {
    client: Client,
    pods: Store<P>,
    ttl: Duration,
    index: Mutex<Option<(Instant, Arc<Index>)>>,
    secrets: Mutex<HashMap<NamespacedName, (Read, Instant)>>,
    accounts: Mutex<HashMap<NamespacedName, (Vec<String>, Instant)>>,
}

impl<P> PullSecretSource<P>
where
    P: kube::Resource<DynamicType = ()> + PodView + Clone + Send + Sync + 'static,
{
    pub fn new(client: Client, pods: Store<P>) -> Self {
        PullSecretSource {
            client,
            pods,
            ttl: SECRET_TTL,
            index: Mutex::default(),
            secrets: Mutex::default(),
            accounts: Mutex::default(),
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The pods' (namespace, ServiceAccount, secrets) per `registry/repository`.
    fn index(&self) -> Arc<Index> {
        if let Some((at, index)) = self.index.locked().as_ref() {
            if at.elapsed() < INDEX_TTL {
                return index.clone();
            }
        }
        let index = Arc::new(build_index(self.pods.state().iter().map(|p| p.as_ref())));
        *self.index.locked() = Some((Instant::now(), index.clone()));
        index
    }

    async fn account_secrets(&self, namespace: &str, name: &str) -> Result<Vec<String>, String> {
        let key = (namespace.to_string(), name.to_string());
        if let Some((names, at)) = self.accounts.locked().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(names.clone());
            }
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let names = match api.get_opt(name).await {
            Ok(Some(sa)) => sa
                .image_pull_secrets
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.name)
                .filter(|n| !n.is_empty())
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(api_error(&e)),
        };
        remember(&self.accounts, key, names.clone(), self.ttl);
        Ok(names)
    }

    async fn secret(&self, namespace: &str, name: &str) -> Read {
        let key = (namespace.to_string(), name.to_string());
        if let Some((read, at)) = self.secrets.locked().get(&key) {
            if at.elapsed() < self.ttl {
                return read.clone();
            }
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let read = match api.get_opt(name).await {
            Ok(Some(secret)) => parse_secret(&secret, &format!("{namespace}/{name}")),
            Ok(None) => Read::Unusable("not found".into()),
            // Not cached: a permission or API failure is tried again next time.
            Err(e) => return Read::Unusable(api_error(&e)),
        };
        remember(&self.secrets, key, read.clone(), self.ttl);
        read
    }

    async fn lookup_repo(&self, target: &Target, registry: &str, repository: &str) -> Found {
        let mut found = Found::default();
        let index = self.index();
        let Some(users) = index.get(&repo_key(registry, repository)) else {
            return found;
        };
        let mut read = 0;
        for user in users {
            let mut names = user.secrets.clone();
            if !user.service_account.is_empty() {
                match self
                    .account_secrets(&user.namespace, &user.service_account)
                    .await
                {
                    Ok(more) => names.extend(more),
                    Err(why) => found.notes.push(format!(
                        "ServiceAccount {}/{} could not be read: {why}",
                        user.namespace, user.service_account
                    )),
                }
            }
            let mut seen = BTreeSet::new();
            for name in names {
                if !seen.insert(name.clone()) {
                    continue;
                }
                read += 1;
                if read > MAX_SECRETS_PER_IMAGE {
                    found.notes.push(format!(
                        "more than {MAX_SECRETS_PER_IMAGE} pull secrets; the rest not read"
                    ));
                    return found;
                }
                match self.secret(&user.namespace, &name).await {
                    Read::Keyring(k) => found.credentials.extend(k.lookup(target)),
                    Read::Unusable(why) => found
                        .notes
                        .push(format!("pull secret {}/{name}: {why}", user.namespace)),
                }
            }
        }
        found
    }
}

impl<P> PullSecrets for PullSecretSource<P>
where
    P: kube::Resource<DynamicType = ()> + PodView + Clone + Send + Sync + 'static,
{
    fn lookup<'a>(
        &'a self,
        target: &'a Target,
        registry: &'a str,
        repository: &'a str,
    ) -> BoxFuture<'a, Found> {
        Box::pin(self.lookup_repo(target, registry, repository))
    }

    fn refused(&self, credential: &Credential) {
        // The origin is `namespace/name` of the secret it came from.
        if let Some((ns, name)) = credential.origin.split_once('/') {
            self.secrets
                .locked()
                .remove(&(ns.to_string(), name.to_string()));
            self.accounts.locked().retain(|(n, _), _| n != ns);
        }
    }
}

fn repo_key(registry: &str, repository: &str) -> String {
    format!("{registry}/{repository}")
}

/// Per `registry/repository`, who runs it (bounded).
pub fn build_index<'a, P: PodView + 'a>(pods: impl IntoIterator<Item = &'a P>) -> Index {
    let mut index: Index = HashMap::new();
    for pod in pods {
        let namespace = pod.namespace().unwrap_or("default").to_string();
        let access = PodAccess {
            namespace,
            service_account: pod
                .service_account()
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_string(),
            secrets: pod
                .pull_secrets()
                .into_iter()
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
        };
        let mut images: Vec<&str> = Vec::new();
        pod.for_each_container(&mut |_, _, image, _| {
            if let Some(image) = image {
                images.push(image);
            }
        });
        for image in images {
            let Ok(r) = ImageRef::parse(image) else {
                continue;
            };
            let users = index
                .entry(repo_key(&r.registry, &r.repository))
                .or_default();
            if users.len() < MAX_USERS_PER_IMAGE {
                users.insert(access.clone());
            }
        }
    }
    index
}

/// A pull secret's keyring; any other type of Secret gives none.
fn parse_secret(secret: &Secret, origin: &str) -> Read {
    let data = secret.data.as_ref();
    let (key, legacy) = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => (".dockerconfigjson", false),
        Some("kubernetes.io/dockercfg") => (".dockercfg", true),
        other => {
            return Read::Unusable(format!(
                "type {:?} is not kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg",
                crate::core::posture::bound(other.unwrap_or(""), 64)
            ))
        }
    };
    let Some(bytes) = data.and_then(|d| d.get(key)) else {
        return Read::Unusable(format!("has no {key}"));
    };
    match Keyring::from_docker_json(&bytes.0, legacy, CredSource::PullSecret, origin) {
        Ok(k) => Read::Keyring(k),
        Err(why) => Read::Unusable(why),
    }
}

/// An API error as a message: its kind and code, never a body.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!(
            "API server answered {} {}",
            s.code,
            crate::core::posture::bound(&s.reason, 64)
        ),
        _ => "API request failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn index_is_per_repository_and_bounded() {
        let pod = |ns: &str,
                   sa: Option<&str>,
                   secrets: &[&str],
                   image: &str|
         -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": ns},
                "spec": {
                    "serviceAccountName": sa,
                    "imagePullSecrets": secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>(),
                    "containers": [{"name": "c", "image": image}],
                }
            }))
            .unwrap()
        };
        let mut pods = vec![
            pod("a", Some("builder"), &["regcred"], "ghcr.io/acme/app:v1"),
            pod("b", None, &[], "ghcr.io/acme/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            pod("a", Some("builder"), &["regcred"], "ghcr.io/acme/app:v2"),
        ];
        for i in 0..40 {
            pods.push(pod(&format!("n{i}"), None, &[], "ghcr.io/acme/app:v1"));
        }
        let index = build_index(pods.iter());
        let users = &index["ghcr.io/acme/app"];
        assert_eq!(users.len(), MAX_USERS_PER_IMAGE);
        assert!(users.contains(&PodAccess {
            namespace: "a".into(),
            service_account: "builder".into(),
            secrets: vec!["regcred".into()],
        }));
        assert!(users.contains(&PodAccess {
            namespace: "b".into(),
            service_account: "default".into(),
            secrets: vec![],
        }));
    }

    #[test]
    fn only_pull_secret_types() {
        let secret = |ty: &str, key: &str, value: &str| -> Secret {
            serde_json::from_value(json!({
                "metadata": {"name": "s"},
                "type": ty,
                "data": { key: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value) },
            }))
            .unwrap()
        };
        let target = Target::new("ghcr.io", "acme/app");
        let json_secret = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            r#"{"auths":{"ghcr.io":{"username":"u","password":"SECRETPW"}}}"#,
        );
        let Read::Keyring(k) = parse_secret(&json_secret, "ns/s") else {
            panic!("dockerconfigjson")
        };
        let creds = k.lookup(&target);
        assert_eq!(creds.len(), 1);
        assert_eq!(creds[0].origin, "ns/s");
        let cfg = secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            r#"{"ghcr.io":{"auth":"dTpw"}}"#,
        );
        assert!(matches!(parse_secret(&cfg, "ns/s"), Read::Keyring(_)));
        let opaque = secret("Opaque", "password", "SECRETPW");
        let Read::Unusable(why) = parse_secret(&opaque, "ns/s") else {
            panic!("opaque")
        };
        assert!(!why.contains("SECRETPW"));
        let broken = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            r#"{"auths":{"x":{"auth":"SECRETPW"#,
        );
        let Read::Unusable(why) = parse_secret(&broken, "ns/s") else {
            panic!("broken")
        };
        assert!(!why.contains("SECRETPW"), "{why}");
    }
}
