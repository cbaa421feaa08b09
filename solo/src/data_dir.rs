//! A voter's data directory: the highest lease token it may have granted, kept so that a
//! restart never grants a token twice (see `ClusterBuilder::data_dir`).
//!
//! One small text file, `lease-tokens`, holding a decimal number. It is replaced
//! atomically: written to a temporary file, synced, renamed over the old one, and the
//! directory synced, so that a crash leaves either the old value or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

const FILE: &str = "lease-tokens";

/// A data directory that cannot be used. The node did not start.
#[derive(Debug, thiserror::Error)]
#[error("data directory {path}: {source}")]
pub struct DataDirError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: std::io::Error,
}

fn error(path: PathBuf) -> impl FnOnce(std::io::Error) -> DataDirError {
    move |source| DataDirError { path, source }
}

/// What the directory holds: every token granted before is at most this; 0 for a new
/// (empty or missing) directory, which is created.
pub(crate) fn read_tokens(dir: &Path) -> Result<u64, DataDirError> {
    std::fs::create_dir_all(dir).map_err(error(dir.to_path_buf()))?;
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| DataDirError {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected one decimal number (the highest lease token)",
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(error(path)(e)),
    }
}

/// Replaces the value with `up_to`, durably.
pub(crate) fn write_tokens(dir: &Path, up_to: u64) -> Result<(), DataDirError> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(error(tmp.clone()))?;
    file.write_all(format!("{up_to}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(error(tmp.clone()))?;
    std::fs::rename(&tmp, &path).map_err(error(path.clone()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(error(dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_holds_zero_and_a_write_is_read_back() {
        let dir = std::env::temp_dir().join(format!("solo-data-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read_tokens(&dir).expect("created"), 0);
        write_tokens(&dir, 4242).expect("written");
        assert_eq!(read_tokens(&dir).expect("read"), 4242);
        std::fs::write(dir.join(FILE), "not a number").expect("corrupted");
        assert!(
            read_tokens(&dir).is_err(),
            "a corrupt file is an error, not a zero"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
