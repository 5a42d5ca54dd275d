#![no_main]
//! Referrers indexes and manifests, deserialized and filtered as discovery does.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imageposture::fuzzing::oci_manifest(data);
});
