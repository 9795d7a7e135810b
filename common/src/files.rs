//! Files that hold data or secrets, created readable by their owner only
//! from the moment they exist (no create-then-chmod window).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Mode of data and secret files: read and write for the owner only.
pub const OWNER_ONLY: u32 = 0o600;
/// Mode of folders created for them.
pub const OWNER_ONLY_DIR: u32 = 0o700;

/// Creates `path` with [`OWNER_ONLY`] permissions and writes `contents`;
/// fails if anything (a file, a planted symlink) already exists there.
pub fn create_owner_only(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = new_file(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Creates an empty `path` with [`OWNER_ONLY`] permissions unless something
/// exists there already (then it is left alone).
pub fn ensure_owner_only(path: &Path) -> io::Result<()> {
    match new_file(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates `dir` and its missing parents with [`OWNER_ONLY_DIR`] permissions
/// (existing folders keep theirs).
pub fn create_dir_owner_only(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, OWNER_ONLY_DIR);
    builder.create(dir)
}

/// Opens a new file (`O_CREAT | O_EXCL`, which never follows a symlink).
fn new_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, OWNER_ONLY);
    options.open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn files_and_folders_are_created_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("a/b");
        create_dir_owner_only(&folder).expect("folders");
        assert_eq!(mode(&folder), OWNER_ONLY_DIR);
        let secret = folder.join("secret");
        create_owner_only(&secret, b"s").expect("secret");
        assert_eq!(mode(&secret), OWNER_ONLY);
        let db = folder.join("db");
        ensure_owner_only(&db).expect("db");
        assert_eq!(mode(&db), OWNER_ONLY);
    }

    #[test]
    fn an_existing_file_or_symlink_is_never_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("secret");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(create_owner_only(&link, b"s").is_err());
        assert!(!target.exists(), "the symlink was followed");
        std::fs::write(&target, "kept").expect("write");
        ensure_owner_only(&target).expect("existing files are left alone");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "kept");
    }
}
