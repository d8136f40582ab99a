//! tar-split: the metadata that lets a layer's tar be rebuilt byte for byte from its files.
//!
//! [`walker`] reads a tar stream at the 512-byte-block level exactly as tar-split's fork of Go's
//! `archive/tar` does with `RawAccounting` on, and records what it reads through [`packer`] as
//! JSON lines. [`unpacker`] reads those lines back, and [`assemble`] rebuilds the tar from them
//! and the layer's files (Go's `asm.NewOutputTarStream`).

pub mod assemble;
pub mod header;
pub mod packer;
pub mod unpacker;
pub mod walker;

pub use assemble::Assembler;
pub use header::{Header, Time};
pub use packer::Packer;
pub use unpacker::Unpacker;
pub use walker::Walker;

use crate::error::Result;

/// The tar-split of the tar archive `tar`: its JSON lines, uncompressed, exactly as an apply
/// records them (what `layerstore._native.tar_split_encode` returns; also a fuzz target).
pub fn encode(tar: &[u8]) -> Result<Vec<u8>> {
    Walker::new(tar, Packer::new(Vec::new()))
        .finish()
        .map(Packer::into_inner)
}

/// The entries of uncompressed tar-split JSON lines, in order, checked as reassembly reads them
/// (what `layerstore._native.tar_split_decode` returns; also a fuzz target).
pub fn decode(lines: &[u8]) -> Result<Vec<unpacker::Entry>> {
    let mut unpacker = Unpacker::new(lines, "<bytes>");
    let mut entries = Vec::new();
    while let Some(entry) = unpacker.next_entry()? {
        entries.push(entry);
    }
    Ok(entries)
}
