//! The Python types of `layerstore._native`, one file each (python-zstandard's layout); the
//! module's functions are in `lib.rs`.

pub mod apply_result;
pub mod blob_source;
pub mod diff_reader;
