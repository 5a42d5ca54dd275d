//! Reading a command's input file (`-` is standard input) with a size limit, so `scan` and
//! `summary` refuse an oversized file instead of buffering it whole.

use std::io::Read;
use std::path::Path;

/// At most `limit` bytes of `path`; a larger input is an error naming the file.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?)
    };
    let mut raw = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if u64::try_from(raw.len()).unwrap_or(u64::MAX) > limit {
        return Err(format!("{} is larger than {limit} bytes", path.display()));
    }
    Ok(raw)
}
