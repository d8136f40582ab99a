//! `ApplyResult`: what `apply_layer` found, as named read-only attributes.

use pyo3::prelude::*;

use crate::apply::Applied;

/// What applying a layer blob found (docs/apply.md, section 6): digests and sizes of the blob
/// as given and uncompressed, its compression (0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd), the
/// owners and groups seen (sorted) and the bytes of the files the layer adds.
#[pyclass(module = "layerstore._native", frozen, get_all)]
pub struct ApplyResult {
    /// `"sha256:<hex>"` of the blob as given.
    pub compressed_digest: String,
    /// Bytes of the blob as given.
    pub compressed_size: u64,
    /// `"sha256:<hex>"` of the decompressed tar (the layer's diff ID).
    pub uncompressed_digest: String,
    /// Bytes of the decompressed tar.
    pub uncompressed_size: u64,
    /// The blob's compression, by number.
    pub compression: u8,
    /// Owners seen, sorted.
    pub uids: Vec<u32>,
    /// Groups seen, sorted.
    pub gids: Vec<u32>,
    /// Bytes of the files the layer adds.
    pub size: u64,
}

impl From<Applied> for ApplyResult {
    fn from(applied: Applied) -> Self {
        Self {
            compressed_digest: applied.compressed_digest,
            compressed_size: applied.compressed_size,
            uncompressed_digest: applied.uncompressed_digest,
            uncompressed_size: applied.uncompressed_size,
            compression: applied.compression as u8,
            uids: applied.uids,
            gids: applied.gids,
            size: applied.size,
        }
    }
}
