//! A tar written from the files of a tree: the diff of a layer without tar-split (a container's
//! layer written through its mount, a diff against a layer other than the parent).
//!
//! Python walks and compares the trees (that is driver policy) and hands over the entries in
//! order; this module reads each entry's metadata, extended attributes, link target and bytes
//! and writes the tar, headers through the `tar` crate. The members are those the pure engine
//! writes with Python's `tarfile` in its PAX form: the same names, types, modes, numeric owners,
//! nanosecond times (a pax `mtime` record when the time has a fraction), xattrs
//! (`SCHILY.xattr.*`), link targets and contents. Where tar leaves a choice the bytes may differ
//! (docs/diff.md, "Diffs built from the trees").

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::error::{Error, IoContext, Result};
use crate::sys;

const BLOCK: usize = 512;
/// What a ustar name or link name field holds.
const NAME_FIELD: usize = 100;
/// The largest value an 8-byte octal field (uid, gid) holds: 8^7 - 1.
const OCTAL_8_LIMIT: u64 = (1 << 21) - 1;
/// The largest value a 12-byte octal field (size, mtime) holds: 8^11 - 1.
const OCTAL_12_LIMIT: u64 = (1 << 33) - 1;
/// Extended attributes that describe the store, not the layer (Go leaves them out too).
const SKIPPED_XATTRS: [&[u8]; 3] = [b"trusted.overlay.", b"user.overlay.", b"security.selinux"];

/// One member of the tar, in the order it is written.
pub struct TreeEntry {
    /// The member's name, relative, without a trailing slash (directories get one).
    pub name: Vec<u8>,
    /// Where its metadata and bytes are read; `None` for an empty whiteout file (`.wh.*`).
    pub source: Option<PathBuf>,
}

/// The file whose bytes are being written.
struct OpenFile {
    file: File,
    path: PathBuf,
    left: u64,
    padding: usize,
}

/// The tar of a list of entries, produced as it is read.
pub struct TreeTar {
    entries: std::vec::IntoIter<TreeEntry>,
    /// The first name of each inode with several links seen so far.
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Header blocks (or padding) not yet read.
    pending: Vec<u8>,
    pending_at: usize,
    file: Option<OpenFile>,
    ended: bool,
    /// Owners, modes, types and devices come from `user.containers.override_stat` where a
    /// file has it (a store with `force_mask`, docs/rootless.md); the xattr stays out of the tar.
    override_stat: bool,
    /// The modes (`st_mode`) the tar gave to inodes, by (device, inode), where a reader's grant
    /// widened them for the read (a store's owner reading mode-000 files, docs/rootless.md).
    original_modes: HashMap<(u64, u64), u32>,
}

impl TreeTar {
    /// The tar of `entries`, written in the order given.
    #[must_use]
    pub fn new(entries: Vec<TreeEntry>) -> Self {
        Self {
            entries: entries.into_iter(),
            links: HashMap::new(),
            pending: Vec::new(),
            pending_at: 0,
            file: None,
            ended: false,
            override_stat: false,
            original_modes: HashMap::new(),
        }
    }

    /// The same tar, with the modes of these (device, inode) pairs taken from the map.
    #[must_use]
    pub fn with_original_modes(mut self, original_modes: HashMap<(u64, u64), u32>) -> Self {
        self.original_modes = original_modes;
        self
    }

    /// The same tar, with metadata read through `user.containers.override_stat`.
    #[must_use]
    pub fn with_override_stat(mut self, override_stat: bool) -> Self {
        self.override_stat = override_stat;
        self
    }

    /// Fill `buffer` with the next bytes of the tar; fewer only at its end (0 after it).
    pub fn read(&mut self, buffer: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buffer.len() {
            if self.pending_at < self.pending.len() {
                let count = (self.pending.len() - self.pending_at).min(buffer.len() - filled);
                buffer[filled..filled + count]
                    .copy_from_slice(&self.pending[self.pending_at..self.pending_at + count]);
                self.pending_at += count;
                filled += count;
            } else if let Some(open) = &mut self.file {
                if open.left == 0 {
                    let padding = open.padding;
                    self.file = None;
                    self.set_pending(|pending| pending.resize(padding, 0));
                    continue;
                }
                let room =
                    (buffer.len() - filled).min(usize::try_from(open.left).unwrap_or(usize::MAX));
                let target = &mut buffer[filled..filled + room];
                let count = read_retrying(&mut open.file, target).at(&open.path)?;
                let count = if count == 0 {
                    // The file shrank while it was read: keep the archive well-formed with zeros,
                    // as Go and the pure engine do.
                    target.fill(0);
                    room
                } else {
                    count
                };
                open.left -= count as u64;
                filled += count;
            } else if let Some(entry) = self.entries.next() {
                self.start(entry)?;
            } else if !self.ended {
                self.ended = true;
                self.set_pending(|pending| pending.resize(2 * BLOCK, 0));
            } else {
                break;
            }
        }
        Ok(filled)
    }

    fn set_pending(&mut self, fill: impl FnOnce(&mut Vec<u8>)) {
        self.pending.clear();
        self.pending_at = 0;
        fill(&mut self.pending);
    }

    /// Queue the header blocks of `entry` and open its file if its bytes follow.
    fn start(&mut self, entry: TreeEntry) -> Result<()> {
        let Some(path) = entry.source else {
            let member = Member::whiteout(entry.name);
            self.set_pending(|pending| member.write_headers(pending));
            return Ok(());
        };
        let metadata = fs::symlink_metadata(&path).at(&path)?;
        let mut member = Member::of(entry.name, &metadata);
        member.xattrs = read_xattrs(&path)?;
        let mut st_mode = metadata.mode();
        if let Some(&original) = self.original_modes.get(&(metadata.dev(), metadata.ino())) {
            st_mode = original;
            member.mode = original & 0o7777;
        }
        let mut rdev = metadata.rdev();
        if self.override_stat && !metadata.file_type().is_symlink() {
            let recorded = member
                .xattrs
                .iter()
                .position(|(name, _)| name.as_slice() == crate::overrides::NAME.to_bytes());
            if let Some(index) = recorded {
                let (_, value) = member.xattrs.remove(index);
                if let Some(stat) = crate::overrides::parse(&value) {
                    member.uid = u64::from(stat.uid);
                    member.gid = u64::from(stat.gid);
                    member.mode = stat.mode & 0o7777;
                    if stat.typed {
                        st_mode = stat.mode;
                        rdev = nix::sys::stat::makedev(stat.major.into(), stat.minor.into());
                    }
                }
            }
        }
        let file_type = st_mode & libc::S_IFMT;
        let key = (metadata.dev(), metadata.ino());
        let mut content = false;
        if file_type == libc::S_IFREG {
            match self.links.get(&key) {
                Some(first) if metadata.nlink() > 1 => {
                    member.kind = EntryType::Link;
                    member.link_name.clone_from(first);
                }
                _ => {
                    if metadata.nlink() > 1 {
                        self.links.insert(key, member.name.clone());
                    }
                    member.kind = EntryType::Regular;
                    member.size = metadata.len();
                    content = true;
                }
            }
        } else if file_type == libc::S_IFDIR {
            member.kind = EntryType::Directory;
            member.name.push(b'/');
        } else if file_type == libc::S_IFLNK {
            member.kind = EntryType::Symlink;
            member.link_name = fs::read_link(&path).at(&path)?.into_os_string().into_vec();
        } else if file_type == libc::S_IFCHR || file_type == libc::S_IFBLK {
            member.kind = if file_type == libc::S_IFCHR {
                EntryType::Char
            } else {
                EntryType::Block
            };
            member.device = Some((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)));
        } else if file_type == libc::S_IFIFO {
            member.kind = EntryType::Fifo;
        } else {
            return Ok(()); // sockets do not go into layers
        }
        // Open before queueing the header, so a file that cannot be read fails cleanly.
        if content {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .at(&path)?;
            self.file = Some(OpenFile {
                file,
                path,
                left: member.size,
                padding: padding_of(member.size),
            });
        }
        self.set_pending(|pending| member.write_headers(pending));
        Ok(())
    }
}

fn read_retrying(file: &mut File, target: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(target) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

fn padding_of(size: u64) -> usize {
    let rest = usize::try_from(size % BLOCK as u64).unwrap_or(0);
    if rest == 0 {
        0
    } else {
        BLOCK - rest
    }
}

/// The extended attributes of `path` that go into the tar, sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Io {
        source: io::Error::from_raw_os_error(libc::EINVAL),
        path: path.to_path_buf(),
    })?;
    let Ok(names) = sys::list_xattrs_nofollow(&c_path) else {
        return Ok(Vec::new()); // as Python's listxattr failing: no xattrs
    };
    let mut xattrs = Vec::new();
    for name in names
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
    {
        if SKIPPED_XATTRS.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let c_name = CString::new(name).expect("split on NUL leaves no NUL");
        let value = sys::get_xattr_nofollow(&c_path, &c_name).at(path)?;
        xattrs.push((name.to_vec(), value));
    }
    xattrs.sort();
    Ok(xattrs)
}

/// What one member's headers say.
struct Member {
    name: Vec<u8>,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    seconds: i64,
    nanoseconds: u32,
    link_name: Vec<u8>,
    device: Option<(u64, u64)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Member {
    /// An empty regular file of mode 0 dated 0: a whiteout.
    fn whiteout(name: Vec<u8>) -> Self {
        Self {
            name,
            kind: EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            seconds: 0,
            nanoseconds: 0,
            link_name: Vec::new(),
            device: None,
            xattrs: Vec::new(),
        }
    }

    fn of(name: Vec<u8>, metadata: &fs::Metadata) -> Self {
        let nanoseconds = u32::try_from(metadata.mtime_nsec()).unwrap_or(0);
        Self {
            mode: metadata.mode() & 0o7777,
            uid: u64::from(metadata.uid()),
            gid: u64::from(metadata.gid()),
            seconds: metadata.mtime(),
            nanoseconds,
            ..Self::whiteout(name)
        }
    }

    /// The pax records the member needs, in the order Python's tarfile writes them: the time
    /// with its fraction, the xattrs, then whatever does not fit its ustar field.
    fn pax_records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut records = Vec::new();
        if self.nanoseconds != 0 {
            records.push((
                b"mtime".to_vec(),
                format_time(self.seconds, self.nanoseconds).into_bytes(),
            ));
        }
        for (name, value) in &self.xattrs {
            records.push(([b"SCHILY.xattr.".as_slice(), name].concat(), value.clone()));
        }
        if needs_pax_string(&self.name) {
            records.push((b"path".to_vec(), self.name.clone()));
        }
        if needs_pax_string(&self.link_name) {
            records.push((b"linkpath".to_vec(), self.link_name.clone()));
        }
        for (key, value, limit) in [
            (b"uid".as_slice(), self.uid, OCTAL_8_LIMIT),
            (b"gid", self.gid, OCTAL_8_LIMIT),
            (b"size", self.size, OCTAL_12_LIMIT),
        ] {
            if value > limit {
                records.push((key.to_vec(), value.to_string().into_bytes()));
            }
        }
        if self.nanoseconds == 0 && ustar_seconds(self.seconds).is_none() {
            records.push((b"mtime".to_vec(), self.seconds.to_string().into_bytes()));
        }
        records
    }

    /// Append the member's header blocks (a pax header first when needed) to `output`.
    fn write_headers(&self, output: &mut Vec<u8>) {
        let records = self.pax_records();
        if !records.is_empty() {
            let payload = pax_payload(&records);
            let mut header = Header::new_ustar();
            set_name_field(&mut header, b"././@PaxHeader");
            header.set_entry_type(EntryType::XHeader);
            header.set_mode(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(payload.len() as u64);
            seal(&mut header);
            output.extend_from_slice(header.as_bytes());
            output.extend_from_slice(&payload);
            output.resize(output.len() + padding_of(payload.len() as u64), 0);
        }
        let mut header = Header::new_ustar();
        set_name_field(&mut header, &self.name);
        header.set_mode(self.mode);
        header.set_uid(if self.uid > OCTAL_8_LIMIT {
            0
        } else {
            self.uid
        });
        header.set_gid(if self.gid > OCTAL_8_LIMIT {
            0
        } else {
            self.gid
        });
        header.set_size(if self.size > OCTAL_12_LIMIT {
            0
        } else {
            self.size
        });
        header.set_mtime(ustar_seconds(self.seconds).unwrap_or(0));
        header.set_entry_type(self.kind);
        if !self.link_name.is_empty() {
            let field = &mut header.as_old_mut().linkname;
            copy_field(field, &self.link_name);
        }
        if let Some((major, minor)) = self.device {
            // Device numbers beyond the octal fields (rare) are cut, as ustar cannot hold them.
            let _ = header.set_device_major(u32::try_from(major).unwrap_or(u32::MAX));
            let _ = header.set_device_minor(u32::try_from(minor).unwrap_or(u32::MAX));
        }
        seal(&mut header);
        output.extend_from_slice(header.as_bytes());
    }
}

/// Write the header's checksum as Go, GNU tar and Python's tarfile write it: six octal digits,
/// NUL, space (the `tar` crate's `set_cksum` writes seven digits and a NUL, equally valid).
fn seal(header: &mut Header) {
    header.as_old_mut().cksum = *b"        ";
    let sum: u32 = header.as_bytes().iter().map(|&byte| u32::from(byte)).sum();
    let digits = format!("{sum:06o}");
    let field = &mut header.as_old_mut().cksum;
    field[..6].copy_from_slice(&digits.as_bytes()[digits.len() - 6..]);
    field[6] = 0;
}

/// `seconds` if a ustar time field holds it (after 1970, before 2242).
fn ustar_seconds(seconds: i64) -> Option<u64> {
    u64::try_from(seconds)
        .ok()
        .filter(|&seconds| seconds <= OCTAL_12_LIMIT)
}

/// Whether a name or link target must go in a pax record: longer than its field, or not ASCII.
fn needs_pax_string(value: &[u8]) -> bool {
    value.len() > NAME_FIELD || !value.is_ascii()
}

/// Fill a ustar name field. A name that a pax record carries leaves its first 100 characters
/// here, each non-ASCII character (or byte that is not UTF-8) as `?`, as Python's tarfile
/// leaves them: what a reader that ignores pax sees.
fn set_name_field(header: &mut Header, name: &[u8]) {
    copy_field(&mut header.as_old_mut().name, name);
}

fn copy_field(field: &mut [u8], value: &[u8]) {
    let mut shown = Vec::with_capacity(value.len());
    for chunk in value.utf8_chunks() {
        shown.extend(
            chunk
                .valid()
                .chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' }),
        );
        shown.resize(shown.len() + chunk.invalid().len(), b'?');
    }
    for (slot, byte) in field.iter_mut().zip(shown) {
        *slot = byte;
    }
}

/// `seconds.nnnnnnnnn` of a time (before 1970 too: -1.5 s is "-1.500000000").
fn format_time(seconds: i64, nanoseconds: u32) -> String {
    if seconds < 0 && nanoseconds > 0 {
        let whole = -(seconds + 1);
        format!("-{whole}.{:09}", 1_000_000_000 - nanoseconds)
    } else {
        format!("{seconds}.{nanoseconds:09}")
    }
}

/// The records of a pax header: `hdrcharset=BINARY` first when a value is not UTF-8 (as
/// Python's tarfile marks it), then `LENGTH KEY=VALUE\n` each.
fn pax_payload(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut payload = Vec::new();
    if records
        .iter()
        .any(|(_, value)| std::str::from_utf8(value).is_err())
    {
        payload.extend_from_slice(b"21 hdrcharset=BINARY\n");
    }
    for (key, value) in records {
        push_record(&mut payload, key, value);
    }
    payload
}

/// `LENGTH KEY=VALUE\n`, where LENGTH counts the whole record, its own digits included.
fn push_record(payload: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=' and '\n'
    let mut length = rest;
    loop {
        let total = rest + length.to_string().len();
        if total == length {
            break;
        }
        length = total;
    }
    payload.extend_from_slice(length.to_string().as_bytes());
    payload.push(b' ');
    payload.extend_from_slice(key);
    payload.push(b'=');
    payload.extend_from_slice(value);
    payload.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: Vec<TreeEntry>) -> Vec<u8> {
        let mut tar = TreeTar::new(entries);
        let mut output = Vec::new();
        let mut buffer = vec![0u8; 777]; // not a multiple of a block: reads split headers
        loop {
            let count = tar.read(&mut buffer).unwrap();
            output.extend_from_slice(&buffer[..count]);
            if count < buffer.len() {
                return output;
            }
        }
    }

    fn entry(root: &Path, name: &str) -> TreeEntry {
        TreeEntry {
            name: name.as_bytes().to_vec(),
            source: Some(root.join(name)),
        }
    }

    #[test]
    fn a_record_counts_its_own_digits() {
        for value_length in [0, 1, 85, 86, 87, 990, 991, 992, 9990] {
            let mut payload = Vec::new();
            push_record(&mut payload, b"path", &vec![b'x'; value_length]);
            let space = payload.iter().position(|&byte| byte == b' ').unwrap();
            let length: usize = std::str::from_utf8(&payload[..space])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, payload.len(), "value of {value_length} bytes");
        }
    }

    #[test]
    fn times_before_1970_keep_their_fraction() {
        assert_eq!(format_time(-2, 500_000_000), "-1.500000000");
        assert_eq!(format_time(-1, 1), "-0.999999999");
        assert_eq!(format_time(5, 7), "5.000000007");
    }

    #[test]
    fn a_tree_reads_back_with_the_tar_crate() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        fs::create_dir(root.join("dir")).unwrap();
        fs::write(root.join("dir/file"), vec![7u8; 1300]).unwrap();
        fs::hard_link(root.join("dir/file"), root.join("again")).unwrap();
        std::os::unix::fs::symlink("dir/file", root.join("link")).unwrap();
        let long = "n".repeat(120);
        fs::write(root.join(&long), b"long name").unwrap();
        let tar = tar_of(vec![
            entry(root, "dir"),
            entry(root, "dir/file"),
            entry(root, "again"),
            entry(root, "link"),
            entry(root, &long),
            TreeEntry {
                name: b"dir/.wh.gone".to_vec(),
                source: None,
            },
        ]);
        assert_eq!(tar.len() % BLOCK, 0);
        assert!(tar.ends_with(&[0; 2 * BLOCK]));
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for member in archive.entries().unwrap() {
            let mut member = member.unwrap();
            let name = String::from_utf8(member.path_bytes().into_owned()).unwrap();
            let kind = member.header().entry_type();
            let mut data = Vec::new();
            member.read_to_end(&mut data).unwrap();
            let target = member
                .link_name_bytes()
                .map(|target| String::from_utf8(target.into_owned()).unwrap());
            seen.push((name, kind, data.len(), target));
        }
        assert_eq!(
            seen,
            vec![
                ("dir/".into(), EntryType::Directory, 0, None),
                ("dir/file".into(), EntryType::Regular, 1300, None),
                ("again".into(), EntryType::Link, 0, Some("dir/file".into())),
                (
                    "link".into(),
                    EntryType::Symlink,
                    0,
                    Some("dir/file".into())
                ),
                (long, EntryType::Regular, 9, None),
                ("dir/.wh.gone".into(), EntryType::Regular, 0, None),
            ]
        );
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let directory = tempfile::tempdir().unwrap();
        let mut tar = TreeTar::new(vec![entry(directory.path(), "absent")]);
        let mut buffer = [0u8; 512];
        match tar.read(&mut buffer) {
            Err(Error::Io { source, path }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert_eq!(path, directory.path().join("absent"));
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
