//! Replays every fuzz seed and every input a fuzz run ever crashed on (`fuzz/seeds/<target>`,
//! `fuzz/regressions/<target>`) through the same entry points the cargo-fuzz targets call
//! (`imageposture::fuzzing`), so a fixed crash stays fixed without cargo-fuzz installed.

use std::path::{Path, PathBuf};

use imageposture::fuzzing::{self, Trust};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            out.push((e.path(), bytes));
        }
    }
    out.sort();
    out
}

fn replay(target: &str, mut run: impl FnMut(&[u8]) -> Result<(), String>) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no seeds for {target}");
    for (path, bytes) in all {
        if let Err(e) = run(&bytes) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn image_ref() {
    replay("image_ref", |b| match std::str::from_utf8(b) {
        Ok(s) => fuzzing::image_ref(s),
        Err(_) => Ok(()),
    });
}

#[test]
fn image_id() {
    replay("image_id", fuzzing::image_id);
}

#[test]
fn legacy_layer() {
    let trust = Trust::empty();
    replay("legacy_layer", |b| {
        let _ = fuzzing::legacy_layer(&trust, b);
        Ok(())
    });
}

#[test]
fn bundle() {
    let trust = Trust::empty();
    replay("bundle", |b| {
        let _ = fuzzing::sigstore_bundle(&trust, b);
        Ok(())
    });
}

#[test]
fn oci_manifest() {
    replay("oci_manifest", |b| {
        fuzzing::oci_manifest(b);
        Ok(())
    });
}

#[test]
fn rekor_entry() {
    let trust = Trust::empty();
    replay("rekor_entry", |b| {
        fuzzing::rekor_entry(&trust, b);
        Ok(())
    });
}

#[test]
fn www_authenticate() {
    replay("www_authenticate", |b| {
        fuzzing::www_authenticate(b);
        Ok(())
    });
}

#[test]
fn certificate() {
    let trust = Trust::empty();
    replay("certificate", |b| {
        fuzzing::certificate(&trust, b);
        Ok(())
    });
}
