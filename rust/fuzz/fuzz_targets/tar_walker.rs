//! The tar walker on arbitrary bytes: it either refuses them with `InvalidLayerData`, or its
//! tar-split lines read back, and their segments with the file contents it handed out rebuild
//! the input exactly (what `diff` relies on), each file's CRC-64 matching its content.
//!
//! The first byte is a switch: when its low bit is set, every 512-byte block of the rest gets a
//! valid header checksum first. Mutations of a header would nearly always break its checksum
//! and stop the walk there; with the switch they reach the field parsers and what follows.
#![no_main]

use _native::crc64;
use _native::error::Error;
use _native::tarsplit::unpacker::Entry;
use _native::tarsplit::{decode, Packer, Walker};
use libfuzzer_sys::fuzz_target;

/// Offset and length of the checksum field in a header block.
const CHECKSUM: std::ops::Range<usize> = 148..156;

/// Give every non-zero 512-byte block a valid checksum (headers sit on block boundaries).
fn fix_checksums(data: &mut [u8]) {
    for block in data.chunks_exact_mut(512) {
        if block.iter().all(|&byte| byte == 0) {
            continue;
        }
        block[CHECKSUM].fill(b' ');
        let sum: u32 = block.iter().map(|&byte| u32::from(byte)).sum();
        block[CHECKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&switch, rest)) = data.split_first() else {
        return;
    };
    let mut owned = rest.to_vec();
    if switch & 1 == 1 {
        fix_checksums(&mut owned);
    }
    let input = &owned[..];
    let mut walker = Walker::new(input, Packer::new(Vec::new()));
    let mut contents: Vec<Vec<u8>> = Vec::new();
    let walked = (|| {
        while walker.next_entry()?.is_some() {
            let mut content = Vec::new();
            walker.read_content(&mut |chunk| {
                content.extend_from_slice(chunk);
                Ok(())
            })?;
            contents.push(content);
        }
        walker.finish().map(Packer::into_inner)
    })();
    let lines = match walked {
        Ok(lines) => lines,
        Err(Error::InvalidLayerData(_)) => return,
        Err(other) => panic!("the walker failed with something else than bad data: {other}"),
    };
    let entries = decode(&lines).expect("the walker's own lines read back");
    let mut rebuilt = Vec::with_capacity(input.len());
    let mut files = contents.iter();
    for entry in entries {
        match entry {
            Entry::Segment(payload) => rebuilt.extend_from_slice(&payload),
            Entry::File { crc, .. } => {
                let content = files.next().expect("one file entry per entry walked");
                if let Some(crc) = crc {
                    assert_eq!(crc, crc64::checksum(content).to_be_bytes());
                } else {
                    assert!(content.is_empty(), "content without a CRC");
                }
                rebuilt.extend_from_slice(content);
            }
        }
    }
    assert!(
        files.next().is_none(),
        "an entry walked without its file line"
    );
    assert!(
        rebuilt == input,
        "segments and contents do not rebuild the input"
    );
});
