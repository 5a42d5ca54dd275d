//! Showing attacker-influenced text (signers, issuers, registry messages) to a person.
//!
//! Stored data keeps its characters (JSON and the resource status are data). What a terminal
//! or a log line shows gets every character that can hide or reorder text escaped as
//! `\u{…}`: C0/C1 controls (ANSI escapes), Unicode format characters (Cf: bidi embeddings,
//! overrides and isolates as in "Trojan Source", zero-width joiners, the BOM, tag
//! characters), line and paragraph separators, and invisible fillers. A signer that reads
//! reversed on screen is then visibly a signer with `\u{202e}` in it.

use std::fmt::Write as _;

/// `text` with hiding and reordering characters escaped; everything else unchanged.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hides(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else if c == '\\' {
            // So an escaped sequence cannot be faked by the text itself.
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a character is invisible or changes how the text around it is displayed.
pub fn hides(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    matches!(
        u32::from(c),
        // Cf (format) characters, Unicode 15.
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            // Line and paragraph separators (Zl, Zp).
            | 0x2028..=0x2029
            // Invisible but not Cf: combining grapheme joiner, Hangul fillers, Khmer inherent
            // vowels, Mongolian variation selectors, variation selectors.
            | 0x034F
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180D
            | 0x180F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFFA0
            | 0xE0100..=0xE01EF
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_override_is_shown_not_obeyed() {
        let signer = "user@\u{202e}moc.live\u{202c}example.com";
        let shown = escape(signer);
        assert_eq!(shown, "user@\\u{202e}moc.live\\u{202c}example.com");
        assert!(!shown.chars().any(hides));
    }

    #[test]
    fn controls_invisibles_and_backslashes() {
        assert_eq!(escape("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape("a\u{200b}b\u{feff}"), "a\\u{200b}b\\u{feff}");
        assert_eq!(escape("a\u{e0041}"), "a\\u{e0041}");
        assert_eq!(escape("x\\u{202e}"), "x\\\\u{202e}");
        assert_eq!(
            escape("https://accounts.google.com é 漢"),
            "https://accounts.google.com é 漢"
        );
    }
}
