//! Durable file writes: a crash at any moment leaves either the old file or
//! the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder,
/// fsyncs it, renames it into place and fsyncs the folder. The file gets
/// `mode` (e.g. 0o600 for private keys) from its creation on.
///
/// # Errors
/// The I/O error, with the path in its message.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let with_path =
        |err: io::Error, p: &Path| io::Error::new(err.kind(), format!("{}: {err}", p.display()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| with_path(e, &tmp))?;
        file.write_all(bytes).map_err(|e| with_path(e, &tmp))?;
        file.sync_all().map_err(|e| with_path(e, &tmp))?;
        fs::rename(&tmp, path).map_err(|e| with_path(e, path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| with_path(e, dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
