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

/// The memory limit backfills and training sets get when none is given, at most: the limit
/// sizes their work (in memory or spilled, how many key partitions) but is not held strictly.
pub const MAX_DEFAULT_MEMORY_LIMIT: usize = 4 << 30;

/// The memory limit a job gets when none is given: [`MAX_DEFAULT_MEMORY_LIMIT`], or three
/// quarters of the memory the process can have when that is less (the machine's, or its
/// control group's limit in a container), so that a job on a small machine spills instead of
/// being killed for want of memory.
pub fn default_memory_limit() -> usize {
    default_limit_within(
        [total_memory(), cgroup_memory_limit()]
            .into_iter()
            .flatten()
            .min(),
    )
}

/// [`default_memory_limit`] for a process that can have `available` bytes (`None`: unknown).
fn default_limit_within(available: Option<usize>) -> usize {
    available.map_or(MAX_DEFAULT_MEMORY_LIMIT, |a| {
        MAX_DEFAULT_MEMORY_LIMIT.min(a / 4 * 3)
    })
}

/// The machine's memory (`MemTotal` in `/proc/meminfo`); `None` where that cannot be read.
fn total_memory() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The memory limit of this process's control group (cgroup v2 `memory.max`, else v1
/// `memory.limit_in_bytes`); `None` where there is none (`max`, or v1's near-`i64::MAX`) or it
/// cannot be read.
fn cgroup_memory_limit() -> Option<usize> {
    let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let limits = groups.lines().filter_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let file = match controllers {
            "" => format!("/sys/fs/cgroup{path}/memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
            }
            _ => return None,
        };
        std::fs::read_to_string(file)
            .ok()?
            .trim()
            .parse::<usize>()
            .ok()
    });
    // v1 writes "no limit" as the largest page-aligned i64.
    limits.filter(|&l| l < 1 << 60).min()
}

/// How a backfill or a training set sizes its memory: its limit, whether the peak must stay
/// under it, and what the process held when the job started.
#[derive(Debug, Clone)]
pub struct JobMemory {
    /// The limit: the one given, else [`default_memory_limit`].
    limit: usize,
    /// Whether the peak must stay under it: it was given, and the data's budget was not.
    strict: bool,
    /// Bytes the process held when the job started (code, runtime, compiled plans).
    held: Option<usize>,
}

impl JobMemory {
    /// Measures the process before the job reads anything and makes its data's budget:
    /// `data_budget` when given (nothing is then checked against the process's size); else
    /// what `memory_limit` leaves beside the process, strictly ([`strict_budget`]: freed
    /// memory then goes back to the system, and a limit that leaves too little is refused);
    /// else what the default limit leaves, never less than a quarter of it.
    pub fn start(
        memory_limit: Option<usize>,
        data_budget: Option<usize>,
    ) -> Result<(Self, usize), LimitTooSmall> {
        let held = resident_bytes();
        let strict = memory_limit.is_some() && data_budget.is_none();
        let limit = memory_limit.unwrap_or_else(default_memory_limit);
        let budget = match data_budget {
            Some(budget) => budget,
            None if strict => {
                let budget = strict_budget(limit, held.unwrap_or(0))?;
                return_freed_memory();
                budget
            }
            None => left_beside(limit, held.unwrap_or(0)),
        };
        Ok((
            JobMemory {
                limit,
                strict,
                held,
            },
            budget,
        ))
    }

    /// The limit the peak must stay under, if it must.
    pub fn strict_limit(&self) -> Option<usize> {
        self.strict.then_some(self.limit)
    }

    /// The process's peak so far against the limit.
    pub fn report(&self) -> MemoryReport {
        MemoryReport {
            limit_bytes: self.limit as u64,
            explicit: self.strict,
            held_before_reading_bytes: self.held.map(|b| b as u64),
            peak_bytes: peak_resident_bytes().map(|b| b as u64),
        }
    }
}

/// A job's resident memory (as `ps` and `time` report it) against its limit.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemoryReport {
    /// The limit in bytes: `--memory-limit`, else the default, which only sizes the work.
    pub limit_bytes: u64,
    /// Whether the limit was given (`--memory-limit`): the peak is meant to stay under it.
    pub explicit: bool,
    /// Bytes the process held before it read anything (code, runtime, compiled SQL).
    pub held_before_reading_bytes: Option<u64>,
    /// The most bytes it held at once (its high-water mark at the end of the run).
    pub peak_bytes: Option<u64>,
}

impl MemoryReport {
    /// Bytes the peak went over an explicit limit, if it did.
    pub fn over_limit(&self) -> Option<u64> {
        let over = self.peak_bytes?.checked_sub(self.limit_bytes)?;
        (self.explicit && over > 0).then_some(over)
    }
}

/// What a limit the user set, which the peak must stay under, leaves for data beside `held`
/// bytes the process holds: the rest, of which a tenth, and at least [`SLACK_BYTES`], is kept
/// back for what the job's estimates of its buffers miss (allocator slack, pages not returned
/// yet). Without the tenth, a backfill of 3M events under `--memory-limit 160MiB` peaked at
/// 159-161 MiB. A limit that leaves less than [`MIN_DATA_BUDGET`] for data is refused: the
/// peak could not stay under it.
fn strict_budget(limit: usize, held: usize) -> Result<usize, LimitTooSmall> {
    // No floor here (a default limit's budget is never less than a quarter of it): what the
    // process holds is what the limit cannot give to data.
    let budget = keep_back(limit.saturating_sub(held));
    if budget >= MIN_DATA_BUDGET {
        return Ok(budget);
    }
    // The smallest limit that leaves enough, to the next MiB.
    let mut smallest = (held + MIN_DATA_BUDGET + SLACK_BYTES).next_multiple_of(1 << 20);
    while keep_back(smallest - held) < MIN_DATA_BUDGET {
        smallest += 1 << 20;
    }
    // What the process holds varies by a MiB or two from run to run: the limit suggested
    // has room for that.
    let suggested = (smallest + SUGGESTION_MARGIN).next_multiple_of(8 << 20);
    Err(LimitTooSmall {
        limit,
        held,
        suggested,
    })
}

/// Room a suggested limit leaves beyond the smallest one, for what the process holds before
/// reading to vary from run to run (65.6-68.0 MiB in five runs of the same backfill).
const SUGGESTION_MARGIN: usize = 4 << 20;

/// What a user-set limit keeps back at least, beside a tenth of the data budget, for what
/// the job's estimates miss that does not grow with its data (threads' allocator caches,
/// freed pages not returned yet, buffers of the reader and writers). With a tenth alone,
/// backfills of 1M events peaked 5 MiB over `--memory-limit 118MiB` and `124MiB`.
pub const SLACK_BYTES: usize = 16 << 20;

/// The least data budget a user-set limit must leave (a backfill of a thousand events takes
/// about 12 MiB beside the process; smaller budgets cut the input into thousands of files).
pub const MIN_DATA_BUDGET: usize = 32 << 20;

/// A memory limit too small for what the process holds before it reads anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitTooSmall {
    /// The limit asked for, in bytes.
    pub limit: usize,
    /// Bytes the process held when it was checked.
    pub held: usize,
    /// A limit that would do, in bytes (a multiple of 8 MiB, with room for the process to
    /// hold a little more next time).
    pub suggested: usize,
}

impl std::fmt::Display for LimitTooSmall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
        write!(
            f,
            "--memory-limit {:.1} MiB is too small: the process holds {:.1} MiB before reading \
             anything (its code, runtime and compiled SQL), and needs at least {} MiB for data \
             beside that and {} MiB kept back for allocator slack; give --memory-limit {}MiB or \
             more",
            mib(self.limit),
            mib(self.held),
            MIN_DATA_BUDGET >> 20,
            SLACK_BYTES >> 20,
            self.suggested >> 20,
        )
    }
}

/// The most bytes this process has had resident at once so far (`VmHWM` in
/// `/proc/self/status`); `None` where that cannot be read (not Linux).
pub fn peak_resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A strict limit's budget ([`JobMemory::start`]) again once a job has read its input, for
/// what it does next: `budget` cut to what `limit` leaves beside the most the process has
/// held so far, less `counted` bytes of it that the budget already counts (an input kept in
/// memory).
///
/// Reading leaves more resident than it keeps (decode buffers, memory freed on threads that
/// then idle, code touched for the first time), and how much of it the allocator has
/// returned at any one moment is a matter of timing: after reading 3M events under
/// `--memory-limit 160MiB`, the resident size was 69-94 MiB from run to run, and the budget
/// made from it let the peak reach 159 MiB (195 MiB in a debug build under load). The high-water
/// mark (105-114 MiB there) is what the process has shown it needs beside its data.
pub fn strict_budget_now(limit: usize, budget: usize, counted: usize) -> usize {
    let now = resident_bytes().unwrap_or(0);
    let held = peak_resident_bytes().unwrap_or(now).max(now);
    budget_beside(limit, budget, held.saturating_sub(counted))
}

/// `budget` cut to what `limit` leaves beside `held` bytes, less what is kept back.
fn budget_beside(limit: usize, budget: usize, held: usize) -> usize {
    budget.min(keep_back(left_beside(limit, held)))
}

/// What `limit` leaves beside `held` bytes, never less than a quarter of it.
fn left_beside(limit: usize, held: usize) -> usize {
    limit.saturating_sub(held).max(limit / 4)
}

/// `budget` less what is kept back for what estimates miss: a tenth, at least
/// [`SLACK_BYTES`].
fn keep_back(budget: usize) -> usize {
    budget.saturating_sub((budget / 10).max(SLACK_BYTES))
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
        assert!(resident_bytes().expect("Linux has /proc/self/statm") > 0);
        // Tests running beside this one in the same process allocate and free at the same
        // time, so one pair of readings can miss the growth (it was once 13 MiB lower after
        // touching 64 MiB, under load): the growth must show in one of a few tries. Each vector
        // is kept past its reading through `black_box`: a release build drops an unread vector
        // before it is ever filled.
        let grew = (0..5).any(|_| {
            let before = resident_bytes().unwrap();
            let touched = std::hint::black_box(vec![1u8; 64 << 20]);
            let after = resident_bytes().unwrap();
            drop(std::hint::black_box(touched));
            after >= before + (48 << 20)
        });
        assert!(grew, "64 MiB touched never showed as 48 MiB more resident");
    }

    #[test]
    fn the_high_water_mark_keeps_memory_given_back() {
        // The system allocator gives a large block back to the system when it is freed.
        let touched = vec![1u8; 96 << 20];
        assert!(peak_resident_bytes().expect("Linux has VmHWM") >= 80 << 20);
        drop(std::hint::black_box(touched));
        // (The kernel's resident counts are approximate, so only a wide margin is checked.)
        assert!(peak_resident_bytes().unwrap() >= 80 << 20);
    }

    #[test]
    fn the_default_limit_is_four_gib_or_three_quarters_of_a_smaller_machine() {
        const GIB: usize = 1 << 30;
        assert_eq!(default_limit_within(None), 4 * GIB);
        assert_eq!(default_limit_within(Some(24 * GIB)), 4 * GIB);
        assert_eq!(default_limit_within(Some(2 * GIB)), 3 * GIB / 2);
        // This machine's memory is readable, and the default within it.
        let total = total_memory().expect("Linux has MemTotal");
        assert!(default_memory_limit() <= total);
    }

    #[test]
    fn a_budget_made_now_leaves_room_for_what_is_held() {
        const MIB: usize = 1 << 20;
        assert_eq!(left_beside(100, 40), 60);
        assert_eq!(left_beside(100, 1000), 25, "never less than a quarter");
        assert_eq!(
            budget_beside(1000 * MIB, 500 * MIB, 100 * MIB),
            500 * MIB,
            "room for all of it"
        );
        assert_eq!(
            budget_beside(1000 * MIB, 2000 * MIB, 100 * MIB),
            810 * MIB,
            "nine tenths of what is left"
        );
        assert_eq!(
            budget_beside(1000 * MIB, 2000 * MIB, 900 * MIB),
            225 * MIB,
            "nine tenths of a quarter"
        );
        assert_eq!(
            budget_beside(200 * MIB, 2000 * MIB, 190 * MIB),
            50 * MIB - SLACK_BYTES,
            "a quarter, less the slack kept back from a small budget"
        );
        assert_eq!(keep_back(10 * MIB), 0, "never below nothing");
    }

    #[test]
    fn a_limit_that_leaves_too_little_for_data_is_refused_with_one_that_would_do() {
        const MIB: usize = 1 << 20;
        let held = 66 * MIB + 12_345;
        let Err(refused) = strict_budget(held + MIN_DATA_BUDGET, held) else {
            panic!("a limit of what is held and the data budget leaves no slack");
        };
        assert!(refused.suggested > held + MIN_DATA_BUDGET, "{refused}");
        // The suggestion has room for the process to hold a little more next time.
        let budget = strict_budget(refused.suggested, held + 2 * MIB).expect("the suggestion");
        assert!(budget >= MIN_DATA_BUDGET);
        let message = refused.to_string();
        let suggested = format!("give --memory-limit {}MiB", refused.suggested >> 20);
        assert!(message.contains(&suggested), "{message}");
        assert!(message.contains("before reading anything"), "{message}");
        assert!(strict_budget(4 << 30, held).is_ok());
    }

    #[test]
    fn a_job_given_a_data_budget_or_a_limit_sizes_its_work_by_it() {
        let (memory, budget) = JobMemory::start(None, Some(12_345)).unwrap();
        assert_eq!((budget, memory.strict_limit()), (12_345, None));
        let (memory, budget) = JobMemory::start(Some(1 << 40), Some(12_345)).unwrap();
        assert_eq!(
            (budget, memory.strict_limit()),
            (12_345, None),
            "the budget wins"
        );
        let (memory, budget) = JobMemory::start(None, None).unwrap();
        assert_eq!(memory.strict_limit(), None);
        assert!(budget >= default_memory_limit() / 4);
        assert!(
            JobMemory::start(Some(1 << 20), None).is_err(),
            "1 MiB is too small"
        );
        // (A strict limit large enough also has freed memory returned to the system, a
        // setting of the whole process: not tried beside the other tests.)
        let report = memory.report();
        assert!(!report.explicit && report.over_limit().is_none());
        // The high-water mark is never below what was held when the job started.
        assert!(report.peak_bytes.unwrap() >= report.held_before_reading_bytes.unwrap());
    }
}
