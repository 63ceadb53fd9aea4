//! SQL in a normal form: what the parser reads, printed back. Comments, whitespace and the
//! case of keywords do not change it; anything that changes the meaning does.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `sql` parsed and printed back, statements separated by `;\n`; the parser's message when it
/// does not parse.
pub fn normalized_sql(sql: &str) -> Result<String, String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| e.to_string())?;
    Ok(statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_comments_do_not_matter_meaning_does() {
        let a = normalized_sql("SELECT a, sum(b) OVER w FROM t").unwrap();
        let b = normalized_sql("-- features\nselect a,\n   sum(b)   over w\nFROM t  ").unwrap();
        assert_eq!(a, b);
        let c = normalized_sql("SELECT a, sum(c) OVER w FROM t").unwrap();
        assert_ne!(a, c);
        assert!(normalized_sql("SELEC a").is_err());
    }
}
