//! Directory entries made durable: a file or directory a crash must not lose
//! needs its parent directory fsynced after it appears (POSIX promises the
//! entry only then; ext4 usually commits it sooner, other file systems do not).

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Fsyncs a directory, so that entries created, renamed or removed in it are
/// durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing ancestors, fsyncing each new directory's
/// parent, so that a crash cannot take the directory (and what is later made
/// durable inside it) away. Directories that exist are left alone.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Made by someone else meanwhile: theirs to make durable, but syncing
        // the parent again costs little.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_ancestors_and_leaves_existing_ones() {
        let root = std::env::temp_dir().join(format!("bo-files-{}", std::process::id()));
        let deep = root.join("a/b/c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        // Idempotent, and a file in the way is an error rather than a panic.
        create_dir_durable(&deep).unwrap();
        fs::write(root.join("a/file"), b"x").unwrap();
        assert!(create_dir_durable(&root.join("a/file/d")).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
