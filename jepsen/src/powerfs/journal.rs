//! The durability model of the power-cut file system: what a crash keeps.
//!
//! Every change goes straight to the backing directory (so reads need no
//! cache), and the journal keeps what it takes to undo what is not durable:
//!
//! - **data**: for each file written or truncated since its last `fsync`
//!   (`fdatasync` counts the same), its length then and the original bytes of
//!   every 4 KiB page overwritten below that length. `fsync` of the file drops
//!   the record; a cut writes the pages back and truncates to the old length.
//! - **directory entries**: each create (file, directory, symlink), unlink,
//!   rmdir and rename is pending until its directory is fsynced — for a rename,
//!   the directory it renames into (POSIX promises an entry only then; ext4
//!   usually commits it sooner, other file systems do not). An unlinked or
//!   replaced file is moved to a trash directory, not deleted, until then. A
//!   cut undoes the pending entries newest first: created ones are removed
//!   (with their contents), renames go back, removed ones come back.
//!
//! So after a cut the backing directory holds exactly what was fsynced, as
//! after a power cut on a disk that honours flushes and reorders nothing else
//! in a way a program could rely on. Hard links are not offered (see the file
//! system), so a file has one name and undoing by path is exact.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Granularity of saved original data.
pub const PAGE: u64 = 4096;

/// A file's state at its last fsync, kept while it has unsynced changes.
struct Unsynced {
    /// An open descriptor of the backing file: valid across renames and
    /// unlinks (the file is only moved to the trash), so it can be restored.
    file: File,
    /// Its length at the last fsync (or when first seen).
    durable_len: u64,
    /// Original bytes of each page (by page number) changed since, below
    /// `durable_len`.
    pages: BTreeMap<u64, Vec<u8>>,
    /// Bytes written since the last fsync.
    bytes: u64,
}

/// How to undo one directory change.
#[derive(Debug)]
enum Undo {
    /// A file, directory or symlink was created: remove it.
    Remove(PathBuf),
    /// An empty directory was removed: make it again.
    MakeDir(PathBuf),
    /// A file was unlinked, or replaced by a rename: move it back from the trash.
    PutBack { path: PathBuf, trash: PathBuf },
    /// `from` was renamed to `to`: rename it back.
    RenameBack { from: PathBuf, to: PathBuf },
}

/// A directory change not yet durable: durable once `dir` is fsynced.
#[derive(Debug)]
struct Pending {
    dir: u64,
    undo: Undo,
}

/// What a cut forgot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CutReport {
    /// Files whose data went back to its last fsync.
    pub files_rolled_back: usize,
    /// Bytes written to those files since their last fsync.
    pub bytes_forgotten: u64,
    /// Directory changes undone (creates, unlinks, renames).
    pub entries_undone: usize,
    /// Undo steps that could not be applied (should stay empty).
    pub errors: Vec<String>,
}

/// Undo records of everything not yet durable. Files and directories are
/// named by the file system's keys (inode numbers); paths are absolute paths
/// in the backing directory.
pub struct Journal {
    trash: PathBuf,
    trash_seq: u64,
    files: HashMap<u64, Unsynced>,
    pending: Vec<Pending>,
}

impl Journal {
    /// A journal whose unlinked files wait in `trash` (created, emptied;
    /// must be on the backing directory's file system, outside it).
    pub fn new(trash: &Path) -> io::Result<Journal> {
        if trash.exists() {
            fs::remove_dir_all(trash)?;
        }
        fs::create_dir_all(trash)?;
        Ok(Journal {
            trash: trash.to_path_buf(),
            trash_seq: 0,
            files: HashMap::new(),
            pending: Vec::new(),
        })
    }

    fn record(&mut self, key: u64, file: &File) -> io::Result<&mut Unsynced> {
        use std::collections::hash_map::Entry;
        Ok(match self.files.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let durable_len = file.metadata()?.len();
                v.insert(Unsynced {
                    file: file.try_clone()?,
                    durable_len,
                    pages: BTreeMap::new(),
                    bytes: 0,
                })
            }
        })
    }

    /// Saves the original bytes of `off..off + len` of `file` (as of its last
    /// fsync) before they are overwritten.
    pub fn before_write(&mut self, key: u64, file: &File, off: u64, len: u64) -> io::Result<()> {
        let u = self.record(key, file)?;
        u.bytes += len;
        save_pages(u, off, off.saturating_add(len))
    }

    /// Saves what a truncation to `new_len` takes away.
    pub fn before_truncate(&mut self, key: u64, file: &File, new_len: u64) -> io::Result<()> {
        let u = self.record(key, file)?;
        let end = u.durable_len;
        save_pages(u, new_len, end)
    }

    /// The file was fsynced: its data is durable.
    pub fn file_synced(&mut self, key: u64) {
        self.files.remove(&key);
    }

    /// `path` was created in directory `dir`.
    pub fn created(&mut self, dir: u64, path: &Path) {
        self.pending.push(Pending {
            dir,
            undo: Undo::Remove(path.to_path_buf()),
        });
    }

    /// Removes `path` from directory `dir` (a file is moved to the trash; a
    /// directory must be empty).
    pub fn remove(&mut self, dir: u64, path: &Path, is_dir: bool) -> io::Result<()> {
        if is_dir {
            fs::remove_dir(path)?;
            self.pending.push(Pending {
                dir,
                undo: Undo::MakeDir(path.to_path_buf()),
            });
            return Ok(());
        }
        let trash = self.next_trash();
        fs::rename(path, &trash)?;
        self.pending.push(Pending {
            dir,
            undo: Undo::PutBack {
                path: path.to_path_buf(),
                trash,
            },
        });
        Ok(())
    }

    /// Renames `from` to `to` (in directory `to_dir`), replacing what `to` was
    /// unless `noreplace`.
    pub fn rename(
        &mut self,
        to_dir: u64,
        from: &Path,
        to: &Path,
        noreplace: bool,
    ) -> io::Result<()> {
        fs::symlink_metadata(from)?;
        let replaced = match fs::symlink_metadata(to) {
            Ok(_) if from == to => return Ok(()),
            Ok(_) if noreplace => return Err(io::Error::from_raw_os_error(libc::EEXIST)),
            Ok(m) => {
                if m.is_dir() && fs::read_dir(to)?.next().is_some() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
                }
                let trash = self.next_trash();
                fs::rename(to, &trash)?;
                Some(trash)
            }
            Err(_) => None,
        };
        if let Err(e) = fs::rename(from, to) {
            if let Some(trash) = &replaced {
                fs::rename(trash, to)?;
            }
            return Err(e);
        }
        if let Some(trash) = replaced {
            self.pending.push(Pending {
                dir: to_dir,
                undo: Undo::PutBack {
                    path: to.to_path_buf(),
                    trash,
                },
            });
        }
        self.pending.push(Pending {
            dir: to_dir,
            undo: Undo::RenameBack {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            },
        });
        Ok(())
    }

    /// Directory `dir` was fsynced: its pending changes are durable (files
    /// they removed are deleted for good).
    pub fn dir_synced(&mut self, dir: u64) {
        let mut keep = Vec::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.dir != dir {
                keep.push(p);
            } else if let Undo::PutBack { trash, .. } = &p.undo {
                let _ = remove_any(trash);
            }
        }
        self.pending = keep;
    }

    /// Bytes written and not yet fsynced, and directory changes not yet durable.
    pub fn unsynced(&self) -> (u64, usize) {
        (
            self.files.values().map(|u| u.bytes).sum(),
            self.pending.len(),
        )
    }

    /// Forgets everything not durable: data back to each file's last fsync,
    /// then pending directory changes undone, newest first.
    pub fn cut(&mut self) -> CutReport {
        let mut report = CutReport::default();
        for (_, u) in self.files.drain() {
            report.files_rolled_back += 1;
            report.bytes_forgotten += u.bytes;
            let restored = u
                .pages
                .iter()
                .try_for_each(|(p, bytes)| u.file.write_all_at(bytes, p * PAGE))
                .and_then(|()| u.file.set_len(u.durable_len));
            if let Err(e) = restored {
                report.errors.push(format!("restoring a file's data: {e}"));
            }
        }
        while let Some(p) = self.pending.pop() {
            report.entries_undone += 1;
            let undone = match &p.undo {
                Undo::Remove(path) => remove_any(path),
                Undo::MakeDir(path) => fs::create_dir(path),
                Undo::PutBack { path, trash } => {
                    if fs::symlink_metadata(path).is_ok() {
                        Err(io::Error::other("something else took its name"))
                    } else {
                        fs::rename(trash, path)
                    }
                }
                Undo::RenameBack { from, to } => {
                    if fs::symlink_metadata(from).is_ok() {
                        Err(io::Error::other("something else took its old name"))
                    } else {
                        fs::rename(to, from)
                    }
                }
            };
            if let Err(e) = undone {
                report.errors.push(format!("undoing {:?}: {e}", p.undo));
            }
        }
        report
    }

    fn next_trash(&mut self) -> PathBuf {
        self.trash_seq += 1;
        self.trash.join(format!("{}", self.trash_seq))
    }
}

/// Saves the original pages of `from..to`, as far as they lie below the
/// durable length and are not saved yet.
fn save_pages(u: &mut Unsynced, from: u64, to: u64) -> io::Result<()> {
    let end = to.min(u.durable_len);
    if from >= end {
        return Ok(());
    }
    for p in from / PAGE..=(end - 1) / PAGE {
        if u.pages.contains_key(&p) {
            continue;
        }
        let start = p * PAGE;
        // `end > start` here, and a page is at most PAGE bytes.
        let n = (u.durable_len - start).min(PAGE) as usize;
        let mut buf = vec![0; n];
        // Every byte below `durable_len` is still there: whatever shortened
        // the file saved its pages first.
        u.file.read_exact_at(&mut buf, start)?;
        u.pages.insert(p, buf);
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    struct Dirs {
        root: PathBuf,
        data: PathBuf,
    }

    fn dirs(name: &str) -> (Dirs, Journal) {
        let root = std::env::temp_dir().join(format!("powerfs-j-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let data = root.join("data");
        fs::create_dir_all(&data).unwrap();
        let j = Journal::new(&root.join("trash")).unwrap();
        (Dirs { root, data }, j)
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn rw(path: &Path) -> File {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    fn write(j: &mut Journal, key: u64, f: &File, off: u64, data: &[u8]) {
        j.before_write(key, f, off, data.len() as u64).unwrap();
        f.write_all_at(data, off).unwrap();
    }

    #[test]
    fn unsynced_data_goes_back_to_the_last_fsync() {
        let (d, mut j) = dirs("data");
        let p = d.data.join("f");
        let f = rw(&p);
        // 10 000 bytes synced: two full pages and part of a third.
        write(&mut j, 1, &f, 0, &vec![b'a'; 10_000]);
        j.file_synced(1);
        // Overwrite across the second and third page, and append.
        write(&mut j, 1, &f, 5000, &vec![b'b'; 6000]);
        write(&mut j, 1, &f, 6000, b"cc");
        let r = j.cut();
        assert_eq!(r.files_rolled_back, 1);
        assert_eq!(r.bytes_forgotten, 6002);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(fs::read(&p).unwrap(), vec![b'a'; 10_000]);
    }

    #[test]
    fn synced_data_survives_and_truncation_is_undone() {
        let (d, mut j) = dirs("trunc");
        let p = d.data.join("f");
        let f = rw(&p);
        write(&mut j, 7, &f, 0, b"hello world");
        j.file_synced(7);
        j.before_truncate(7, &f, 3).unwrap();
        f.set_len(3).unwrap();
        write(&mut j, 7, &f, 3, b"p!");
        assert_eq!(fs::read(&p).unwrap(), b"help!");
        j.cut();
        assert_eq!(fs::read(&p).unwrap(), b"hello world");
    }

    #[test]
    fn a_create_without_a_directory_fsync_is_forgotten_even_if_its_data_was_synced() {
        let (d, mut j) = dirs("create");
        let p = d.data.join("new");
        let f = rw(&p);
        j.created(100, &p);
        write(&mut j, 2, &f, 0, b"data");
        j.file_synced(2);
        // Another directory's fsync does not help.
        j.dir_synced(101);
        let r = j.cut();
        assert_eq!(r.entries_undone, 1);
        assert!(!p.exists());
    }

    #[test]
    fn a_create_made_durable_by_its_directory_keeps_only_synced_data() {
        let (d, mut j) = dirs("durable");
        let p = d.data.join("new");
        let f = rw(&p);
        j.created(100, &p);
        j.dir_synced(100);
        write(&mut j, 2, &f, 0, b"unsynced");
        j.cut();
        // The name survives; its data was never fsynced.
        assert_eq!(fs::read(&p).unwrap(), b"");
    }

    #[test]
    fn an_unsynced_rename_over_a_file_comes_back_undone() {
        let (d, mut j) = dirs("rename");
        let current = d.data.join("CURRENT");
        let tmp = d.data.join("CURRENT.tmp");
        fs::write(&current, b"old").unwrap();
        let f = rw(&tmp);
        j.created(100, &tmp);
        write(&mut j, 3, &f, 0, b"new");
        j.file_synced(3);
        j.rename(100, &tmp, &current, false).unwrap();
        assert_eq!(fs::read(&current).unwrap(), b"new");
        let r = j.cut();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(fs::read(&current).unwrap(), b"old");
        assert!(!tmp.exists());
        // Nothing is left in the trash.
        assert_eq!(fs::read_dir(d.root.join("trash")).unwrap().count(), 0);
    }

    #[test]
    fn a_rename_made_durable_stays_and_the_replaced_file_is_gone() {
        let (d, mut j) = dirs("rename-durable");
        let current = d.data.join("CURRENT");
        let tmp = d.data.join("CURRENT.tmp");
        fs::write(&current, b"old").unwrap();
        fs::write(&tmp, b"new").unwrap();
        j.rename(100, &tmp, &current, false).unwrap();
        j.dir_synced(100);
        let r = j.cut();
        assert_eq!(r.entries_undone, 0);
        assert_eq!(fs::read(&current).unwrap(), b"new");
        assert_eq!(fs::read_dir(d.root.join("trash")).unwrap().count(), 0);
        // A rename with noreplace over an existing name is refused.
        fs::write(&tmp, b"x").unwrap();
        let e = j.rename(100, &tmp, &current, true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    }

    #[test]
    fn unlinks_and_directories_come_back_in_order() {
        let (d, mut j) = dirs("unlink");
        let sub = d.data.join("sub");
        fs::create_dir(&sub).unwrap();
        j.created(100, &sub);
        let inner = sub.join("f");
        fs::write(&inner, b"x").unwrap();
        j.created(200, &inner);
        j.dir_synced(200);
        // The file is durable in `sub`, but `sub` itself is not in its parent.
        let r = j.cut();
        assert_eq!(r.entries_undone, 1);
        assert!(!sub.exists());

        let keep = d.data.join("keep");
        fs::write(&keep, b"synced").unwrap();
        let f = File::open(&keep).unwrap();
        j.remove(100, &keep, false).unwrap();
        assert!(!keep.exists());
        // The open descriptor still reads it (it is in the trash).
        let mut b = [0u8; 6];
        f.read_exact_at(&mut b, 0).unwrap();
        let empty = d.data.join("empty");
        fs::create_dir(&empty).unwrap();
        j.remove(100, &empty, true).unwrap();
        j.cut();
        assert_eq!(fs::read(&keep).unwrap(), b"synced");
        assert!(empty.is_dir());
    }
}
