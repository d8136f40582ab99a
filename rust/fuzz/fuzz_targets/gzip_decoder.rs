//! igzip's gzip decoder ([`_native::isal::GzipDecoder`], C code on hostile bytes) against
//! flate2's `MultiGzDecoder` (zlib-rs, the decoder it replaced): the first input byte sets how
//! many bytes each read of the input hands out (so headers and blocks arrive split), the rest is
//! the blob. Both must accept the same blobs with the same output, and refuse the same ones.
#![no_main]

use std::io::{BufReader, Read};

use _native::isal::GzipDecoder;
use libfuzzer_sys::fuzz_target;

/// Everything `reader` gives, or where it failed (with what it gave before).
fn drain(mut reader: impl Read) -> Result<Vec<u8>, Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer = [0u8; 700];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(out),
            Ok(count) => out.extend_from_slice(&buffer[..count]),
            Err(_) => return Err(out),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&switch, blob)) = input.split_first() else {
        return;
    };
    let step = usize::from(switch) + 1;
    let ours = drain(GzipDecoder::new(BufReader::with_capacity(step, blob)));
    let reference = drain(flate2::bufread::MultiGzDecoder::new(BufReader::new(blob)));
    match (&ours, &reference) {
        (Ok(ours), Ok(reference)) => assert!(ours == reference, "different output"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "igzip {} what zlib-rs {}",
            if ours.is_ok() { "accepts" } else { "refuses" },
            if reference.is_ok() { "accepts" } else { "refuses" },
        ),
    }
});
