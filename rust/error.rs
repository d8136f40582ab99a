//! The crate's one error type, and its mapping onto `layerstore.errors`.
//!
//! Byte-work modules return [`Error`]; the bindings turn it into the Python exception class that
//! the pure engine raises for the same failure, so callers never learn which engine ran.

use std::io;
use std::path::{Path, PathBuf};

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::PyErr;

pyo3::import_exception!(layerstore.errors, InvalidLayerData);
pyo3::import_exception!(layerstore.errors, NotSupported);
pyo3::import_exception!(layerstore.errors, MountError);

/// Everything that can go wrong in the native engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The failure as the OS reported it.
        source: io::Error,
        /// The file it concerned.
        path: PathBuf,
    },
    /// The input is not a well-formed layer (bad tar, bad compression, bad tar-split).
    #[error("{0}")]
    InvalidLayerData(String),
    /// The system or the file system cannot do what was asked.
    #[error("{0}")]
    NotSupported(String),
    /// The kernel refused a mount or an unmount.
    #[error("{message}")]
    Mount {
        /// The OS error number.
        errno: i32,
        /// What failed, with the kernel's own explanation when it gave one.
        message: String,
        /// The mount point.
        target: String,
        /// The mount data tried, as a classic `mount(2)` data string (empty for an unmount).
        data: String,
    },
    /// A bug of ours (a worker thread that died, a broken invariant), never a bad input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The same error again, for a stream that fails every read after its first failure.
    #[must_use]
    pub fn replay(&self) -> Error {
        match self {
            Error::Io { source, path } => Error::Io {
                source: match source.raw_os_error() {
                    Some(errno) => io::Error::from_raw_os_error(errno),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
                path: path.clone(),
            },
            Error::InvalidLayerData(message) => Error::InvalidLayerData(message.clone()),
            Error::NotSupported(message) => Error::NotSupported(message.clone()),
            Error::Mount {
                errno,
                message,
                target,
                data,
            } => Error::Mount {
                errno: *errno,
                message: message.clone(),
                target: target.clone(),
                data: data.clone(),
            },
            Error::Internal(message) => Error::Internal(message.clone()),
        }
    }
}

/// Shorthand for results of the native engine.
pub type Result<T> = std::result::Result<T, Error>;

/// Attach a path to an `io::Error`, so the message names the file concerned.
pub trait IoContext<T> {
    /// Map the error to [`Error::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            source,
            path: path.to_path_buf(),
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|errno| Error::Io {
            source: io::Error::from(errno),
            path: path.to_path_buf(),
        })
    }
}

/// The text `os.strerror()` gives for an errno, without Rust's " (os error N)" suffix.
pub(crate) fn strerror(source: &io::Error) -> String {
    let text = source.to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        match error {
            Error::Io { source, path } => match source.raw_os_error() {
                // OSError(errno, strerror, filename) picks the subclass (FileNotFoundError...)
                // exactly as an error from Python's own os module would.
                Some(errno) => PyOSError::new_err((
                    errno,
                    strerror(&source),
                    path.to_string_lossy().into_owned(),
                )),
                None => PyOSError::new_err(format!("{}: {source}", path.display())),
            },
            Error::InvalidLayerData(message) => InvalidLayerData::new_err(message),
            Error::NotSupported(message) => NotSupported::new_err(message),
            Error::Mount {
                errno,
                message,
                target,
                data,
            } => MountError::new_err((errno, message, target, data)),
            Error::Internal(message) => {
                PyRuntimeError::new_err(format!("internal error: {message}"))
            }
        }
    }
}
