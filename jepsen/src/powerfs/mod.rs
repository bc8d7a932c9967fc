//! `powerfs`: a FUSE file system for the power nemesis. It passes every
//! operation through to a backing directory and keeps what a power cut would
//! take away ([`journal`]): data written since each file's last fsync, and
//! directory changes (creates, unlinks, renames) since their directory's last
//! fsync. [`Mount::cut`] forgets all of it at once and answers every later
//! operation with `EIO`, as a machine that lost power answers nothing; the
//! harness then kills the node, unmounts, mounts the same backing directory
//! again and restarts the node on what a disk would have kept.
//!
//! A cut can also be armed to fire at a crash point ([`Trigger`]): before or
//! after the first operation matching a sequence of steps (say, the fsync of a
//! WAL file, or the rename of a snapshot being installed).
//!
//! The mount runs in the harness's own process (root only, through
//! `/dev/fuse`; the harness never touches the mounted directories itself).
//! Hard links are refused with `EOPNOTSUPP` (RocksDB's checkpoints then copy
//! files), so every file has one name. Writes are not fsynced to the backing
//! disk: its own durability is not what is tested.

pub mod journal;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use serde::Serialize;

pub use journal::CutReport;
use journal::Journal;

/// How long the kernel may cache names and attributes.
const TTL: Duration = Duration::from_secs(1);

/// Kinds of operation a [`Trigger`] step matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Write,
    Fsync,
    FsyncDir,
    Rename,
    Create,
    Unlink,
}

/// One step of a trigger: an operation on a path containing `path_contains`
/// (for a rename, either name).
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub op: Op,
    pub path_contains: String,
}

/// A crash point: once the steps have been seen in order, the last one
/// fires the cut, before the operation runs (it fails with `EIO`) or right
/// after it (its effect is kept, everything later is not).
#[derive(Clone, Debug, Serialize)]
pub struct Trigger {
    pub steps: Vec<Step>,
    pub after: bool,
}

/// A cut, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct Cut {
    #[serde(flatten)]
    pub report: CutReport,
    /// The operation that fired it, for an armed trigger.
    pub fired_by: Option<String>,
}

/// Operation counts since the mount.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub writes: u64,
    pub bytes_written: u64,
    pub fsyncs: u64,
    pub dir_fsyncs: u64,
    pub entries_changed: u64,
}

struct Handle {
    ino: u64,
    file: File,
}

struct State {
    root: PathBuf,
    /// Path (relative to `root`) of each inode the kernel was told of.
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    journal: Journal,
    frozen: bool,
    trigger: Option<(Trigger, usize)>,
    counts: Counts,
}

struct Shared {
    state: Mutex<State>,
    /// Set when a cut happened (by a trigger or by [`Mount::cut`]).
    cut: Mutex<Option<Cut>>,
    cuts: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside an operation poisons nothing we rely on: the
        // journal's records stay consistent per call.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cut_locked(&self, st: &mut State, fired_by: Option<String>) -> Cut {
        st.frozen = true;
        st.trigger = None;
        let cut = Cut {
            report: st.journal.cut(),
            fired_by,
        };
        *self.cut.lock().unwrap_or_else(|p| p.into_inner()) = Some(cut.clone());
        self.cuts.fetch_add(1, Ordering::SeqCst);
        cut
    }
}

/// What an operation does about an armed trigger.
enum Fire {
    No,
    Before(String),
    After(String),
}

impl State {
    fn rel(&self, ino: u64) -> Result<&PathBuf, Errno> {
        self.paths.get(&ino).ok_or(Errno::ENOENT)
    }

    fn abs(&self, ino: u64) -> Result<PathBuf, Errno> {
        Ok(self.root.join(self.rel(ino)?))
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<(PathBuf, PathBuf), Errno> {
        let rel = self.rel(parent)?.join(name);
        Ok((self.root.join(&rel), rel))
    }

    fn ino_for(&mut self, rel: PathBuf) -> u64 {
        if let Some(&i) = self.inos.get(&rel) {
            return i;
        }
        let i = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(i, rel.clone());
        self.inos.insert(rel, i);
        i
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(i) = self.inos.remove(rel) {
            self.paths.remove(&i);
        }
    }

    /// Moves every name under `from` to `to` (a rename).
    fn move_paths(&mut self, from: &Path, to: &Path) {
        self.forget_path(to);
        let moved: Vec<(u64, PathBuf)> = self
            .paths
            .iter()
            .filter(|(_, p)| p.starts_with(from))
            .map(|(&i, p)| (i, p.clone()))
            .collect();
        for (i, old) in moved {
            // `old` starts with `from`, checked above.
            let rest = old.strip_prefix(from).unwrap_or(Path::new(""));
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            self.inos.remove(&old);
            self.inos.insert(new.clone(), i);
            self.paths.insert(i, new);
        }
    }

    fn attr(&self, ino: u64, m: &fs::Metadata) -> FileAttr {
        let t = |s: i64, ns: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::new(s as u64, ns as u32)
            } else {
                UNIX_EPOCH
            }
        };
        let kind = FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile);
        FileAttr {
            ino: INodeNo(ino),
            size: m.size(),
            blocks: m.blocks(),
            atime: t(m.atime(), m.atime_nsec()),
            mtime: t(m.mtime(), m.mtime_nsec()),
            ctime: t(m.ctime(), m.ctime_nsec()),
            crtime: t(m.ctime(), m.ctime_nsec()),
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: m.blksize() as u32,
            flags: 0,
        }
    }

    /// Checks an operation against the armed trigger.
    fn check(&mut self, op: Op, paths: &[&Path]) -> Fire {
        let Some((t, next)) = self.trigger.as_mut() else {
            return Fire::No;
        };
        let step = &t.steps[*next];
        let hit = step.op == op
            && paths.iter().any(|p| {
                p.as_os_str()
                    .as_bytes()
                    .windows(step.path_contains.len())
                    .any(|w| w == step.path_contains.as_bytes())
            });
        if !hit {
            return Fire::No;
        }
        *next += 1;
        if *next < t.steps.len() {
            return Fire::No;
        }
        let what = format!(
            "{op:?} {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" -> ")
        );
        if t.after {
            Fire::After(what)
        } else {
            Fire::Before(what)
        }
    }

    fn open_handle(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, file });
        fh
    }

    fn handle(&self, fh: FileHandle) -> Result<&Handle, Errno> {
        self.handles.get(&fh.0).ok_or(Errno::EBADF)
    }
}

fn errno(e: io::Error) -> Errno {
    e.raw_os_error().map(Errno::from_i32).unwrap_or(Errno::EIO)
}

/// Open options for flags the kernel passed, without the ones the file
/// system handles itself (`O_CREAT`, `O_EXCL`, `O_TRUNC`, `O_APPEND`: writes
/// come with their offsets).
fn open_options(flags: i32) -> OpenOptions {
    let mut o = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => o.write(true),
        libc::O_RDWR => o.read(true).write(true),
        _ => o.read(true),
    };
    let passed = flags
        & !(libc::O_ACCMODE
            | libc::O_CREAT
            | libc::O_EXCL
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_DIRECT
            | libc::O_NOCTTY);
    o.custom_flags(passed);
    o
}

/// The file system. Built by [`Mount::new`].
struct PowerFs {
    shared: Arc<Shared>,
}

/// The value of a `Result<_, Errno>`, or the error as the operation's reply.
macro_rules! or_reply {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

/// Runs `body` on the locked state unless the file system is frozen, applying
/// an armed trigger for `op` on `paths` (computed inside) around it.
macro_rules! guarded {
    ($self:ident, $reply:ident, |$st:ident| $body:block) => {{
        let mut guard = $self.shared.lock();
        let $st: &mut State = &mut guard;
        if $st.frozen {
            $reply.error(Errno::EIO);
            return;
        }
        $body
    }};
}

impl PowerFs {
    /// Applies the trigger for an operation; returns false if the cut came
    /// first (the caller answers EIO).
    fn before(&self, st: &mut State, op: Op, paths: &[&Path]) -> Result<Option<String>, Errno> {
        match st.check(op, paths) {
            Fire::No => Ok(None),
            Fire::Before(what) => {
                self.shared.cut_locked(st, Some(format!("before {what}")));
                Err(Errno::EIO)
            }
            Fire::After(what) => Ok(Some(what)),
        }
    }

    fn after(&self, st: &mut State, fire: Option<String>) {
        if let Some(what) = fire {
            self.shared.cut_locked(st, Some(format!("after {what}")));
        }
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded!(self, reply, |st| {
            let (abs, rel) = or_reply!(reply, st.child(parent.0, name));
            match fs::symlink_metadata(&abs) {
                Ok(m) => {
                    let ino = st.ino_for(rel);
                    reply.entry(&TTL, &st.attr(ino, &m), Generation(0));
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded!(self, reply, |st| {
            let m = match fh.and_then(|fh| st.handles.get(&fh.0)) {
                Some(h) => h.file.metadata(),
                None => match st.abs(ino.0) {
                    Ok(p) => fs::symlink_metadata(p),
                    Err(e) => return reply.error(e),
                },
            };
            match m {
                Ok(m) => reply.attr(&TTL, &st.attr(ino.0, &m)),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded!(self, reply, |st| {
            let path = or_reply!(reply, st.abs(ino.0));
            let result = (|| -> Result<(), Errno> {
                if let Some(size) = size {
                    let rel = st.rel(ino.0)?.clone();
                    let fire = self.before(st, Op::Write, &[&rel])?;
                    let file = match fh.and_then(|fh| st.handles.get(&fh.0)) {
                        Some(h) => h.file.try_clone().map_err(errno)?,
                        None => OpenOptions::new().write(true).open(&path).map_err(errno)?,
                    };
                    st.journal
                        .before_truncate(ino.0, &file, size)
                        .map_err(errno)?;
                    file.set_len(size).map_err(errno)?;
                    st.counts.writes += 1;
                    self.after(st, fire);
                }
                if let Some(mode) = mode {
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                        .map_err(errno)?;
                }
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                return reply.error(e);
            }
            match fs::symlink_metadata(&path) {
                Ok(m) => reply.attr(&TTL, &st.attr(ino.0, &m)),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded!(self, reply, |st| {
            match st.abs(ino.0).and_then(|p| fs::read_link(p).map_err(errno)) {
                Ok(t) => reply.data(t.as_os_str().as_bytes()),
                Err(e) => reply.error(e),
            }
        })
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded!(self, reply, |st| {
            let (abs, rel) = or_reply!(reply, st.child(parent.0, name));
            let fire = or_reply!(reply, self.before(st, Op::Create, &[&rel]));
            let made = fs::create_dir(&abs).and_then(|()| {
                fs::set_permissions(&abs, fs::Permissions::from_mode(mode & !umask & 0o7777))?;
                fs::symlink_metadata(&abs)
            });
            match made {
                Ok(m) => {
                    st.journal.created(parent.0, &abs);
                    st.counts.entries_changed += 1;
                    let ino = st.ino_for(rel);
                    reply.entry(&TTL, &st.attr(ino, &m), Generation(0));
                }
                Err(e) => reply.error(errno(e)),
            }
            self.after(st, fire);
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply)
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply)
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        guarded!(self, reply, |st| {
            let (abs, rel) = or_reply!(reply, st.child(parent.0, link_name));
            match std::os::unix::fs::symlink(target, &abs).and_then(|()| fs::symlink_metadata(&abs))
            {
                Ok(m) => {
                    st.journal.created(parent.0, &abs);
                    st.counts.entries_changed += 1;
                    let ino = st.ino_for(rel);
                    reply.entry(&TTL, &st.attr(ino, &m), Generation(0));
                }
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded!(self, reply, |st| {
            if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
                return reply.error(Errno::EINVAL);
            }
            let (from, from_rel) = or_reply!(reply, st.child(parent.0, name));
            let (to, to_rel) = or_reply!(reply, st.child(newparent.0, newname));
            let fire = or_reply!(reply, self.before(st, Op::Rename, &[&from_rel, &to_rel]));
            let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            match st.journal.rename(newparent.0, &from, &to, noreplace) {
                Ok(()) => {
                    st.move_paths(&from_rel, &to_rel);
                    st.counts.entries_changed += 1;
                    reply.ok();
                }
                Err(e) => reply.error(errno(e)),
            }
            self.after(st, fire);
        })
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // One name per file keeps undo by path exact; RocksDB copies instead.
        reply.error(Errno::EOPNOTSUPP);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded!(self, reply, |st| {
            let path = or_reply!(reply, st.abs(ino.0));
            let file = match open_options(flags.0).open(&path) {
                Ok(f) => f,
                Err(e) => return reply.error(errno(e)),
            };
            if flags.0 & libc::O_TRUNC != 0 {
                let truncated = st
                    .journal
                    .before_truncate(ino.0, &file, 0)
                    .and_then(|()| file.set_len(0));
                if let Err(e) = truncated {
                    return reply.error(errno(e));
                }
            }
            let fh = st.open_handle(ino.0, file);
            reply.opened(FileHandle(fh), FopenFlags::empty());
        })
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded!(self, reply, |st| {
            let h = or_reply!(reply, st.handle(fh));
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match h.file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return reply.error(errno(e)),
                }
            }
            reply.data(&buf[..got]);
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded!(self, reply, |st| {
            let (ino, file) = or_reply!(
                reply,
                st.handle(fh)
                    .and_then(|h| Ok((h.ino, h.file.try_clone().map_err(errno)?)))
            );
            let rel = st.rel(ino).cloned().unwrap_or_default();
            let fire = or_reply!(reply, self.before(st, Op::Write, &[&rel]));
            let written = st
                .journal
                .before_write(ino, &file, offset, data.len() as u64)
                .and_then(|()| file.write_all_at(data, offset));
            match written {
                Ok(()) => {
                    st.counts.writes += 1;
                    st.counts.bytes_written += data.len() as u64;
                    reply.written(data.len() as u32);
                }
                Err(e) => reply.error(errno(e)),
            }
            self.after(st, fire);
        })
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a sync.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Released even when frozen: the descriptor is the kernel's to drop.
        self.shared.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, Op::Fsync, reply)
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded!(self, reply, |_st| {
            reply.opened(FileHandle(0), FopenFlags::empty());
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded!(self, reply, |st| {
            let rel = match st.rel(ino.0) {
                Ok(r) => r.clone(),
                Err(e) => return reply.error(e),
            };
            let mut names: Vec<(std::ffi::OsString, FileType)> =
                match fs::read_dir(st.root.join(&rel)) {
                    Ok(rd) => rd
                        .filter_map(|e| e.ok())
                        .map(|e| {
                            let kind = e
                                .file_type()
                                .ok()
                                .and_then(FileType::from_std)
                                .unwrap_or(FileType::RegularFile);
                            (e.file_name(), kind)
                        })
                        .collect(),
                    Err(e) => return reply.error(errno(e)),
                };
            names.sort_by(|a, b| a.0.cmp(&b.0));
            let parent_ino = rel
                .parent()
                .and_then(|p| st.inos.get(p).copied())
                .unwrap_or(ino.0);
            let mut entries = vec![
                (ino.0, FileType::Directory, std::ffi::OsString::from(".")),
                (
                    parent_ino,
                    FileType::Directory,
                    std::ffi::OsString::from(".."),
                ),
            ];
            for (name, kind) in names {
                let child = st.ino_for(rel.join(&name));
                entries.push((child, kind, name));
            }
            for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                    break;
                }
            }
            reply.ok();
        })
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, Op::FsyncDir, reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded!(self, reply, |st| {
            let Ok(root) = std::ffi::CString::new(st.root.as_os_str().as_bytes()) else {
                return reply.error(Errno::EINVAL);
            };
            // SAFETY: statvfs writes into the zeroed struct we pass, and the
            // path is a valid NUL-terminated string.
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(root.as_ptr(), &mut s) } != 0 {
                return reply.error(errno(io::Error::last_os_error()));
            }
            reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            );
        })
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded!(self, reply, |st| {
            let (abs, rel) = or_reply!(reply, st.child(parent.0, name));
            let fire = or_reply!(reply, self.before(st, Op::Create, &[&rel]));
            let existed = fs::symlink_metadata(&abs).is_ok();
            if existed && flags & libc::O_EXCL != 0 {
                return reply.error(Errno::EEXIST);
            }
            let mut o = open_options(flags);
            o.create(true).mode(mode & !umask & 0o7777);
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                // Creating needs write access to the backing file.
                o.write(true);
            }
            let file = match o.open(&abs) {
                Ok(f) => f,
                Err(e) => return reply.error(errno(e)),
            };
            let ino = st.ino_for(rel);
            if existed {
                if flags & libc::O_TRUNC != 0 {
                    let t = st
                        .journal
                        .before_truncate(ino, &file, 0)
                        .and_then(|()| file.set_len(0));
                    if let Err(e) = t {
                        return reply.error(errno(e));
                    }
                }
            } else {
                st.journal.created(parent.0, &abs);
                st.counts.entries_changed += 1;
            }
            let m = match file.metadata() {
                Ok(m) => m,
                Err(e) => return reply.error(errno(e)),
            };
            let attr = st.attr(ino, &m);
            let fh = st.open_handle(ino, file);
            reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            );
            self.after(st, fire);
        })
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded!(self, reply, |st| {
            let (ino, file) = or_reply!(
                reply,
                st.handle(fh)
                    .and_then(|h| Ok((h.ino, h.file.try_clone().map_err(errno)?)))
            );
            // Preallocation changes no bytes (and a size it extends goes back
            // with the file's length); punching or zeroing does.
            let changes = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
            let saved =
                st.journal
                    .before_write(ino, &file, offset, if changes { length } else { 0 });
            if let Err(e) = saved {
                return reply.error(errno(e));
            }
            // SAFETY: a plain syscall on a descriptor we own.
            let r = unsafe {
                libc::fallocate(
                    file.as_raw_fd(),
                    mode,
                    offset as libc::off_t,
                    length as libc::off_t,
                )
            };
            if r != 0 {
                return reply.error(errno(io::Error::last_os_error()));
            }
            reply.ok();
        })
    }
}

impl PowerFs {
    /// An fsync of a file (its data durable) or of a directory (its entries).
    fn sync(&self, ino: INodeNo, op: Op, reply: ReplyEmpty) {
        guarded!(self, reply, |st| {
            let rel = st.rel(ino.0).cloned().unwrap_or_default();
            let fire = or_reply!(reply, self.before(st, op, &[&rel]));
            if op == Op::FsyncDir {
                st.journal.dir_synced(ino.0);
                st.counts.dir_fsyncs += 1;
            } else {
                st.journal.file_synced(ino.0);
                st.counts.fsyncs += 1;
            }
            reply.ok();
            self.after(st, fire);
        })
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, is_dir: bool, reply: ReplyEmpty) {
        guarded!(self, reply, |st| {
            let (abs, rel) = or_reply!(reply, st.child(parent.0, name));
            let fire = or_reply!(reply, self.before(st, Op::Unlink, &[&rel]));
            match st.journal.remove(parent.0, &abs, is_dir) {
                Ok(()) => {
                    st.forget_path(&rel);
                    st.counts.entries_changed += 1;
                    reply.ok();
                }
                Err(e) => reply.error(errno(e)),
            }
            self.after(st, fire);
        })
    }
}

/// A mounted power-cut file system.
pub struct Mount {
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

/// Why the power nemesis cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("mounting FUSE file systems needs root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (no FUSE in this kernel or container)".into());
    }
    None
}

impl Mount {
    /// Mounts `disk/data` (created if missing) at `mountpoint`; `disk/trash`
    /// holds files unlinked since their directory's last fsync.
    pub fn new(disk: &Path, mountpoint: &Path) -> io::Result<Mount> {
        let root = disk.join("data");
        fs::create_dir_all(&root)?;
        fs::create_dir_all(mountpoint)?;
        let journal = Journal::new(&disk.join("trash"))?;
        let mut paths = HashMap::new();
        let mut inos = HashMap::new();
        paths.insert(INodeNo::ROOT.0, PathBuf::new());
        inos.insert(PathBuf::new(), INodeNo::ROOT.0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                root,
                paths,
                inos,
                next_ino: INodeNo::ROOT.0 + 1,
                handles: HashMap::new(),
                next_fh: 1,
                journal,
                frozen: false,
                trigger: None,
                counts: Counts::default(),
            }),
            cut: Mutex::new(None),
            cuts: AtomicU64::new(0),
        });
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("powerfs".into()),
            MountOption::Subtype("powerfs".into()),
        ];
        config.n_threads = Some(1);
        let session = fuser::spawn_mount(
            PowerFs {
                shared: shared.clone(),
            },
            mountpoint,
            &config,
        )?;
        Ok(Mount {
            shared,
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// Cuts the power now: forgets everything not durable, and fails every
    /// later operation. Returns what was forgotten (an earlier cut's report
    /// if one already happened).
    pub fn cut(&self) -> Cut {
        let mut st = self.shared.lock();
        if st.frozen {
            if let Some(c) = self
                .shared
                .cut
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return c;
            }
        }
        self.shared.cut_locked(&mut st, None)
    }

    /// Arms a crash point (replacing any armed one).
    pub fn arm(&self, trigger: Trigger) {
        let mut st = self.shared.lock();
        st.trigger = (!trigger.steps.is_empty()).then_some((trigger, 0));
    }

    /// Disarms the crash point, if it has not fired.
    pub fn disarm(&self) {
        self.shared.lock().trigger = None;
    }

    /// The cut, once one happened.
    pub fn cut_happened(&self) -> Option<Cut> {
        if self.shared.cuts.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.shared
            .cut
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Operation counts, and what is not durable now (bytes, entries).
    pub fn counts(&self) -> (Counts, (u64, usize)) {
        let st = self.shared.lock();
        (st.counts.clone(), st.journal.unsynced())
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (detaching lazily if something still holds it open).
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Stop serving first: a frozen file system answers EIO meanwhile.
        // The session's thread ends with ECONNABORTED when the kernel tore
        // the connection down first: unmounted all the same.
        let ended = session
            .umount_and_join()
            .or_else(|e| match e.raw_os_error() {
                Some(libc::ECONNABORTED) | Some(libc::ENODEV) => Ok(()),
                _ => Err(e),
            });
        if let Err(e) = ended {
            let Ok(c) = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()) else {
                return Err(e);
            };
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}
