//! The process's resident memory (what `--memory-limit` bounds, as `ps` and `time` report it)
//! and whether the allocator returns freed memory to the system.

/// Bytes of this process resident in memory now (code included), from `/proc/self/statm`;
/// `None` where that cannot be read (not Linux).
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * usize::try_from(page).ok()?)
}

/// What a job's data may take of memory limit `limit`: the limit less what the process holds
/// now, before it reads anything (its code, the runtime, the compiled plans), never less than
/// a quarter of the limit.
pub fn data_budget(limit: usize) -> usize {
    let held = resident_bytes().unwrap_or(0);
    limit.saturating_sub(held).max(limit / 4)
}

/// [`data_budget`] for a limit the user set, which the peak must stay under: a tenth is kept
/// back for what the job's estimates of its buffers miss (allocator slack, pages not returned
/// yet). Without it, a backfill of 3M events under `--memory-limit 160MiB` peaked at 159-161
/// MiB.
pub fn strict_data_budget(limit: usize) -> usize {
    let budget = data_budget(limit);
    budget - budget / 10
}

/// `mi_option_purge_delay` in mimalloc's option enum (the same index in v2 and v3).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory freed to mimalloc for reuse instead of returning it to the OS after 10 ms:
/// checkpoints allocate and free tens of MiB every interval, and each one faulted (and the
/// kernel zeroed) its buffers afresh (measured: ~9% of a run with 1 s checkpoints, about half
/// of their cost). The price is that the resident size stays at its high-water mark, summed
/// over the threads that freed memory.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// Has mimalloc return freed memory to the system after 10 ms again (its default), undoing
/// [`keep_freed_memory`] where a memory limit matters more than the faults: a backfill with
/// an explicit `--memory-limit` (measured: 3M events under 256MiB peaked at 279 MiB keeping
/// freed memory, 192 MiB returning it, about 10% slower).
pub fn return_freed_memory() {
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 10) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_size_grows_with_memory_touched() {
        let before = resident_bytes().expect("Linux has /proc/self/statm");
        assert!(before > 0);
        let touched = vec![1u8; 64 << 20];
        let after = resident_bytes().unwrap();
        assert!(after >= before + (48 << 20), "{before} -> {after}");
        drop(touched);
    }
}
