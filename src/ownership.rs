//! Who owns which field of a resource, read from `metadata.managedFields` as the API server
//! records it for server-side apply (`fieldsV1`: `{"f:status": {"f:posture": {}}}`).
//!
//! Each loop compares what it wants with the fields it owns, not with the whole object, so a
//! field another manager set neither causes a rewrite on every pass nor survives where it
//! must not be.

use std::collections::BTreeSet;

use kube::ResourceExt;
use serde_json::Value;

use crate::crd::ImagePosture;

/// Where in the object a field lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `status.<field>` (top level of the status).
    Status,
    /// `metadata.labels.<key>`.
    Labels,
}

impl Part {
    fn path(self) -> [&'static str; 2] {
        match self {
            Part::Status => ["f:status", ""],
            Part::Labels => ["f:metadata", "f:labels"],
        }
    }
}

/// The fields of `part` that `manager` owns; `None` when the object carries no managedFields
/// at all (an API server that does not report them, or a stripped copy).
pub fn owned(cr: &ImagePosture, manager: &str, part: Part) -> Option<BTreeSet<String>> {
    let entries = cr.managed_fields();
    if entries.is_empty() {
        return None;
    }
    Some(fields(cr, part, |m| m == manager))
}

/// The fields of `part` that any manager other than `manager` owns.
pub fn foreign(cr: &ImagePosture, manager: &str, part: Part) -> BTreeSet<String> {
    fields(cr, part, |m| m != manager)
}

fn fields(cr: &ImagePosture, part: Part, select: impl Fn(&str) -> bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in cr.managed_fields() {
        if !select(entry.manager.as_deref().unwrap_or_default()) {
            continue;
        }
        let Some(fields) = entry.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        let [outer, inner] = part.path();
        let mut node = fields.get(outer);
        if !inner.is_empty() {
            node = node.and_then(|n| n.get(inner));
        }
        if let Some(Value::Object(map)) = node {
            out.extend(
                map.keys()
                    .filter_map(|k| k.strip_prefix("f:"))
                    .map(str::to_string),
            );
        }
    }
    out
}
