#![no_main]
//! Image references as pods and users write them: parse, print, re-parse, name.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Err(e) = imageposture::fuzzing::image_ref(s) {
            panic!("{e}");
        }
    }
});
