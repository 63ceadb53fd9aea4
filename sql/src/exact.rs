//! Exact kernel inputs and outputs: integers and decimals travel to and from the window kernels
//! as `i128`, so sums, minima, maxima (and decimal averages) equal DataFusion's exactly.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, UInt64Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Int64Type, UInt64Type, DECIMAL128_MAX_PRECISION,
};
use datafusion::arrow::error::ArrowError;
use quiver_gpu::InputKind;
use std::sync::Arc;

/// How the kernels read an aggregate argument of type `arg`: integers and decimals (up to 128
/// bits) exactly, anything else as `f64`. `avg_output` is the output type of an average over
/// this argument, if the view has one (it sets a decimal average's scale).
pub fn input_kind(arg: &DataType, avg_output: Option<&DataType>) -> InputKind {
    let scale = match arg {
        // Beyond i64: kept as a 128-bit value like a decimal of scale 0.
        DataType::UInt64 => 0,
        a if a.is_integer() => return InputKind::Integer,
        DataType::Decimal32(_, s) | DataType::Decimal64(_, s) | DataType::Decimal128(_, s) => *s,
        _ => return InputKind::Float,
    };
    let avg_scale = match avg_output {
        Some(
            DataType::Decimal32(_, s)
            | DataType::Decimal64(_, s)
            | DataType::Decimal128(_, s)
            | DataType::Decimal256(_, s),
        ) => *s,
        _ => scale,
    };
    InputKind::Decimal {
        scale,
        avg_multiplier: 10i128.pow(avg_scale.saturating_sub(scale).max(0) as u32),
    }
}

/// The exact values of an integer or decimal column (nulls as 0; validity is kept apart).
pub fn exact_values(array: &ArrayRef) -> Result<Vec<i128>, ArrowError> {
    let values = match array.data_type() {
        DataType::UInt64 => array
            .as_primitive::<UInt64Type>()
            .values()
            .iter()
            .map(|&v| v as i128)
            .collect(),
        t if t.is_integer() => cast(array, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| v as i128)
            .collect(),
        DataType::Decimal128(..) => array.as_primitive::<Decimal128Type>().values().to_vec(),
        DataType::Decimal32(_, s) | DataType::Decimal64(_, s) => {
            cast(array, &DataType::Decimal128(DECIMAL128_MAX_PRECISION, *s))?
                .as_primitive::<Decimal128Type>()
                .values()
                .to_vec()
        }
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "a {other} column has no exact values"
            )))
        }
    };
    Ok(values)
}

/// A feature column of `data_type` from exact kernel values. Integer results wrap into their
/// type as DataFusion's wrapping sums do; decimal averages are checked against their precision
/// (DataFusion reports an overflow there too).
pub fn exact_array(
    values: Vec<i128>,
    nulls: Option<NullBuffer>,
    data_type: &DataType,
    check_precision: bool,
) -> Result<ArrayRef, ArrowError> {
    let array: ArrayRef = match data_type {
        DataType::UInt64 => Arc::new(UInt64Array::new(
            values.iter().map(|&v| v as u64).collect(),
            nulls,
        )),
        t if t.is_integer() => {
            let wide: ArrayRef = Arc::new(Int64Array::new(
                values.iter().map(|&v| v as i64).collect(),
                nulls,
            ));
            if t == &DataType::Int64 {
                wide
            } else {
                cast(&wide, t)?
            }
        }
        DataType::Decimal128(p, s) => {
            let array =
                Decimal128Array::new(values.into(), nulls).with_precision_and_scale(*p, *s)?;
            if check_precision {
                array.validate_decimal_precision(*p).map_err(|_| {
                    ArrowError::ComputeError(format!(
                        "arithmetic overflow: an average does not fit Decimal128({p}, {s})"
                    ))
                })?;
            }
            Arc::new(array)
        }
        t @ (DataType::Decimal32(_, s) | DataType::Decimal64(_, s)) => {
            let wide: ArrayRef = Arc::new(
                Decimal128Array::new(values.into(), nulls)
                    .with_precision_and_scale(DECIMAL128_MAX_PRECISION, *s)?,
            );
            cast(&wide, t)?
        }
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "exact kernel values cannot make a {other} column"
            )))
        }
    };
    Ok(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_round_trips() {
        assert_eq!(input_kind(&DataType::Int32, None), InputKind::Integer);
        assert_eq!(input_kind(&DataType::Float64, None), InputKind::Float);
        assert_eq!(
            input_kind(
                &DataType::Decimal128(12, 2),
                Some(&DataType::Decimal128(16, 6))
            ),
            InputKind::Decimal {
                scale: 2,
                avg_multiplier: 10_000
            }
        );
        let big: ArrayRef = Arc::new(Int64Array::from(vec![Some(i64::MAX), None, Some(-3)]));
        let values = exact_values(&big).unwrap();
        assert_eq!(values[0], i64::MAX as i128);
        let doubled = exact_array(
            values.iter().map(|v| v * 2).collect(),
            big.logical_nulls(),
            &DataType::Int64,
            false,
        )
        .unwrap();
        let doubled = doubled.as_primitive::<Int64Type>();
        assert_eq!(
            doubled.value(0),
            i64::MAX.wrapping_mul(2),
            "wraps like DataFusion"
        );
        assert!(doubled.is_null(1));
        let overflow = exact_array(vec![i128::MAX], None, &DataType::Decimal128(16, 6), true);
        assert!(overflow.is_err());
    }
}
