//! Registry I/O: the few OCI distribution requests the verifier needs, with bounded bodies,
//! exact status classification and per-repository token reuse.
//!
//! Why not `oci_client::Client` for the requests themselves: its referrers tag-schema fallback
//! turns any 4xx with an OCI error body (429 TOOMANYREQUESTS, 403 DENIED) into "no referrers",
//! which reads as not-signed, and it buffers manifest bodies without a size limit. Both break
//! the "no false clean" and "bounded resources" rules, so requests and classification live here;
//! `oci_client` still provides reference parsing and the manifest/index types.

use crate::core::lock::LockExt as _;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use super::auth::{Challenge, Credentials, Found};
use super::keyring::{CredSource, Credential, Secret};
use crate::core::posture::{
    bound, Reason, Verdict, EVIDENCE_REFERRERS, EVIDENCE_REFERRERS_TAG, MAX_MESSAGE,
};

/// Media types we accept for manifests and indexes.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// How long whether a registry has the referrers API is remembered.
const REFERRERS_API_TTL: Duration = Duration::from_secs(3600);

/// Why a request did not produce a body. Only `NotFound` is a definite answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not found")]
    NotFound,
    #[error("unauthorized ({0})")]
    Unauthorized(String),
    #[error("rate limited{}", .0.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited(Option<Duration>),
    #[error("registry answered HTTP {0}: {1}")]
    Status(u16, String),
    #[error("timed out")]
    Timeout,
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl FetchError {
    /// The `checking` verdict this failure stands for (never a resting posture).
    pub fn checking(&self, what: &str) -> Verdict {
        let reason = match self {
            FetchError::NotFound => Reason::RegistryError,
            FetchError::Unauthorized(_) => Reason::Unauthorized,
            FetchError::RateLimited(_) => Reason::RateLimited,
            FetchError::Status(..) | FetchError::Protocol(_) => Reason::RegistryError,
            FetchError::Timeout => Reason::Timeout,
            FetchError::Unreachable(_) => Reason::RegistryUnreachable,
            FetchError::TooLarge(_) => Reason::TooLarge,
        };
        let mut v = Verdict::checking(reason, format!("{what}: {self}"));
        v.retry_after = self.retry_after();
        v
    }

    /// `Retry-After` advice for the per-registry backoff.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited(d) => *d,
            _ => None,
        }
    }
}

/// A definite 404 as `None`; every other failure stays an error (never "absent").
pub fn found<T>(result: Result<T, FetchError>) -> Result<Option<T>, FetchError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(FetchError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A fetched manifest or blob.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    /// `sha256:<hex>` of the body as received.
    pub digest: String,
    pub media_type: Option<String>,
}

/// One registry endpoint: API host (`host:port`) and repository, and the credentials found
/// for the image (tried in turn where the registry refuses one; anonymous when none).
#[derive(Debug, Clone, Copy)]
pub struct Repo<'a> {
    pub host: &'a str,
    pub name: &'a str,
    pub access: &'a Found,
}

/// Which listing answered a referrers query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersSource {
    /// The OCI 1.1 referrers API.
    Api,
    /// The `sha256-<hex>` tag-schema fallback index.
    Tag,
}

impl ReferrersSource {
    /// Key under which the listing's digest is recorded (`status.signatureDigests`).
    pub fn key(self) -> &'static str {
        match self {
            ReferrersSource::Api => EVIDENCE_REFERRERS,
            ReferrersSource::Tag => EVIDENCE_REFERRERS_TAG,
        }
    }
}

/// Observer hook for every HTTP request sent (metrics); status 0 means no response.
pub type RequestHook = Box<dyn Fn(&str, u16) + Send + Sync>;

/// What happened with a credential (metrics: by source, never the secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthEvent {
    /// A registry request was sent with a credential of this source.
    Request,
    /// The registry (or its token endpoint) refused a credential of this source.
    Refused,
}

/// Observer hook for credential use and refusals, by source.
pub type AuthHook = Box<dyn Fn(CredSource, AuthEvent) + Send + Sync>;

pub struct RegistryClient {
    http: reqwest::Client,
    insecure: HashSet<String>,
    credentials: Credentials,
    /// Bearer tokens per (host, repository, credential), reused across images: a token got
    /// with one credential is never sent for another.
    tokens: Mutex<HashMap<(String, String, String), HeaderValue>>,
    /// The credential (by fingerprint) that last worked for a (host, repository): tried first.
    preferred: Mutex<HashMap<(String, String), String>>,
    /// Hosts whose auth scheme we learned from a 401 challenge.
    challenges: Mutex<HashMap<String, Challenge>>,
    /// Whether each host has the referrers API (a 404 means no: use the tag schema), learned
    /// from its first answer and remembered for an hour.
    referrers_api: Mutex<HashMap<String, (bool, Instant)>>,
    /// Hosts that have answered at least once (so their auth scheme is known).
    contacted: Mutex<HashSet<String>>,
    /// Single-flight locks: the first contact with a host, a token fetch for a repository and
    /// the first referrers-API probe of a host each happen once, not once per concurrent
    /// verification.
    flights: Flights,
    hook: Option<RequestHook>,
    auth_hook: Option<AuthHook>,
}

impl RegistryClient {
    pub fn new(
        insecure: impl IntoIterator<Item = String>,
        credentials: Credentials,
        request_timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5).min(request_timeout))
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("imageposture/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(RegistryClient {
            http,
            insecure: insecure.into_iter().collect(),
            credentials,
            tokens: Mutex::default(),
            preferred: Mutex::default(),
            challenges: Mutex::default(),
            referrers_api: Mutex::default(),
            contacted: Mutex::default(),
            flights: Flights::default(),
            hook: None,
            auth_hook: None,
        })
    }

    pub fn with_hook(mut self, hook: RequestHook) -> Self {
        self.hook = Some(hook);
        self
    }

    pub fn with_auth_hook(mut self, hook: AuthHook) -> Self {
        self.auth_hook = Some(hook);
        self
    }

    /// Whether the host may want credentials: it challenged us, or has not answered yet.
    pub fn asks_for_auth(&self, host: &str) -> bool {
        self.challenges.locked().contains_key(host) || !self.contacted.locked().contains(host)
    }

    /// Where credentials come from: asked per image by the verifier.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    fn base(&self, host: &str) -> String {
        let scheme = if self.insecure.contains(host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}/v2")
    }

    /// GET a manifest by tag or digest. A digest reference is checked against the body, and
    /// the answer must say it is a manifest or an index (a `200 text/html` login page is a
    /// registry fault, not an artifact).
    pub async fn manifest(
        &self,
        repo: Repo<'_>,
        reference: &str,
        max: usize,
    ) -> Result<Fetched, FetchError> {
        check_reference(reference)?;
        let url = format!(
            "{}/{}/manifests/{}",
            self.base(repo.host),
            repo.name,
            reference
        );
        let fetched = self.get(repo, &url, MANIFEST_ACCEPT, max).await?;
        check_manifest_type(fetched.media_type.as_deref())?;
        if reference.contains(':') && fetched.digest != reference {
            return Err(FetchError::Protocol(format!(
                "manifest {reference} has digest {}",
                fetched.digest
            )));
        }
        Ok(fetched)
    }

    /// HEAD a manifest: its digest, from `Docker-Content-Digest` (tag resolution).
    pub async fn manifest_digest(
        &self,
        repo: Repo<'_>,
        reference: &str,
    ) -> Result<String, FetchError> {
        self.manifest_head(repo, reference).await.map(|(d, _)| d)
    }

    /// HEAD a manifest: its digest and its Content-Type (an index or an image manifest), so
    /// an index is told apart without a GET (on Docker Hub a GET counts as a pull).
    pub async fn manifest_head(
        &self,
        repo: Repo<'_>,
        reference: &str,
    ) -> Result<(String, Option<String>), FetchError> {
        check_reference(reference)?;
        let url = format!(
            "{}/{}/manifests/{}",
            self.base(repo.host),
            repo.name,
            reference
        );
        let resp = self.send(Method::HEAD, repo, &url, MANIFEST_ACCEPT).await?;
        let header = resp
            .headers()
            .get("docker-content-digest")
            .ok_or_else(|| FetchError::Protocol("no Docker-Content-Digest header".into()))?;
        // The digest becomes part of later URLs and of the image's identity: it must be a
        // digest, not merely look like one (`sha256:` + 64 characters of anything).
        let digest = header
            .to_str()
            .ok()
            .and_then(|d| crate::core::image::validate_digest(d).ok())
            .ok_or_else(|| FetchError::Protocol("malformed Docker-Content-Digest header".into()))?;
        if reference.contains(':') && digest != reference {
            return Err(FetchError::Protocol(format!(
                "manifest {reference} answered with digest {digest}"
            )));
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| bound(s, 128));
        Ok((digest, media_type))
    }

    /// GET a blob and check it against its digest.
    pub async fn blob(
        &self,
        repo: Repo<'_>,
        digest: &str,
        max: usize,
    ) -> Result<Bytes, FetchError> {
        check_digest(digest)?;
        let url = format!("{}/{}/blobs/{}", self.base(repo.host), repo.name, digest);
        let fetched = self.get(repo, &url, "*/*", max).await?;
        if fetched.digest != digest {
            return Err(FetchError::Protocol(format!(
                "blob {digest} has digest {}",
                fetched.digest
            )));
        }
        Ok(fetched.body)
    }

    /// The referrers of `digest`: the OCI 1.1 API, or on registries without it the
    /// `sha256-<hex>` tag-schema index. `Ok(None)` is a definite "no referrers".
    pub async fn referrers(
        &self,
        repo: Repo<'_>,
        digest: &str,
        max: usize,
    ) -> Result<Option<(ReferrersSource, Fetched)>, FetchError> {
        if let Some(index) = self.native_referrers(repo, digest, max).await? {
            return Ok(Some((ReferrersSource::Api, index)));
        }
        let index = found(self.manifest(repo, &digest.replace(':', "-"), max).await)?;
        Ok(index.map(|i| (ReferrersSource::Tag, i)))
    }

    /// Like [`referrers`](Self::referrers), but only the digest of the listing: a HEAD for the
    /// tag schema, so revalidating an unchanged image downloads nothing.
    pub async fn referrers_digest(
        &self,
        repo: Repo<'_>,
        digest: &str,
        max: usize,
    ) -> Result<Option<(ReferrersSource, String)>, FetchError> {
        if let Some(index) = self.native_referrers(repo, digest, max).await? {
            return Ok(Some((ReferrersSource::Api, index.digest)));
        }
        let index = self
            .manifest_exists(repo, &digest.replace(':', "-"))
            .await?;
        Ok(index.map(|d| (ReferrersSource::Tag, d)))
    }

    /// The OCI 1.1 referrers API; `Ok(None)` when the registry has no such API.
    async fn native_referrers(
        &self,
        repo: Repo<'_>,
        digest: &str,
        max: usize,
    ) -> Result<Option<Fetched>, FetchError> {
        match self.has_referrers_api(repo.host) {
            Some(false) => return Ok(None),
            Some(true) => return self.query_referrers_api(repo, digest, max).await,
            None => {}
        }
        let probe = self.flights.get(format!("referrers {}", repo.host));
        let _one_at_a_time = probe.lock().await;
        match self.has_referrers_api(repo.host) {
            Some(false) => Ok(None),
            _ => self.query_referrers_api(repo, digest, max).await,
        }
    }

    async fn query_referrers_api(
        &self,
        repo: Repo<'_>,
        digest: &str,
        max: usize,
    ) -> Result<Option<Fetched>, FetchError> {
        check_digest(digest)?;
        let url = format!(
            "{}/{}/referrers/{}",
            self.base(repo.host),
            repo.name,
            digest
        );
        let result = self
            .get(repo, &url, "application/vnd.oci.image.index.v1+json", max)
            .await
            .and_then(|f| check_manifest_type(f.media_type.as_deref()).map(|()| f));
        let learned = match &result {
            Ok(_) => Some(true),
            // Per the distribution spec a registry with the API answers 200 even with no
            // referrers; a 404 means it has no such API, so the caller uses the tag schema.
            Err(FetchError::NotFound) => Some(false),
            Err(_) => None,
        };
        if let Some(supported) = learned {
            self.referrers_api
                .locked()
                .insert(repo.host.to_string(), (supported, Instant::now()));
        }
        found(result)
    }

    /// HEAD a manifest: `Ok(None)` on a definite 404.
    pub async fn manifest_exists(
        &self,
        repo: Repo<'_>,
        reference: &str,
    ) -> Result<Option<String>, FetchError> {
        found(self.manifest_digest(repo, reference).await)
    }

    /// What we learned about the host's referrers API, if it is still fresh.
    fn has_referrers_api(&self, host: &str) -> Option<bool> {
        let mut map = self.referrers_api.locked();
        match map.get(host) {
            Some((supported, at)) if at.elapsed() < REFERRERS_API_TTL => Some(*supported),
            Some(_) => {
                map.remove(host);
                None
            }
            None => None,
        }
    }

    async fn get(
        &self,
        repo: Repo<'_>,
        url: &str,
        accept: &str,
        max: usize,
    ) -> Result<Fetched, FetchError> {
        let resp = self.send(Method::GET, repo, url, accept).await?;
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| bound(s, 128));
        let body = read_bounded(resp, max).await?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        Ok(Fetched {
            body: body.into(),
            digest,
            media_type,
        })
    }

    /// Sends one request with whatever auth this host needs. A 401 challenge is answered once
    /// (token fetch, or basic credentials) and the request re-sent; that is auth negotiation and
    /// is remembered per host and repository so later images pay nothing for it.
    async fn send(
        &self,
        method: Method,
        repo: Repo<'_>,
        url: &str,
        accept: &str,
    ) -> Result<reqwest::Response, FetchError> {
        // The first request to a host goes alone: it learns whether (and how) the host wants
        // auth, so concurrent requests do not each collect the same 401 challenge.
        let first_contact = if self.contacted.locked().contains(repo.host) {
            None
        } else {
            let lock = self.flights.get(format!("contact {}", repo.host));
            let guard = lock.lock_owned().await;
            (!self.contacted.locked().contains(repo.host)).then_some(guard)
        };
        let result = self.send_authenticated(method, repo, url, accept).await;
        if first_contact.is_some() {
            self.contacted.locked().insert(repo.host.to_string());
        }
        result
    }

    /// Tries the image's credentials in turn (the one that worked last first) until the
    /// registry accepts one; anonymous when none matched. A refusal (401/403) moves on to the
    /// next; when every one is refused the error names the sources tried, never a secret.
    async fn send_authenticated(
        &self,
        method: Method,
        repo: Repo<'_>,
        url: &str,
        accept: &str,
    ) -> Result<reqwest::Response, FetchError> {
        let creds = &repo.access.credentials;
        if creds.is_empty() {
            return match self.send_as(&method, repo, url, accept, None).await {
                Err(FetchError::Unauthorized(why)) => {
                    self.auth_event(CredSource::Anonymous, AuthEvent::Refused);
                    Err(FetchError::Unauthorized(refusal(
                        &why,
                        &[],
                        &repo.access.notes,
                    )))
                }
                other => other,
            };
        }
        let key = (repo.host.to_string(), repo.name.to_string());
        let first = self.preferred.locked().get(&key).cloned();
        let mut order: Vec<&Credential> = creds.iter().collect();
        if let Some(first) = first {
            order.sort_by_key(|c| c.key != first);
        }
        let mut refused = Vec::new();
        let mut why = String::new();
        for cred in order {
            match self.send_as(&method, repo, url, accept, Some(cred)).await {
                Err(FetchError::Unauthorized(w)) => {
                    self.auth_event(cred.source, AuthEvent::Refused);
                    self.credentials.refused(cred);
                    self.tokens.locked().retain(|k, _| k.2 != cred.key);
                    self.preferred
                        .locked()
                        .retain(|_, preferred| *preferred != cred.key);
                    tracing::debug!(registry = %repo.host, repository = %repo.name, source = %cred.source, credential = %cred.origin, "registry refused a credential");
                    refused.push(cred.describe());
                    why = w;
                }
                Ok(resp) => {
                    let mut preferred = self.preferred.locked();
                    if preferred.len() >= MAX_REPOSITORIES_REMEMBERED {
                        preferred.clear();
                    }
                    preferred.insert(key, cred.key.clone());
                    return Ok(resp);
                }
                Err(e) => return Err(e),
            }
        }
        Err(FetchError::Unauthorized(refusal(
            &why,
            &refused,
            &repo.access.notes,
        )))
    }

    /// One request as one credential (or anonymous), answering a 401 challenge once.
    async fn send_as(
        &self,
        method: &Method,
        repo: Repo<'_>,
        url: &str,
        accept: &str,
        cred: Option<&Credential>,
    ) -> Result<reqwest::Response, FetchError> {
        let source = cred.map_or(CredSource::Anonymous, |c| c.source);
        let mut auth = self.auth_header(repo, cred, None).await?;
        for attempt in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), url)
                .header(ACCEPT, accept);
            if let Some(value) = &auth {
                req = req.header(AUTHORIZATION, value.clone());
            }
            self.auth_event(source, AuthEvent::Request);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.observe(repo.host, 0);
                    return Err(classify_transport(e));
                }
            };
            let status = resp.status();
            self.observe(repo.host, status.as_u16());
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                if let Some(challenge) = Challenge::parse(resp.headers()) {
                    self.challenges
                        .locked()
                        .insert(repo.host.to_string(), challenge);
                    let next = self.auth_header(repo, cred, auth.as_ref()).await?;
                    if next.is_some() && next != auth {
                        auth = next;
                        continue;
                    }
                }
            }
            return check_status(resp).await;
        }
        unreachable!("the loop returns on its second pass")
    }

    fn auth_event(&self, source: CredSource, event: AuthEvent) {
        if let Some(hook) = &self.auth_hook {
            hook(source, event);
        }
    }

    fn observe(&self, host: &str, status: u16) {
        if let Some(hook) = &self.hook {
            hook(host, status);
        }
    }

    /// The Authorization header for a repository as one credential, fetching a bearer token
    /// if the host's challenge asks for one.
    /// `stale` is a header the registry just refused: never hand it out again.
    async fn auth_header(
        &self,
        repo: Repo<'_>,
        cred: Option<&Credential>,
        stale: Option<&HeaderValue>,
    ) -> Result<Option<HeaderValue>, FetchError> {
        let cred_key = cred.map(|c| c.key.clone()).unwrap_or_default();
        let key = (
            repo.host.to_string(),
            repo.name.to_string(),
            cred_key.clone(),
        );
        let fresh = |tokens: &HashMap<(String, String, String), HeaderValue>| {
            tokens.get(&key).filter(|t| Some(*t) != stale).cloned()
        };
        if let Some(token) = fresh(&self.tokens.locked()) {
            return Ok(Some(token));
        }
        let flight = self
            .flights
            .get(format!("token {} {} {}", repo.host, repo.name, cred_key));
        let _one_fetch = flight.lock().await;
        if let Some(token) = fresh(&self.tokens.locked()) {
            return Ok(Some(token));
        }
        let challenge = self.challenges.locked().get(repo.host).cloned();
        let header = match challenge {
            None => return Ok(None),
            Some(Challenge::Basic) => cred.and_then(Credential::basic).cloned(),
            Some(Challenge::Bearer { realm, service }) => {
                let scope = format!("repository:{}:pull", repo.name);
                let req = match cred.map(|c| &c.secret) {
                    // A docker identity token is an OAuth2 refresh token.
                    Some(Secret::IdentityToken(refresh)) => {
                        let mut form = url::form_urlencoded::Serializer::new(String::new());
                        form.append_pair("grant_type", "refresh_token")
                            .append_pair("refresh_token", refresh)
                            .append_pair("client_id", "imageposture")
                            .append_pair("scope", &scope);
                        if let Some(service) = &service {
                            form.append_pair("service", service);
                        }
                        self.http
                            .post(&realm)
                            .header(
                                reqwest::header::CONTENT_TYPE,
                                "application/x-www-form-urlencoded",
                            )
                            .body(form.finish())
                    }
                    basic => {
                        let mut req = self.http.get(&realm).query(&[("scope", scope)]);
                        if let Some(service) = service {
                            req = req.query(&[("service", service)]);
                        }
                        if let Some(Secret::Basic(basic)) = basic {
                            req = req.header(AUTHORIZATION, basic.clone());
                        }
                        req
                    }
                };
                let resp = req.send().await.map_err(classify_transport)?;
                let resp = check_status(resp).await.map_err(token_failure)?;
                let body = read_bounded(resp, MAX_TOKEN_BYTES).await?;
                // The body holds the token: a parse error says where, never what.
                let token: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                    FetchError::Protocol(format!(
                        "token response: {}",
                        super::keyring::json_error(&e)
                    ))
                })?;
                let token = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| FetchError::Protocol("token response without a token".into()))?;
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| FetchError::Protocol("token is not a header value".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        if let Some(h) = &header {
            let mut tokens = self.tokens.locked();
            if tokens.len() >= MAX_REPOSITORIES_REMEMBERED {
                tokens.clear();
            }
            tokens.insert(key, h.clone());
        }
        Ok(header)
    }
}

/// The message of a refusal: the registry's answer, the sources tried (names only), and what
/// failed while looking for credentials.
fn refusal(why: &str, refused: &[String], notes: &[String]) -> String {
    let mut msg = why.to_string();
    if refused.is_empty() {
        msg.push_str("; tried anonymous (no credential matches this image)");
    } else {
        msg.push_str("; refused credentials: ");
        msg.push_str(&refused.join(", "));
    }
    for note in notes {
        msg.push_str("; ");
        msg.push_str(note);
    }
    bound(&msg, MAX_MESSAGE - 96)
}

/// Async locks by key, for single-flight work: one per flight key (host, repository,
/// credential). Bounded: once the map has doubled
/// since the last sweep, the locks nobody holds are forgotten.
#[derive(Default)]
struct Flights(Mutex<(FlightLocks, usize)>);

type FlightLocks = HashMap<String, Arc<tokio::sync::Mutex<()>>>;

impl Flights {
    fn get(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut guard = self.0.locked();
        let (map, purge_at) = &mut *guard;
        if map.len() >= (*purge_at).max(256) {
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
            *purge_at = map.len() * 2;
        }
        map.entry(key).or_default().clone()
    }
}

/// Repositories whose bearer token and preferred credential are remembered; past it both
/// are forgotten at once (a token is fetched again, a credential order relearned).
const MAX_REPOSITORIES_REMEMBERED: usize = 4096;

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// Token responses are a few KiB; anything far larger is refused while it streams in.
const MAX_TOKEN_BYTES: usize = 64 << 10;

/// A token endpoint's refusal is an auth failure, whatever its status: only the registry's own
/// 404 for a signature artifact may ever mean "no signature".
fn token_failure(e: FetchError) -> FetchError {
    match e {
        FetchError::NotFound => FetchError::Unauthorized("token endpoint answered HTTP 404".into()),
        FetchError::Unauthorized(why) => {
            FetchError::Unauthorized(format!("token endpoint answered {why}"))
        }
        FetchError::Status(code, _) => {
            FetchError::Unauthorized(format!("token endpoint answered HTTP {code}"))
        }
        other => other,
    }
}

/// Reads a body, refusing it once it passes `max` bytes (by its Content-Length up front, and
/// by what actually arrives): no response is ever held whole before its size is checked.
async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|len| len > max as u64) {
        return Err(FetchError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify_transport)? {
        if body.len().saturating_add(chunk.len()) > max {
            return Err(FetchError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reference we are about to put into a URL: a valid digest, or a valid tag (the
/// distribution spec's `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
fn check_reference(reference: &str) -> Result<(), FetchError> {
    if reference.contains(':') {
        return check_digest(reference);
    }
    let mut chars = reference.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok
        && reference.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Ok(())
    } else {
        Err(FetchError::Protocol("malformed tag".into()))
    }
}

/// A digest from registry data (an index entry, a layer) must be a digest before it is used.
fn check_digest(digest: &str) -> Result<(), FetchError> {
    crate::core::image::validate_digest(digest)
        .map(drop)
        .map_err(|why| FetchError::Protocol(format!("registry supplied a malformed digest: {why}")))
}

/// The media types a manifest or index answer may carry (parameters ignored).
fn check_manifest_type(content_type: Option<&str>) -> Result<(), FetchError> {
    let essence = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some(
            "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json",
        ) => Ok(()),
        Some(other) => Err(FetchError::Protocol(format!(
            "registry answered with Content-Type {:?}, not a manifest",
            bound(other, 64)
        ))),
        None => Err(FetchError::Protocol(
            "registry answered a manifest request without a Content-Type".into(),
        )),
    }
}

/// Maps an HTTP status to a result; the body of an error is kept short and as data.
async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, FetchError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = retry_after(resp.headers());
    let text = read_error_body(resp).await;
    Err(match status {
        StatusCode::NOT_FOUND => FetchError::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            FetchError::Unauthorized(format!("HTTP {}", status.as_u16()))
        }
        StatusCode::TOO_MANY_REQUESTS => FetchError::RateLimited(retry_after),
        s => FetchError::Status(s.as_u16(), text),
    })
}

async fn read_error_body(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 1024 {
            break;
        }
    }
    bound(&String::from_utf8_lossy(&body), MAX_MESSAGE / 2)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

fn classify_transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout
    } else if e.is_redirect() {
        // The registry answered, with a redirect loop or chain: a broken registry, not an
        // unreachable one.
        FetchError::Protocol(bound(&error_chain(&e), 200))
    } else {
        // Connection refused, DNS, TLS, a reset mid-body: the registry was not reachable.
        FetchError::Unreachable(bound(&error_chain(&e), 200))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
