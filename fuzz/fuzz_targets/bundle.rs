#![no_main]
//! A Sigstore bundle referrer, through the classifier.
use std::sync::OnceLock;

use imageposture::fuzzing::Trust;
use libfuzzer_sys::fuzz_target;

static TRUST: OnceLock<Trust> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let trust = TRUST.get_or_init(Trust::empty);
    let _ = imageposture::fuzzing::sigstore_bundle(trust, data);
});
