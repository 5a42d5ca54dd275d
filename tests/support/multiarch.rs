//! Real multi-arch images, the way `docker buildx` pushes them: an OCI index of an amd64 and an
//! arm64 platform manifest (each with its own config blob and layer), plus a provenance-style
//! attestation manifest (`unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`).

use imageposture::core::image::ImageId;
use serde_json::json;

use super::cosign::{Desc, Oci, Pushed, IN_TOTO, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

/// One platform manifest of a [`MultiArch`].
#[derive(Clone, Debug)]
pub struct Platform {
    pub arch: &'static str,
    pub image: Pushed,
    /// The digest of its config blob: what `docker load` / k3d report as a bare `imageID`.
    pub config: String,
}

/// A pushed multi-arch image.
#[derive(Clone, Debug)]
pub struct MultiArch {
    /// The index (its id is the index digest; tagged).
    pub index: Pushed,
    pub amd64: Platform,
    pub arm64: Platform,
    /// The attestation manifest the index lists for amd64.
    pub attestation: ImageId,
}

impl MultiArch {
    /// `host/repo:tag` as a pod's spec writes it.
    pub fn tag_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.index.id.repo_path())
    }

    /// `host/repo@digest` of the index (a spec pinned by index digest; containerd's imageID).
    pub fn index_ref(&self) -> String {
        self.index.id.key()
    }
}

impl Oci {
    /// One platform's image (config with that architecture, one random layer), pushed by
    /// digest, not tagged.
    pub async fn push_platform(&self, repo: &str, arch: &'static str) -> Platform {
        let layer = self
            .push_blob(
                repo,
                "application/vnd.oci.image.layer.v1.tar",
                format!("{arch} layer {}", unique()).as_bytes(),
            )
            .await;
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [layer.digest] }
        });
        let config = self
            .push_blob(repo, OCI_CONFIG, &serde_json::to_vec(&config).unwrap())
            .await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.json(),
            "layers": [layer.json()]
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let digest = Desc::of(OCI_MANIFEST, &body).digest;
        let desc = self.put_manifest(repo, &digest, OCI_MANIFEST, &body).await;
        Platform {
            arch,
            image: Pushed {
                id: ImageId {
                    registry: self.host.clone(),
                    repository: repo.into(),
                    digest: desc.digest.clone(),
                },
                manifest: desc,
            },
            config: config.digest,
        }
    }

    /// amd64 + arm64 + an attestation manifest under one OCI index, tagged `tag` (replacing
    /// whatever the tag pointed at: a moved tag).
    pub async fn push_multiarch(&self, repo: &str, tag: &str) -> MultiArch {
        let amd64 = self.push_platform(repo, "amd64").await;
        let arm64 = self.push_platform(repo, "arm64").await;
        // BuildKit's provenance attestation: an image manifest whose layer is an in-toto
        // statement, listed as `unknown/unknown` and pointing at the platform it describes.
        let statement = self
            .push_blob(
                repo,
                IN_TOTO,
                format!(
                    r#"{{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2","subject":[{{"digest":{{"sha256":"{}"}}}}],"predicate":{{"n":"{}"}}}}"#,
                    amd64.image.id.digest_hex(),
                    unique()
                )
                .as_bytes(),
            )
            .await;
        let att_config = self
            .push_blob(
                repo,
                OCI_CONFIG,
                br#"{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#,
            )
            .await;
        let mut layer = statement.json();
        layer["annotations"] =
            json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"});
        let att = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": att_config.json(),
            "layers": [layer]
        });
        let body = serde_json::to_vec(&att).unwrap();
        let att_digest = Desc::of(OCI_MANIFEST, &body).digest;
        let att_desc = self
            .put_manifest(repo, &att_digest, OCI_MANIFEST, &body)
            .await;

        let entry = |p: &Platform| {
            let mut e = p.image.manifest.json();
            e["platform"] = json!({"architecture": p.arch, "os": "linux"});
            e
        };
        let mut att_entry = att_desc.json();
        att_entry["platform"] = json!({"architecture": "unknown", "os": "unknown"});
        att_entry["annotations"] = json!({
            "vnd.docker.reference.digest": amd64.image.id.digest,
            "vnd.docker.reference.type": "attestation-manifest",
        });
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [entry(&amd64), entry(&arm64), att_entry]
        });
        let index_desc = self
            .put_manifest(repo, tag, OCI_INDEX, &serde_json::to_vec(&index).unwrap())
            .await;
        MultiArch {
            index: Pushed {
                id: ImageId {
                    registry: self.host.clone(),
                    repository: repo.into(),
                    digest: index_desc.digest.clone(),
                },
                manifest: index_desc,
            },
            attestation: ImageId {
                registry: self.host.clone(),
                repository: repo.into(),
                digest: att_desc.digest,
            },
            amd64,
            arm64,
        }
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:?} {} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
