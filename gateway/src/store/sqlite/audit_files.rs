//! The SQLite store's audit key and signed head: 0600 files in `<data-dir>/keys/`, beside the JWT signing keys and
//! outside the database whose rows they vouch for (whoever can roll them back can also read the key).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::audit::{AuditKey, Checkpoint};
use crate::secure_fs::{create_private_dir, write_private_file, write_private_file_new};
use crate::store::StoreError;

/// The audit log's HMAC key (hex).
pub const KEY_FILE: &str = "audit.key";
/// The signed head of the audit log (JSON `{"id", "hash", "mac"}`). A backup leaves it out: a restored database is
/// older than the head of the moment, and the restored gateway checkpoints its own head at start.
pub const HEAD_FILE: &str = "audit.head";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

fn corrupt(path: &Path, why: &str) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(ErrorKind::InvalidData, why.to_string()),
    }
}

/// The audit key under `keys_dir`, created (32 random bytes) if there is none. Two processes starting together
/// end up with the same key: the file appears whole or not at all (a hard link of a finished file never replaces
/// an existing one).
pub fn load_or_create_key(keys_dir: &Path) -> Result<AuditKey, StoreError> {
    create_private_dir(keys_dir).map_err(io_error(keys_dir))?;
    let path = keys_dir.join(KEY_FILE);
    if !path.exists() {
        let fresh = keys_dir.join(format!("{KEY_FILE}.new-{}", std::process::id()));
        let _ = fs::remove_file(&fresh);
        write_private_file_new(&fresh, hex::encode(AuditKey::generate().as_bytes()).as_bytes())
            .map_err(io_error(&fresh))?;
        let linked = fs::hard_link(&fresh, &path);
        let _ = fs::remove_file(&fresh);
        match linked {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_error(&path)(error)),
        }
    }
    let text = fs::read_to_string(&path).map_err(io_error(&path))?;
    let bytes = hex::decode(text.trim()).map_err(|_| corrupt(&path, "the audit key is not hex"))?;
    AuditKey::from_bytes(&bytes).ok_or_else(|| corrupt(&path, "the audit key must be 32 bytes"))
}

/// Where the head is kept.
pub fn head_path(keys_dir: &Path) -> PathBuf {
    keys_dir.join(HEAD_FILE)
}

/// The signed head, if one was written. An unreadable file reads as a head with no signature, which verification
/// reports, rather than as no head.
pub fn read_head(keys_dir: &Path) -> Result<Option<Checkpoint>, StoreError> {
    let path = head_path(keys_dir);
    match fs::read(&path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).unwrap_or(Checkpoint { id: 0, hash: String::new(), mac: None })))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(&path)(error)),
    }
}

/// Replaces the head (atomically: readers see the old one or the new one).
pub fn write_head(keys_dir: &Path, head: &Checkpoint) -> Result<(), StoreError> {
    let path = head_path(keys_dir);
    let text = serde_json::to_vec(head).map_err(|e| corrupt(&path, &e.to_string()))?;
    write_private_file(&path, &text).map_err(io_error(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Signed;

    #[test]
    fn the_key_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let first = load_or_create_key(&keys).unwrap();
        let again = load_or_create_key(&keys).unwrap();
        assert_eq!(first.as_bytes(), again.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(keys.join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(fs::read_dir(&keys).unwrap().count(), 1, "no temporary file is left behind");
    }

    #[test]
    fn the_head_round_trips_and_a_damaged_one_is_not_taken_for_none() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::generate();
        assert_eq!(read_head(dir.path()).unwrap(), None);
        let head = Checkpoint::signed(&key, Signed::Head, 7, "abc");
        write_head(dir.path(), &head).unwrap();
        assert_eq!(read_head(dir.path()).unwrap(), Some(head));
        fs::write(head_path(dir.path()), b"garbage").unwrap();
        assert!(read_head(dir.path()).unwrap().is_some_and(|h| h.mac.is_none()));
    }
}
