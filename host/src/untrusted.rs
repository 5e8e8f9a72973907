//! What the host accepts from guests and clients: the caps on values they hand over
//! and the checks that enforce them. Everything a handler or a client sends (sizes,
//! names, counts, text, JSON, batching values) is untrusted; each check here is used
//! where such a value crosses into the host, so that one tenant's values can never
//! reach another tenant or the process as a whole.

use std::borrow::Cow;

/// Largest batch a handler may declare or an operator may configure: batches are
/// allocated up front, so an absurd size would take the whole process down.
pub const MAX_BATCH_SIZE: u32 = 65_536;

/// Longest batch wait a handler may declare or an operator may configure (10 minutes).
pub const MAX_BATCH_DURATION_MS: u32 = 600_000;

/// Deepest JSON nesting a handler may return (serde_json's own default limit, so
/// that every inference the host writes can be read back by common parsers).
pub const MAX_JSON_DEPTH: usize = 128;

/// Longest message kept from a handler (log line or error); the rest is cut.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Longest metrics namespace, after the tenant prefix.
pub const MAX_NAMESPACE_BYTES: usize = 96;

/// Why a value from a guest or client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Escapes what would let text from a guest forge or hide output on a log line or a
/// terminal: line breaks and every other control character, Unicode line separators
/// and bidirectional overrides become visible `\n` / `\u{..}` escapes, and a
/// backslash is doubled so that an escape in the text cannot pass for one of ours.
/// Borrowed when there is nothing to escape (the common case).
pub fn escape_control(text: &str) -> Cow<'_, str> {
    fn needs_escape(c: char) -> bool {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    }
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A message from a guest made safe to log or show: cut to [`MAX_MESSAGE_BYTES`] (on a
/// character boundary, marked with `...`) and escaped with [`escape_control`].
pub fn guest_text(message: &str) -> String {
    let cut = if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        &message[..end]
    } else {
        message
    };
    let mut text = escape_control(cut).into_owned();
    if cut.len() < message.len() {
        text.push_str("...");
    }
    text
}

/// Checks that JSON text nests arrays and objects at most `max` deep. The text is
/// assumed to be valid JSON (checked elsewhere); this only counts brackets outside
/// strings, in one pass, without recursion.
pub fn check_json_depth(text: &str, max: usize) -> Result<(), Refused> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(Refused(format!("JSON nested more than {max} levels deep")));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// A metric name (or namespace) in the Prometheus alphabet:
/// `[a-zA-Z_][a-zA-Z0-9_]*`, 1 to `max` bytes.
pub fn check_metric_name(what: &str, name: &str, max: usize) -> Result<(), Refused> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Refused(format!(
            "invalid {what} \"{}\": expected 1-{max} letters, digits or `_`, not starting with a digit",
            escape_control(&name.chars().take(80).collect::<String>())
        )))
    }
}

/// Checks one batching value declared by a handler or configured by an operator
/// against the host's cap; `key` names it (a duration when it says so, else a size).
pub fn check_batching_value(key: &str, value: Option<u32>) -> Result<(), Refused> {
    let duration = key.contains("duration");
    let cap = if duration {
        MAX_BATCH_DURATION_MS
    } else {
        MAX_BATCH_SIZE
    };
    match value {
        Some(0) if !duration => Err(Refused(format!("{key} = 0: expected at least 1"))),
        Some(v) if v > cap => Err(Refused(format!(
            "{key} = {v} is more than the host allows ({cap})"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(escape_control("plain text"), Cow::Borrowed(_)));
        assert_eq!(
            escape_control("a\nb\r\t\u{1b}[31mred\\n\u{2028}\u{202e}"),
            "a\\nb\\r\\t\\u{1b}[31mred\\\\n\\u{2028}\\u{202e}"
        );
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = guest_text(&long);
        assert!(cut.ends_with("...") && cut.len() <= MAX_MESSAGE_BYTES + 3);
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert!(check_json_depth("[[1]]", 2).is_ok());
        assert!(check_json_depth("[[[1]]]", 2).is_err());
        assert!(check_json_depth(r#"["[[[[", "\"[[[["]"#, 1).is_ok());
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert_eq!(
            check_json_depth(&deep, MAX_JSON_DEPTH).unwrap_err().0,
            "JSON nested more than 128 levels deep"
        );
    }

    #[test]
    fn metric_names_and_batching_values_are_bounded() {
        assert!(check_metric_name("metric name", "words_total", 64).is_ok());
        for bad in ["", "9lives", "a b", "a\nb", "a-b", &"x".repeat(65)] {
            assert!(
                check_metric_name("metric name", bad, 64).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_batching_value("max_batch_size", Some(MAX_BATCH_SIZE)).is_ok());
        assert_eq!(
            check_batching_value("max_batch_size", Some(u32::MAX))
                .unwrap_err()
                .0,
            "max_batch_size = 4294967295 is more than the host allows (65536)"
        );
        assert!(check_batching_value("min_batch_size", Some(0)).is_err());
        assert!(check_batching_value("max_batch_duration_ms", Some(0)).is_ok());
    }
}
