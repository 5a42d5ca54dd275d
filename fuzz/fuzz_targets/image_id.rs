#![no_main]
//! Pod imageIDs and image identities, through every naming function.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = imageposture::fuzzing::image_id(data) {
        panic!("{e}");
    }
});
