//! deflate through ISA-L's igzip (Intel's Intelligent Storage Acceleration Library, built from
//! source by the `isal-sys` crate), behind a safe face.
//!
//! Why igzip and not zlib-rs for the deflate of gzip diffs: the blocks of a parallel gzip diff
//! must end in a sync flush, so that they join into one deflate stream (docs/diff.md), which
//! libdeflate cannot do; of the libraries that can, igzip's level 1 measured 1.8x zlib-rs's level
//! 1 per core on the benchmark's rootfs layer, with 27% smaller output (docs/diff.md).

use isal_sys::igzip_lib as ffi;

use crate::error::{Error, Result};

/// igzip's fastest level that still looks for matches (level 0 only does static Huffman).
const LEVEL: u32 = 1;
/// The work buffer igzip's documentation suggests for level 1.
const LEVEL_BUFFER: usize = ffi::ISAL_DEF_LVL1_DEFAULT as usize;

/// Compresses blocks into raw deflate that ends in a sync flush: byte-aligned and not final, so
/// that blocks compressed apart join into one deflate stream. A block refers to nothing before
/// it, so any number of these may work on the blocks of one stream at once.
pub struct BlockDeflater {
    /// igzip's state (80 KiB, so boxed).
    stream: Box<ffi::isal_zstream>,
    /// The hash tables of level 1, which the stream points to during a call.
    level_buffer: Box<[u8]>,
}

// SAFETY: the raw pointers in `stream` point into `level_buffer` (owned alongside it) or are
// reset before every use; nothing is shared with another thread.
unsafe impl Send for BlockDeflater {}

impl Default for BlockDeflater {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockDeflater {
    /// A deflater, ready for its first block.
    #[must_use]
    pub fn new() -> Self {
        // SAFETY: `isal_zstream` is a plain C struct of integers, arrays and raw pointers, for
        // which all zeros is a valid value; `isal_deflate_init` sets it up before every block.
        let stream = Box::new(unsafe { std::mem::zeroed::<ffi::isal_zstream>() });
        Self {
            stream,
            level_buffer: vec![0u8; LEVEL_BUFFER].into_boxed_slice(),
        }
    }

    /// Replace `output` with `input` as raw deflate ending in a sync flush. `input` must be
    /// under 4 GiB (a diff's blocks are 1 MiB).
    pub fn deflate(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<()> {
        let avail_in = u32::try_from(input.len())
            .map_err(|_| Error::Internal("a deflate block of 4 GiB or more".into()))?;
        output.clear();
        // Incompressible input grows by a few bytes per stored block of 64 KiB.
        output.reserve(input.len() + input.len() / 64 + 1024);
        let stream = &mut *self.stream;
        // SAFETY: `isal_deflate_init` only writes the struct it is given.
        unsafe { ffi::isal_deflate_init(stream) };
        stream.level = LEVEL;
        stream.level_buf = self.level_buffer.as_mut_ptr();
        stream.level_buf_size = u32::try_from(self.level_buffer.len()).unwrap_or(u32::MAX);
        #[allow(clippy::cast_possible_truncation)] // the constant is 1
        {
            stream.flush = ffi::SYNC_FLUSH as u16;
        }
        stream.end_of_stream = 0;
        // igzip reads through `next_in` only; the pointer is `*mut` in its C declaration.
        stream.next_in = input.as_ptr().cast_mut();
        stream.avail_in = avail_in;
        loop {
            let used = output.len();
            if output.capacity() - used < 64 {
                output.reserve(64 << 10);
            }
            let room = output.capacity() - used;
            // SAFETY: `used <= capacity`, so the pointer stays inside (or one past) the buffer.
            stream.next_out = unsafe { output.as_mut_ptr().add(used) };
            stream.avail_out = u32::try_from(room).unwrap_or(u32::MAX);
            let given = stream.avail_out;
            // SAFETY: `next_in`/`avail_in` describe `input`, which outlives the call;
            // `next_out`/`avail_out` describe the unused capacity of `output`; `level_buf` is
            // `self.level_buffer`, of `level_buf_size` bytes. igzip writes nowhere else.
            let status = unsafe { ffi::isal_deflate(stream) };
            let written = (given - stream.avail_out) as usize;
            // SAFETY: igzip initialised the `written` bytes after `used`.
            unsafe { output.set_len(used + written) };
            if status != ffi::COMP_OK.cast_signed() {
                stream.next_in = std::ptr::null_mut();
                return Err(Error::Internal(format!("igzip deflate failed ({status})")));
            }
            // The flush is complete once all input is taken and the stream is back at the
            // start of a block (igzip's own test for a finished sync flush).
            if stream.avail_in == 0
                && stream.internal_state.state == ffi::isal_zstate_state_ZSTATE_NEW_HDR
            {
                break;
            }
        }
        stream.next_in = std::ptr::null_mut();
        stream.next_out = std::ptr::null_mut();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Bytes that compress somewhat, like text.
    fn text(length: usize, seed: u32) -> Vec<u8> {
        let words: [&[u8]; 6] = [
            b"layer ", b"store ", b"diff ", b"tar ", b"gzip\n", b"block ",
        ];
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mut out = Vec::with_capacity(length + 8);
        while out.len() < length {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.extend_from_slice(words[(state % 6) as usize]);
            if state.is_multiple_of(7) {
                out.push(state.to_le_bytes()[1]);
            }
        }
        out.truncate(length);
        out
    }

    /// Blocks deflated apart and joined, with an empty final block: raw deflate of them all.
    fn joined(deflater: &mut BlockDeflater, blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        let mut output = Vec::new();
        for block in blocks {
            deflater.deflate(block, &mut output).unwrap();
            stream.extend_from_slice(&output);
        }
        stream.extend_from_slice(&[0x03, 0x00]);
        stream
    }

    fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(raw)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn blocks_deflated_apart_join_into_one_stream() {
        let random: Vec<u8> = (0..300_000u32)
            .map(|n| n.wrapping_mul(2_654_435_761).to_le_bytes()[2])
            .collect();
        let blocks = vec![
            text(1 << 20, 1),
            Vec::new(),
            random,
            text(5, 2),
            vec![0u8; 700_000],
        ];
        let mut deflater = BlockDeflater::new();
        let stream = joined(&mut deflater, &blocks);
        assert_eq!(inflate(&stream), blocks.concat());
    }

    #[test]
    fn a_deflater_is_reused_and_compresses() {
        let mut deflater = BlockDeflater::new();
        let block = text(1 << 20, 3);
        let mut first = Vec::new();
        deflater.deflate(&block, &mut first).unwrap();
        let mut again = Vec::new();
        deflater.deflate(&block, &mut again).unwrap();
        assert_eq!(first, again, "each block starts afresh");
        assert!(first.len() < block.len() / 2, "{} bytes", first.len());
        // A sync flush ends with an empty stored block: 00 00 ff ff.
        assert!(first.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    }
}
