//! Crash points for the crash tests: with `QUIVER_CRASH_AT=<point>:<n>` in the environment the
//! process aborts the n-th time it reaches `<point>`, like `kill -9` at exactly that step of
//! the checkpoint protocol (a random kill rarely lands inside a window of a few microseconds).
//! Without the variable a crash point costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn spec() -> &'static Option<(String, u64)> {
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let value = std::env::var("QUIVER_CRASH_AT").ok()?;
        let (point, n) = value.rsplit_once(':')?;
        Some((point.to_string(), n.parse().ok()?))
    })
}

/// Aborts the process here if the environment asks for it (see the module docs).
pub fn crash_point(point: &str) {
    static REACHED: AtomicU64 = AtomicU64::new(0);
    if let Some((name, n)) = spec() {
        if name == point && REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!(
                "quiver: crash point `{point}` reached ({n}), aborting as asked by QUIVER_CRASH_AT"
            );
            std::process::abort();
        }
    }
}
