//! The power-cut file system, mounted for real (root and /dev/fuse; where
//! FUSE is unavailable the test says why and checks nothing else).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use jepsen::powerfs::{self, Mount, Op, Step, Trigger};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn setup(name: &str) -> Option<(Dir, PathBuf, PathBuf)> {
    if let Some(why) = powerfs::unavailable() {
        eprintln!("powerfs test skipped: {why}");
        return None;
    }
    let root = std::env::temp_dir().join(format!("powerfs-it-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let disk = root.join("disk");
    let mnt = root.join("mnt");
    Some((Dir(root), disk, mnt))
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

#[test]
fn a_cut_keeps_exactly_what_was_fsynced() {
    let Some((_dir, disk, mnt)) = setup("cut") else {
        return;
    };
    let m = Mount::new(&disk, &mnt).unwrap();
    // Durable: a directory, a file in it with synced data, both entries synced.
    fs::create_dir(mnt.join("db")).unwrap();
    sync_dir(&mnt);
    let mut f = File::create(mnt.join("db/wal")).unwrap();
    f.write_all(b"synced;").unwrap();
    f.sync_all().unwrap();
    sync_dir(&mnt.join("db"));
    // Not durable: more data in it, a new file whose data (not name) is
    // synced, a rename over a synced file, an unlink.
    fs::write(mnt.join("db/CURRENT"), b"one").unwrap();
    File::open(mnt.join("db/CURRENT"))
        .unwrap()
        .sync_all()
        .unwrap();
    sync_dir(&mnt.join("db"));
    f.write_all(b"lost").unwrap();
    let mut g = File::create(mnt.join("db/new")).unwrap();
    g.write_all(b"x").unwrap();
    g.sync_all().unwrap();
    fs::write(mnt.join("db/CURRENT.tmp"), b"two").unwrap();
    fs::rename(mnt.join("db/CURRENT.tmp"), mnt.join("db/CURRENT")).unwrap();
    assert_eq!(fs::read(mnt.join("db/CURRENT")).unwrap(), b"two");
    let (counts, (unsynced_bytes, pending)) = m.counts();
    assert!(counts.fsyncs >= 3 && counts.dir_fsyncs >= 3, "{counts:?}");
    assert!(unsynced_bytes >= 4 && pending >= 2);

    let cut = m.cut();
    assert!(cut.report.errors.is_empty(), "{:?}", cut.report.errors);
    assert!(cut.fired_by.is_none());
    // Everything fails from now on, as on a machine without power.
    let e = fs::read(mnt.join("db/wal")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    drop(f);
    drop(g);
    m.unmount().unwrap();

    let back = disk.join("data/db");
    assert_eq!(fs::read(back.join("wal")).unwrap(), b"synced;");
    assert!(!back.join("new").exists());
    assert_eq!(fs::read(back.join("CURRENT")).unwrap(), b"one");
    assert!(!back.join("CURRENT.tmp").exists());

    // Mounted again, it shows the same, and works.
    let m = Mount::new(&disk, &mnt).unwrap();
    assert_eq!(fs::read(mnt.join("db/wal")).unwrap(), b"synced;");
    let mut names: Vec<String> = fs::read_dir(mnt.join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["CURRENT", "wal"]);
    fs::remove_file(mnt.join("db/wal")).unwrap();
    m.unmount().unwrap();
    // The unlink was not durable either: a cut-free unmount keeps what is on
    // the backing disk as it is (the file is in the trash until its
    // directory is fsynced), so only a cut would bring it back.
    assert!(!disk.join("data/db/wal").exists());
}

#[test]
fn an_armed_crash_point_fires_before_its_operation() {
    let Some((_dir, disk, mnt)) = setup("trigger") else {
        return;
    };
    let m = Mount::new(&disk, &mnt).unwrap();
    m.arm(Trigger {
        steps: vec![
            Step {
                op: Op::Rename,
                path_contains: "current.snap".into(),
            },
            Step {
                op: Op::Fsync,
                path_contains: ".log".into(),
            },
        ],
        after: false,
    });
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(mnt.join("000001.log"))
        .unwrap();
    sync_dir(&mnt);
    log.write_all(b"a").unwrap();
    // The first step has not been seen: this fsync does not fire.
    log.sync_all().unwrap();
    fs::write(mnt.join("build.tmp"), b"snap").unwrap();
    fs::rename(mnt.join("build.tmp"), mnt.join("current.snap")).unwrap();
    log.write_all(b"b").unwrap();
    assert!(m.cut_happened().is_none());
    let e = log.sync_all().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let cut = m.cut_happened().expect("the trigger fired");
    assert!(cut.fired_by.unwrap().contains("000001.log"));
    drop(log);
    m.unmount().unwrap();
    // The synced "a" survives, "b" and the unsynced rename do not.
    assert_eq!(fs::read(disk.join("data/000001.log")).unwrap(), b"a");
    assert!(!disk.join("data/current.snap").exists());
}

#[test]
fn rocksdb_keeps_synced_writes_and_loses_unsynced_ones() {
    let Some((_dir, disk, mnt)) = setup("rocksdb") else {
        return;
    };
    let m = Mount::new(&disk, &mnt).unwrap();
    {
        // RocksDB fsyncs the entries it makes inside its directory, not the
        // directory's own entry in its parent: that is the caller's to make
        // durable (storage does it with `files::create_dir_durable`). Without
        // it, this cut takes the whole database away.
        fs::create_dir(mnt.join("db")).unwrap();
        sync_dir(&mnt);
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, mnt.join("db")).unwrap();
        let mut synced = rocksdb::WriteOptions::default();
        synced.set_sync(true);
        db.put_opt(b"k1", b"synced", &synced).unwrap();
        db.put(b"k2", b"not synced").unwrap();
        // Flushed to the page cache, not fsynced: a kill -9 would keep it.
        db.flush_wal(false).unwrap();
        m.cut();
        drop(db);
    }
    m.unmount().unwrap();
    let m = Mount::new(&disk, &mnt).unwrap();
    {
        let db = rocksdb::DB::open(&rocksdb::Options::default(), mnt.join("db")).unwrap();
        assert_eq!(db.get(b"k1").unwrap().as_deref(), Some(&b"synced"[..]));
        assert_eq!(db.get(b"k2").unwrap(), None);
    }
    m.unmount().unwrap();
}
