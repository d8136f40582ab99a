//! Finding a name inside a layer's directory without ever leaving it (docs/apply.md section 4).
//!
//! A tar name is cleaned like Go's `path.Clean`, a leading `/` is dropped and `..` escapes are
//! refused ([`confine`]). Directories are then resolved component by component from a descriptor
//! of the layer's root with `openat(O_PATH | O_NOFOLLOW)` ([`Root::walk`]). A symlink met on the
//! way is read and resolved as if the layer's directory were `/` (absolute targets start again at
//! the layer root, `..` stops there, at most 40 symlinks per lookup), so no lookup ever leaves the
//! layer. Extraction ([`crate::extract`]) and reassembly ([`crate::tarsplit::assemble`]) share
//! these rules; the final name is always opened relative to its parent without following it.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{open, openat, readlinkat, OFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::error::{Error, IoContext, Result};
use crate::paths::{clean, shown};

/// Longest cleaned name or link name we accept (Linux's `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Symlinks followed in one lookup before giving up (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// A cleaned, confined name: relative to the layer, never `..`; `.` for the root.
///
/// `what` names the kind of name in messages ("path", "hard link target").
pub fn confine(name: &[u8], what: &str) -> Result<Vec<u8>> {
    let cleaned = clean(name);
    let relative = match cleaned.iter().position(|&byte| byte != b'/') {
        Some(start) => cleaned[start..].to_vec(),
        None if cleaned.first() == Some(&b'/') => b".".to_vec(),
        None => cleaned,
    };
    if relative == b".." || relative.starts_with(b"../") {
        return Err(Error::InvalidLayerData(format!(
            "{what} {} escapes the layer",
            shown(name)
        )));
    }
    if relative.len() > MAX_PATH {
        return Err(Error::InvalidLayerData(format!(
            "{what} {}... is longer than {MAX_PATH} bytes",
            shown(&name[..100.min(name.len())])
        )));
    }
    Ok(relative)
}

/// `(parent, base)` of a cleaned relative path other than `.`; the parent is empty at the root.
#[must_use]
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&byte| byte == b'/') {
        Some(slash) => (&path[..slash], &path[slash + 1..]),
        None => (&[], path),
    }
}

/// A name for a system call; a NUL inside it is `EINVAL`, as the kernel would say.
pub fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`, retried on `EINTR`.
pub fn open_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    // The bits go to the kernel exactly as given (`from_bits_retain`), known to nix or not.
    let flags = OFlag::from_bits_retain(flags | libc::O_CLOEXEC);
    let mode = Mode::from_bits_retain(mode);
    loop {
        match openat(dir, name, flags, mode) {
            Err(Errno::EINTR) => {}
            done => return done.map_err(io::Error::from),
        }
    }
}

/// The target of the symlink `name` in `dir`.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(readlinkat(dir, name)?.into_vec())
}

/// A layer's directory, open, with the last parent directory resolved in it.
pub struct Root {
    fd: Arc<OwnedFd>,
    path: PathBuf,
    /// The last parent directory resolved: its cleaned path and a descriptor.
    cache: Option<(Vec<u8>, Arc<OwnedFd>)>,
}

impl Root {
    /// Open the existing directory `path` (`O_PATH`: nothing is read through it).
    pub fn open(path: &Path) -> Result<Self> {
        let name = c_string(path.as_os_str().as_bytes()).at(path)?;
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = open(name.as_c_str(), flags, Mode::empty()).at(path)?;
        Ok(Self {
            fd: Arc::new(fd),
            path: path.to_path_buf(),
            cache: None,
        })
    }

    /// The descriptor of the layer's directory itself.
    #[must_use]
    pub fn fd(&self) -> &Arc<OwnedFd> {
        &self.fd
    }

    /// The path of a cleaned relative name, for messages.
    #[must_use]
    pub fn path_of(&self, relative: &[u8]) -> PathBuf {
        if relative == b"." || relative.is_empty() {
            self.path.clone()
        } else {
            self.path.join(OsStr::from_bytes(relative))
        }
    }

    /// Resolve the directory at the cleaned relative `path` inside the layer, creating missing
    /// directories (mode 0755 less the umask) when `create` is set. Symlinks on the way are
    /// resolved inside the layer; a loop is `ELOOP`, a file on the way `ENOTDIR`.
    pub fn walk(&self, path: &[u8], create: bool) -> io::Result<Arc<OwnedFd>> {
        let mut stack: Vec<OwnedFd> = Vec::new();
        // Components still to visit, last one first.
        let mut pending: Vec<Vec<u8>> = path
            .split(|&byte| byte == b'/')
            .rev()
            .map(<[u8]>::to_vec)
            .collect();
        let mut links = 0;
        while let Some(component) = pending.pop() {
            match component.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let name = c_string(&component)?;
            let current = stack.last().map_or(self.fd.as_fd(), AsFd::as_fd);
            match open_at(
                current,
                &name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
                Ok(fd) => stack.push(fd),
                Err(error) => match error.raw_os_error() {
                    Some(libc::ENOTDIR | libc::ELOOP) => {
                        // Not a symlink either: a file where a directory should be.
                        let Ok(target) = read_link_at(current, &name) else {
                            return Err(error);
                        };
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(io::Error::from_raw_os_error(libc::ELOOP));
                        }
                        if target.first() == Some(&b'/') {
                            stack.clear();
                        }
                        pending
                            .extend(target.split(|&byte| byte == b'/').rev().map(<[u8]>::to_vec));
                    }
                    Some(libc::ENOENT) if create => {
                        match mkdirat(current, name.as_c_str(), Mode::from_bits_retain(0o755)) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(errno) => return Err(errno.into()),
                        }
                        pending.push(component);
                    }
                    _ => return Err(error),
                },
            }
        }
        Ok(stack.pop().map_or_else(|| Arc::clone(&self.fd), Arc::new))
    }

    /// The descriptor of the parent directory `parent` (cleaned, relative; empty for the root),
    /// from the cache when it is the one asked for last.
    pub fn parent(&mut self, parent: &[u8], create: bool) -> io::Result<Arc<OwnedFd>> {
        if parent.is_empty() {
            return Ok(Arc::clone(&self.fd));
        }
        if let Some((path, fd)) = &self.cache {
            if path.as_slice() == parent {
                return Ok(Arc::clone(fd));
            }
        }
        let fd = self.walk(parent, create)?;
        self.cache = Some((parent.to_vec(), Arc::clone(&fd)));
        Ok(fd)
    }

    /// Something was removed or replaced: the cached parent may no longer be on its path.
    pub fn invalidate(&mut self) {
        self.cache = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn confine_cleans_and_refuses_escapes() {
        assert_eq!(confine(b"/a/../b/", "path").unwrap(), b"b");
        assert_eq!(confine(b"/", "path").unwrap(), b".");
        assert_eq!(confine(b"", "path").unwrap(), b".");
        assert_eq!(confine(b"/../../etc", "path").unwrap(), b"etc");
        assert!(confine(b"..", "path").is_err());
        assert!(confine(b"a/../../b", "path").is_err());
        assert!(confine(&vec![b'a'; MAX_PATH + 1], "path").is_err());
    }

    #[test]
    fn split_parent_of_names() {
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
    }

    #[test]
    fn walk_stays_inside_and_caches_the_last_parent() {
        let scratch = tempfile::tempdir().unwrap();
        let layer = scratch.path().join("layer");
        fs::create_dir_all(layer.join("real/inner")).unwrap();
        fs::create_dir(scratch.path().join("outside")).unwrap();
        symlink("/real", layer.join("absolute")).unwrap();
        symlink("../../outside", layer.join("up")).unwrap();
        symlink("loop", layer.join("loop")).unwrap();
        fs::write(layer.join("file"), b"").unwrap();
        let mut root = Root::open(&layer).unwrap();
        assert!(root.walk(b"absolute/inner", false).is_ok());
        // `../../outside` from the layer root stops at the root: `outside` inside the layer.
        let error = root.walk(b"up", false).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
        let error = root.walk(b"loop/x", false).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
        let error = root.walk(b"file/x", false).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENOTDIR));
        let first = root.parent(b"real", false).unwrap();
        let again = root.parent(b"real", false).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        root.invalidate();
        assert!(!Arc::ptr_eq(&first, &root.parent(b"real", false).unwrap()));
        assert!(root.walk(b"up", true).is_ok());
        assert!(layer.join("outside").is_dir());
        assert_eq!(
            fs::read_dir(scratch.path().join("outside"))
                .unwrap()
                .count(),
            0
        );
    }
}
