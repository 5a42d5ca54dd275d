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

/// Largest `--baseline` file accepted.
const MAX_BASELINE_FILE: u64 = 16 << 20;

/// The SignerBaselines of a `--baseline FILE` (none without a file).
pub fn baselines(
    path: Option<&std::path::Path>,
) -> std::result::Result<Vec<crate::model::baseline::SignerBaseline>, String> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let raw = read(path, MAX_BASELINE_FILE).map_err(|e| e.to_string())?;
    let text = String::from_utf8(raw).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    crate::model::baseline::read_baselines(&text).map_err(|e| format!("{}: {e}", path.display()))
}
