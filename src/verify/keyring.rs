//! Registry credentials as the kubelet finds them: per image, matched by the kubelet's keyring
//! rules (`pkg/credentialprovider`: `URLsMatch`, `BasicDockerKeyring.Lookup`), each tagged with
//! where it came from. The secret itself is never printed: `Debug` shows the source only.
//!
//! Matching, for a pattern `host[:port][/path]` against an image `host[:port]/repository`:
//! - the port must be equal (none matches none only);
//! - the host has the same number of dot-separated labels, each matched as a glob (`*`, `?`,
//!   so `*.dkr.ecr.*.amazonaws.com`), one label per `*` (a `*` never spans a dot);
//! - the pattern's path, if any, is a prefix of the repository at a `/` boundary (stricter than
//!   the kubelet's plain string prefix: a credential for `ghcr.io/acme` is never sent to
//!   `ghcr.io/acme-other`, nor to `ghcr.io/other`).
//!
//! The most specific match comes first: a longer path, then fewer wildcards, then the kubelet's
//! reverse lexical order.

use std::collections::HashMap;

use base64::Engine as _;
use reqwest::header::HeaderValue;
use sha2::{Digest as _, Sha256};

/// Where a credential came from (a metric label and part of messages: never the secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredSource {
    /// The pod's `imagePullSecrets`, or its ServiceAccount's.
    PullSecret,
    /// A kubelet image credential provider plugin.
    Plugin,
    /// Docker `config.json`: `auths`, `credHelpers`, `credsStore`.
    DockerConfig,
    /// No credential.
    Anonymous,
}

impl CredSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CredSource::PullSecret => "pull-secret",
            CredSource::Plugin => "plugin",
            CredSource::DockerConfig => "docker-config",
            CredSource::Anonymous => "anonymous",
        }
    }
}

impl std::fmt::Display for CredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is sent: HTTP Basic (`user:password`), or a docker identity token (an OAuth2 refresh
/// token, exchanged at the registry's token endpoint).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Basic(HeaderValue),
    IdentityToken(String),
}

/// One credential and where it came from.
#[derive(Clone)]
pub struct Credential {
    pub source: CredSource,
    /// Which secret, plugin, helper or `auths` entry, for messages (names only).
    pub origin: String,
    pub(crate) secret: Secret,
    /// A fingerprint of the secret, so tokens got with it are reused for it only. Never shown.
    pub(crate) key: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Credential {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.source == other.source
    }
}

impl Credential {
    /// A credential from a user name and password; `<token>` as the user name means the
    /// password is an identity token (the docker convention).
    pub fn new(source: CredSource, origin: String, user: &str, password: &str) -> Option<Self> {
        if user.is_empty() && password.is_empty() {
            return None;
        }
        let secret = if user == "<token>" {
            Secret::IdentityToken(password.to_string())
        } else {
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {pair}")).ok()?;
            // Kept out of any Debug output (hyper/reqwest traces) of the request.
            value.set_sensitive(true);
            Secret::Basic(value)
        };
        let mut hash = Sha256::new();
        hash.update(user.as_bytes());
        hash.update([0]);
        hash.update(password.as_bytes());
        let key = hex::encode(hash.finalize());
        Some(Credential {
            source,
            origin,
            secret,
            key,
        })
    }

    /// From a docker `auth` field (base64 of `user:password`).
    pub fn from_auth_field(source: CredSource, origin: String, auth: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        Self::new(source, origin, user, password)
    }

    /// `source (origin)` for messages.
    pub fn describe(&self) -> String {
        if self.origin.is_empty() {
            self.source.to_string()
        } else {
            format!("{} {}", self.source, self.origin)
        }
    }

    pub(crate) fn basic(&self) -> Option<&HeaderValue> {
        match &self.secret {
            Secret::Basic(v) => Some(v),
            Secret::IdentityToken(_) => None,
        }
    }
}

/// Where an image lives, as the keyring matches it: `host[:port]` and repository path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: Option<String>,
    pub path: String,
}

impl Target {
    /// `registry` as in the image reference (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn new(registry: &str, repository: &str) -> Target {
        let (host, port) = split_port(&normalize_registry(registry));
        Target {
            host,
            port,
            path: repository.trim_matches('/').to_string(),
        }
    }
}

/// Docker Hub is filed under several names; the keyring uses the kubelet's.
fn normalize_registry(host: &str) -> String {
    match host.to_ascii_lowercase().as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "index.docker.io".into(),
        other => other.to_string(),
    }
}

fn split_port(hostport: &str) -> (String, Option<String>) {
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h.to_string(), Some(p.to_string()))
        }
        _ => (hostport.to_string(), None),
    }
}

/// A keyring pattern: `host[:port][/path]`, host labels may be globs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    raw: String,
    labels: Vec<String>,
    port: Option<String>,
    path: String,
}

impl Pattern {
    /// Parses a keyring key, an `auths` key (`https://index.docker.io/v1/` and friends), a
    /// `matchImages` entry or a plugin's `auth` key. `None` for what cannot match anything.
    pub fn parse(key: &str) -> Option<Pattern> {
        let trimmed = key.trim();
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .unwrap_or(trimmed);
        let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
        // The docker client treats `/v1/` and `/v2/` as the host itself.
        let path = path.trim_matches('/');
        let path = match path {
            "v1" | "v2" => "",
            p => p
                .strip_prefix("v1/")
                .or_else(|| p.strip_prefix("v2/"))
                .unwrap_or(p),
        };
        if hostport.is_empty() {
            return None;
        }
        let (host, port) = split_port(&normalize_registry(hostport));
        if host.is_empty() {
            return None;
        }
        Some(Pattern {
            raw: trimmed.to_string(),
            labels: host.split('.').map(str::to_string).collect(),
            port,
            path: path.to_string(),
        })
    }

    pub fn matches(&self, target: &Target) -> bool {
        if self.port != target.port {
            return false;
        }
        let labels: Vec<&str> = target.host.split('.').collect();
        if labels.len() != self.labels.len() {
            return false;
        }
        let hosts = self
            .labels
            .iter()
            .zip(&labels)
            .all(|(glob, label)| glob_match(glob.as_bytes(), label.as_bytes()));
        hosts && path_prefix(&self.path, &target.path)
    }

    /// Sort key: most specific first.
    fn specificity(&self) -> (std::cmp::Reverse<usize>, usize, std::cmp::Reverse<String>) {
        let segments = if self.path.is_empty() {
            0
        } else {
            self.path.split('/').count()
        };
        let wildcards = self
            .labels
            .iter()
            .filter(|l| l.contains(['*', '?', '[']))
            .count();
        (
            std::cmp::Reverse(segments),
            wildcards,
            std::cmp::Reverse(self.raw.clone()),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// `prefix` names `path` or one of its parents, segment by segment.
fn path_prefix(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `filepath.Match` on one host label: `*` any run, `?` one character, `[...]` a class.
fn glob_match(glob: &[u8], text: &[u8]) -> bool {
    match glob.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            (0..=text.len()).any(|i| text.get(i..).is_some_and(|tail| glob_match(rest, tail)))
        }
        Some((b'?', rest)) => text
            .split_first()
            .is_some_and(|(_, tail)| glob_match(rest, tail)),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return false;
            };
            let (class, after) = rest.split_at(end);
            let after = after.get(1..).unwrap_or_default();
            let (negate, class) = match class.split_first() {
                Some((b'^', c)) => (true, c),
                _ => (false, class),
            };
            let Some((&c, tail)) = text.split_first() else {
                return false;
            };
            let mut hit = false;
            let mut i = 0;
            while let Some(&lo) = class.get(i) {
                if class.get(i + 1) == Some(&b'-') {
                    if let Some(&hi) = class.get(i + 2) {
                        hit |= lo <= c && c <= hi;
                        i += 3;
                        continue;
                    }
                }
                hit |= lo == c;
                i += 1;
            }
            hit != negate && glob_match(after, tail)
        }
        Some((&g, rest)) => text
            .split_first()
            .is_some_and(|(&c, tail)| g.eq_ignore_ascii_case(&c) && glob_match(rest, tail)),
    }
}

/// Credentials under patterns, looked up per image.
#[derive(Clone, Default, Debug)]
pub struct Keyring {
    entries: Vec<(Pattern, Credential)>,
}

impl Keyring {
    pub fn add(&mut self, pattern: Pattern, credential: Credential) {
        self.entries.push((pattern, credential));
    }

    pub fn contains(&self, credential: &Credential) -> bool {
        self.entries.iter().any(|(_, c)| c == credential)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every credential whose pattern matches, most specific first, each once.
    pub fn lookup(&self, target: &Target) -> Vec<Credential> {
        let mut hits: Vec<&(Pattern, Credential)> = self
            .entries
            .iter()
            .filter(|(p, _)| p.matches(target))
            .collect();
        hits.sort_by_key(|(p, _)| p.specificity());
        let mut out: Vec<Credential> = Vec::new();
        for (_, c) in hits {
            if !out.contains(c) {
                out.push(c.clone());
            }
        }
        out
    }

    /// A docker `config.json` (`auths`) or a `.dockercfg` (the same map at the top level), as
    /// pull secrets carry them. Entries without a usable credential are skipped.
    pub fn from_docker_json(
        data: &[u8],
        legacy: bool,
        source: CredSource,
        origin: &str,
    ) -> Result<Keyring, String> {
        let auths: HashMap<String, DockerAuth> = if legacy {
            serde_json::from_slice(data).map_err(|e| json_error(&e))?
        } else {
            let config: DockerConfigAuths =
                serde_json::from_slice(data).map_err(|e| json_error(&e))?;
            config.auths
        };
        let mut keyring = Keyring::default();
        for (key, entry) in auths {
            let (Some(pattern), Some(credential)) =
                (Pattern::parse(&key), entry.credential(source, origin))
            else {
                continue;
            };
            keyring.add(pattern, credential);
        }
        Ok(keyring)
    }
}

/// A JSON error without the text around it (which may be a secret): line and column only.
pub fn json_error(e: &serde_json::Error) -> String {
    format!(
        "malformed JSON ({:?} at line {} column {})",
        e.classify(),
        e.line(),
        e.column()
    )
}

#[derive(serde::Deserialize)]
struct DockerConfigAuths {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(serde::Deserialize, Default)]
pub(crate) struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl DockerAuth {
    pub(crate) fn credential(&self, source: CredSource, origin: &str) -> Option<Credential> {
        if let Some(token) = self.identity_token.as_deref().filter(|t| !t.is_empty()) {
            return Credential::new(source, origin.to_string(), "<token>", token);
        }
        if let Some(auth) = self.auth.as_deref().filter(|a| !a.is_empty()) {
            return Credential::from_auth_field(source, origin.to_string(), auth);
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => Credential::new(source, origin.to_string(), u, p),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, registry: &str, repo: &str) -> bool {
        Pattern::parse(pattern)
            .unwrap()
            .matches(&Target::new(registry, repo))
    }

    #[test]
    fn kubelet_matching_rules() {
        // Host, with and without port.
        assert!(matches("ghcr.io", "ghcr.io", "acme/app"));
        assert!(!matches("ghcr.io", "ghcr.io:443", "acme/app"));
        assert!(matches("localhost:5000", "localhost:5000", "a"));
        assert!(!matches("localhost:5000", "localhost:5001", "a"));
        assert!(!matches("localhost", "localhost:5000", "a"));
        // Path prefix at a segment boundary.
        assert!(matches("ghcr.io/acme", "ghcr.io", "acme/app"));
        assert!(matches("ghcr.io/acme/app", "ghcr.io", "acme/app"));
        assert!(!matches("ghcr.io/acme", "ghcr.io", "other/app"));
        assert!(!matches("ghcr.io/acme", "ghcr.io", "acme-other/app"));
        // Host globs: one label per `*`.
        assert!(matches(
            "*.dkr.ecr.*.amazonaws.com",
            "123.dkr.ecr.eu-west-1.amazonaws.com",
            "app"
        ));
        assert!(!matches("*.azurecr.io", "a.b.azurecr.io", "app"));
        assert!(matches("*.azurecr.io", "acme.azurecr.io", "app"));
        assert!(!matches("*.azurecr.io", "azurecr.io", "app"));
        assert!(matches(
            "*-docker.pkg.dev",
            "europe-docker.pkg.dev",
            "p/r/i"
        ));
        assert!(matches("registry-[0-9].example", "registry-1.example", "x"));
        // Docker Hub's names and the docker client's /v1/ suffix.
        assert!(matches(
            "https://index.docker.io/v1/",
            "docker.io",
            "library/nginx"
        ));
        assert!(matches(
            "docker.io",
            "registry-1.docker.io",
            "library/nginx"
        ));
        assert!(matches("https://ghcr.io/v2/acme", "ghcr.io", "acme/app"));
        // Case-insensitive host.
        assert!(matches("GHCR.io", "ghcr.io", "a"));
    }

    #[test]
    fn most_specific_first_and_never_for_another_path() {
        let cred = |name: &str| {
            Credential::new(CredSource::DockerConfig, name.into(), name, "pw").unwrap()
        };
        let mut k = Keyring::default();
        k.add(Pattern::parse("ghcr.io").unwrap(), cred("host"));
        k.add(Pattern::parse("*.io").unwrap(), cred("glob"));
        k.add(Pattern::parse("ghcr.io/acme/app").unwrap(), cred("repo"));
        k.add(Pattern::parse("ghcr.io/acme").unwrap(), cred("org"));
        k.add(Pattern::parse("ghcr.io/other").unwrap(), cred("other"));
        let got: Vec<String> = k
            .lookup(&Target::new("ghcr.io", "acme/app"))
            .into_iter()
            .map(|c| c.origin)
            .collect();
        assert_eq!(got, ["repo", "org", "host", "glob"]);
        let got: Vec<String> = k
            .lookup(&Target::new("ghcr.io", "acme/other"))
            .into_iter()
            .map(|c| c.origin)
            .collect();
        assert_eq!(got, ["org", "host", "glob"]);
    }

    #[test]
    fn docker_json_and_dockercfg() {
        let k = Keyring::from_docker_json(
            br#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"ghcr.io":{"username":"u","password":"p"},"quay.io":{"identitytoken":"tok"},"bad":{}}}"#,
            false,
            CredSource::PullSecret,
            "ns/s",
        )
        .unwrap();
        let hub = k.lookup(&Target::new("docker.io", "library/nginx"));
        assert_eq!(hub.len(), 1);
        assert_eq!(hub[0].basic().unwrap(), "Basic dTpw");
        assert_eq!(
            k.lookup(&Target::new("ghcr.io", "a"))[0].basic().unwrap(),
            "Basic dTpw"
        );
        assert!(matches!(
            k.lookup(&Target::new("quay.io", "a"))[0].secret,
            Secret::IdentityToken(_)
        ));
        let legacy = Keyring::from_docker_json(
            br#"{"ghcr.io":{"auth":"dTpw"}}"#,
            true,
            CredSource::PullSecret,
            "ns/s",
        )
        .unwrap();
        assert_eq!(legacy.lookup(&Target::new("ghcr.io", "a")).len(), 1);
        let shown = format!("{k:?}");
        assert!(!shown.contains("dTpw") && !shown.contains("tok"), "{shown}");
        let err = Keyring::from_docker_json(
            br#"{"auths":{"x":{"auth":"SECRETSECRET"#,
            false,
            CredSource::PullSecret,
            "x",
        )
        .unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
    }
}
