#![no_main]
//! Rekor entries: bodies, SETs, logged keys.
use std::sync::OnceLock;

use imageposture::fuzzing::Trust;
use libfuzzer_sys::fuzz_target;

static TRUST: OnceLock<Trust> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let trust = TRUST.get_or_init(Trust::empty);
    imageposture::fuzzing::rekor_entry(trust, data);
});
