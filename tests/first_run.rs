//! The README's install commands deploy an image that exists: `config/default` (after its
//! kustomize `images:` transform) names exactly the tag the README's `docker build -t` produces
//! and loads into kind/k3d, and it is not pulled from a registry when it was loaded.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// `name[:tag]` split the way kustomize's image transformer matches it.
fn split(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// The image `kubectl apply -k config/default` deploys.
fn deployed_image() -> (String, Value) {
    let deployment = yaml("config/manager/deployment.yaml").remove(0);
    let container = deployment["spec"]["template"]["spec"]["containers"][0].clone();
    let (mut name, mut tag) = {
        let (n, t) = split(container["image"].as_str().unwrap());
        (n.to_string(), t.to_string())
    };
    let default = yaml("config/default/kustomization.yaml").remove(0);
    for i in default["images"].as_array().into_iter().flatten() {
        if i["name"] == name.as_str() {
            if let Some(n) = i["newName"].as_str() {
                name = n.to_string();
            }
            if let Some(t) = i["newTag"].as_str() {
                tag = t.to_string();
            }
        }
    }
    (format!("{name}:{tag}"), container)
}

#[test]
fn default_deploys_the_tag_the_readme_builds_and_loads() {
    let (image, container) = deployed_image();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for command in [
        format!("docker build -t {image} ."),
        format!("kind load docker-image {image}"),
        format!("k3d image import {image}"),
        "kubectl apply -k config/default".to_string(),
    ] {
        assert!(readme.contains(&command), "README lacks `{command}`");
    }
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("docker build -t {image} .")),
        "the Dockerfile's build comment names another tag than {image}"
    );
    // A loaded image is used as is; `Always` (or a `latest` tag, which defaults to it) would
    // send the kubelet to a registry that never had it.
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert!(!image.ends_with(":latest"), "{image}");
}
