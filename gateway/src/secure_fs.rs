//! Files and folders only the gateway's user may read: the data directory, signing keys, token files.
//!
//! Unix gets 0700 folders and 0600 files at creation (no window where they are world-readable); other systems
//! fall back to the default ACLs of the user's profile folders.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates a folder (and its parents) readable only by the current user.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Writes a new file readable only by the current user; fails if it already exists.
pub fn write_private_file_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Writes (or replaces) a file readable only by the current user, atomically via a rename.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    write_private_file_new(&tmp, contents)?;
    fs::rename(&tmp, path)
}
