//! SQL of a transform or view, with where it sits so that errors point into the right file:
//! a SQL file, or the config itself for SQL written inline under `sql:`.

use quiver_sql::SqlError;

/// SQL text and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlText {
    /// The SQL.
    pub sql: String,
    /// The file errors name (the SQL file, or the config file for inline SQL).
    pub file: String,
    /// 0-based line of the file holding the SQL's first line.
    line_offset: usize,
    /// Columns before the SQL's text on each of its lines (YAML indentation).
    column_offset: usize,
}

impl SqlText {
    /// SQL read from its own file.
    pub fn from_file(sql: String, file: String) -> Self {
        SqlText {
            sql,
            file,
            line_offset: 0,
            column_offset: 0,
        }
    }

    /// SQL written inline under `sql:` of the step named `step` in the config `text`.
    pub fn inline(sql: String, config_file: String, text: &str, step: &str) -> Self {
        let (line_offset, column_offset) = inline_position(text, step).unwrap_or((0, 0));
        SqlText {
            sql,
            file: config_file,
            line_offset,
            column_offset,
        }
    }

    /// Moves the position of a SQL diagnostic from the SQL text into the file.
    pub fn locate(&self, error: SqlError) -> SqlError {
        match error {
            SqlError::Invalid(mut d) => {
                if let Some(line) = d.line {
                    d.line = Some(line + self.line_offset);
                    d.column = d.column.map(|c| c + self.column_offset);
                }
                SqlError::Invalid(d)
            }
            other => other,
        }
    }
}

/// (0-based line of the SQL's first line, indentation) of step `step`'s inline SQL.
fn inline_position(text: &str, step: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let key = |l: &str| l.trim_start().trim_start_matches("- ").to_string();
    let name_line = lines.iter().position(|l| {
        let k = key(l);
        k == format!("name: {step}") || k == format!("name: \"{step}\"")
    })?;
    let sql_line = (name_line..lines.len()).find(|&i| key(lines[i]).starts_with("sql:"))?;
    let (before, after) = lines[sql_line].split_once("sql:")?;
    let value = after.trim_start();
    if value.is_empty() || value.starts_with('|') || value.starts_with('>') {
        // Block scalar: the SQL starts on the next line; YAML strips its indentation.
        let first = lines.get(sql_line + 1)?;
        Some((sql_line + 1, first.len() - first.trim_start().len()))
    } else {
        Some((
            sql_line,
            before.len() + "sql:".len() + (after.len() - value.len()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_sql::Diagnostic;

    #[test]
    fn block_and_plain_inline_sql_are_located() {
        let text = "views:\n  - name: a\n    sql: |\n      SELECT 1\n      FROM x\n  - name: b\n    sql: SELECT 2\n";
        let a = SqlText::inline("SELECT 1\nFROM x".into(), "p.yaml".into(), text, "a");
        let d = Diagnostic::new("p.yaml", "m").at(2, 6);
        let located = a.locate(d.into());
        let d = located.diagnostic().expect("diagnostic");
        assert_eq!((d.line, d.column), (Some(5), Some(12)));
        let b = SqlText::inline("SELECT 2".into(), "p.yaml".into(), text, "b");
        let d = b.locate(Diagnostic::new("p.yaml", "m").at(1, 8).into());
        let d = d.diagnostic().expect("diagnostic");
        assert_eq!((d.line, d.column), (Some(7), Some(17)));
    }
}
