//! Field ownership as the API server records it (`metadata.managedFields`, `fieldsV1`), and
//! server-side apply over it, for ImagePosture resources.
//!
//! Faithful to what the operator relies on: an apply sets the fields it carries and takes
//! them over (with `force`; without it a different value owned by another manager is a 409
//! conflict); a field the manager applied before and no longer carries is removed unless
//! another manager owns it too; fields of other managers are kept; non-apply writes (update,
//! merge patch) take ownership of the fields they change (operation `Update`). Maps are
//! granular (one field per key), lists atomic (the CRD's lists carry no list-type), as for a
//! CRD without `x-kubernetes-list-type`. Not modelled: defaulting, associative lists, the
//! `f:.` markers of the real encoding.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

pub type Path = Vec<String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    /// `""` (main resource) or `"status"`.
    pub subresource: String,
    pub fields: BTreeSet<Path>,
}

/// The fields a write to the main endpoint (`status_ep == false`) or to `/status` sets.
pub fn written_paths(obj: &Value, status_ep: bool) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if status_ep => leaves(v, &mut vec![k.clone()], &mut out),
            _ if status_ep => {}
            "status" => {}
            "metadata" => {
                for f in ["labels", "annotations"] {
                    if let Some(Value::Object(m)) = v.get(f) {
                        for key in m.keys() {
                            out.insert(vec!["metadata".into(), f.into(), key.clone()]);
                        }
                    }
                }
            }
            _ => leaves(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

fn leaves(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Null => {}
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

pub fn get_path<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    p.iter().try_fold(v, |node, k| node.get(k))
}

fn set_path(v: &mut Value, p: &[String], val: Value) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut node = v;
    for k in parents {
        if !node.get(k).is_some_and(Value::is_object) {
            node[k.as_str()] = json!({});
        }
        node = &mut node[k.as_str()];
    }
    node[last.as_str()] = val;
}

/// Removes a field, and the maps it leaves empty (below the top level).
fn remove_path(v: &mut Value, p: &[String]) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut node = &mut *v;
    for k in parents {
        match node.get_mut(k) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(last);
    }
    if parents.len() > 1
        && get_path(v, parents).is_some_and(|n| n.as_object().is_some_and(Map::is_empty))
    {
        remove_path(v, parents);
    }
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|e| Entry {
            manager: e["manager"].as_str().unwrap_or_default().to_string(),
            operation: e["operation"].as_str().unwrap_or_default().to_string(),
            subresource: e["subresource"].as_str().unwrap_or_default().to_string(),
            fields: from_fields_v1(&e["fieldsV1"]),
        })
        .collect()
}

pub fn write_entries(obj: &mut Value, api_version: &str, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": api_version,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn to_fields_v1(fields: &BTreeSet<Path>) -> Value {
    let mut root = json!({});
    for p in fields {
        let mut node = &mut root;
        for k in p {
            let key = format!("f:{k}");
            if !node.get(&key).is_some_and(Value::is_object) {
                node[key.as_str()] = json!({});
            }
            node = &mut node[key.as_str()];
        }
    }
    root
}

fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        let Some(m) = v.as_object() else { return };
        if m.is_empty() && !prefix.is_empty() {
            out.insert(prefix.clone());
            return;
        }
        for (k, child) in m {
            if let Some(name) = k.strip_prefix("f:") {
                prefix.push(name.to_string());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn subresource(status_ep: bool) -> String {
    if status_ep { "status" } else { "" }.to_string()
}

/// Server-side apply of `body` by `manager` onto `old`. `Err` lists the conflicting fields
/// (another manager's, a different value, no `force`).
pub fn apply(
    old: &Value,
    body: &Value,
    manager: &str,
    status_ep: bool,
    force: bool,
    api_version: &str,
) -> Result<Value, Vec<(String, Path)>> {
    let sub = subresource(status_ep);
    let mut entries = read_entries(old);
    let applied = written_paths(body, status_ep);
    let mine = |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == sub;
    let previous: BTreeSet<Path> = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let conflicts: Vec<(String, Path)> = entries
        .iter()
        .filter(|e| !mine(e))
        .flat_map(|e| {
            applied
                .iter()
                .filter(|p| e.fields.contains(*p) && get_path(old, p) != get_path(body, p))
                .map(|p| (e.manager.clone(), p.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    if !force && !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut new = old.clone();
    for p in previous.difference(&applied) {
        let shared = entries.iter().any(|e| !mine(e) && e.fields.contains(p));
        if !shared {
            remove_path(&mut new, p);
        }
    }
    for p in &applied {
        if let Some(v) = get_path(body, p) {
            set_path(&mut new, p, v.clone());
        }
    }
    for e in entries.iter_mut().filter(|e| !mine(e)) {
        e.fields.retain(|p| !applied.contains(p));
    }
    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => e.fields = applied,
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            subresource: sub,
            fields: applied,
        }),
    }
    prune(&new, &mut entries);
    write_entries(&mut new, api_version, &entries);
    Ok(new)
}

/// Ownership after a non-apply write (`new` computed by the caller): `manager` owns the fields
/// it changed, other managers lose them; removed fields are owned by nobody.
pub fn record_update(
    old: &Value,
    new: &mut Value,
    manager: &str,
    status_ep: bool,
    api_version: &str,
) {
    let sub = subresource(status_ep);
    let mut entries = read_entries(old);
    let changed: BTreeSet<Path> = written_paths(new, status_ep)
        .into_iter()
        .filter(|p| get_path(old, p) != get_path(new, p))
        .collect();
    for e in entries.iter_mut() {
        e.fields.retain(|p| !changed.contains(p));
    }
    let mine = |e: &Entry| e.manager == manager && e.operation == "Update" && e.subresource == sub;
    match entries.iter_mut().find(|e| mine(e)) {
        Some(e) => e.fields.extend(changed),
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            subresource: sub,
            fields: changed,
        }),
    }
    prune(new, &mut entries);
    write_entries(new, api_version, &entries);
}

/// Drops ownership of fields the object no longer has.
fn prune(obj: &Value, entries: &mut Vec<Entry>) {
    for e in entries.iter_mut() {
        e.fields.retain(|p| get_path(obj, p).is_some());
    }
    entries.retain(|e| !e.fields.is_empty());
}
