//! The binary as the README shows it: `observe` and `scan` against the real registry, `crd`
//! against the checked-in CRD. Runs the compiled `imageposture` executable.

mod support;

use std::process::Command;

use imageposture::model::naming::ResourceName as _;
use support::pki::{Identity, GITHUB_ISSUER, WORKFLOW_URI};
use support::{unique_repo, TestEnv};

fn imageposture(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args(args)
        .args([
            "--trusted-root",
            env.trusted_root.to_str().unwrap(),
            "--insecure-registry",
            &env.registry.host,
        ])
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn observe_prints_table_and_json() {
    let env = TestEnv::new();
    let signed = env.keyless_image("cli-signed", &Identity::github()).await;
    let unsigned = env.oci.push_image(&unique_repo("cli-unsigned"), "v1").await;
    let signed_ref = signed.key();
    let unsigned_tag = format!("{}:v1", unsigned.id.repo_path());

    let (ok, table, err) =
        imageposture(&env, &["observe", &signed_ref, &unsigned_tag, "not a ref"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE") && lines[0].contains("POSTURE"),
        "{table}"
    );
    assert!(
        lines[1].contains("signed") && lines[1].contains(WORKFLOW_URI),
        "{table}"
    );
    assert!(
        lines[2].contains("not-signed"),
        "a tag is resolved to its digest: {table}"
    );
    assert!(
        lines[3].contains("checking") && lines[3].contains("InvalidReference"),
        "{table}"
    );

    let (ok, json, err) = imageposture(&env, &["observe", "-o", "json", &signed_ref]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    let row = &rows[0];
    assert_eq!(row["posture"], "signed");
    assert_eq!(row["signer"], WORKFLOW_URI);
    assert_eq!(row["issuer"], GITHUB_ISSUER);
    assert_eq!(row["signerType"], "keyless");
    assert_eq!(row["digest"], signed.digest.as_str());
}

#[tokio::test]
async fn bad_trusted_root_is_a_clear_setup_error() {
    let env = TestEnv::new();
    let bogus = env.dir.path().join("bogus.json");
    std::fs::write(&bogus, "{").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .args([
            "observe",
            "--trusted-root",
            bogus.to_str().unwrap(),
            "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trusted root") && err.contains("bogus.json"),
        "{err}"
    );
}

#[tokio::test]
async fn scan_prints_what_the_operator_would_write() {
    let env = TestEnv::new();
    let signed = env.keyless_image("cli-scan", &Identity::github()).await;
    let pods = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "a", "name": "p1"},
             "spec": {"containers": [{"name": "c", "image": format!("{}:v1", signed.repo_path())}]},
             "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": "", "imageID": signed.key(), "ready": true, "restartCount": 0}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "b", "name": "p2"},
             "spec": {"containers": [{"name": "c", "image": signed.key()}]}}
        ]
    });
    let file = env.dir.path().join("pods.json");
    std::fs::write(&file, pods.to_string()).unwrap();
    let (ok, out, err) = imageposture(&env, &["scan", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "two pods, one image: {out}");
    let cr = &items[0];
    assert_eq!(cr["kind"], "ImagePosture");
    assert_eq!(cr["metadata"]["name"], signed.resource_name().as_str());
    assert_eq!(cr["spec"]["image"], signed.key().as_str());
    assert_eq!(cr["status"]["posture"], "signed");
    assert_eq!(cr["status"]["signer"], WORKFLOW_URI);
    assert_eq!(cr["status"]["usage"]["pods"], 2);
    assert_eq!(
        cr["metadata"]["labels"]["imageposture.io/posture"],
        "signed"
    );
}

#[test]
fn crd_subcommand_prints_the_checked_in_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_imageposture"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success());
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/imageposture.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), file);
}
