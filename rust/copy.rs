//! Copying a layer's tree, as the vfs driver does when a layer is created on a parent.
//!
//! Everything a layer holds is reproduced: regular files (shared extents through `FICLONE` where
//! the file system can, else `copy_file_range`, else plain reads and writes), directories,
//! symlinks, hard links within the tree, fifos, sockets and device nodes, with owner, mode
//! (setuid, setgid and sticky bits included), extended attributes and nanosecond times.
//!
//! The copy runs on one thread per core (at most four). A thread takes a directory and copies
//! the files, symlinks and special files in it through descriptors of the two directories, so no
//! path is walked again, and queues its subdirectories for whichever thread is free. Files with
//! several links wait until the threads are done and are then copied or linked one by one, so
//! that the first name of each is whole before another name links to it. Directories are
//! created owner-only (0700) and get their owner, extended attributes, mode and times last,
//! deepest first, when nothing is written into them any more.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, mkdirat, mknodat, utimensat, FchmodatFlags, FileStat,
    Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, geteuid, linkat, symlinkat, Gid, Uid};

use crate::confine::{open_at, read_link_at};
use crate::error::{Error, IoContext, Result};
use crate::sys;

/// Most copying threads, whatever the number of cores.
const MAX_WORKERS: usize = 4;

/// Copy the tree at `source` to `destination`, which must not exist yet.
pub fn copy_tree(source: &Path, destination: &Path) -> Result<()> {
    let root = fstatat(AT_FDCWD, source, AtFlags::AT_SYMLINK_NOFOLLOW).at(source)?;
    if !is_type(&root, libc::S_IFDIR) {
        return Err(Error::Io {
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
            path: source.to_path_buf(),
        });
    }
    mkdirat(AT_FDCWD, destination, Mode::S_IRWXU).at(destination)?;
    // What everything created in the copy belongs to unless chowned: the caller, or the group
    // of a setgid directory the copy was made in (which its directories then inherit).
    let created = fstatat(AT_FDCWD, destination, AtFlags::AT_SYMLINK_NOFOLLOW).at(destination)?;
    let copy = Copy::new(created.st_uid, created.st_gid);
    copy.queue_directory(source.to_path_buf(), destination.to_path_buf(), root);
    let workers = thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, MAX_WORKERS);
    thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(|| copy.work());
        }
        copy.work();
    });
    let mut state = copy
        .state
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(error) = state.failure.take() {
        return Err(error);
    }
    // Files with several links, one by one: the first name of each is copied, the others
    // linked to it.
    let mut firsts: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for linked in &state.linked {
        let key = (linked.stat.st_dev, linked.stat.st_ino);
        if let Some(first) = firsts.get(&key) {
            linkat(AT_FDCWD, first, AT_FDCWD, &linked.to, AtFlags::empty()).at(&linked.to)?;
            continue;
        }
        let name = c_path(&linked.to)?;
        let from = c_path(&linked.from)?;
        copy_entry(
            &copy.context,
            Place::new(AT_FDCWD, &from, &linked.from),
            Place::new(AT_FDCWD, &name, &linked.to),
            &linked.stat,
        )?;
        firsts.insert(key, linked.to.clone());
    }
    // Deepest first: a directory was queued before anything in it.
    for directory in state.directories.iter().rev() {
        let to = c_path(&directory.to)?;
        let from = c_path(&directory.from)?;
        finish_metadata_at(
            &copy.context,
            Place::new(AT_FDCWD, &from, &directory.from),
            Place::new(AT_FDCWD, &to, &directory.to),
            &directory.stat,
        )?;
    }
    Ok(())
}

/// An entry of the source tree and where its copy goes.
struct Pending {
    from: PathBuf,
    to: PathBuf,
    stat: FileStat,
}

/// What the copying threads share.
struct Copy {
    state: Mutex<State>,
    /// Rung when a directory is queued or the last busy thread is done.
    changed: Condvar,
    context: Context,
}

struct State {
    /// Directories whose entries are still to copy (their copy exists already).
    queue: Vec<Pending>,
    /// Threads copying a directory now.
    busy: usize,
    /// Every directory queued, in order: their metadata is set last, in reverse.
    directories: Vec<Pending>,
    /// Files with several links, copied after the threads are done.
    linked: Vec<Pending>,
    /// The first error; the threads stop at it.
    failure: Option<Error>,
}

/// What every copy of an entry needs to know.
struct Context {
    /// Whether `FICLONE` may still work (it is not tried again once the file system said no).
    clone_works: AtomicBool,
    /// The owner and group a new entry gets.
    uid: u32,
    gid: u32,
    /// Whether we run as root (who may set any xattr on a file whatever its mode).
    root: bool,
    umask: u32,
}

impl Copy {
    fn new(uid: u32, gid: u32) -> Self {
        Self {
            state: Mutex::new(State {
                queue: Vec::new(),
                busy: 0,
                directories: Vec::new(),
                linked: Vec::new(),
                failure: None,
            }),
            changed: Condvar::new(),
            context: Context {
                clone_works: AtomicBool::new(true),
                uid,
                gid,
                root: geteuid().is_root(),
                umask: crate::extract::process_umask(),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue_directory(&self, from: PathBuf, to: PathBuf, stat: FileStat) {
        let mut state = self.lock();
        state.directories.push(Pending {
            from: from.clone(),
            to: to.clone(),
            stat,
        });
        state.queue.push(Pending { from, to, stat });
        drop(state);
        self.changed.notify_one();
    }

    /// One thread's part: copy directories until none is left and no thread is busy.
    fn work(&self) {
        loop {
            let mut state = self.lock();
            let directory = loop {
                if state.failure.is_some() {
                    return;
                }
                if let Some(directory) = state.queue.pop() {
                    state.busy += 1;
                    break directory;
                }
                if state.busy == 0 {
                    return;
                }
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            };
            drop(state);
            let outcome = self.copy_directory(&directory);
            let mut state = self.lock();
            state.busy -= 1;
            if let Err(error) = outcome {
                state.failure.get_or_insert(error);
            }
            if state.busy == 0 || state.failure.is_some() {
                self.changed.notify_all();
            }
        }
    }

    /// Copy the entries of one directory into its copy, queueing its subdirectories.
    fn copy_directory(&self, directory: &Pending) -> Result<()> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let from_path = c_path(&directory.from)?;
        let to_path = c_path(&directory.to)?;
        let source = open_at(AT_FDCWD, &from_path, flags, 0).at(&directory.from)?;
        let target = open_at(AT_FDCWD, &to_path, flags, 0).at(&directory.to)?;
        for name in names(&source).at(&directory.from)? {
            let from = directory.from.join(OsStr::from_bytes(name.to_bytes()));
            let to = directory.to.join(OsStr::from_bytes(name.to_bytes()));
            let stat = fstatat(
                source.as_fd(),
                name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .at(&from)?;
            if is_type(&stat, libc::S_IFDIR) {
                mkdirat(target.as_fd(), name.as_c_str(), Mode::S_IRWXU).at(&to)?;
                self.queue_directory(from, to, stat);
            } else if stat.st_nlink > 1 {
                self.lock().linked.push(Pending { from, to, stat });
            } else {
                copy_entry(
                    &self.context,
                    Place::new(source.as_fd(), &name, &from),
                    Place::new(target.as_fd(), &name, &to),
                    &stat,
                )?;
            }
        }
        Ok(())
    }
}

/// The names in the directory `dir`, `.` and `..` left out.
fn names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut stream = Dir::from_fd(dir.try_clone()?).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// An entry named `name` in the directory `dir` (or a whole path with `AT_FDCWD`), and its
/// path for error messages.
#[derive(Clone, Copy)]
struct Place<'a> {
    dir: BorrowedFd<'a>,
    name: &'a CStr,
    path: &'a Path,
}

impl<'a> Place<'a> {
    fn new(dir: BorrowedFd<'a>, name: &'a CStr, path: &'a Path) -> Self {
        Self { dir, name, path }
    }
}

fn is_type(stat: &FileStat, kind: libc::mode_t) -> bool {
    stat.st_mode & libc::S_IFMT == kind
}

/// Copy one entry that is not a directory.
fn copy_entry(context: &Context, from: Place<'_>, to: Place<'_>, stat: &FileStat) -> Result<()> {
    if is_type(stat, libc::S_IFREG) {
        return copy_file(context, from, to, stat);
    }
    if is_type(stat, libc::S_IFLNK) {
        let target = read_link_at(from.dir, from.name).at(from.path)?;
        let target = CString::new(target).map_err(|_| Error::Io {
            source: io::Error::from_raw_os_error(libc::EINVAL),
            path: from.path.to_path_buf(),
        })?;
        symlinkat(target.as_c_str(), to.dir, to.name).at(to.path)?;
    } else {
        // fifo, socket, character or block device: the type bits and rdev say it all.
        let kind = SFlag::from_bits_truncate(stat.st_mode & libc::S_IFMT);
        mknodat(
            to.dir,
            to.name,
            kind,
            Mode::from_bits_truncate(0o600),
            stat.st_rdev,
        )
        .at(to.path)?;
    }
    finish_metadata_at(context, from, to, stat)
}

/// Copy a regular file, its metadata set through its descriptor.
fn copy_file(context: &Context, from: Place<'_>, to: Place<'_>, stat: &FileStat) -> Result<()> {
    let input = open_at(from.dir, from.name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).at(from.path)?;
    let names = sys::flist_xattrs(input.as_fd()).at(from.path)?;
    let mode = stat.st_mode & 0o7777;
    // Created with its final mode when nothing needs it writable later and the umask keeps it
    // whole: one fchmod less. Without root an xattr needs write permission, so then not.
    let exact =
        mode & !0o777 == 0 && mode & context.umask == 0 && (names.is_empty() || context.root);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let output = open_at(to.dir, to.name, flags, if exact { mode } else { 0o600 }).at(to.path)?;
    copy_contents(context, input, &output, stat, to.path)?;
    let fd = output.as_fd();
    if (stat.st_uid, stat.st_gid) != (context.uid, context.gid) {
        fchown(
            fd,
            Some(Uid::from_raw(stat.st_uid)),
            Some(Gid::from_raw(stat.st_gid)),
        )
        .or_else(|errno| ignore_when_unprivileged(errno, stat))
        .at(to.path)?;
    }
    // Before the mode: a user.* xattr needs write permission, which a 0555 or 0000 mode takes
    // away even from the owner.
    copy_xattrs(
        &names,
        from,
        |name, value| sys::fset_xattr(fd, name, value),
        to,
        false,
    )?;
    if !exact {
        // After chown, which clears setuid and setgid bits.
        fchmod(fd, Mode::from_bits_truncate(mode)).at(to.path)?;
    }
    let [atime, mtime] = times(stat);
    futimens(fd, &atime, &mtime).at(to.path)
}

/// The contents of `input` into `output`: shared extents where the file system can, else
/// `copy_file_range`, else reads and writes.
fn copy_contents(
    context: &Context,
    input: OwnedFd,
    output: &OwnedFd,
    stat: &FileStat,
    to: &Path,
) -> Result<()> {
    let length = u64::try_from(stat.st_size).unwrap_or(0);
    if length == 0 {
        return Ok(());
    }
    if context.clone_works.load(Ordering::Relaxed) {
        // SAFETY: both descriptors are open for the duration of the call; FICLONE reads no
        // memory.
        let cloned = unsafe { libc::ioctl(output.as_raw_fd(), libc::FICLONE, input.as_raw_fd()) };
        if cloned == 0 {
            return Ok(());
        }
        let errno = Errno::last();
        // The file system cannot share extents (or not across these two): never again.
        if matches!(
            errno,
            Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EXDEV | Errno::EINVAL
        ) {
            context.clone_works.store(false, Ordering::Relaxed);
        }
    }
    let mut copied = 0u64;
    while copied < length {
        let chunk = usize::try_from(length - copied)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match nix::fcntl::copy_file_range(&input, None, output, None, chunk) {
            Ok(0) => break, // the file shrank while we copied it
            Ok(count) => copied += count as u64,
            Err(Errno::EINTR) => {}
            Err(_) if copied == 0 => {
                return copy_by_reading(&mut File::from(input), output, to);
            }
            Err(errno) => return Err(errno).at(to),
        }
    }
    Ok(())
}

fn copy_by_reading(input: &mut File, output: &OwnedFd, to: &Path) -> Result<()> {
    let mut output = File::from(output.try_clone().at(to)?);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let count = input.read(&mut buffer).at(to)?;
        if count == 0 {
            return Ok(());
        }
        output.write_all(&buffer[..count]).at(to)?;
    }
}

/// The source's atime and mtime, to the nanosecond.
fn times(stat: &FileStat) -> [TimeSpec; 2] {
    [
        TimeSpec::new(stat.st_atime, stat.st_atime_nsec),
        TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec),
    ]
}

/// Owner, extended attributes, mode and times of an entry reached by name (a directory,
/// symlink or special file).
fn finish_metadata_at(
    context: &Context,
    from: Place<'_>,
    to: Place<'_>,
    stat: &FileStat,
) -> Result<()> {
    let is_symlink = is_type(stat, libc::S_IFLNK);
    if (stat.st_uid, stat.st_gid) != (context.uid, context.gid) {
        fchownat(
            to.dir,
            to.name,
            Some(Uid::from_raw(stat.st_uid)),
            Some(Gid::from_raw(stat.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .or_else(|errno| ignore_when_unprivileged(errno, stat))
        .at(to.path)?;
    }
    // Before the mode: a user.* xattr needs write permission, which a 0555 or 0000 mode takes
    // away even from the owner. No `*at` form exists: whole paths.
    let source = c_path(from.path)?;
    let target = c_path(to.path)?;
    let names = sys::list_xattrs_nofollow(&source).at(from.path)?;
    copy_xattrs(
        &names,
        from,
        |name, value| sys::set_xattr(&target, name, value, false),
        to,
        is_symlink,
    )?;
    if !is_symlink {
        // After chown, which clears setuid and setgid bits.
        fchmodat(
            to.dir,
            to.name,
            Mode::from_bits_truncate(stat.st_mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )
        .at(to.path)?;
    }
    let [atime, mtime] = times(stat);
    utimensat(
        to.dir,
        to.name,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .at(to.path)
}

/// Without privileges a copy keeps the caller as owner, as `cp -a` does; with them it must not.
fn ignore_when_unprivileged(errno: Errno, stat: &FileStat) -> nix::Result<()> {
    let same_owner = stat.st_uid == Uid::effective().as_raw();
    if errno == Errno::EPERM && (!Uid::effective().is_root() || same_owner) {
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

/// Copy the extended attributes `names` (NUL-separated, as listed on the source) with `set`.
fn copy_xattrs(
    names: &[u8],
    from: Place<'_>,
    set: impl Fn(&CStr, &[u8]) -> io::Result<()>,
    to: Place<'_>,
    is_symlink: bool,
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let source = c_path(from.path)?;
    for name in names
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
    {
        let name = CString::new(name).expect("split on NUL leaves no NUL");
        let value = sys::get_xattr_nofollow(&source, &name).at(from.path)?;
        if let Err(error) = set(&name, &value) {
            let errno = error.raw_os_error().unwrap_or(0);
            // user.* xattrs cannot sit on symlinks, and some file systems take none at all.
            let skip = errno == libc::ENOTSUP || (is_symlink && errno == libc::EPERM);
            if !skip {
                let label = OsStr::from_bytes(name.as_bytes()).to_string_lossy();
                return Err(Error::Io {
                    source: io::Error::new(error.kind(), format!("setting xattr {label}: {error}")),
                    path: to.path.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

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

    /// What a tree holds, entry by entry: type, mode, owner, size, mtime, contents or target,
    /// and which entries share an inode (by the first path of each shared inode).
    fn describe(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut inodes: HashMap<u64, String> = HashMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(relative) = stack.pop() {
            let path = root.join(&relative);
            let meta = fs::symlink_metadata(&path).unwrap();
            let shown = relative.display().to_string();
            let body = if meta.is_dir() {
                let mut names: Vec<_> = fs::read_dir(&path)
                    .unwrap()
                    .map(|entry| entry.unwrap().file_name())
                    .collect();
                names.sort();
                stack.extend(names.into_iter().map(|name| relative.join(name)));
                String::new()
            } else if meta.file_type().is_symlink() {
                fs::read_link(&path).unwrap().display().to_string()
            } else if meta.is_file() {
                format!(
                    "{:x}",
                    fs::read(&path)
                        .unwrap()
                        .iter()
                        .map(|&b| u64::from(b))
                        .sum::<u64>()
                )
            } else {
                String::new()
            };
            let first = if meta.nlink() > 1 && !meta.is_dir() {
                inodes
                    .entry(meta.ino())
                    .or_insert_with(|| shown.clone())
                    .clone()
            } else {
                String::new()
            };
            out.push(format!(
                "{shown} {:o} {}:{} {} {}.{} {body} {first}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                if meta.is_dir() { 0 } else { meta.size() },
                meta.mtime(),
                meta.mtime_nsec(),
            ));
        }
        out.sort();
        out
    }

    #[test]
    fn copies_a_wide_tree_on_every_thread_alike() {
        let scratch = tempfile::tempdir().unwrap();
        let source = scratch.path().join("source");
        fs::create_dir(&source).unwrap();
        for d in 0..40u32 {
            let dir = source.join(format!("d{d}"));
            fs::create_dir_all(dir.join("inner/deeper")).unwrap();
            for f in 0..15u32 {
                let file = dir.join(format!("f{f}"));
                fs::write(
                    &file,
                    vec![u8::try_from((d * 15 + f) % 251).unwrap(); (f * 700) as usize],
                )
                .unwrap();
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600 + f)).unwrap();
            }
            fs::write(dir.join("inner/deeper/last"), b"deep").unwrap();
            symlink("../f1", dir.join("inner/up")).unwrap();
            // A directory the owner cannot write: its contents go in before its mode.
            fs::set_permissions(dir.join("inner/deeper"), fs::Permissions::from_mode(0o555))
                .unwrap();
        }
        for d in 0..40u32 {
            // A link across directories: copied once, linked once, whichever thread met it.
            fs::hard_link(
                source.join(format!("d{d}/f3")),
                source.join(format!("d{}/inner/link", (d + 1) % 40)),
            )
            .unwrap();
        }
        nix::unistd::mkfifo(&source.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        fs::write(source.join("setuid"), b"x").unwrap();
        fs::set_permissions(source.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        let destination = scratch.path().join("copy");
        copy_tree(&source, &destination).unwrap();
        let (before, after) = (describe(&source), describe(&destination));
        assert_eq!(before.len(), after.len());
        for (original, copied) in before.iter().zip(&after) {
            assert_eq!(original, copied);
        }
    }

    #[test]
    fn owners_stay_in_a_setgid_directory_of_another_group() {
        if !geteuid().is_root() {
            return; // giving a directory to another group needs root
        }
        let scratch = tempfile::tempdir().unwrap();
        let source = scratch.path().join("source");
        fs::create_dir_all(source.join("dir")).unwrap();
        fs::write(source.join("dir/file"), b"x").unwrap();
        let parent = scratch.path().join("setgid");
        fs::create_dir(&parent).unwrap();
        std::os::unix::fs::chown(&parent, None, Some(4242)).unwrap();
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o2777)).unwrap();
        let destination = parent.join("copy");
        copy_tree(&source, &destination).unwrap();
        for relative in ["", "dir", "dir/file"] {
            let original = fs::metadata(source.join(relative)).unwrap();
            let copied = fs::metadata(destination.join(relative)).unwrap();
            assert_eq!(
                (copied.gid(), copied.mode()),
                (original.gid(), original.mode()),
                "{relative}"
            );
        }
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
