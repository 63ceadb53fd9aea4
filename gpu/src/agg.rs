//! The aggregate functions a feature window can compute.

use crate::moments::MomentLevel;
use serde::{Deserialize, Serialize};

/// An aggregate over the non-null input values inside a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggKind {
    /// Number of non-null values (`count(*)` is a count over an always-valid input).
    Count,
    /// Sum; null when the window holds no non-null value.
    Sum,
    /// Arithmetic mean; null when the window holds no non-null value.
    Avg,
    /// Smallest value; null when the window holds no non-null value.
    Min,
    /// Largest value; null when the window holds no non-null value.
    Max,
    /// Sample standard deviation; null with fewer than two values.
    StddevSamp,
    /// Sample variance; null with fewer than two values.
    VarSamp,
    /// Population standard deviation; null when the window holds no non-null value.
    StddevPop,
    /// Population variance; null when the window holds no non-null value.
    VarPop,
}

impl AggKind {
    /// Maps a SQL aggregate function name (as DataFusion names it, or a standard alias) to a kind.
    pub fn from_sql_name(name: &str) -> Option<AggKind> {
        Some(match name.to_ascii_lowercase().as_str() {
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "avg" | "mean" => AggKind::Avg,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "stddev" | "stddev_samp" => AggKind::StddevSamp,
            "var" | "var_samp" | "var_sample" | "variance" => AggKind::VarSamp,
            "stddev_pop" => AggKind::StddevPop,
            "var_pop" | "var_population" => AggKind::VarPop,
            _ => return None,
        })
    }

    /// The SQL names Quiver accepts, for error messages.
    pub const SUPPORTED_SQL_NAMES: &'static str =
        "count, sum, avg, min, max, stddev_samp (stddev), var_samp (variance), stddev_pop, var_pop";

    /// How much of the running moments the kind reads; `None` for min and max, which use
    /// extrema trackers instead.
    pub fn moment_level(self) -> Option<MomentLevel> {
        match self {
            AggKind::Min | AggKind::Max => None,
            AggKind::Count => Some(MomentLevel::Count),
            AggKind::Sum | AggKind::Avg => Some(MomentLevel::Sum),
            AggKind::StddevSamp | AggKind::VarSamp | AggKind::StddevPop | AggKind::VarPop => {
                Some(MomentLevel::Spread)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names_map_to_kinds() {
        assert_eq!(AggKind::from_sql_name("STDDEV"), Some(AggKind::StddevSamp));
        assert_eq!(AggKind::from_sql_name("var_samp"), Some(AggKind::VarSamp));
        assert_eq!(AggKind::from_sql_name("row_number"), None);
    }
}
