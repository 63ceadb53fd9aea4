//! An instance of a sharded job (`source.kafka.shards: N`): every `quiver run` of the config
//! joins the group that shares the job's shards ([`ShardGroup`]) and runs the shards it is
//! assigned, each as a child process `quiver run --shard I/N --standby` (its own checkpoints,
//! window state and outputs, see [`crate::shard`]).
//!
//! Handover: a shard taken away from this instance (another joined, or this one stops) gets
//! SIGTERM, so its child checkpoints and releases the shard's checkpoint lock; the new owner's
//! child has been standing by on that lock and resumes from the checkpoint. When an instance
//! dies, its children get SIGTERM from the kernel (parent-death signal) and the group gives its
//! shards to the others once its session times out. A child that fails is started again
//! (backing off), and an instance whose shard fails five times in a row, each within a minute
//! of starting, stops with that shard's error.

use crate::config::LoadedConfig;
use quiver_connectors::kafka::ShardGroup;
use quiver_sql::KeyShard;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How an instance runs its shards.
pub struct InstanceOptions {
    /// The pipeline config, as the children are given it.
    pub config: PathBuf,
    /// Further `quiver run` arguments every child gets (output, store, checkpoint policy).
    pub child_args: Vec<OsString>,
    /// The input ends (`stop_at_end`, `--until-caught-up`): the instance stops once every shard
    /// it owns has finished.
    pub bounded: bool,
}

/// Consecutive quick failures of one shard after which the instance gives up.
const MAX_QUICK_FAILURES: u32 = 5;
/// A child running at least this long before failing starts a new count of failures.
const QUICK: Duration = Duration::from_secs(60);
/// How long a shard asked to stop may take to checkpoint before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(120);

/// A shard's child process.
struct Running {
    child: Child,
    started: Instant,
    /// When it was asked to stop (handed over, or the instance stops).
    stopping: Option<Instant>,
}

/// What the instance knows of a shard it does not run right now.
#[derive(Default)]
struct History {
    /// Consecutive failures, each within [`QUICK`] of starting.
    quick_failures: u32,
    /// Not to be started again before this.
    restart_at: Option<Instant>,
    /// The last failure's exit status.
    last_failure: Option<String>,
}

/// Runs this instance of the sharded job of `loaded` until it is stopped (SIGINT/SIGTERM) or,
/// bounded, until its shards have finished.
pub async fn run_instance(loaded: &LoadedConfig, options: InstanceOptions) -> anyhow::Result<()> {
    let kafka = (loaded.config.source.kafka.clone())
        .ok_or_else(|| anyhow::anyhow!("`shards` needs a Kafka source"))?;
    let count = kafka.shards.unwrap_or(1);
    let group = kafka.group(&loaded.config.name);
    let member = ShardGroup::join(&kafka, &group, count).await?;
    eprintln!(
        "instance: joined `{group}.shards`, which shares the job's {count} shards among its instances"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let signals = tokio::spawn(async move {
        crate::run::stop_requested(true).await;
        flag.store(true, Ordering::SeqCst);
    });
    let result =
        tokio::task::spawn_blocking(move || supervise(member, count, &options, &stop)).await;
    signals.abort();
    result?
}

fn supervise(
    member: ShardGroup,
    count: u32,
    options: &InstanceOptions,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut running: BTreeMap<u32, Running> = BTreeMap::new();
    let mut history: BTreeMap<u32, History> = BTreeMap::new();
    let mut finished: BTreeSet<u32> = BTreeSet::new();
    let mut owned: BTreeSet<u32> = BTreeSet::new();
    let mut warned_at: Option<Instant> = None;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match member.owned(Duration::from_millis(200)) {
            Ok(now) if now != owned => {
                owned = now;
                finished.retain(|s| owned.contains(s));
                eprintln!("instance: owns shards {}", list(&owned, count));
            }
            Ok(_) => {}
            Err(e) => {
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    eprintln!("instance: the shards' group: {e} (retrying)");
                    warned_at = Some(Instant::now());
                }
            }
        }
        for (shard, run) in running.iter_mut() {
            if !owned.contains(shard) && run.stopping.is_none() {
                eprintln!("instance: handing shard {shard}/{count} over (checkpointing it)");
                terminate(&run.child);
                run.stopping = Some(Instant::now());
            }
        }
        if let Err(e) = reap(&mut running, &mut history, &mut finished, count) {
            failure = Some(e);
            break;
        }
        let now = Instant::now();
        for &shard in &owned {
            let waiting = history
                .get(&shard)
                .and_then(|h| h.restart_at)
                .is_some_and(|at| at > now);
            if running.contains_key(&shard) || finished.contains(&shard) || waiting {
                continue;
            }
            let child = spawn_shard(
                options,
                KeyShard::new(shard, count).map_err(anyhow::Error::msg)?,
            )?;
            running.insert(
                shard,
                Running {
                    child,
                    started: now,
                    stopping: None,
                },
            );
        }
        if options.bounded && !owned.is_empty() && owned.is_subset(&finished) && running.is_empty()
        {
            eprintln!("instance: its shards read their input to the end");
            break;
        }
    }
    // Stopping: every shard checkpoints and lets go of its lock, then the group hears we left.
    for run in running.values_mut().filter(|r| r.stopping.is_none()) {
        terminate(&run.child);
        run.stopping = Some(Instant::now());
    }
    while !running.is_empty() {
        let _ = reap(&mut running, &mut history, &mut finished, count);
        std::thread::sleep(Duration::from_millis(100));
    }
    member.leave();
    match failure {
        Some(e) => Err(e),
        None => {
            eprintln!("instance: stopped; its shards go to the group's other instances");
            Ok(())
        }
    }
}

/// Collects the children that exited: finished, handed over, or failed (to be started
/// again after a pause, or the instance's error once a shard keeps failing).
fn reap(
    running: &mut BTreeMap<u32, Running>,
    history: &mut BTreeMap<u32, History>,
    finished: &mut BTreeSet<u32>,
    count: u32,
) -> anyhow::Result<()> {
    let mut exited = Vec::new();
    for (&shard, run) in running.iter_mut() {
        match run.child.try_wait()? {
            Some(status) => exited.push((shard, status)),
            None => {
                if run.stopping.is_some_and(|t| t.elapsed() > STOP_GRACE) {
                    eprintln!(
                        "instance: shard {shard}/{count} did not stop within {}s; killing it (its last checkpoint stands)",
                        STOP_GRACE.as_secs()
                    );
                    let _ = run.child.kill();
                }
            }
        }
    }
    for (shard, status) in exited {
        let run = running.remove(&shard).expect("an exited child was running");
        let entry = history.entry(shard).or_default();
        if run.stopping.is_some() {
            eprintln!("instance: shard {shard}/{count} stopped ({status})");
            continue;
        }
        if status.success() {
            eprintln!("instance: shard {shard}/{count} finished");
            *entry = History::default();
            finished.insert(shard);
            continue;
        }
        if run.started.elapsed() >= QUICK {
            entry.quick_failures = 0;
        }
        entry.quick_failures += 1;
        entry.last_failure = Some(status.to_string());
        if entry.quick_failures >= MAX_QUICK_FAILURES {
            anyhow::bail!(
                "shard {shard}/{count} failed {} times in a row ({status}; its error is above): stopping this instance",
                entry.quick_failures
            );
        }
        let pause = Duration::from_secs(1 << (entry.quick_failures - 1).min(5));
        eprintln!(
            "instance: shard {shard}/{count} failed ({status}); starting it again in {}s",
            pause.as_secs()
        );
        entry.restart_at = Some(Instant::now() + pause);
    }
    Ok(())
}

/// Starts `quiver run --shard I/N --standby` for `shard`: it waits for the shard's lock (a
/// previous owner may still be checkpointing), then resumes from the shard's checkpoint. Its
/// output lines come through this process's, prefixed with the shard.
fn spawn_shard(options: &InstanceOptions, shard: KeyShard) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(&options.config)
        .arg("--shard")
        .arg(shard.to_string())
        .arg("--standby")
        .arg("--no-progress")
        .args(&options.child_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn()?;
    let prefix = format!("[shard {shard}] ");
    if let Some(out) = child.stdout.take() {
        forward_lines(out, prefix.clone(), false);
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, prefix, true);
    }
    Ok(child)
}

/// Copies a child's lines to this process's stdout or stderr with `prefix`.
fn forward_lines(from: impl std::io::Read + Send + 'static, prefix: String, to_stderr: bool) {
    std::thread::spawn(move || {
        use std::io::Write;
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let text = format!("{prefix}{line}\n");
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(text.as_bytes())
            } else {
                std::io::stdout().lock().write_all(text.as_bytes())
            };
        }
    });
}

/// The child gets SIGTERM when this process dies, however it dies: it checkpoints and stops
/// instead of running a shard nobody supervises (and the group hands the shard to another
/// instance).
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl, getppid and raise are async-signal-safe; nothing else runs here.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the signal was armed.
                if libc::getppid() != parent {
                    libc::raise(libc::SIGTERM);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Asks a child to checkpoint and stop.
fn terminate(child: &Child) {
    #[cfg(unix)]
    // SAFETY: kill(2) on our own child's process id.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// `0, 2 (of 4)`, or `none (of 4)`.
fn list(shards: &BTreeSet<u32>, count: u32) -> String {
    if shards.is_empty() {
        return format!("none (of {count})");
    }
    let names: Vec<String> = shards.iter().map(|s| s.to_string()).collect();
    format!("{} (of {count})", names.join(", "))
}
