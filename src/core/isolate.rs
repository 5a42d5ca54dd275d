//! Panic isolation: a bug reachable from registry data must cost one image its verdict
//! (`checking` / `InternalError`), not the process. The release profile keeps
//! `panic = "unwind"` for this.
//!
//! Each caught panic is counted (`imageposture_panics_caught_total`) and logged once, by the
//! hook, with its message bounded and escaped: the message may carry attacker-chosen text.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;

use futures::FutureExt as _;
use prometheus_client::metrics::counter::Counter;

use crate::core::text::escape;

/// Panics caught at an isolation boundary since the process started.
pub static PANICS_CAUGHT: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Runs `fut`; a panic inside it is caught, counted, and returned as its (escaped) message.
pub async fn catch<F: Future>(fut: F) -> Result<F::Output, String> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(v) => Ok(v),
        Err(payload) => {
            PANICS_CAUGHT.inc();
            Err(message(payload.as_ref()))
        }
    }
}

/// A panic payload as bounded, escaped text.
pub fn message(payload: &(dyn Any + Send)) -> String {
    let raw = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    escape(&bound_raw(raw, 300))
}

/// Replaces the default hook (which prints the raw message, escape sequences and all) with a
/// structured log line whose message is bounded and escaped.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let raw = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            panic = %escape(&bound_raw(raw, 300)),
            %location,
            "internal error (a bug); the image being verified is `checking` / InternalError"
        );
    }));
}

/// Cuts at a character boundary without touching the characters: unlike
/// [`crate::core::posture::bound`], which blanks controls, these must survive to be escaped.
fn bound_raw(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut out: String = text
        .char_indices()
        .take_while(|(i, c)| i + c.len_utf8() <= max)
        .map(|(_, c)| c)
        .collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_is_counted() {
        let before = PANICS_CAUGHT.get();
        let text = "boom \u{1b}[31m\u{202e}evil";
        let got = catch(async move {
            let s = String::from(text);
            if s.len() > 1 {
                panic!("{s}");
            }
            1
        })
        .await;
        let msg = got.unwrap_err();
        assert_eq!(msg, "boom \\u{1b}[31m\\u{202e}evil");
        assert!(PANICS_CAUGHT.get() > before);
        assert_eq!(catch(async { 7 }).await, Ok(7));
    }

    #[test]
    fn long_messages_are_cut_on_a_character() {
        let long = "é".repeat(400);
        let m = bound_raw(&long, 9);
        assert_eq!(m, "éééé…");
    }
}
