//! The streaming run: events flow through as they arrive; features are emitted once the
//! watermark guarantees they are final; checkpoints commit outputs epoch by epoch, so a run
//! killed at any moment resumes (same command) with every row exactly once.

use crate::checkpoint::{CheckpointPolicy, CheckpointTrigger};
use crate::compile::CompiledPipeline;
use crate::coordinator::{Captured, Coordinator, WriterResult};
use crate::dead_letters::row_dead_letter;
use crate::error::JobError;
use crate::ingest::ingest;
use crate::kafka_output::KafkaOutput;
use crate::operator::{Message, Operator};
use crate::outputs::{OutputPaths, Outputs};
use crate::progress::events_bar;
use crate::reorder::ReorderBuffer;
use crate::source::{Source, SourceEvent, SourceOverrides};
use crate::store_target::StoreTarget;
use crate::summary::{JobTotals, RunSummary};
use crate::view_operator::ViewOperator;
use crate::view_task::{send_all, ViewTask};
use crate::watermark::Watermarks;
use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use quiver_connectors::DeadLetterReason;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Source overrides.
    pub source: SourceOverrides,
    /// Output directory override.
    pub output: Option<PathBuf>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Event time between sweeps of idle window state, in microseconds (default:
    /// each view's longest window).
    pub expire_interval_micros: Option<i64>,
    /// Start over even if an unfinished run could be resumed.
    pub fresh: bool,
    /// Override the config's checkpoint policy (`None`: the config's).
    pub checkpoints: Option<CheckpointPolicy>,
    /// Stop at SIGINT/SIGTERM with a final checkpoint (the binary sets it; tests do not,
    /// as the handler stays installed for the whole process).
    pub handle_signals: bool,
    /// Override the config's `compute.device` (backfill).
    pub device: Option<quiver_gpu::Device>,
    /// Backfill also writes the transformed events the views read (the feature stream, with
    /// its lineage columns) into this directory: the store's event log.
    pub event_log: Option<PathBuf>,
    /// A run commits each epoch into this store (see [`crate::store_target`]) instead of
    /// writing feature rows under the output directory.
    pub store: Option<crate::registry::Registry>,
    /// The online store to write, already open (a server in the same process reads it);
    /// `None`: the config's (`online.path`, else `online.redb` in the output directory),
    /// unless `online.enabled` is false.
    pub online: Option<crate::online::SharedOnline>,
    /// Live figures for a server in the same process, updated as the run goes.
    pub gauges: Option<Arc<crate::run_gauges::RunGauges>>,
    /// The checkpoints' lock, already taken (a standby that waited for it).
    pub held_lock: Option<crate::checkpoint::lock::HeldLock>,
    /// Backfill: the memory it may take (`None`: [`crate::resident::default_memory_limit`]);
    /// above a quarter of it the input is spilled and evaluated a key partition at a time. A
    /// limit given here is the peak resident size to stay under: one too small for what the
    /// process holds before reading is refused.
    pub memory_limit: Option<usize>,
    /// Backfill: the bytes its data may take, given directly instead of made from
    /// `memory_limit` and the process's resident size (nothing is then checked against that
    /// size). For embedders that budget memory themselves, and for tests that drive small
    /// inputs through the spilled and time-sliced paths.
    pub data_budget: Option<usize>,
    /// Backfill: write the store tables' availability column with the feature rows (`quiver
    /// apply`).
    pub availability_column: bool,
    /// Backfill: read the events of this registered version's event log (already transformed:
    /// the views read them as they are) instead of the configured source.
    pub from_event_log: Option<(crate::registry::Registry, crate::registry::ViewDefinition)>,
    /// Run one shard of the job's key space (`quiver run --shard I/N`, see [`crate::shard`]).
    pub shard: Option<quiver_sql::KeyShard>,
}

/// How often the positions of the last durable checkpoint are committed to a consumer group
/// again (Kafka), besides once when the checkpoint becomes durable.
const RECOMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// The config's checkpoint policy.
pub fn configured_policy(pipeline: &CompiledPipeline) -> CheckpointPolicy {
    let c = &pipeline.loaded.config.checkpoint;
    if !c.enabled {
        return CheckpointPolicy {
            interval: None,
            every_events: None,
        };
    }
    let live = pipeline.loaded.config.source.kafka.is_some();
    CheckpointPolicy {
        interval: Some(Duration::from_micros(
            c.interval(live).as_micros().max(1) as u64
        )),
        every_events: c.every_events,
    }
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM); never without `enabled`.
pub async fn stop_requested(enabled: bool) {
    if !enabled {
        return std::future::pending().await;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The operators of the views (taken out of `pipeline`), sweeping idle state every
/// `expire_interval` microseconds of event time when given; `source` names the partitions
/// in feature rows' lineage columns.
pub fn view_operators(
    pipeline: &mut CompiledPipeline,
    expire_interval: Option<i64>,
    names: &[String],
) -> Vec<ViewOperator> {
    std::mem::take(&mut pipeline.views)
        .into_iter()
        .zip(&pipeline.view_identities)
        .map(|(view, identity)| {
            let op = ViewOperator::new(view, identity.fingerprint()).with_partitions(names);
            match expire_interval {
                Some(micros) => op.with_expire_interval(micros),
                None => op,
            }
        })
        .collect()
}

/// Hands the run's figures (`events`, `accepted`, `dead letters`), its watermark and its
/// checkpoint stats to a server's gauges.
fn publish(
    gauges: &crate::run_gauges::RunGauges,
    (events, accepted, dead_letters): (u64, u64, u64),
    watermark: i64,
    stats: &crate::coordinator::CheckpointStats,
) {
    gauges.update(|g| {
        g.events = events;
        g.accepted = accepted;
        g.dead_letters = dead_letters;
        g.watermark_us = Some(watermark).filter(|&w| w > i64::MIN);
        g.checkpoints = stats.count;
        g.last_checkpoint_s = stats.last_commit_s;
        if !stats.view_rows.is_empty() && g.view_rows != stats.view_rows {
            g.view_rows = stats.view_rows.clone();
        }
    });
}

/// Runs the pipeline over its source until the source ends (or a stop is requested).
pub async fn run(
    mut pipeline: CompiledPipeline,
    options: RunOptions,
) -> Result<RunSummary, JobError> {
    let started = Instant::now();
    if let Some(shard) = options.shard {
        crate::shard::shard_config(&mut pipeline.loaded.config, shard);
        if options.online.is_some() {
            return Err(JobError::Other(crate::shard::SHARD_DOES_NOT_SERVE.into()));
        }
    }
    let config = pipeline.loaded.config.clone();
    let mut paths = OutputPaths::of(&pipeline, options.output.clone());
    // The job's output directory (a shard's is inside it).
    let job_root = paths.root.clone();
    if let Some(shard) = options.shard {
        paths = paths.sharded(shard);
    }
    let routing = match options.shard {
        Some(shard) => Some(crate::shard::ShardRouting::new(&pipeline, shard).await?),
        None => None,
    };
    let target = match options.store.clone() {
        Some(registry) => Some(StoreTarget::resolve(&pipeline, registry)?),
        None => None,
    };
    if let Some(target) = &target {
        // Staged files become the tables' files by renames: stage on the store's file system.
        match target.registry.root().local_path() {
            Some(root) => {
                let runs = root.join("_runs").join(&config.name);
                paths.staging = match options.shard {
                    Some(shard) => runs.join(shard.dir_name()).join("staging"),
                    None => runs.join("staging"),
                }
            }
            // Staged in the output directory, uploaded when the epoch commits.
            None => paths.object_store = target.object_store(),
        }
    }
    let mut source = Source::resolve(&pipeline, &options.source).await?;
    let kafka = KafkaOutput::connect(&pipeline)?.map(Arc::new);
    let mut online = None;
    let (mut coordinator, resume) = Coordinator::begin(
        &pipeline,
        paths.clone(),
        &source.fingerprint,
        options.fresh,
        kafka,
        || {
            online = match options.online.clone() {
                Some(shared) => Some(shared),
                None if config.online.enabled => Some(crate::online::open_for_run(
                    &pipeline.loaded,
                    &job_root,
                    options.shard,
                )?),
                None => None,
            };
            Ok(online.as_ref().map(|o| o.0.clone()))
        },
        options.held_lock.as_ref().and_then(|l| l.take()),
    )?;
    if let Some(target) = &target {
        let tables = (target.views.iter())
            .map(|(d, table)| (table.clone(), format!("{}@{}", d.view, d.version)))
            .collect();
        coordinator = coordinator.with_store_tables(tables, options.shard);
    }
    let idle = config.event_time.idle_timeout.as_micros();
    let mut watermarks = Watermarks::new(
        config.event_time.max_lateness.as_micros(),
        source.partitions.len(),
        source.is_live(),
        (idle > 0).then(|| Duration::from_micros(idle as u64)),
    );
    let mut reorder = ReorderBuffer::new(pipeline.feature_stream_schema.clone());
    // Totals of the run so far (restored on resume): accepted events, dead letters by reason.
    let mut accepted = 0;
    let mut dead_letters = Default::default();
    let mut committed_len = 0;
    let mut states = Vec::new();
    if let Some(c) = resume {
        source.restore(c.partitions, c.counters.events, c.counters.files_done)?;
        watermarks.restore(c.watermarks, source.now());
        reorder
            .restore(c.reorder)
            .map_err(|e| JobError::Checkpoint(format!("cannot restore buffered events: {e}")))?;
        states = c.views;
        committed_len = c.commit.dead_letters.len_after;
        accepted = c.counters.accepted;
        dead_letters = c.counters.dead_letters;
    }
    let mut outputs = Outputs::new(paths, coordinator.epoch, committed_len, dead_letters);
    let rows: Vec<u64> = states.iter().map(|v| v.rows).collect();
    let tables: Option<Vec<PathBuf>> = target
        .as_ref()
        .map(|t| t.views.iter().map(|(_, table)| table.clone()).collect());
    // Events and the dead letters that have no key are written once: by shard 0 of a sharded
    // job.
    let writes_unkeyed = routing.as_ref().is_none_or(|r| r.writes_unkeyed());
    if let (Some(target), true) = (&target, writes_unkeyed) {
        outputs = outputs.with_event_logs(
            &pipeline,
            &target.event_logs,
            source.partition_names(),
            &coordinator.run,
        )?;
    }
    let availability = target
        .as_ref()
        .map(|t| t.availability.clone())
        .unwrap_or_default();
    let writers = outputs.feature_writers(
        &pipeline,
        &coordinator.run,
        &rows,
        tables.as_deref(),
        &availability,
    )?;
    let schema = pipeline.feature_stream_schema.clone();
    // The online tables (`view@version`), named before the views move into their operators.
    let mut online_tables = match online {
        Some(_) => crate::online::view_tables(&pipeline)?,
        None => Vec::new(),
    };
    if let Some(shard) = options.shard {
        for (_, table) in &mut online_tables {
            *table = crate::online::shard_tables::shard_table(table, shard);
        }
    }
    if let Some(store) = &online {
        let current: Vec<(String, String)> = (pipeline.views.iter())
            .zip(&online_tables)
            .map(|(view, (_, table))| (view.name().to_string(), table.clone()))
            .collect();
        let keep = config.online.keep_versions;
        for dropped in crate::online::retention::drop_old_versions(&*store.0, &current, keep)? {
            eprintln!("online: dropped `{}` ({})", dropped.table, dropped.reason);
        }
    }
    let mut operators = view_operators(
        &mut pipeline,
        options.expire_interval_micros,
        &source.partition_names(),
    );
    if let Some(shard) = options.shard {
        for op in &mut operators {
            op.set_shard(shard)?;
        }
    }
    for (op, view) in operators.iter_mut().zip(&states) {
        op.restore(&view.state)?;
    }
    if let (Some(target), true) = (&target, states.is_empty()) {
        // A fresh store run continues the tables: windows start from the event logs, and only
        // events newer than everything in them are on time.
        target.check_shard_layout(options.shard)?;
        let mut newest = None;
        let histories = target.histories(&schema, &config.event_time.column, options.shard)?;
        for (op, (history, last)) in operators.iter_mut().zip(histories) {
            if let Some(history) = history {
                op.warm_up(history).await?;
            }
            newest = newest.max(last);
        }
        if let Some(newest) = newest {
            watermarks = watermarks.with_floor(newest.saturating_add(1));
        }
        if source.is_live() {
            if let Some(positions) = target.committed_positions(options.shard)? {
                source.continue_from(&positions);
            }
        }
    }
    // Checkpoints after the first hold the keys that changed (and the online store gets
    // them); every key with state now counts as changed.
    for op in &mut operators {
        op.track_changes();
    }
    for (op, (_, table)) in operators.iter_mut().zip(online_tables) {
        op.enable_online(table);
    }
    let tasks: Vec<ViewTask> = operators
        .into_iter()
        .zip(writers)
        .map(|(op, writer)| ViewTask::spawn(op, writer))
        .collect();
    source.open_partitions(&mut watermarks);

    let bar = events_bar(source.expected_events, options.progress, "run");
    bar.inc(source.events);
    let policy = options
        .checkpoints
        .unwrap_or_else(|| configured_policy(&pipeline));
    let mut trigger = CheckpointTrigger::new(policy, source.now());
    let mut engine = Duration::ZERO;
    let mut sent_watermark = watermarks.current();
    let stop = stop_requested(options.handle_signals);
    tokio::pin!(stop);
    let mut interrupted = false;
    let mut durable = None;
    let mut recommit_at = Duration::ZERO;
    loop {
        // A checkpoint due by time while the previous one is still being written waits for
        // it, and the run reads on meanwhile: the events that arrive go into the waiting
        // epoch instead of the one after (which is a whole commit later), and the loop wakes
        // when the write is done even if the source is quiet. (One due by a count of records
        // is taken at once, waiting for the previous one in `commit`.)
        let deferred = coordinator.writing() && trigger.due(source.now());
        let event = tokio::select! {
            biased;
            _ = &mut stop => { interrupted = true; break; }
            done = coordinator.writer_done(), if deferred => Woken::Written(done),
            event = source.next(&mut watermarks) => Woken::Source(event?),
        };
        let event = match event {
            Woken::Source(event) => event,
            Woken::Written(done) => {
                coordinator.written(done).await?;
                Some(SourceEvent::Quiet)
            }
        };
        let step = Instant::now();
        match event {
            None => break,
            Some(SourceEvent::Quiet) => {}
            Some(SourceEvent::Finished(p)) => {
                if let Some(total) = source.files {
                    bar.set_message(format!(
                        "file {}/{total} {}",
                        source.files_done, source.partitions[p].name
                    ));
                }
            }
            Some(SourceEvent::Item(p, item)) => {
                bar.inc(item.len() as u64);
                trigger.record(item.len() as u64);
                if writes_unkeyed {
                    outputs.write_dead_letters(&item.dead_letters)?;
                }
                if let Some(batch) = item.batch {
                    let now = source.now();
                    let into = (&mut watermarks, &mut outputs, routing.as_ref());
                    let (batch, times) = admit(&pipeline, batch, p, now, into).await?;
                    accepted += batch.num_rows() as u64;
                    outputs.write_events(&batch)?;
                    reorder.push(batch, times);
                }
            }
        }
        let output = &config.output;
        outputs.check_dead_letter_ratio(
            source.events,
            output.max_dead_letter_ratio,
            output.dead_letter_min_records,
        )?;
        watermarks.check_idle(source.now());
        let ready = reorder
            .release(watermarks.current())
            .map_err(|e| JobError::Other(e.to_string()))?;
        engine += step.elapsed();
        if let Some(ready) = ready {
            if !send_all(&tasks, || Message::Batch(ready.clone())).await {
                break;
            }
        }
        if watermarks.current() > sent_watermark {
            sent_watermark = watermarks.current();
            if !send_all(&tasks, || Message::Watermark(sent_watermark)).await {
                break;
            }
        }
        let waits = coordinator.writing() && !trigger.due_by_events();
        if trigger.due(source.now()) && !waits {
            let captured =
                Captured::at_barrier(&source, &watermarks, &reorder, accepted, &outputs)?;
            coordinator
                .commit(false, &tasks, &mut outputs, captured)
                .await?;
            trigger.taken(source.now());
        }
        // Durable positions go to the consumer group, and again now and then: a commit sent
        // while the group's coordinator is away (a broker restarting) is lost, and no new
        // checkpoint may come to send a later one.
        if let Some(positions) = coordinator.newly_durable().await? {
            durable = Some(positions);
            recommit_at = Duration::ZERO;
        }
        if let Some(gauges) = &options.gauges {
            let figures = (source.events, accepted, outputs.dead_letter_total());
            publish(gauges, figures, watermarks.current(), &coordinator.stats);
        }
        if let Some(positions) = durable.as_ref().filter(|_| source.now() >= recommit_at) {
            source.committed(positions, false);
            recommit_at = source.now() + RECOMMIT_INTERVAL;
        }
    }
    // Caught up with a live source: buffered events wait for the watermark in the checkpoint.
    let caught_up = !interrupted && !source.end_is_final();
    let complete = !interrupted && !caught_up;
    if complete {
        // The source ended: every buffered event is final.
        if let Some(rest) = reorder
            .drain()
            .map_err(|e| JobError::Other(e.to_string()))?
        {
            send_all(&tasks, || Message::Batch(rest.clone())).await;
        }
    }
    let captured = Captured::at_barrier(&source, &watermarks, &reorder, accepted, &outputs)?;
    let done = coordinator
        .finish(complete, tasks, &mut outputs, captured)
        .await?;
    if let Some(positions) = coordinator.newly_durable().await? {
        source.committed(&positions, true);
    }
    if let Some(gauges) = &options.gauges {
        let figures = (source.events, accepted, outputs.dead_letter_total());
        publish(gauges, figures, watermarks.current(), &coordinator.stats);
    }
    bar.finish_and_clear();
    let lags = source.lags(&watermarks).await;
    let mut summary = RunSummary::build(
        JobTotals {
            mode: "run",
            pipeline: config.name.clone(),
            events: source.events,
            accepted,
            started,
            engine,
            interrupted,
            caught_up,
        },
        &outputs,
        &done,
        coordinator.stats.clone(),
    );
    summary.partitions = lags;
    if let Some(store) = &online {
        let run = &coordinator.run;
        let tables = store.0.tables()?;
        summary.online = Some(crate::summary::OnlineSummary {
            store: store.0.describe(),
            tables: tables
                .into_iter()
                .filter(|(_, stamp)| stamp.run == *run)
                .map(|(table, stamp)| (table, stamp.epoch, stamp.keys))
                .collect(),
        });
    }
    Ok(summary)
}

/// What woke the run's loop.
enum Woken {
    /// The source's next event.
    Source(Option<SourceEvent>),
    /// The checkpoint being written was written.
    Written(WriterResult),
}

/// Ingests a batch of partition `partition`: rows rejected on the way (transforms, event
/// time, lateness) become dead letters; returns the on-time rows with their event times.
/// A shard's job ([`crate::shard::ShardRouting`]) writes only its share of the dead letters.
async fn admit(
    pipeline: &CompiledPipeline,
    batch: quiver_connectors::SourceBatch,
    partition: usize,
    now: Duration,
    (watermarks, outputs, routing): (
        &mut Watermarks,
        &mut Outputs,
        Option<&crate::shard::ShardRouting>,
    ),
) -> Result<(arrow::record_batch::RecordBatch, Vec<i64>), JobError> {
    let ingested = ingest(pipeline, batch, partition).await?;
    if routing.is_none_or(|r| r.writes_unkeyed()) {
        outputs.write_dead_letters(&ingested.dead_letters)?;
    }
    let on_time = watermarks.observe(partition, &ingested.times, now);
    if on_time.iter().all(|ok| *ok) {
        return Ok((ingested.batch, ingested.times));
    }
    let lateness = pipeline.loaded.config.event_time.max_lateness;
    let detail = format!(
        "event time is older than the watermark (the slowest partition's max event time minus max_lateness {lateness})"
    );
    let late_rows: Vec<usize> = (on_time.iter().enumerate())
        .filter(|(_, ok)| !**ok)
        .map(|(row, _)| row)
        .collect();
    let dead_letter = |row: usize, detail: String| {
        row_dead_letter(
            &ingested.batch,
            row,
            &ingested.partition,
            DeadLetterReason::Late,
            detail,
        )
    };
    let late: Vec<_> = match routing {
        None => (late_rows.iter())
            .map(|&row| dead_letter(row, detail.clone()))
            .collect(),
        Some(routing) => {
            let indices =
                arrow::array::UInt32Array::from_iter_values(late_rows.iter().map(|&r| r as u32));
            let rows = arrow::compute::take_record_batch(&ingested.batch, &indices)
                .map_err(|e| JobError::Other(e.to_string()))?;
            (routing.owned_late(&rows).await?.into_iter())
                .map(|owned| {
                    let detail = match owned.views {
                        None => detail.clone(),
                        Some(views) => format!(
                            "{detail}; dropped from {} by shard {} (the other views' keys belong to other shards)",
                            views.join(", "),
                            routing.shard()
                        ),
                    };
                    dead_letter(late_rows[owned.row], detail)
                })
                .collect()
        }
    };
    outputs.write_dead_letters(&late)?;
    let keep: BooleanArray = on_time.iter().map(|&ok| Some(ok)).collect();
    let batch =
        filter_record_batch(&ingested.batch, &keep).map_err(|e| JobError::Other(e.to_string()))?;
    let times = ingested
        .times
        .into_iter()
        .zip(&on_time)
        .filter(|(_, ok)| **ok)
        .map(|(t, _)| t)
        .collect();
    Ok((batch, times))
}
