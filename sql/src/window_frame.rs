//! SQL window frames to kernel frames, and the forms Quiver refuses with a reason.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{WindowFrame, WindowFrameBound, WindowFrameUnits};
use quiver_gpu::Frame;

/// The longest supported range window.
pub const MAX_RANGE_MICROS: i64 = 30 * 86_400 * 1_000_000;

const RANGE_FORM: &str =
    "write `RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW`, or `RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW` for a lifetime aggregate";

/// Why a frame is not supported, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameProblem {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: String,
}

fn problem(message: impl Into<String>, help: impl Into<String>) -> FrameProblem {
    FrameProblem {
        message: message.into(),
        help: help.into(),
    }
}

/// Converts a SQL frame over an event-time `ORDER BY` into a kernel frame.
pub fn to_kernel_frame(frame: &WindowFrame) -> Result<Frame, FrameProblem> {
    match frame.units {
        WindowFrameUnits::Range => {}
        WindowFrameUnits::Rows => {
            return Err(problem(
                "ROWS frames count events, not time, and are not supported by Quiver's streaming windows",
                RANGE_FORM,
            ))
        }
        WindowFrameUnits::Groups => {
            return Err(problem("GROUPS frames are not supported", RANGE_FORM))
        }
    }
    if !matches!(frame.end_bound, WindowFrameBound::CurrentRow) {
        return Err(problem(
            format!(
                "window must end at the current event, found `{}`: features may only look back in time",
                frame.end_bound
            ),
            RANGE_FORM,
        ));
    }
    match &frame.start_bound {
        WindowFrameBound::CurrentRow => Ok(Frame::Range { width_micros: 0 }),
        WindowFrameBound::Following(_) => Err(problem(
            "window may not start after the current event",
            RANGE_FORM,
        )),
        WindowFrameBound::Preceding(v) if v.is_null() => Ok(Frame::Unbounded),
        WindowFrameBound::Preceding(v) => {
            let width = interval_micros(v)?;
            if width < 0 {
                return Err(problem("window width must not be negative", RANGE_FORM));
            }
            if width > MAX_RANGE_MICROS {
                return Err(problem(
                    format!("window of {} exceeds the longest supported window of 30 days", describe_micros(width)),
                    "use a window of at most INTERVAL '30 days', or UNBOUNDED PRECEDING for a lifetime aggregate",
                ));
            }
            Ok(Frame::Range {
                width_micros: width,
            })
        }
    }
}

/// Width of an interval bound in microseconds.
fn interval_micros(v: &ScalarValue) -> Result<i64, FrameProblem> {
    const DAY: i64 = 86_400_000_000;
    let months_problem = || {
        problem(
            "months and years have no fixed length, so the window would not be exact",
            "express the window in days, hours, minutes or seconds, e.g. INTERVAL '30 days'",
        )
    };
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) => {
            if i.months != 0 {
                return Err(months_problem());
            }
            if i.nanoseconds % 1000 != 0 {
                return Err(problem(
                    "window width has sub-microsecond precision",
                    "event time resolution is one microsecond; round the interval",
                ));
            }
            Ok(i.days as i64 * DAY + i.nanoseconds / 1000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Ok(i.days as i64 * DAY + i.milliseconds as i64 * 1000)
        }
        ScalarValue::IntervalYearMonth(Some(_)) => Err(months_problem()),
        ScalarValue::DurationSecond(Some(s)) => Ok(s * 1_000_000),
        ScalarValue::DurationMillisecond(Some(s)) => Ok(s * 1000),
        ScalarValue::DurationMicrosecond(Some(s)) => Ok(*s),
        ScalarValue::DurationNanosecond(Some(s)) => Ok(s / 1000),
        other => Err(problem(
            format!("window bound `{other}` is not a time interval"),
            "ORDER BY the event-time column and bound the window with an INTERVAL, e.g. INTERVAL '1 hour' PRECEDING",
        )),
    }
}

/// Human form of a duration, e.g. "31 days" or "90 s".
pub fn describe_micros(micros: i64) -> String {
    const DAY: i64 = 86_400_000_000;
    if micros % DAY == 0 {
        format!("{} days", micros / DAY)
    } else {
        format!("{} s", micros as f64 / 1e6)
    }
}
