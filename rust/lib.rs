//! `layerstore._native`: the byte work of layerstore, called from `layerstore.engines.native`.
//!
//! This file is glue only: it extracts arguments while attached to the interpreter, runs the
//! job detached (other Python threads keep running, a panic becomes an internal error), and
//! maps errors onto `layerstore.errors`. `layerstore.engines` has checked the arguments; the
//! work itself lives in the modules below, which know nothing of Python, and the Python types
//! live in `py/`, one file each.

pub mod apply;
pub mod compress;
pub mod confine;
pub mod copy;
pub mod crc64;
pub mod diff;
pub mod digest;
pub mod error;
pub mod extract;
pub mod isal;
pub mod mount;
pub mod overrides;
pub mod paths;
pub mod py;
pub mod sys;
pub mod tarsplit;
pub mod tree_tar;

#[pyo3::pymodule]
mod _native {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, PoisonError};

    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::pybacked::PyBackedBytes;
    use pyo3::types::PyBytes;

    use crate::apply::{Options, Source};
    use crate::diff::{DiffCompression, DiffStream};
    use crate::error::{Error, Result};
    use crate::extract::WhiteoutFormat;
    use crate::py::blob_source::{blob_source, BlobSource};
    use crate::tarsplit::packer::{FILE_TYPE, SEGMENT_TYPE};
    use crate::tarsplit::unpacker::Entry;
    use crate::tree_tar::{TreeEntry, TreeTar};

    #[pymodule_export]
    use crate::py::apply_result::ApplyResult;
    #[pymodule_export]
    use crate::py::diff_reader::DiffReader;

    /// Run `job` detached from the interpreter; a panic in it is an internal error, never a
    /// crash of the interpreter.
    fn detached<T: Send>(
        py: Python<'_>,
        what: &str,
        job: impl FnOnce() -> Result<T> + Send,
    ) -> Result<T> {
        py.detach(|| {
            catch_unwind(AssertUnwindSafe(job))
                .unwrap_or_else(|_| Err(Error::Internal(format!("{what} panicked"))))
        })
    }

    /// Apply a layer blob (`ApplyDiff`, docs/apply.md): detect and undo its compression, compute
    /// both digests, write tar-split to `tar_split_temporary_path`, renamed to `tar_split_path`
    /// when whole, and extract into `destination`.
    #[pyfunction]
    #[pyo3(signature = (
        source,
        destination,
        tar_split_path,
        tar_split_temporary_path,
        whiteout_format,
        trusted_compressed_digest,
        trusted_uncompressed_digest,
        force_mask = None,
        ignore_chown_errors = false,
    ))]
    #[allow(clippy::too_many_arguments)] // the engine interface's arguments, as they come
    fn apply_layer(
        py: Python<'_>,
        source: Bound<'_, PyAny>,
        destination: PathBuf,
        tar_split_path: PathBuf,
        tar_split_temporary_path: PathBuf,
        whiteout_format: &str,
        trusted_compressed_digest: Option<String>,
        trusted_uncompressed_digest: Option<String>,
        force_mask: Option<u32>,
        ignore_chown_errors: bool,
    ) -> PyResult<ApplyResult> {
        let whiteout_format = match whiteout_format {
            "overlay" => WhiteoutFormat::Overlay,
            "vfs" => WhiteoutFormat::Vfs,
            other => {
                return Err(PyValueError::new_err(format!(
                    "no whiteout format {other:?}"
                )));
            }
        };
        let raised = Arc::new(Mutex::new(None));
        let source = blob_source(&source, &raised)?;
        let options = Options {
            destination,
            tar_split_path,
            tar_split_temporary_path,
            whiteout_format,
            trusted_compressed_digest,
            trusted_uncompressed_digest,
            ownership: crate::extract::Ownership {
                force_mask,
                ignore_chown_errors,
            },
        };
        let result = detached(py, "apply_layer", || {
            let source = match source {
                BlobSource::Path(path) => Source::open(&path)?,
                BlobSource::Reader(source) => source,
            };
            crate::apply::apply_layer(source, &options)
        });
        match result {
            Ok(applied) => Ok(applied.into()),
            Err(error) => {
                // The exception raised by the source's own read() wins over our report of it.
                let raised = raised.lock().unwrap_or_else(PoisonError::into_inner).take();
                Err(raised.unwrap_or_else(|| error.into()))
            }
        }
    }

    /// Mount an overlay of `lowers` (topmost first) on `target`; writable when `upper` and
    /// `work` are given. Raises `layerstore.errors.MountError` with the errno and mount data.
    #[pyfunction]
    #[pyo3(signature = (lowers, upper, work, target, options))]
    fn mount_overlay(
        py: Python<'_>,
        lowers: Vec<String>,
        upper: Option<String>,
        work: Option<String>,
        target: String,
        options: Vec<String>,
    ) -> PyResult<()> {
        let overlay = crate::mount::Overlay {
            lowers: &lowers,
            upper: upper.as_deref(),
            work: work.as_deref(),
            options: &options,
        };
        Ok(detached(py, "mount_overlay", || {
            crate::mount::mount_overlay(&overlay, &target)
        })?)
    }

    /// Unmount `target`; `detach` leaves the last users to finish (`MNT_DETACH`).
    #[pyfunction]
    fn unmount(py: Python<'_>, target: String, detach: bool) -> PyResult<()> {
        Ok(detached(py, "unmount", || {
            crate::mount::unmount(&target, detach)
        })?)
    }

    /// Make the mount at `path` private, bind-mounting it onto itself first when `bind`;
    /// raises `layerstore.errors.MountError`.
    #[pyfunction]
    fn make_private_mount(py: Python<'_>, path: String, bind: bool) -> PyResult<()> {
        Ok(detached(py, "make_private_mount", || {
            crate::mount::make_private_mount(&path, bind)
        })?)
    }

    /// Copy the directory tree `source` to `destination` (which must not exist), preserving
    /// owners, modes, times, xattrs, hard links and special files.
    #[pyfunction]
    fn copy_tree(py: Python<'_>, source: PathBuf, destination: PathBuf) -> PyResult<()> {
        Ok(detached(py, "copy_tree", || {
            crate::copy::copy_tree(&source, &destination)
        })?)
    }

    // The four functions below expose single stages of apply and diff, for the micro
    // benchmarks (benches/bench_kernels.py) and the parity tests of the engines' pieces.

    /// CRC-64/GO-ISO of `data`, as tar-split records it for each file.
    #[pyfunction]
    #[pyo3(signature = (data, /))]
    fn crc64(py: Python<'_>, data: PyBackedBytes) -> u64 {
        py.detach(|| crate::crc64::checksum(&data))
    }

    /// `"sha256:<hex>"` of `data`.
    #[pyfunction]
    #[pyo3(signature = (data, /))]
    fn sha256_digest(py: Python<'_>, data: PyBackedBytes) -> String {
        py.detach(|| {
            let mut digester = crate::digest::Digester::new(None);
            digester.update(&data);
            digester.finish().0
        })
    }

    /// The tar-split of the tar archive `tar`: its JSON lines, uncompressed, exactly as an apply
    /// records them.
    #[pyfunction]
    #[pyo3(signature = (tar, /))]
    fn tar_split_encode(py: Python<'_>, tar: PyBackedBytes) -> PyResult<Bound<'_, PyBytes>> {
        let lines = py.detach(|| crate::tarsplit::encode(&tar))?;
        Ok(PyBytes::new(py, &lines))
    }

    /// One decoded tar-split entry: (type, name, size, payload); type 1 is a file (payload: its
    /// CRC-64, or None), type 2 a segment (name empty, size 0, payload: its bytes).
    type Decoded = (u8, Vec<u8>, i64, Option<Vec<u8>>);

    /// The entries of tar-split JSON lines (uncompressed), in order.
    #[pyfunction]
    #[pyo3(signature = (tar_split, /))]
    fn tar_split_decode(py: Python<'_>, tar_split: PyBackedBytes) -> PyResult<Vec<Decoded>> {
        let entries = py.detach(|| crate::tarsplit::decode(&tar_split))?;
        Ok(entries
            .into_iter()
            .map(|entry| match entry {
                Entry::Segment(payload) => (SEGMENT_TYPE, Vec::new(), 0, Some(payload)),
                Entry::File { name, size, crc } => (FILE_TYPE, name, size, crc),
            })
            .collect())
    }

    /// Start the diff of a layer against its parent from its tar-split (docs/diff.md): the
    /// layer's tar rebuilt from `tar_split_path` and the files in `layer_dir`, each file's size
    /// and CRC-64 checked as it is read, compressed with `compression` (0 none, 2 gzip, 4 zstd).
    #[pyfunction]
    fn open_diff(
        py: Python<'_>,
        tar_split_path: PathBuf,
        layer_dir: PathBuf,
        compression: i64,
    ) -> PyResult<DiffReader> {
        let compression = DiffCompression::from_code(compression)?;
        let stream = detached(py, "open_diff", || {
            DiffStream::open(&tar_split_path, &layer_dir, compression)
        })?;
        Ok(DiffReader::new(stream))
    }

    /// `Diff` of a layer without tar-split: the tar of `entries`, each a `(name, source)` pair
    /// in the order written (`source` where its metadata and bytes are read, `None` for an
    /// empty whiteout file), compressed with `compression` (0 none, 2 gzip, 4 zstd).
    #[pyfunction]
    #[pyo3(signature = (entries, compression, override_stat = false, original_modes = Vec::new()))]
    fn open_tree_diff(
        py: Python<'_>,
        entries: Vec<(PyBackedBytes, Option<PyBackedBytes>)>,
        compression: i64,
        override_stat: bool,
        original_modes: Vec<(u64, u64, u32)>,
    ) -> PyResult<DiffReader> {
        let compression = DiffCompression::from_code(compression)?;
        let entries = entries
            .into_iter()
            .map(|(name, source)| TreeEntry {
                name: name.to_vec(),
                source: source.map(|path| PathBuf::from(OsString::from_vec(path.to_vec()))),
            })
            .collect();
        let stream = detached(py, "open_tree_diff", || {
            DiffStream::of_tree(
                TreeTar::new(entries)
                    .with_override_stat(override_stat)
                    .with_original_modes(
                        original_modes
                            .into_iter()
                            .map(|(device, inode, mode)| ((device, inode), mode))
                            .collect(),
                    ),
                compression,
            )
        })?;
        Ok(DiffReader::new(stream))
    }
}
