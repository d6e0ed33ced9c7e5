//! Writing outputs safely.

use std::path::Path;

use crate::error::Result;

/// Writes through `write` to a temporary name beside `path`, then renames it into place, so
/// that an interrupted run never leaves a half-written output.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()).into())
}
