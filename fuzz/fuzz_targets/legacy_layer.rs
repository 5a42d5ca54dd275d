#![no_main]
//! A legacy `.sig` layer: payload and annotations, through the classifier.
use std::sync::OnceLock;

use imageposture::fuzzing::Trust;
use libfuzzer_sys::fuzz_target;

static TRUST: OnceLock<Trust> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let trust = TRUST.get_or_init(Trust::empty);
    let _ = imageposture::fuzzing::legacy_layer(trust, data);
});
