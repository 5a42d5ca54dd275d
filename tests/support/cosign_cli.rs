//! The real `cosign` CLI (Debian package `cosign`, 3.x) as a signer against the test registry.
//!
//! Offline by construction: every command runs with a cleared environment, a fresh `HOME` and
//! `TUF_ROOT` in a temp dir, and `HTTP(S)_PROXY` pointing at a port where nothing listens
//! (`NO_PROXY` lets 127.0.0.1 through), so an attempt to reach TUF, Rekor or Fulcio fails fast
//! instead of touching the internet. Signing uses `--tlog-upload=false --use-signing-config=false`,
//! verification `--insecure-ignore-tlog`; the registry is spoken to over `--allow-http-registry`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "imageposture-test";
/// Where nothing listens: any outbound request through the proxy is refused at once.
const DEAD_PROXY: &str = "http://127.0.0.1:9";

pub struct Cosign {
    binary: PathBuf,
    /// `HOME`, `TUF_ROOT` and the key files; removed when the test ends.
    pub dir: tempfile::TempDir,
}

/// A key pair made by `cosign generate-key-pair`.
pub struct KeyPair {
    pub key: PathBuf,
    pub public: PathBuf,
}

/// What a cosign command did.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cosign {
    /// The installed cosign, or `None` (with a note) when it is missing locally. With `CI=true`
    /// a missing cosign fails the test: CI must run these cases.
    pub fn find() -> Option<Cosign> {
        let binary = ["/usr/bin/cosign", "/usr/local/bin/cosign"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let Some(binary) = binary else {
            let why = "cosign not found: these tests sign with the real cosign CLI 3.x; install \
                       the Debian package `cosign` (it is in sid: `bash .ci/install-cosign`)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tuf")).unwrap();
        Some(Cosign { binary, dir })
    }

    /// Runs `cosign ARGS` offline (see the module doc), with a two-minute deadline.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let home = self.dir.path();
        let mut child = Command::new(&self.binary)
            .args(args)
            .current_dir(home)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home)
            .env("TUF_ROOT", home.join("tuf"))
            .env("DOCKER_CONFIG", home.join("docker"))
            .env("COSIGN_PASSWORD", PASSWORD)
            .env("HTTPS_PROXY", DEAD_PROXY)
            .env("HTTP_PROXY", DEAD_PROXY)
            .env("https_proxy", DEAD_PROXY)
            .env("http_proxy", DEAD_PROXY)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cosign runs");
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().expect("wait for cosign").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("cosign {args:?} ran past two minutes (did it try the network?)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("cosign output");
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `cosign generate-key-pair` with the key files named `NAME.key` / `NAME.pub`.
    pub fn generate_key_pair(&self, name: &str) -> KeyPair {
        let out = self.run(&["generate-key-pair", "--output-key-prefix", name]);
        assert!(out.ok, "generate-key-pair: {out:?}");
        let key = self.dir.path().join(format!("{name}.key"));
        let public = self.dir.path().join(format!("{name}.pub"));
        assert!(key.exists() && public.exists(), "{out:?}");
        KeyPair { key, public }
    }

    /// `cosign sign --key` in the new bundle format (a referrer) or the legacy `.sig` format.
    pub fn sign(&self, key: &KeyPair, image: &str, new_bundle_format: bool) {
        let format = format!("--new-bundle-format={new_bundle_format}");
        let out = self.run(&[
            "sign",
            "--key",
            path(&key.key),
            &format,
            "--tlog-upload=false",
            "--use-signing-config=false",
            "--allow-http-registry",
            "--yes",
            image,
        ]);
        assert!(out.ok, "cosign sign {image}: {out:?}");
    }

    /// `cosign attest --key` with a small SLSA provenance predicate.
    pub fn attest(&self, key: &KeyPair, image: &str, new_bundle_format: bool) {
        let predicate = self.dir.path().join("predicate.json");
        std::fs::write(
            &predicate,
            br#"{"buildDefinition":{"buildType":"https://example.com/test"},"runDetails":{}}"#,
        )
        .unwrap();
        let format = format!("--new-bundle-format={new_bundle_format}");
        let out = self.run(&[
            "attest",
            "--key",
            path(&key.key),
            &format,
            "--type",
            "slsaprovenance1",
            "--predicate",
            path(&predicate),
            "--tlog-upload=false",
            "--use-signing-config=false",
            "--allow-http-registry",
            "--yes",
            image,
        ]);
        assert!(out.ok, "cosign attest {image}: {out:?}");
    }

    /// `cosign verify --key` (no log, offline): cosign's verdict on `image`.
    pub fn verify(&self, public: &Path, image: &str) -> Outcome {
        self.verify_with(public, image, "--new-bundle-format=true")
    }

    /// `cosign verify --key --new-bundle-format=false`: the legacy `.sig` tag only. (cosign 3.1's
    /// default looks no further than the bundles when an image has any.)
    pub fn verify_legacy(&self, public: &Path, image: &str) -> Outcome {
        self.verify_with(public, image, "--new-bundle-format=false")
    }

    fn verify_with(&self, public: &Path, image: &str, format: &str) -> Outcome {
        self.run(&[
            "verify",
            "--key",
            path(public),
            format,
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            image,
        ])
    }

    /// `cosign verify-attestation --key --type slsaprovenance1` (no log, offline).
    pub fn verify_attestation(&self, public: &Path, image: &str) -> Outcome {
        self.run(&[
            "verify-attestation",
            "--key",
            path(public),
            "--type",
            "slsaprovenance1",
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            image,
        ])
    }
}

impl Outcome {
    /// The in-toto/simple-signing `critical.type` of every payload `cosign verify` accepted.
    pub fn verified_types(&self) -> Vec<String> {
        let Ok(serde_json::Value::Array(items)) = serde_json::from_str(self.stdout.trim()) else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|i| i["critical"]["type"].as_str().map(str::to_string))
            .collect()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
