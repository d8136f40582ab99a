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
