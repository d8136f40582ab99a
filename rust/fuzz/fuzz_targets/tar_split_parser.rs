//! The tar-split reader on arbitrary bytes: it either refuses them with `InvalidLayerData`, or
//! the entries it read, written again by the packer, read back the same.
#![no_main]

use _native::error::Error;
use _native::tarsplit::unpacker::Entry;
use _native::tarsplit::{decode, Packer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let entries = match decode(input) {
        Ok(entries) => entries,
        Err(Error::InvalidLayerData(_)) => return,
        Err(other) => panic!("the reader failed with something else than bad data: {other}"),
    };
    let mut packer = Packer::new(Vec::new());
    for entry in &entries {
        match entry {
            Entry::Segment(payload) => packer.add_segment(payload),
            Entry::File { name, size, crc } => {
                // The packer writes CRCs of eight bytes only; anything else cannot round-trip.
                let crc = match crc.as_deref().map(<[u8; 8]>::try_from) {
                    None => None,
                    Some(Ok(crc)) => Some(crc),
                    Some(Err(_)) => return,
                };
                packer.add_file(name, *size, crc)
            }
        }
        .expect("writing to memory cannot fail");
    }
    let again = decode(&packer.into_inner()).expect("the packer's lines read back");
    assert_eq!(again, entries);
});
