//! An HTTP double of the Kubernetes API server, for driving `kube::Api` and kube-runtime's
//! `Recorder`/watchers over a real `kube::Client` without a cluster.
//!
//! It is faithful where our operator's correctness depends on the server: the status
//! subresource (status is ignored on the main endpoint and only status is taken from
//! `/status`), server-side apply (create-if-absent, `fieldManager` required, `apiVersion`/`kind`
//! required), JSON merge patch, `resourceVersion` preconditions (409 `Conflict` with a real
//! `Status` body), no-op writes that do not bump `resourceVersion`, 404/409 `Status` objects,
//! scope (a cluster-scoped resource under `/namespaces/` is 404), label selectors, and watches
//! (newline-delimited watch events from a resourceVersion, `timeoutSeconds` honoured).
//!
//! ImagePostures carry `metadata.managedFields`, and server-side apply on them works per field
//! manager as the real server does it (see [`ssa`]): an apply removes only fields its manager
//! owned, and other managers' fields are kept.
//!
//! Simplifications, on purpose: on other resources apply *replaces* each top-level field it
//! carries (and `metadata.labels`/`annotations`/`ownerReferences`/`finalizers`) with no
//! managedFields; there is no finalizer/deletion grace, no JSON patch (415), no discovery
//! endpoints. Lists honour `limit`/`continue` (an offset token).
//!
//! Usage: `let api = ApiDouble::start().await; let client = api.client();` then inspect
//! `api.writes()`, `api.image_postures()`, `api.events()`, or `api.requests()` (every request,
//! for deriving the RBAC a client needs: tests/rbac.rs).

#![allow(dead_code)]

pub mod ssa;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

type Body = BoxBody<Bytes, Infallible>;

/// A resource type the double serves. Anything else is 404, like an unknown resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// With a status subresource, the main endpoint ignores `status` and `/status` takes only it.
    pub status_subresource: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural` for core), as API server messages spell it.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn is_event(&self) -> bool {
        self.kind == "Event"
    }
}

pub const RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "imageposture.io",
        version: "v1alpha1",
        plural: "imagepostures",
        kind: "ImagePosture",
        namespaced: false,
        status_subresource: true,
    },
    ResourceType {
        group: "imageposture.io",
        version: "v1alpha1",
        plural: "signerbaselines",
        kind: "SignerBaseline",
        namespaced: false,
        status_subresource: true,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        status_subresource: false,
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        status_subresource: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        status_subresource: true,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        status_subresource: false,
    },
    // For `install::install_crd`. The double does not establish CRDs by itself: a test plays
    // the API server's establishing controller by writing `/status` (tests/install.rs).
    ResourceType {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        status_subresource: true,
    },
    // `run --policy-reports`: a CRD (Kyverno's or Policy Reporter's), served as if installed.
    ResourceType {
        group: "wgpolicyk8s.io",
        version: "v1alpha2",
        plural: "policyreports",
        kind: "PolicyReport",
        namespaced: true,
        status_subresource: false,
    },
];

const IMAGEPOSTURES: usize = 0;

/// One write request as received (failed ones included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// HTTP status the double answered.
    pub status: u16,
}

/// One request of any method as received, for deriving what a client needs (e.g. RBAC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// HTTP status the double answered (for a watch: the status it started streaming with).
    pub status: u16,
}

/// (resource index, namespace or "", name)
type Key = (usize, String, String);

#[derive(Clone, Debug)]
struct WatchEntry {
    rv: u64,
    resource: usize,
    namespace: String,
    type_: &'static str,
    object: Value,
}

struct State {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    uid: u64,
    writes: Vec<WriteRecord>,
    reads: Vec<(String, String)>,
    /// Every request of every method, in arrival order; never reset.
    requests: Vec<RequestRecord>,
    /// Status codes the next non-Event writes fail with, in order.
    inject: VecDeque<u16>,
    /// (path substring, status, how many more): writes to matching paths fail with the status.
    inject_for: Vec<(String, u16, usize)>,
    /// (path substring, delay, how many more): matching non-Event writes are held this long
    /// before they are processed (a client that gives up first leaves them unapplied).
    delay_for: Vec<(String, Duration, usize)>,
    /// Writes that were held by `delay_for` (answered late, or never if the client gave up).
    held: usize,
    /// Longest a watch stays open, whatever `timeoutSeconds` asks.
    watch_cap: Option<Duration>,
    /// Bumped to end every open watch now.
    cut: tokio::sync::watch::Sender<u64>,
    /// The next this-many watches from a resourceVersion answer a 410 Gone `ERROR` event.
    expire_watches: usize,
    /// Status codes the next list requests (collection GETs, not watches) fail with.
    fail_lists: VecDeque<u16>,
    log: Vec<WatchEntry>,
    tx: broadcast::Sender<WatchEntry>,
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, resource: usize, namespace: &str, type_: &'static str, object: &Value) {
        let e = WatchEntry {
            rv: self.rv,
            resource,
            namespace: namespace.to_string(),
            type_,
            object: object.clone(),
        };
        self.log.push(e.clone());
        let _ = self.tx.send(e);
    }
}

/// The running double; stops serving when dropped.
pub struct ApiDouble {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiDouble {
    /// Binds 127.0.0.1 on a free port and serves in the current tokio runtime.
    pub async fn start() -> ApiDouble {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind api double");
        let addr = listener.local_addr().unwrap();
        let (tx, _) = broadcast::channel(4096);
        let state = Arc::new(Mutex::new(State {
            objects: BTreeMap::new(),
            rv: 1000,
            uid: 0,
            writes: Vec::new(),
            reads: Vec::new(),
            requests: Vec::new(),
            inject: VecDeque::new(),
            inject_for: Vec::new(),
            delay_for: Vec::new(),
            held: 0,
            watch_cap: None,
            cut: tokio::sync::watch::channel(0).0,
            expire_watches: 0,
            fail_lists: VecDeque::new(),
            log: Vec::new(),
            tx,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept loop closes them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        ApiDouble { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Client` talking plain HTTP to this double.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).expect("kube client for the api double")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` writes (POST/PUT/PATCH/DELETE on anything but Events) answer 409 Conflict,
    /// as a real server does when another writer got there first.
    pub fn fail_next_writes_with_conflict(&self, n: usize) {
        self.fail_next_writes_with(409, n);
    }

    /// The next `n` writes (not Events) answer `code` with a matching `Status` (e.g. 500, 429).
    pub fn fail_next_writes_with(&self, code: u16, n: usize) {
        self.lock().inject.extend(std::iter::repeat_n(code, n));
    }

    /// The next `n` writes whose path contains `needle` (Events included, e.g. `/status` or
    /// `/events`) answer `code`; other writes are unaffected.
    pub fn fail_writes_to(&self, needle: &str, code: u16, n: usize) {
        self.lock().inject_for.push((needle.to_string(), code, n));
    }

    /// The next `n` writes (not Events) whose path contains `needle` are held for `delay`
    /// before being processed: an API server that does not answer in time.
    pub fn delay_writes_to(&self, needle: &str, delay: Duration, n: usize) {
        self.lock().delay_for.push((needle.to_string(), delay, n));
    }

    /// Writes held by [`delay_writes_to`](Self::delay_writes_to) since the last reset.
    pub fn held_writes(&self) -> usize {
        self.lock().held
    }

    /// Every watch is closed by the server after at most `cap` (a watch that keeps dropping);
    /// watches open now are closed at once.
    pub fn cap_watches(&self, cap: Option<Duration>) {
        let mut s = self.lock();
        s.watch_cap = cap;
        s.cut.send_modify(|g| *g += 1);
    }

    /// Open watches end, and the next `n` watches started from a resourceVersion get a
    /// `410 Gone` (`Expired`) `ERROR` event, as a real server sends for a too-old
    /// resourceVersion: the client must re-list.
    pub fn expire_next_watches(&self, n: usize) {
        let mut s = self.lock();
        s.expire_watches = n;
        // Open watches end now, so the client's next watch meets the 410.
        s.cut.send_modify(|g| *g += 1);
    }

    /// The next `n` list requests (collection GETs that are not watches) answer `code`.
    pub fn fail_next_lists(&self, code: u16, n: usize) {
        self.lock().fail_lists.extend(std::iter::repeat_n(code, n));
    }

    /// List requests (collection GETs without `watch`) received, for `path`.
    pub fn list_count(&self, path: &str) -> usize {
        self.lock()
            .reads
            .iter()
            .filter(|(p, q)| p == path && !q.contains("watch=true"))
            .count()
    }

    /// Watch requests received, for `path`.
    pub fn watch_count(&self, path: &str) -> usize {
        self.lock()
            .reads
            .iter()
            .filter(|(p, q)| p == path && q.contains("watch=true"))
            .count()
    }

    /// Every write request received since the last [`reset_counters`](Self::reset_counters).
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.lock().writes.clone()
    }

    /// Writes with this method whose path equals `path`.
    pub fn write_count(&self, method: &str, path: &str) -> usize {
        self.lock()
            .writes
            .iter()
            .filter(|w| w.method == method && w.path == path)
            .count()
    }

    /// Writes to ImagePosture objects (main and status endpoints), by method.
    pub fn image_posture_writes(&self, method: &str) -> usize {
        self.lock()
            .writes
            .iter()
            .filter(|w| w.method == method && w.path.contains("/apis/imageposture.io/"))
            .count()
    }

    /// Read requests (GET) as (path, query), including watches.
    pub fn reads(&self) -> Vec<(String, String)> {
        self.lock().reads.clone()
    }

    /// Every request received since the double started (all methods, watches included), in
    /// arrival order. Unlike [`writes`](Self::writes) and [`reads`](Self::reads) it is never
    /// cleared by [`reset_counters`](Self::reset_counters).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Forgets recorded requests (but not [`requests`](Self::requests)) and pending injected
    /// failures; objects stay.
    pub fn reset_counters(&self) {
        let mut s = self.lock();
        s.writes.clear();
        s.reads.clear();
        s.inject.clear();
        s.inject_for.clear();
        s.delay_for.clear();
        s.held = 0;
        s.expire_watches = 0;
        s.fail_lists.clear();
    }

    /// Removes a stored object without an API request (the counterpart of [`seed`](Self::seed)),
    /// emitting a DELETED watch event, as if another client had deleted it.
    pub fn remove(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = RESOURCES
            .iter()
            .position(|t| t.group == group && t.plural == plural)
            .unwrap_or_else(|| panic!("the api double does not serve {plural}.{group}"));
        let mut s = self.lock();
        let mut gone = s
            .objects
            .remove(&(r, namespace.to_string(), name.to_string()))?;
        let rv = s.next_rv();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.emit(r, namespace, "DELETED", &gone);
        Some(gone)
    }

    /// Current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Stored ImagePosture objects by name.
    pub fn image_postures(&self) -> BTreeMap<String, Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((r, _, _), _)| *r == IMAGEPOSTURES)
            .map(|((_, _, n), v)| (n.clone(), v.clone()))
            .collect()
    }

    /// How many stored ImagePostures match `pred`, without copying them (cheap to poll).
    pub fn count_image_postures(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.lock()
            .objects
            .range((IMAGEPOSTURES, String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == IMAGEPOSTURES)
            .filter(|(_, v)| pred(v))
            .count()
    }

    pub fn image_posture(&self, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(IMAGEPOSTURES, String::new(), name.to_string()))
            .cloned()
    }

    /// Stored objects of one resource type (by plural and group), in key order.
    pub fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        let s = self.lock();
        s.objects
            .iter()
            .filter(|((r, _, _), _)| RESOURCES[*r].group == group && RESOURCES[*r].plural == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Events stored through either API (core v1 and events.k8s.io/v1), in creation order.
    pub fn events(&self) -> Vec<Value> {
        let s = self.lock();
        let mut evs: Vec<Value> = s
            .objects
            .iter()
            .filter(|((r, _, _), _)| RESOURCES[*r].is_event())
            .map(|(_, v)| v.clone())
            .collect();
        evs.sort_by_key(|e| {
            e["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        evs
    }

    /// Stores an object as given (status included), resolving its type from apiVersion+kind;
    /// fills uid/resourceVersion/creationTimestamp. For seeding state before a test.
    pub fn seed(&self, mut obj: Value) -> Value {
        let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_string();
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let r = RESOURCES
            .iter()
            .position(|t| t.api_version() == api_version && t.kind == kind)
            .unwrap_or_else(|| panic!("the api double does not serve {api_version} {kind}"));
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            RESOURCES[r].namespaced,
            !ns.is_empty(),
            "scope of {kind} {name}"
        );
        let mut s = self.lock();
        let rv = s.next_rv();
        s.uid += 1;
        let uid = s.uid;
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("uid".into(), json!(format!("uid-{uid:08}")));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!(now()));
        if RESOURCES[r].status_subresource {
            meta.entry("generation").or_insert(json!(1));
        }
        let existed = s
            .objects
            .insert((r, ns.clone(), name), obj.clone())
            .is_some();
        s.emit(r, &ns, if existed { "MODIFIED" } else { "ADDED" }, &obj);
        obj
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn full(body: Vec<u8>) -> Body {
    Full::new(Bytes::from(body)).boxed()
}

fn json_response(code: u16, v: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full(serde_json::to_vec(v).unwrap()))
        .unwrap()
}

fn status_reason(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// A `meta/v1 Status` failure, as the API server returns for every error.
fn status(code: u16, reason: &str, message: String, details: Value) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        }),
    )
}

fn details(rt: &ResourceType, name: &str) -> Value {
    json!({"name": name, "group": rt.group, "kind": rt.plural})
}

fn not_found(rt: &ResourceType, name: &str) -> Response<Body> {
    status(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", rt.qualified()),
        details(rt, name),
    )
}

fn conflict(rt: &ResourceType, name: &str) -> Response<Body> {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
             please apply your changes to the latest version and try again",
            rt.qualified()
        ),
        details(rt, name),
    )
}

fn bad_request(message: impl Into<String>) -> Response<Body> {
    status(400, "BadRequest", message.into(), json!({}))
}

fn unknown_path() -> Response<Body> {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource".into(),
        json!({}),
    )
}

/// Where a request goes.
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return None,
    };
    let resource = RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)?;
    let rt = &RESOURCES[resource];
    // Scope is enforced: a namespaced object needs its namespace (except list/watch across
    // namespaces), a cluster-scoped one has none.
    if (rt.namespaced && namespace.is_none() && name.is_some())
        || (!rt.namespaced && namespace.is_some())
    {
        return None;
    }
    let status = match sub {
        None => false,
        Some("status") if rt.status_subresource => true,
        Some(_) => return None,
    };
    Some(Target {
        resource,
        namespace,
        name,
        status,
    })
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query_string = req.uri().query().unwrap_or_default().to_string();
    let query: BTreeMap<String, String> = url::form_urlencoded::parse(query_string.as_bytes())
        .into_owned()
        .collect();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };

    if method == Method::GET {
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reads
            .push((path.clone(), query_string.clone()));
        let response = match route(&path) {
            Some(t) => get(&state, t, &query),
            None => unknown_path(),
        };
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .push(RequestRecord {
                method: method.to_string(),
                path,
                query: query_string,
                content_type,
                status: response.status().as_u16(),
            });
        return Ok(response);
    }

    let delay = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let event = route(&path).is_some_and(|t| RESOURCES[t.resource].is_event());
        let delay = s
            .delay_for
            .iter_mut()
            .find(|(needle, _, n)| *n > 0 && !event && path.contains(needle.as_str()))
            .map(|(_, d, n)| {
                *n -= 1;
                *d
            });
        if delay.is_some() {
            s.held += 1;
        }
        delay
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let targeted = s
        .inject_for
        .iter_mut()
        .find(|(needle, _, n)| *n > 0 && path.contains(needle.as_str()))
        .map(|(_, code, n)| {
            *n -= 1;
            *code
        });
    let response = match (targeted, route(&path)) {
        (Some(code), Some(t)) => {
            let rt = RESOURCES[t.resource];
            let name = t.name.clone().unwrap_or_default();
            if code == 409 {
                conflict(&rt, &name)
            } else {
                status(
                    code,
                    status_reason(code),
                    "injected failure".into(),
                    details(&rt, &name),
                )
            }
        }
        _ => write(&mut s, &method, &path, &query, &content_type, &body),
    };
    s.requests.push(RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: query_string.clone(),
        content_type: content_type.clone(),
        status: response.status().as_u16(),
    });
    s.writes.push(WriteRecord {
        method: method.to_string(),
        path,
        query: query_string,
        content_type,
        status: response.status().as_u16(),
    });
    Ok(response)
}

fn get(state: &Arc<Mutex<State>>, t: Target, query: &BTreeMap<String, String>) -> Response<Body> {
    let rt = &RESOURCES[t.resource];
    let selector = match Selector::parse(query.get("labelSelector").map(String::as_str)) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    if let Some(name) = &t.name {
        let s = state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (
            t.resource,
            t.namespace.clone().unwrap_or_default(),
            name.clone(),
        );
        return match s.objects.get(&key) {
            Some(o) => json_response(200, o),
            None => not_found(rt, name),
        };
    }
    if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        return watch(state, t, query, selector);
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(code) = s.fail_lists.pop_front() {
        return status(
            code,
            status_reason(code),
            "injected list failure".into(),
            json!({"kind": rt.plural}),
        );
    }
    // Paging as the real server does it for `limit`/`continue` (the token here is an offset
    // into the current listing: consistent enough for a double that is not written to while
    // a paged list is read). Only the page is copied.
    let offset: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let matching = || {
        s.objects
            .range((t.resource, String::new(), String::new())..)
            .take_while(|((r, _, _), _)| *r == t.resource)
            .filter(|((_, ns, _), o)| {
                t.namespace.as_ref().is_none_or(|want| want == ns) && selector.matches(o)
            })
    };
    let page: Vec<&Value> = matching()
        .skip(offset)
        .take(limit)
        .map(|(_, o)| o)
        .collect();
    let mut metadata = json!({"resourceVersion": s.rv.to_string()});
    if page.len() == limit {
        let rest = matching().skip(offset + limit).count();
        if rest > 0 {
            metadata["continue"] = json!((offset + limit).to_string());
            metadata["remainingItemCount"] = json!(rest);
        }
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct List<'a> {
        api_version: String,
        kind: String,
        metadata: Value,
        items: Vec<&'a Value>,
    }
    json_response(
        200,
        &List {
            api_version: rt.api_version(),
            kind: format!("{}List", rt.kind),
            metadata,
            items: page,
        },
    )
}

fn watch(
    state: &Arc<Mutex<State>>,
    t: Target,
    query: &BTreeMap<String, String>,
    selector: Selector,
) -> Response<Body> {
    let since: Option<u64> = query
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let mut timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(3600));
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cap) = s.watch_cap {
            timeout = timeout.min(cap);
        }
        if since.is_some() && s.expire_watches > 0 {
            s.expire_watches -= 1;
            let gone = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {} ({})", since.unwrap_or(0), s.rv),
                "reason": "Expired", "code": 410,
            }});
            let mut line = serde_json::to_vec(&gone).unwrap();
            line.push(b'\n');
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(full(line))
                .unwrap();
        }
    }
    let wanted = {
        let ns = t.namespace.clone();
        let r = t.resource;
        move |e: &WatchEntry| {
            e.resource == r
                && ns.as_ref().is_none_or(|n| *n == e.namespace)
                && selector.matches(&e.object)
        }
    };
    // Replay and subscribe under one lock: writes emit under the same lock, so nothing is
    // missed or duplicated between the two.
    let (replay, mut rx) = {
        let s = state.lock().unwrap_or_else(|e| e.into_inner());
        let replay: Vec<WatchEntry> = match since {
            Some(rv) => s
                .log
                .iter()
                .filter(|e| e.rv > rv && wanted(e))
                .cloned()
                .collect(),
            // No resourceVersion: the current state as ADDED, then changes.
            None => s
                .objects
                .iter()
                .map(|((r, ns, _), o)| WatchEntry {
                    rv: s.rv,
                    resource: *r,
                    namespace: ns.clone(),
                    type_: "ADDED",
                    object: o.clone(),
                })
                .filter(&wanted)
                .collect(),
        };
        (replay, s.tx.subscribe())
    };
    let mut cut = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .cut
        .subscribe();
    let (tx, out) = mpsc::channel::<Bytes>(64);
    let line = |e: &WatchEntry| {
        let mut l = serde_json::to_vec(&json!({"type": e.type_, "object": e.object})).unwrap();
        l.push(b'\n');
        Bytes::from(l)
    };
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for e in &replay {
            if tx.send(line(e)).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = cut.changed() => return,
                ev = rx.recv() => match ev {
                    Ok(e) if wanted(&e) => {
                        if tx.send(line(&e)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Lagged or closed: end the watch; the client re-lists, as after a 410.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(out, |mut out| async move {
        out.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), out))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).or_else(|_| {
        serde_yaml::from_slice::<Value>(body).map_err(|e| format!("invalid body: {e}"))
    })
}

fn write(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Response<Body> {
    let Some(t) = route(path) else {
        return unknown_path();
    };
    let rt = RESOURCES[t.resource];
    if !rt.is_event() {
        if let Some(code) = s.inject.pop_front() {
            let name = t.name.clone().unwrap_or_default();
            return if code == 409 {
                conflict(&rt, &name)
            } else {
                status(
                    code,
                    status_reason(code),
                    "injected failure".into(),
                    details(&rt, &name),
                )
            };
        }
    }
    let body = match parse_body(body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let ns = t.namespace.clone().unwrap_or_default();
    match (method, &t.name) {
        (&Method::POST, None) => create(
            s,
            t.resource,
            &ns,
            None,
            body,
            Some((field_manager(query), "Update")),
        ),
        (&Method::PUT, Some(name)) => update(s, t.resource, &ns, name, t.status, query, body),
        (&Method::PATCH, Some(name)) => patch(
            s,
            t.resource,
            &ns,
            name,
            t.status,
            query,
            content_type,
            body,
        ),
        (&Method::DELETE, Some(name)) if !t.status => delete(s, t.resource, &ns, name, &body),
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not allowed on {path}"),
            json!({}),
        ),
    }
}

/// Checks `apiVersion`/`kind` (when given, or always for apply) and the name/namespace in the
/// body against the URL, like the API server's request validation.
fn check_identity(
    rt: &ResourceType,
    ns: &str,
    name: Option<&str>,
    body: &Value,
    require_type: bool,
) -> Result<(), String> {
    if !body.is_object() {
        return Err("the body must be a JSON object".into());
    }
    for (field, want) in [
        ("apiVersion", rt.api_version()),
        ("kind", rt.kind.to_string()),
    ] {
        match body.get(field).and_then(Value::as_str) {
            Some(v) if v != want => return Err(format!("{field} {v:?} does not match {want:?}")),
            None if require_type => {
                return Err(format!(
                    "{field} must be set in an apply patch (Object 'Kind' is missing)"
                ))
            }
            _ => {}
        }
    }
    if let (Some(url_name), Some(body_name)) = (name, body["metadata"]["name"].as_str()) {
        if url_name != body_name {
            return Err(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            ));
        }
    }
    if let Some(body_ns) = body["metadata"]["namespace"].as_str() {
        if body_ns != ns {
            return Err(format!(
                "the namespace of the object ({body_ns}) does not match the namespace on the request ({ns})"
            ));
        }
    }
    Ok(())
}

fn precondition_fails(old: &Value, body: &Value) -> bool {
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv) => old["metadata"]["resourceVersion"].as_str() != Some(rv),
        None => false,
    }
}

fn create(
    s: &mut State,
    r: usize,
    ns: &str,
    url_name: Option<&str>,
    mut body: Value,
    manager: Option<(&str, &str)>,
) -> Response<Body> {
    let rt = RESOURCES[r];
    if let Err(e) = check_identity(&rt, ns, url_name, &body, false) {
        return bad_request(e);
    }
    let obj = body.as_object_mut().unwrap();
    obj.insert("apiVersion".into(), json!(rt.api_version()));
    obj.insert("kind".into(), json!(rt.kind));
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .unwrap();
    let name = match (url_name, meta.get("name").and_then(Value::as_str)) {
        (Some(n), _) => n.to_string(),
        (None, Some(n)) if !n.is_empty() => n.to_string(),
        _ => match meta.get("generateName").and_then(Value::as_str) {
            Some(prefix) => format!("{prefix}{:05x}", s.uid + 1),
            None => {
                return status(
                    422,
                    "Invalid",
                    format!("{} is invalid: metadata.name: Required value", rt.kind),
                    json!({"kind": rt.plural}),
                )
            }
        },
    };
    let key = (r, ns.to_string(), name.clone());
    if s.objects.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified()),
            details(&rt, &name),
        );
    }
    let rv = s.next_rv();
    s.uid += 1;
    meta.insert("name".into(), json!(name));
    if rt.namespaced {
        meta.insert("namespace".into(), json!(ns));
    }
    meta.insert("uid".into(), json!(format!("uid-{:08}", s.uid)));
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.remove("managedFields");
    meta.remove("deletionTimestamp");
    if rt.status_subresource {
        meta.insert("generation".into(), json!(1));
        obj.remove("status");
    }
    if let (IMAGEPOSTURES, Some((manager, operation))) = (r, manager) {
        let entry = ssa::Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            subresource: String::new(),
            fields: ssa::written_paths(&body, false),
        };
        ssa::write_entries(&mut body, &rt.api_version(), &[entry]);
    }
    s.objects.insert(key, body.clone());
    s.emit(r, ns, "ADDED", &body);
    json_response(201, &body)
}

/// Stores `new` in place of `old`: identity fields kept, generation bumped on a spec change,
/// and nothing bumped or emitted when the write changes nothing (like the real server).
fn commit(
    s: &mut State,
    r: usize,
    ns: &str,
    name: &str,
    old: &Value,
    mut new: Value,
) -> Response<Body> {
    let rt = RESOURCES[r];
    for f in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "generation",
    ] {
        match old["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    new["apiVersion"] = json!(rt.api_version());
    new["kind"] = json!(rt.kind);
    if new == *old {
        return json_response(200, old);
    }
    if rt.status_subresource && new.get("spec") != old.get("spec") {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(g);
    }
    let rv = s.next_rv();
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    s.objects
        .insert((r, ns.to_string(), name.to_string()), new.clone());
    s.emit(r, ns, "MODIFIED", &new);
    json_response(200, &new)
}

/// The writer's field manager (`fieldManager`), as the server names an anonymous one.
fn field_manager(query: &BTreeMap<String, String>) -> &str {
    query
        .get("fieldManager")
        .map(String::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or("unknown")
}

fn update(
    s: &mut State,
    r: usize,
    ns: &str,
    name: &str,
    status_ep: bool,
    query: &BTreeMap<String, String>,
    body: Value,
) -> Response<Body> {
    let rt = RESOURCES[r];
    if let Err(e) = check_identity(&rt, ns, Some(name), &body, false) {
        return bad_request(e);
    }
    let key = (r, ns.to_string(), name.to_string());
    let Some(old) = s.objects.get(&key).cloned() else {
        // Custom resources do not allow create-on-update.
        return not_found(&rt, name);
    };
    if precondition_fails(&old, &body) {
        return conflict(&rt, name);
    }
    let mut new = if status_ep {
        with_status_of(&old, &body)
    } else if rt.status_subresource {
        with_status_of(&body, &old)
    } else {
        body
    };
    if r == IMAGEPOSTURES {
        if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        ssa::record_update(
            &old,
            &mut new,
            field_manager(query),
            status_ep,
            &rt.api_version(),
        );
    }
    commit(s, r, ns, name, &old, new)
}

/// `base` with its `status` replaced by `from`'s (removed when `from` has none).
fn with_status_of(base: &Value, from: &Value) -> Value {
    let mut out = base.clone();
    if let Some(o) = out.as_object_mut() {
        match from.get("status") {
            Some(st) if !st.is_null() => {
                o.insert("status".into(), st.clone());
            }
            _ => {
                o.remove("status");
            }
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn patch(
    s: &mut State,
    r: usize,
    ns: &str,
    name: &str,
    status_ep: bool,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: Value,
) -> Response<Body> {
    let rt = RESOURCES[r];
    let key = (r, ns.to_string(), name.to_string());
    let old = s.objects.get(&key).cloned();
    match content_type {
        "application/apply-patch+yaml" => {
            if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return status(
                    422,
                    "Invalid",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: \
                     is required for apply patch"
                        .into(),
                    json!({"kind": "PatchOptions", "group": "meta.k8s.io"}),
                );
            }
            if let Err(e) = check_identity(&rt, ns, Some(name), &body, true) {
                return bad_request(e);
            }
            let manager = field_manager(query);
            let Some(old) = old else {
                if status_ep {
                    return not_found(&rt, name);
                }
                return create(s, r, ns, Some(name), body, Some((manager, "Apply")));
            };
            if precondition_fails(&old, &body) {
                return conflict(&rt, name);
            }
            let new = if r == IMAGEPOSTURES {
                let force = query.get("force").is_some_and(|f| f == "true");
                match ssa::apply(&old, &body, manager, status_ep, force, &rt.api_version()) {
                    Ok(new) => new,
                    Err(conflicts) => return apply_conflict(&rt, name, &conflicts),
                }
            } else if status_ep {
                with_status_of(&old, &body)
            } else {
                apply_main(&rt, &old, &body)
            };
            commit(s, r, ns, name, &old, new)
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            if content_type.starts_with("application/strategic")
                && !rt.group.is_empty()
                && rt.status_subresource
            {
                // Custom resources have no strategic merge patch.
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml ({content_type})"),
                    json!({}),
                );
            }
            let Some(old) = old else {
                return not_found(&rt, name);
            };
            if !body.is_object() {
                return bad_request("a merge patch must be a JSON object");
            }
            if precondition_fails(&old, &body) {
                return conflict(&rt, name);
            }
            let mut merged = old.clone();
            merge_patch(&mut merged, &body);
            let mut new = if status_ep {
                with_status_of(&old, &merged)
            } else if rt.status_subresource {
                with_status_of(&merged, &old)
            } else {
                merged
            };
            if r == IMAGEPOSTURES {
                ssa::record_update(
                    &old,
                    &mut new,
                    field_manager(query),
                    status_ep,
                    &rt.api_version(),
                );
            }
            commit(s, r, ns, name, &old, new)
        }
        other => status(
            415,
            "UnsupportedMediaType",
            format!("the api double does not support patch type {other:?}"),
            json!({}),
        ),
    }
}

/// 409 for an apply that would change other managers' fields without `force`.
fn apply_conflict(
    rt: &ResourceType,
    name: &str,
    conflicts: &[(String, ssa::Path)],
) -> Response<Body> {
    let list: Vec<String> = conflicts
        .iter()
        .map(|(m, p)| format!("conflict with \"{m}\": .{}", p.join(".")))
        .collect();
    status(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflicts: {}",
            list.len(),
            list.join("; ")
        ),
        details(rt, name),
    )
}

/// Server-side apply on the main endpoint, simplified for a sole field manager: every
/// top-level field in the body replaces the stored one (status excepted when it is a
/// subresource), and so do the metadata maps/lists a client may set.
fn apply_main(rt: &ResourceType, old: &Value, body: &Value) -> Value {
    let mut new = old.clone();
    let (Some(n), Some(b)) = (new.as_object_mut(), body.as_object()) else {
        return new;
    };
    for (k, v) in b {
        match k.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            "status" if rt.status_subresource => {}
            _ => {
                n.insert(k.clone(), v.clone());
            }
        }
    }
    if let (Some(meta), Some(bm)) = (
        n.get_mut("metadata").and_then(Value::as_object_mut),
        b.get("metadata").and_then(Value::as_object),
    ) {
        for f in ["labels", "annotations", "ownerReferences", "finalizers"] {
            if let Some(v) = bm.get(f) {
                meta.insert(f.to_string(), v.clone());
            }
        }
    }
    new
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn delete(s: &mut State, r: usize, ns: &str, name: &str, body: &Value) -> Response<Body> {
    let rt = RESOURCES[r];
    let key = (r, ns.to_string(), name.to_string());
    let Some(old) = s.objects.get(&key).cloned() else {
        return not_found(&rt, name);
    };
    if let Some(rv) = body["preconditions"]["resourceVersion"].as_str() {
        if old["metadata"]["resourceVersion"].as_str() != Some(rv) {
            return conflict(&rt, name);
        }
    }
    if let Some(uid) = body["preconditions"]["uid"].as_str() {
        if old["metadata"]["uid"].as_str() != Some(uid) {
            return conflict(&rt, name);
        }
    }
    s.objects.remove(&key);
    let rv = s.next_rv();
    let mut gone = old;
    gone["metadata"]["resourceVersion"] = json!(rv.to_string());
    s.emit(r, ns, "DELETED", &gone);
    json_response(200, &gone)
}

/// Equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated.
#[derive(Clone, Debug, Default)]
struct Selector(Vec<(String, Op)>);

#[derive(Clone, Debug)]
enum Op {
    Eq(String),
    Ne(String),
    Exists,
    NotExists,
}

impl Selector {
    fn parse(s: Option<&str>) -> Result<Selector, String> {
        let mut terms = Vec::new();
        for term in s
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if term.contains(" in ") || term.contains("notin") || term.contains('(') {
                return Err(format!(
                    "set-based selector {term:?} is not supported by the api double"
                ));
            }
            let t = if let Some((k, v)) = term.split_once("!=") {
                (k.trim().to_string(), Op::Ne(v.trim().to_string()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some(k) = term.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists)
            } else {
                (term.to_string(), Op::Exists)
            };
            terms.push(t);
        }
        Ok(Selector(terms))
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.0.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(want) => v != Some(want.as_str()),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }
}
