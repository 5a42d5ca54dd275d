//! Who owns which field of a resource, read from `metadata.managedFields` as the API server
//! records it for server-side apply (`fieldsV1`: `{"f:status": {"f:posture": {}}}`).
//!
//! Each loop compares what it wants with the fields it owns, not with the whole object, so a
//! field another manager set neither causes a rewrite on every pass nor survives where it
//! must not be.

use std::collections::BTreeSet;

use kube::ResourceExt;
use serde_json::Value;

use crate::model::crd::ImagePosture;

/// Where in the object a field lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `status.<field>` (top level of the status).
    Status,
    /// `metadata.labels.<key>`.
    Labels,
}

impl Part {
    fn compact_prefix(self) -> &'static str {
        match self {
            Part::Status => "status:",
            Part::Labels => "labels:",
        }
    }

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

/// The fields of `part` that other managers hold and `manager` does not: values someone else
/// wrote. (A field both own has the value `manager` applied: an apply that states another
/// manager's value shares the field.)
pub fn foreign_only(cr: &ImagePosture, manager: &str, part: Part) -> BTreeSet<String> {
    let mine = fields(cr, part, |m| m == manager);
    let mut theirs = foreign(cr, manager, part);
    theirs.retain(|f| !mine.contains(f));
    theirs
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
        out.extend(owned_in(fields, part));
    }
    out
}

/// The names directly under `part` in one entry's `fieldsV1`, as the API server writes it or
/// as [`compact`] keeps it.
fn owned_in(fields: &Value, part: Part) -> Vec<String> {
    if let Value::Array(compacted) = fields {
        let prefix = part.compact_prefix();
        return compacted
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|f| f.strip_prefix(prefix))
            .map(str::to_string)
            .collect();
    }
    let [outer, inner] = part.path();
    let mut node = fields.get(outer);
    if !inner.is_empty() {
        node = node.and_then(|n| n.get(inner));
    }
    match node {
        Some(Value::Object(map)) => map
            .keys()
            .filter_map(|k| k.strip_prefix("f:"))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Shrinks a cached object's `managedFields` to what this module reads: per entry, the manager,
/// operation and subresource, and only the names under `status` and `metadata.labels` its
/// `fieldsV1` owns (as a list, `status:posture`, `labels:<key>`). The API server's `fieldsV1`
/// is a tree of JSON objects, several KiB per resource in memory; the operator's caches keep
/// thousands of resources.
pub fn compact(cr: &mut ImagePosture) {
    let Some(entries) = cr.metadata.managed_fields.as_mut() else {
        return;
    };
    for entry in entries.iter_mut() {
        let Some(fields) = entry.fields_v1.as_mut() else {
            continue;
        };
        if fields.0.is_array() {
            continue;
        }
        let mut kept = Vec::new();
        for part in [Part::Status, Part::Labels] {
            for name in owned_in(&fields.0, part) {
                kept.push(Value::String(format!("{}{name}", part.compact_prefix())));
            }
        }
        fields.0 = Value::Array(kept);
        entry.api_version = None;
        entry.fields_type = None;
        entry.time = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    fn entry(manager: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn reads_owned_and_foreign_fields() {
        let mut cr = crate::model::crd::ImagePosture::new(
            "x",
            crate::model::crd::ImagePostureSpec {
                image: "a".into(),
                repository: "b".into(),
                digest: "c".into(),
                short_digest: String::new(),
                untied: None,
            },
        );
        assert_eq!(
            owned(&cr, "me", Part::Status),
            None,
            "no managedFields at all"
        );
        cr.metadata.managed_fields = Some(vec![
            entry(
                "me",
                json!({"f:status": {"f:posture": {}, "f:usage": {"f:pods": {}}}}),
            ),
            entry(
                "other",
                json!({"f:status": {"f:signer": {}},
                                   "f:metadata": {"f:labels": {"f:team": {}}}}),
            ),
        ]);
        let mine = owned(&cr, "me", Part::Status).unwrap();
        assert_eq!(mine.into_iter().collect::<Vec<_>>(), ["posture", "usage"]);
        assert_eq!(
            foreign(&cr, "me", Part::Status)
                .into_iter()
                .collect::<Vec<_>>(),
            ["signer"]
        );
        assert_eq!(
            foreign(&cr, "me", Part::Labels)
                .into_iter()
                .collect::<Vec<_>>(),
            ["team"]
        );
        assert!(owned(&cr, "me", Part::Labels).unwrap().is_empty());
        // Compacted, every answer stays the same.
        let mut small = cr.clone();
        compact(&mut small);
        assert_ne!(small.metadata.managed_fields, cr.metadata.managed_fields);
        for part in [Part::Status, Part::Labels] {
            for who in ["me", "other", "nobody"] {
                assert_eq!(owned(&small, who, part), owned(&cr, who, part));
                assert_eq!(foreign(&small, who, part), foreign(&cr, who, part));
                assert_eq!(
                    foreign_only(&small, who, part),
                    foreign_only(&cr, who, part)
                );
            }
        }
    }
}
