//! Text built from names an attacker chooses (file names, the module and
//! qualified names a pickle resolves) for people to read: refusals,
//! warnings, CLI tables and SARIF messages.
//!
//! A name may hold a newline, a carriage return, an ANSI escape or a
//! bidirectional override; printed as is, it would forge lines of a report
//! ("  why:       listed") or rewrite the terminal. [`display`] writes every
//! such character as an escape, so one name is always one run of visible
//! characters on one line. Plain names are returned unchanged.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal or a line-oriented report raw:
/// C0 and C1 controls, DEL, the Unicode line and paragraph separators, and
/// the bidirectional embeddings, overrides and isolates.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Whether `c` is one [`display`] escapes.
pub fn is_unsafe(c: char) -> bool {
    unsafe_char(c)
}

/// `s` with every control, separator and bidi character written as `\n`,
/// `\r`, `\t`, `\xNN` (below U+0100) or `\u{NNNN}`.
pub fn display(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::display;

    #[test]
    fn plain_names_are_unchanged_and_controls_escaped() {
        assert_eq!(display("/m/a b.pkl"), "/m/a b.pkl");
        assert_eq!(display("é/模型.pt"), "é/模型.pt");
        assert_eq!(
            display("a\n  why: x\x1b[2J\r\t\u{7f}\u{85}\u{202e}\u{2028}"),
            "a\\n  why: x\\x1b[2J\\r\\t\\x7f\\x85\\u{202e}\\u{2028}"
        );
        assert!(!display("x\ny").contains('\n'));
    }
}
