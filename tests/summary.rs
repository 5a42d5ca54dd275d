//! `imageposture summary` as a person runs it: over the output of `imageposture scan` (made by
//! the real binary against the real registry and test PKI), and over the ImagePostures in a
//! cluster (the real kube-apiserver of tests/support/kube, through a kubeconfig as a person has one),
//! which must summarize the same.

#[path = "support/kube/mod.rs"]
mod kube;
mod support;

use std::process::Command;

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use imageposture::model::crd::ImagePosture;
use kube::proxy::{is_list_of, ApiProxy};
use kube::KubeApi;
use serde_json::{json, Value};
use support::cosign::{self, Spoil};
use support::pki::{Identity, Signer, EMAIL, GITHUB_ISSUER, GOOGLE_ISSUER, WORKFLOW_URI};
use support::{unique_repo, via, TestEnv};

fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(args)
        .env_remove("KUBECONFIG")
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn pod(ns: &str, name: &str, id: &imageposture::core::image::ImageId) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name},
           "spec": {"containers": [{"name": "c", "image": id.key()}]},
           "status": {"phase": "Running"}})
}

/// A population with every posture, scanned by the real binary: (scan JSON, scan YAML, env).
struct Scanned {
    env: TestEnv,
    json: String,
    yaml: String,
    evil_san: String,
}

async fn scanned() -> Scanned {
    let env = TestEnv::new();
    let github = env.keyless_image("sum-gh", &Identity::github()).await;
    let github2 = env.keyless_image("sum-gh2", &Identity::github()).await;
    let google = env.keyless_image("sum-google", &Identity::google()).await;
    // Attacker-chosen signer text: a terminal escape in a SAN the CA was talked into.
    let evil_san = "https://evil.example/\u{1b}[2Jwipe".to_string();
    let evil = env
        .keyless_image(
            "sum-evil",
            &Identity::Uri {
                uri: evil_san.clone(),
                issuer: GITHUB_ISSUER.into(),
            },
        )
        .await;
    let unsigned = env.oci.push_image(&unique_repo("sum-unsigned"), "v1").await;
    let tampered = env.oci.push_image(&unique_repo("sum-tampered"), "v1").await;
    let leaf = env.pki.ca.issue(&Identity::github());
    let layer = cosign::legacy_layer(
        &tampered.id,
        &Signer::Keyless(&leaf),
        Some(&env.pki.rekor),
        Spoil::TamperPayload,
    );
    env.oci
        .push_sig(&tampered.id.repository, &tampered.id.digest, &[layer])
        .await;
    // Nothing listens on port 1: the registry is unreachable, so the image stays `checking`.
    let unreachable = via(&unsigned.id, "127.0.0.1:1");

    let pods = json!({"apiVersion": "v1", "kind": "List", "items": [
        pod("prod", "web-1", &github),
        pod("prod", "web-2", &github),
        pod("prod", "db-1", &unsigned.id),
        pod("prod", "api-1", &github2),
        pod("dev", "web-1", &github),
        pod("dev", "tool-1", &tampered.id),
        pod("dev", "tool-2", &unsigned.id),
        pod("dev", "mail-1", &google),
        pod("ops", "x-1", &evil),
        pod("ops", "mirror-1", &unreachable),
    ]});
    let file = env.dir.path().join("pods.json");
    std::fs::write(&file, pods.to_string()).unwrap();
    let root = env.trusted_root.to_str().unwrap().to_string();
    let scan = |output: &str| {
        let (ok, out, err) = run(
            &[
                "scan",
                "-f",
                file.to_str().unwrap(),
                "-o",
                output,
                "--trusted-root",
                &root,
                "--insecure-registry",
                &env.registry.host,
                "--insecure-registry",
                "127.0.0.1:1",
                "--image-timeout",
                "5s",
            ],
            &[],
        );
        assert!(ok, "scan: {err}");
        out
    };
    let json = scan("json");
    let yaml = scan("yaml");
    Scanned {
        env,
        json,
        yaml,
        evil_san,
    }
}

fn counts(summary: &Value) -> Vec<(String, u64, u64)> {
    summary["postures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["posture"].as_str().unwrap().to_string(),
                p["images"].as_u64().unwrap(),
                p["pods"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn assert_population(s: &Value, evil_san: &str) {
    assert_eq!(s["images"], 7, "{s:#}");
    assert_eq!(s["pods"], 10, "{s:#}");
    assert_eq!(
        counts(s),
        vec![
            ("signed".into(), 4, 6),
            ("invalid-signature".into(), 1, 1),
            ("not-signed".into(), 1, 2),
            ("checking".into(), 1, 1),
        ],
        "{s:#}"
    );
    let signers = s["signers"].as_array().unwrap();
    assert_eq!(signers[0]["name"], WORKFLOW_URI, "{s:#}");
    assert_eq!(
        (signers[0]["images"].as_u64(), signers[0]["pods"].as_u64()),
        (Some(2), Some(4))
    );
    let names: Vec<&str> = signers
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&EMAIL), "{names:?}");
    // Stored as bounded data: the control character is blanked, the rest kept.
    let evil_stored = evil_san.replace('\u{1b}', " ");
    assert!(names.contains(&evil_stored.as_str()), "{names:?}");
    assert_eq!(s["signerCount"], 3);
    let issuers = s["issuers"].as_array().unwrap();
    assert_eq!(issuers[0]["name"], GITHUB_ISSUER);
    assert_eq!(issuers[0]["images"], 3);
    assert_eq!(issuers[1]["name"], GOOGLE_ISSUER);
    assert_eq!(
        s["namespaces"],
        json!([
            {"namespace": "dev", "invalidSignature": 1, "notSigned": 1},
            {"namespace": "prod", "invalidSignature": 0, "notSigned": 1},
        ]),
        "{s:#}"
    );
    assert_eq!(s["checkingCount"], 1);
    let stuck = &s["checking"][0];
    assert!(
        stuck["image"].as_str().unwrap().starts_with("127.0.0.1:1/"),
        "{stuck}"
    );
    assert_eq!(stuck["reason"], "RegistryUnreachable", "{stuck}");
    assert!(stuck["checkingSince"].is_string(), "{stuck}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_of_a_scan_file_and_of_the_cluster() {
    let scanned = scanned().await;
    let dir = scanned.env.dir.path();
    let json_file = dir.join("scan.json");
    let yaml_file = dir.join("scan.yaml");
    std::fs::write(&json_file, &scanned.json).unwrap();
    std::fs::write(&yaml_file, &scanned.yaml).unwrap();

    // JSON for machines, from either scan format.
    let summarize = |file: &std::path::Path| {
        let (ok, out, err) = run(
            &["summary", "--from", file.to_str().unwrap(), "-o", "json"],
            &[],
        );
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v
    };
    let from_json = summarize(&json_file);
    assert_population(&from_json, &scanned.evil_san);
    // Two scans ran (JSON, YAML), each starting its own `checking` clock.
    let strip = |mut v: Value| {
        v["checking"][0]["checkingSince"] = Value::Null;
        v["checking"][0]["forSeconds"] = Value::Null;
        v
    };
    let from_yaml = summarize(&yaml_file);
    assert_eq!(strip(from_json.clone()), strip(from_yaml));

    // The table for people: every section, and the hostile signer escaped.
    let (ok, table, err) = run(&["summary", "--from", json_file.to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    println!("{table}");
    assert!(table.starts_with("7 images in 10 pods\n"), "{table}");
    for want in [
        "POSTURE",
        "invalid-signature",
        WORKFLOW_URI,
        GOOGLE_ISSUER,
        "NAMESPACE",
        "CHECKING",
        "RegistryUnreachable",
        "https://evil.example/ [2Jwipe",
    ] {
        assert!(table.contains(want), "missing {want:?} in\n{table}");
    }
    assert!(
        !table.contains('\u{1b}'),
        "a raw escape reached the terminal:\n{table}"
    );

    // The same objects served by a real API server: the cluster path summarizes the same.
    let Some(api) = KubeApi::start().await else {
        return;
    };
    api.install_crd().await;
    let list: Value = serde_json::from_str(&scanned.json).unwrap();
    let postures: Api<ImagePosture> = Api::all(api.admin());
    for item in list["items"].as_array().unwrap() {
        // As the operator makes them: the object with its spec and labels, then the status
        // through its subresource.
        let name = item["metadata"]["name"].as_str().expect("name");
        let object: ImagePosture = serde_json::from_value(json!({
            "apiVersion": item["apiVersion"], "kind": item["kind"],
            "metadata": {"name": name, "labels": item["metadata"]["labels"]},
            "spec": item["spec"],
        }))
        .expect("an ImagePosture");
        postures
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
        postures
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": item["status"]})),
            )
            .await
            .unwrap_or_else(|e| panic!("status of {name}: {e}"));
    }
    let kubeconfig = api.write_kubeconfig(None);
    let summarize_cluster = |kubeconfig: std::path::PathBuf| async move {
        let (ok, out, err) = tokio::task::spawn_blocking(move || {
            run(
                &["summary", "-o", "json"],
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            )
        })
        .await
        .unwrap();
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let from_cluster = summarize_cluster(kubeconfig.clone()).await;
    // The cluster's objects are the scan's (the checking age moved on between the runs).
    assert_eq!(
        from_cluster["checking"][0]["checkingSince"],
        from_json["checking"][0]["checkingSince"]
    );
    assert_eq!(strip(from_cluster), strip(from_json.clone()));

    // The same kubeconfig through a counting proxy: the ImagePostures are read in pages.
    let proxy = ApiProxy::start(&api.url()).await;
    let mut config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    config["clusters"][0]["cluster"]["server"] = json!(proxy.url);
    let proxied = dir.join("kubeconfig-proxied.yaml");
    std::fs::write(&proxied, serde_yaml::to_string(&config).unwrap()).unwrap();
    let again = summarize_cluster(proxied).await;
    assert_eq!(strip(again), strip(from_json));
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|q| is_list_of(&q.method, &q.path, "imagepostures")
                && q.path
                    .starts_with("/apis/imageposture.io/v1alpha1/imagepostures?")
                && q.path.contains("limit=500")),
        "{seen:#?}"
    );
    assert!(seen.iter().all(|q| !q.is_write()), "{seen:#?}");
}

#[test]
fn summary_without_a_cluster_or_with_a_bad_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("missing-kubeconfig");
    let (ok, _, err) = run(
        &["summary"],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("HOME", dir.path().to_str().unwrap()),
        ],
    );
    assert!(!ok);
    assert!(err.contains("--from"), "{err}");

    let pods = dir.path().join("pods.json");
    std::fs::write(
        &pods,
        r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p"}}]}"#,
    )
    .unwrap();
    let (ok, _, err) = run(&["summary", "--from", pods.to_str().unwrap()], &[]);
    assert!(!ok);
    assert!(
        err.contains("no ImagePosture") && err.contains("pods.json"),
        "{err}"
    );
}
