//! Rendering observations for people (a table) and machines (JSON/YAML).

use serde::Serialize;

use crate::cli::OutputFormat;
use crate::core::posture::{SignatureRecord, Verdict};
use crate::core::text::escape;

/// One observed image, as printed by `imageposture observe`.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The reference as given.
    pub image: String,
    /// `registry/repository` once parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// How the image departs from its repository's SignerBaseline (`--baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::model::baseline::Drift>,
}

pub fn render(rows: &[Row], format: OutputFormat) -> String {
    match format {
        // Rows are plain strings and maps: serializing cannot fail, but say so if it ever does.
        OutputFormat::Json => serde_json::to_string_pretty(rows)
            .map(|s| s + "\n")
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot render rows: {e}\"}}\n")),
        OutputFormat::Yaml => serde_yaml::to_string(rows)
            .unwrap_or_else(|e| format!("error: cannot render rows: {e}\n")),
        OutputFormat::Table => table(rows),
    }
}

fn table(rows: &[Row]) -> String {
    let header = ["IMAGE", "DIGEST", "POSTURE", "SIGNER", "ISSUER", "REASON"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                escape(&r.image),
                r.digest
                    .as_deref()
                    .map(short_digest)
                    .unwrap_or_else(|| "-".into()),
                r.verdict.posture.to_string(),
                r.verdict
                    .signer
                    .as_deref()
                    .map(escape)
                    .unwrap_or_else(|| "-".into()),
                r.verdict
                    .issuer
                    .as_deref()
                    .map(escape)
                    .unwrap_or_else(|| "-".into()),
                r.verdict.reason.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cols.iter().zip(&widths).enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &cells {
        line(row);
    }
    out
}

/// `sha256:0123456789ab` — enough to tell images apart in a terminal.
fn short_digest(d: &str) -> String {
    escape(&d.chars().take(19).collect::<String>())
}

/// One line per drifting image (`--baseline`), printed under the table.
pub fn drifts(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| {
            let d = r.drift.as_ref()?;
            Some(format!(
                "DRIFT {} {}: {}",
                d.kind,
                escape(&r.image),
                escape(&d.message)
            ))
        })
        .collect()
}

/// One line per failed signature, for the table's footer.
pub fn failures(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .flat_map(|r| {
            r.verdict
                .signatures
                .iter()
                .filter(|s: &&SignatureRecord| !s.verified)
                .map(move |s| format!("{}: {} {}", escape(&r.image), s.reason, escape(&s.message)))
        })
        .collect()
}
