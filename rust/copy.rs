//! Copying a layer's tree, as the vfs driver does when a layer is created on a parent.
//!
//! Everything a layer holds is reproduced: regular files (shared extents through `FICLONE` where
//! the file system can, else `copy_file_range`, else plain reads and writes), directories,
//! symlinks, hard links within the tree, fifos, sockets and device nodes, with owner, mode
//! (setuid, setgid and sticky bits included), extended attributes and nanosecond times.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, FchownatFlags, Gid, Uid};

use crate::error::{Error, IoContext, Result};
use crate::sys;

/// Copy the tree at `source` to `destination`, which must not exist yet.
pub fn copy_tree(source: &Path, destination: &Path) -> Result<()> {
    let metadata = fs::symlink_metadata(source).at(source)?;
    if !metadata.is_dir() {
        return Err(Error::Io {
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
            path: source.to_path_buf(),
        });
    }
    let mut links = HashMap::new();
    copy_directory(source, destination, &metadata, &mut links)
}

/// Copies made so far of files with several links, by (device, inode) of the source.
type LinkMap = HashMap<(u64, u64), PathBuf>;

fn copy_directory(
    source: &Path,
    destination: &Path,
    metadata: &fs::Metadata,
    links: &mut LinkMap,
) -> Result<()> {
    fs::create_dir(destination).at(destination)?;
    // Owner-writable while we fill it; the real mode is set once the contents are in.
    fs::set_permissions(destination, fs::Permissions::from_mode(0o700)).at(destination)?;
    let mut entries: Vec<_> = fs::read_dir(source)
        .at(source)?
        .collect::<io::Result<_>>()
        .at(source)?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let from = entry.path();
        let to = destination.join(entry.file_name());
        let entry_metadata = fs::symlink_metadata(&from).at(&from)?;
        copy_entry(&from, &to, &entry_metadata, links)?;
    }
    finish_metadata(source, destination, metadata)
}

fn copy_entry(from: &Path, to: &Path, metadata: &fs::Metadata, links: &mut LinkMap) -> Result<()> {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        return copy_directory(from, to, metadata, links);
    }
    if metadata.nlink() > 1 {
        let key = (metadata.dev(), metadata.ino());
        if let Some(first) = links.get(&key) {
            return fs::hard_link(first, to).at(to);
        }
        links.insert(key, to.to_path_buf());
    }
    if file_type.is_symlink() {
        let target = fs::read_link(from).at(from)?;
        std::os::unix::fs::symlink(&target, to).at(to)?;
    } else if file_type.is_file() {
        copy_file_contents(from, to)?;
    } else {
        // fifo, socket, character or block device: the type bits and rdev say it all.
        let kind = SFlag::from_bits_truncate(metadata.mode() & libc::S_IFMT);
        mknod(to, kind, Mode::from_bits_truncate(0o600), metadata.rdev()).at(to)?;
    }
    finish_metadata(from, to, metadata)
}

fn copy_file_contents(from: &Path, to: &Path) -> Result<()> {
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .at(from)?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .at(to)?;
    // SAFETY: both descriptors are open for the duration of the call; FICLONE reads no memory.
    let cloned = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) };
    if cloned == 0 {
        return Ok(());
    }
    let length = input.metadata().at(from)?.len();
    let mut copied = 0u64;
    while copied < length {
        let chunk = usize::try_from(length - copied)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match nix::fcntl::copy_file_range(&input, None, &output, None, chunk) {
            Ok(0) => break, // the file shrank while we copied it
            Ok(count) => copied += count as u64,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) if copied == 0 => return copy_by_reading(&mut input, &mut output, to),
            Err(errno) => return Err(errno).at(to),
        }
    }
    Ok(())
}

fn copy_by_reading(input: &mut File, output: &mut File, to: &Path) -> Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = input.read(&mut buffer).at(to)?;
        if count == 0 {
            return Ok(());
        }
        output.write_all(&buffer[..count]).at(to)?;
    }
}

fn finish_metadata(from: &Path, to: &Path, metadata: &fs::Metadata) -> Result<()> {
    let is_symlink = metadata.file_type().is_symlink();
    fchownat(
        AT_FDCWD,
        to,
        Some(Uid::from_raw(metadata.uid())),
        Some(Gid::from_raw(metadata.gid())),
        FchownatFlags::AT_SYMLINK_NOFOLLOW,
    )
    .or_else(|errno| ignore_when_unprivileged(errno, metadata))
    .at(to)?;
    // Before the mode: a user.* xattr needs write permission, which a 0555 or 0000 mode takes
    // away even from the owner.
    copy_xattrs(from, to, is_symlink)?;
    if !is_symlink {
        // After chown, which clears setuid and setgid bits.
        fs::set_permissions(to, fs::Permissions::from_mode(metadata.mode() & 0o7777)).at(to)?;
    }
    let atime = TimeSpec::new(metadata.atime(), metadata.atime_nsec());
    let mtime = TimeSpec::new(metadata.mtime(), metadata.mtime_nsec());
    utimensat(
        AT_FDCWD,
        to,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .at(to)
}

/// Without privileges a copy keeps the caller as owner, as `cp -a` does; with them it must not.
fn ignore_when_unprivileged(errno: nix::errno::Errno, metadata: &fs::Metadata) -> nix::Result<()> {
    let same_owner = metadata.uid() == Uid::effective().as_raw();
    if errno == nix::errno::Errno::EPERM && (!Uid::effective().is_root() || same_owner) {
        Ok(())
    } else {
        Err(errno)
    }
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Io {
        source: io::Error::from_raw_os_error(libc::EINVAL),
        path: path.to_path_buf(),
    })
}

fn copy_xattrs(from: &Path, to: &Path, is_symlink: bool) -> Result<()> {
    let source = c_path(from)?;
    let target = c_path(to)?;
    let names = sys::list_xattrs_nofollow(&source).at(from)?;
    for name in names
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
    {
        let name = CString::new(name).expect("split on NUL leaves no NUL");
        let value = sys::get_xattr_nofollow(&source, &name).at(from)?;
        if let Err(error) = sys::set_xattr(&target, &name, &value, false) {
            let errno = error.raw_os_error().unwrap_or(0);
            // user.* xattrs cannot sit on symlinks, and some file systems take none at all.
            let skip = errno == libc::ENOTSUP || (is_symlink && errno == libc::EPERM);
            if !skip {
                let label = OsStr::from_bytes(name.as_bytes()).to_string_lossy();
                return Err(Error::Io {
                    source: io::Error::new(error.kind(), format!("setting xattr {label}: {error}")),
                    path: to.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn copies_files_links_and_modes() {
        let scratch = tempfile::tempdir().unwrap();
        let source = scratch.path().join("source");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("file"), b"content").unwrap();
        fs::set_permissions(source.join("file"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::hard_link(source.join("file"), source.join("link")).unwrap();
        symlink("file", source.join("symlink")).unwrap();
        fs::create_dir(source.join("dir")).unwrap();
        fs::write(source.join("dir/inner"), vec![7u8; 3 << 20]).unwrap();

        let destination = scratch.path().join("copy");
        copy_tree(&source, &destination).unwrap();

        assert_eq!(fs::read(destination.join("file")).unwrap(), b"content");
        let file = fs::metadata(destination.join("file")).unwrap();
        assert_eq!(file.mode() & 0o7777, 0o4751);
        let link = fs::metadata(destination.join("link")).unwrap();
        assert_eq!(file.ino(), link.ino(), "hard links stay linked");
        assert_eq!(
            fs::read_link(destination.join("symlink")).unwrap(),
            Path::new("file")
        );
        assert_eq!(
            fs::read(destination.join("dir/inner")).unwrap().len(),
            3 << 20
        );
        let source_mtime = fs::metadata(source.join("dir")).unwrap().mtime_nsec();
        let copy_mtime = fs::metadata(destination.join("dir")).unwrap().mtime_nsec();
        assert_eq!(
            source_mtime, copy_mtime,
            "directory times are set after their contents"
        );
    }

    #[test]
    fn refuses_an_existing_destination() {
        let scratch = tempfile::tempdir().unwrap();
        let error = copy_tree(scratch.path(), scratch.path()).unwrap_err();
        assert!(
            matches!(error, Error::Io { ref source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
        );
    }
}
