//! Who writes what: the field managers of server-side apply, the status fields each owns, and
//! the labels the operator sets on every ImagePosture.
//!
//! Three managers share one resource: the inventory loop ([`FIELD_MANAGER_INVENTORY`]), the
//! verification controller ([`FIELD_MANAGER_VERIFIER`]) and the baseline loop
//! ([`crate::model::baseline::FIELD_MANAGER_DRIFT`]). Each applies only its own fields, so no
//! writer ever clears another's.

use std::collections::BTreeMap;

use crate::core::image::ImageId;
use crate::core::posture::Posture;

/// `app.kubernetes.io/managed-by` value: lets `kubectl get ipost -l` and GC select our objects.
pub const MANAGER: &str = "imageposture";
/// Field manager of the inventory loop: `spec`, the ownership and registry labels,
/// `status.references`, `status.tag` and `status.usage`.
pub const FIELD_MANAGER_INVENTORY: &str = "imageposture-inventory";
/// Field manager of the verification controller: the posture label and every verdict field
/// of the status ([`VERDICT_FIELDS`]).
pub const FIELD_MANAGER_VERIFIER: &str = "imageposture-verifier";

/// The status fields the inventory owns (JSON names).
pub const INVENTORY_FIELDS: &[&str] = &["references", "tag", "usage"];
/// The status fields the verifier owns (JSON names): everything but the inventory's.
pub const VERDICT_FIELDS: &[&str] = &[
    "posture",
    "signer",
    "shortSigner",
    "issuer",
    "signerType",
    "reason",
    "message",
    "signatures",
    "lastVerified",
    "lastChecked",
    "checkingSince",
    "signatureDigests",
    "conditions",
];

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_POSTURE: &str = "imageposture.io/posture";
pub const LABEL_REGISTRY: &str = "imageposture.io/registry";

/// Labels the operator sets on every ImagePosture: ownership (for GC and selection), the
/// posture (`kubectl get ipost -l imageposture.io/posture=not-signed`) and the registry host.
/// The posture label is omitted when no verdict exists yet.
pub fn labels(id: &ImageId, posture: Option<Posture>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_MANAGED_BY.to_string(), MANAGER.to_string());
    if let Some(p) = posture {
        l.insert(LABEL_POSTURE.to_string(), p.as_str().to_string());
    }
    let registry = label_value(&id.registry);
    if !registry.is_empty() {
        l.insert(LABEL_REGISTRY.to_string(), registry);
    }
    l
}

/// Turns arbitrary text (a registry host such as `127.0.0.1:5000`) into a valid label value:
/// at most 63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric; other characters
/// become `-`. May return the empty string, which is a valid (if useless) label value.
pub fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}
