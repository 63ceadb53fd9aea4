//! User-facing SQL mistakes, located like compiler errors.

use std::fmt;

/// A mistake in a SQL file, with where it is and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file (or config location) holding the SQL.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic for `file` without position.
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_string(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
        }
    }

    /// Adds a fix hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Sets the position to the first whole-word, case-insensitive occurrence of `needle` in
    /// `sql` (keeps any position already set, and leaves it unset if `needle` is absent).
    pub fn at_word(mut self, sql: &str, needle: &str) -> Self {
        if self.line.is_none() {
            if let Some((line, column)) = find_word(sql, needle) {
                self.line = Some(line);
                self.column = Some(column);
            }
        }
        self
    }

    /// Like [`Diagnostic::at_word`], at the last occurrence (e.g. a query's final ORDER BY
    /// rather than a window's).
    pub fn at_last_word(mut self, sql: &str, needle: &str) -> Self {
        if self.line.is_none() {
            let mut last = None;
            let mut from = 0;
            while let Some((line, column)) = find_word(&sql[from..], needle) {
                let offset = byte_offset(&sql[from..], line, column);
                last = Some(line_column(sql, from + offset));
                from += offset + needle.len();
            }
            if let Some((line, column)) = last {
                self.line = Some(line);
                self.column = Some(column);
            }
        }
        self
    }

    /// Sets an explicit position.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }
}

impl std::error::Error for Diagnostic {}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": error: {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// 1-based (line, column) of the first whole-word case-insensitive match of `needle`.
pub fn find_word(sql: &str, needle: &str) -> Option<(usize, usize)> {
    if needle.is_empty() {
        return None;
    }
    let hay = sql.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut from = 0;
    while let Some(pos) = hay[from..].find(&needle) {
        let at = from + pos;
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        if !is_word(before) && !is_word(after) {
            return Some(line_column(sql, at));
        }
        from = at + needle.len().max(1);
    }
    None
}

/// Byte offset of 1-based (`line`, `column`) in `text`.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    line_start
        + text[line_start..]
            .char_indices()
            .nth(column - 1)
            .map_or(0, |(i, _)| i)
}

/// 1-based (line, column) of byte offset `at` in `text` (column counts characters).
pub fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_words_only() {
        let sql = "SELECT amount_x,\n  amount FROM t";
        assert_eq!(find_word(sql, "amount"), Some((2, 3)));
        assert_eq!(find_word(sql, "nope"), None);
        let d = Diagnostic::new("f", "m").at_last_word("order x\n(order y) order z", "order");
        assert_eq!((d.line, d.column), (Some(2), Some(11)));
    }

    #[test]
    fn renders_like_a_compiler() {
        let d = Diagnostic::new("f.sql", "bad").at(2, 3).with_help("fix it");
        assert_eq!(d.to_string(), "f.sql:2:3: error: bad\n  help: fix it");
    }
}
