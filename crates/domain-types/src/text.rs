//! Bounded free text: names, descriptions, address lines, reasons.

/// Free text of `min..=max` characters (not bytes) on one line: no control
/// characters at all.
pub fn parse_text(raw: &str, min: usize, max: usize) -> Result<String, String> {
    check(raw, min, max, |_| false)
}

/// Free text of `min..=max` characters that may hold line breaks and tabs,
/// but no other control characters.
pub fn parse_multiline_text(raw: &str, min: usize, max: usize) -> Result<String, String> {
    check(raw, min, max, |c| matches!(c, '\n' | '\r' | '\t'))
}

fn check(raw: &str, min: usize, max: usize, allowed: fn(char) -> bool) -> Result<String, String> {
    let len = raw.chars().count();
    if len < min {
        return Err("must not be empty".to_owned());
    }
    if len > max {
        return Err(format!("must be at most {max} characters"));
    }
    if raw.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_reject_control_characters_and_overlong_values() {
        assert!(parse_text("line\u{0}", 1, 10).is_err());
        assert!(parse_text("", 1, 10).is_err());
        assert!(parse_text("", 0, 10).is_ok());
        assert!(parse_text(&"x".repeat(11), 1, 10).is_err());
        assert!(parse_text("Zürich", 1, 6).is_ok());
    }

    #[test]
    fn line_breaks_and_tabs_are_allowed_only_in_multiline_text() {
        assert!(parse_multiline_text("a\nb\r\n\tc", 0, 10).is_ok());
        assert!(parse_text("a\nb", 1, 10).is_err());
        assert!(parse_text("a\tb", 1, 10).is_err());
        assert!(parse_multiline_text("a\u{0}", 0, 10).is_err());
        assert!(parse_multiline_text("", 1, 10).is_err());
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        assert!(parse_text(&"é".repeat(10), 1, 10).is_ok());
        assert!(parse_multiline_text(&"é".repeat(11), 1, 10).is_err());
    }
}
