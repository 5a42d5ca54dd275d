//! Image references: parsing, normalization and identity.
//!
//! Identity is `registry/repository@digest` with Docker Hub spelled `docker.io` and official
//! images under `library/`, so `nginx`, `docker.io/nginx` and `index.docker.io/library/nginx`
//! are one image. The grammar is Docker's (`domain[:port]/path[:tag][@digest]`), parsed by hand in
//! `reference`: oci-spec's regex costs ~60 ms to compile at first use, most of a one-image run.

use std::fmt;

mod reference;

/// A parsed, normalized reference as a pod or a user wrote it (tag and/or digest).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// The identity of one image: repository plus manifest digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId {
    pub registry: String,
    pub repository: String,
    pub digest: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {why}")]
pub struct InvalidReference {
    pub input: String,
    pub why: String,
}

/// Longest reference we attempt to parse; anything longer is hostile or broken.
const MAX_REFERENCE: usize = 512;

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self, InvalidReference> {
        let err = |why: String| InvalidReference {
            input: crate::core::posture::bound(input, 128),
            why,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(err("empty".into()));
        }
        if trimmed.len() > MAX_REFERENCE {
            return Err(err(format!("longer than {MAX_REFERENCE} characters")));
        }
        let parts = reference::split(trimmed).map_err(|e| err(e.to_string()))?;
        let digest = match parts.digest {
            Some(d) => Some(validate_digest(d).map_err(err)?),
            None => None,
        };
        // No tag and no digest means `latest`, as every container runtime reads it.
        let tag = match (parts.tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry: normalize_registry(parts.domain),
            repository: parts.repository,
            tag,
            digest,
        })
    }

    /// The identity, when the reference pins a digest.
    pub fn id(&self) -> Option<ImageId> {
        self.digest.as_ref().map(|d| ImageId {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            digest: d.clone(),
        })
    }

    /// `registry/repository`.
    pub fn repo_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageId {
    /// `registry/repository@digest`: the cache key and the CR's `spec.image`.
    pub fn key(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repository, self.digest)
    }

    pub fn repo_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host requests go to (Docker Hub's API host differs from its name).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The cosign legacy signature tag, `sha256-<hex>.sig`.
    pub fn sig_tag(&self) -> String {
        format!("{}.sig", self.referrers_tag())
    }

    /// The OCI referrers tag-schema fallback tag, `sha256-<hex>`.
    pub fn referrers_tag(&self) -> String {
        self.digest.replace(':', "-")
    }

    /// The hex part of the digest.
    pub fn digest_hex(&self) -> &str {
        self.digest.split_once(':').map(|(_, h)| h).unwrap_or("")
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Docker Hub's canonical name; every other host is kept as written (lowercased).
pub fn normalize_registry(registry: &str) -> String {
    let registry = registry.to_ascii_lowercase();
    match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => registry,
    }
}

pub fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

/// `d` if it is `sha256:` + 64 or `sha512:` + 128 lowercase hex: the only digests any value from
/// a registry or a pod may carry into a URL, a name or a status.
pub fn validate_digest(d: &str) -> Result<String, String> {
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| "digest has no algorithm".to_string())?;
    let want = match alg {
        "sha256" => 64,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "unsupported digest algorithm {:?}",
                crate::core::posture::bound(alg, 16)
            ))
        }
    };
    if hex.len() != want
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("malformed {alg} digest"));
    }
    Ok(d.to_string())
}

/// An image **config** digest (`sha256:` of the config blob): what `docker load`, `k3d image
/// import` and some CRI-O releases leave in `imageID` (a bare `sha256:…`, no repository).
///
/// It names no manifest, so no signature is ever looked up under it and no [`ImageId`] can be
/// built from it: the field is private and nothing converts it. Only a manifest fetched from the
/// registry whose `config.digest` equals it becomes an identity (see
/// `Verifier::tie`), so a config digest can never be verified as if it were a manifest digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigDigest(String);

impl ConfigDigest {
    /// Whether a manifest's `config.digest` is this digest.
    pub fn is_config_of(&self, config_digest: &str) -> bool {
        self.0 == config_digest
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the kubelet's `containerStatuses[].imageID` says a container runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeImage {
    /// `name@sha256:…` (containerd, cri-dockerd `docker-pullable://`, CRI-O): a manifest
    /// digest (an index or a platform manifest) under the repository the runtime names, when
    /// that name parses.
    Manifest {
        repository: Option<(String, String)>,
        digest: String,
    },
    /// A bare `sha256:…` (or `docker://sha256:…`): the image config digest.
    Config(ConfigDigest),
    /// Empty (not pulled yet) or unreadable.
    Unknown,
}

impl RuntimeImage {
    pub fn parse(image_id: &str) -> RuntimeImage {
        let s = image_id.trim();
        let s = s
            .strip_prefix("docker-pullable://")
            .or_else(|| s.strip_prefix("docker://"))
            .unwrap_or(s);
        match s.rsplit_once('@') {
            Some((name, digest)) => match validate_digest(digest) {
                Ok(digest) => RuntimeImage::Manifest {
                    repository: ImageRef::parse(name)
                        .ok()
                        .map(|r| (r.registry, r.repository)),
                    digest,
                },
                Err(_) => RuntimeImage::Unknown,
            },
            None => match validate_digest(s) {
                Ok(d) => RuntimeImage::Config(ConfigDigest(d)),
                Err(_) => RuntimeImage::Unknown,
            },
        }
    }
}

/// The manifest digest recorded by the kubelet in `containerStatuses[].imageID`.
///
/// Runtimes write `docker-pullable://repo@sha256:…`, `repo@sha256:…` or a bare `sha256:…`.
/// A bare digest is the image *config* ID on some runtimes, not the manifest digest, so it is
/// never used here; [`RuntimeImage`] tells the forms apart for the inventory.
pub fn digest_from_image_id(image_id: &str) -> Option<String> {
    let s = image_id
        .trim()
        .trim_start_matches("docker-pullable://")
        .trim_start_matches("docker://");
    let (_, digest) = s.rsplit_once('@')?;
    validate_digest(digest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_normalizes() {
        for s in [
            "nginx",
            "docker.io/nginx",
            "index.docker.io/library/nginx",
            "library/nginx",
        ] {
            let r = ImageRef::parse(&format!("{s}@{D}")).unwrap();
            assert_eq!(
                r.id().unwrap().key(),
                format!("docker.io/library/nginx@{D}"),
                "{s}"
            );
        }
    }

    #[test]
    fn tag_only_has_no_identity() {
        let r = ImageRef::parse("ghcr.io/org/app:v1").unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.id().is_none());
        let r = ImageRef::parse("ghcr.io/org/app").unwrap();
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn local_registry_with_port() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/a/b:t@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(
            r.id().unwrap().sig_tag(),
            format!("sha256-{}.sig", D.strip_prefix("sha256:").unwrap())
        );
    }

    #[test]
    fn rejects_bad_input() {
        for s in [
            "",
            "UPPER/case",
            "a@sha256:zz",
            "a@md5:00",
            &"a/".repeat(400),
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn image_id_forms() {
        assert_eq!(
            digest_from_image_id(&format!("docker-pullable://nginx@{D}")).as_deref(),
            Some(D)
        );
        assert_eq!(
            digest_from_image_id(&format!("docker.io/library/nginx@{D}")).as_deref(),
            Some(D)
        );
        assert_eq!(digest_from_image_id(D), None);
        assert_eq!(digest_from_image_id(""), None);
    }

    #[test]
    fn runtime_image_forms() {
        let repo = |r: &str| Some(("docker.io".to_string(), r.to_string()));
        assert_eq!(
            RuntimeImage::parse(&format!("docker-pullable://nginx@{D}")),
            RuntimeImage::Manifest {
                repository: repo("library/nginx"),
                digest: D.into()
            }
        );
        assert_eq!(
            RuntimeImage::parse(&format!("docker.io/library/import-2024-05-01@{D}")),
            RuntimeImage::Manifest {
                repository: repo("library/import-2024-05-01"),
                digest: D.into()
            }
        );
        for bare in [D.to_string(), format!("docker://{D}")] {
            let RuntimeImage::Config(c) = RuntimeImage::parse(&bare) else {
                panic!("{bare}")
            };
            assert!(c.is_config_of(D));
        }
        for junk in ["", "sha256:zz", "x@sha256:12", "docker://"] {
            assert_eq!(RuntimeImage::parse(junk), RuntimeImage::Unknown, "{junk}");
        }
    }
}
