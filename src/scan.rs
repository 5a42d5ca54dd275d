//! `imageposture scan`: the ImagePosture objects the operator would write, from a pod list
//! (`kubectl get pods -A -o json`), with no cluster.

use std::io::Read;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::cli::{OutputFormat, ScanArgs};
use crate::crd::{self, ImagePosture};
use crate::inventory::{Inventory, NamespaceFilter};
use crate::observer::{Observer, ObserverConfig};
use crate::sweep::desired_status;
use crate::verify::Verifier;

/// Largest pod list accepted (a 10k-pod cluster lists in well under this).
const MAX_INPUT: u64 = 512 << 20;

pub async fn run(args: ScanArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pods = read_pods(&args.file)?;
    let verifier = Arc::new(Verifier::new(args.verify.config()).await?);
    let observer = Observer::new(
        verifier,
        ObserverConfig {
            concurrency: args.verify.concurrency,
            ..ObserverConfig::default()
        },
    );
    let objects = scan(&pods, &observer).await;
    let out = match args.output {
        OutputFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        OutputFormat::Yaml | OutputFormat::Table => objects
            .iter()
            .map(serde_yaml::to_string)
            .collect::<Result<Vec<_>, _>>()?
            .join("---\n"),
    };
    print!("{out}");
    Ok(())
}

/// The objects for a set of pods, in the order the operator would admit them.
pub async fn scan(pods: &[Pod], observer: &Observer) -> Vec<ImagePosture> {
    let now = chrono::Utc::now();
    let mut inv = Inventory::from_pods(pods, &NamespaceFilter::default());
    for (reference, why) in &inv.invalid {
        eprintln!(
            "imageposture: skipping {}: {}",
            crate::text::escape(reference),
            crate::text::escape(why)
        );
    }
    for tag in inv.unresolved.keys().cloned().collect::<Vec<_>>() {
        match observer.resolve(&tag, now).await {
            Ok(id) => inv.resolve(&tag, id),
            Err(v) => eprintln!(
                "imageposture: {tag} has no digest yet ({}: {})",
                v.reason,
                crate::text::escape(&v.message)
            ),
        }
    }
    let order = inv.by_usage();
    let observed = observer.observe_all(&order, now).await;
    order
        .iter()
        .filter_map(|id| {
            // Both maps hold every id of `order`; a miss would be our bug, not a crash.
            let (o, usage) = (observed.get(id)?, inv.images.get(id)?);
            let mut r = crd::new_resource(id);
            r.metadata.labels = Some(crd::labels(id, Some(o.verdict.posture)));
            r.status = Some(desired_status(usage, o, None, now));
            Some(r)
        })
        .collect()
}

fn read_pods(path: &std::path::Path) -> Result<Vec<Pod>, Box<dyn std::error::Error>> {
    let mut raw = Vec::new();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?)
    };
    reader.take(MAX_INPUT + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_INPUT {
        return Err(format!("{} is larger than {MAX_INPUT} bytes", path.display()).into());
    }
    parse_pods(&raw).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Accepts a `List`/`PodList` (`kubectl get pods -o json`) or a single Pod.
pub fn parse_pods(raw: &[u8]) -> Result<Vec<Pod>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let items = match value.get("items") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        Some(_) => return Err("`items` is not a list".into()),
        None if value.get("kind").and_then(|k| k.as_str()) == Some("Pod") => vec![value],
        None => return Err("expected `kubectl get pods -o json` output (a List of Pods)".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| serde_json::from_value(item).map_err(|e| format!("item {i}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_rejects_garbage() {
        let list = br#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}]}"#;
        assert_eq!(parse_pods(list).unwrap().len(), 1);
        assert_eq!(
            parse_pods(br#"{"kind":"Pod","metadata":{"name":"a"}}"#)
                .unwrap()
                .len(),
            1
        );
        assert!(parse_pods(b"nope").is_err());
        assert!(parse_pods(br#"{"kind":"Service"}"#).is_err());
        assert!(parse_pods(br#"{"items":[{"spec":{"containers":7}}]}"#).is_err());
    }
}
