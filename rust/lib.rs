//! `layerstore._native`: the byte work of layerstore, called from `layerstore.engines.native`.
//!
//! This file is glue only: it extracts arguments while attached to the interpreter, runs the
//! job detached (other Python threads keep running), and maps errors onto `layerstore.errors`.
//! The work itself lives in the modules below, which know nothing of Python.

pub mod compress;
pub mod copy;
pub mod crc64;
pub mod digest;
pub mod error;
pub mod paths;
pub mod tarsplit;

#[pyo3::pymodule]
mod _native {
    use std::path::PathBuf;

    use pyo3::prelude::*;

    /// Copy the directory tree `source` to `destination` (which must not exist), preserving
    /// owners, modes, times, xattrs, hard links and special files.
    #[pyfunction]
    fn copy_tree(py: Python<'_>, source: PathBuf, destination: PathBuf) -> PyResult<()> {
        py.detach(|| crate::copy::copy_tree(&source, &destination))?;
        Ok(())
    }
}
