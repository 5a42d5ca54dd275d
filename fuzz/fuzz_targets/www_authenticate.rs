#![no_main]
//! `WWW-Authenticate` challenges from registries.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imageposture::fuzzing::www_authenticate(data);
});
