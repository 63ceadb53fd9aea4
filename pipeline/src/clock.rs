//! The wall clock, as the job records it: stamps of commits, audit entries, lineage events,
//! freshness and the default time of online reads.

/// Microseconds since the Unix epoch, now (0 before it, `i64::MAX` in the far future).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch, now (0 before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
