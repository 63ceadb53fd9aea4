//! The checkpoint coordinator: decides at start-up whether a run resumes, and commits epochs
//! (barrier to every view, staged outputs, checkpoint file, publication). The decisions are
//! in [`crate::checkpoint::protocol`]; this is the part that talks to tasks and files.

use crate::checkpoint::chain::CheckpointChain;
use crate::checkpoint::commit::{roll_forward, Effects};
use crate::checkpoint::lock::JobLock;
use crate::checkpoint::protocol::{view_changes, EpochAcks};
use crate::checkpoint::state::{
    Checkpoint, CommitRecord, Counters, ReorderState, TableCommit, ViewCheckpoint, ViewIdentity,
};
use crate::checkpoint::{startup, CheckpointDir, Startup};
use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::fault::crash_point;
use crate::kafka_output::{KafkaCommit, KafkaOutput, TopicPart};
use crate::operator::{Barrier, BarrierAck, Message, StateRequest};
use crate::outputs::{OutputPaths, Outputs};
use crate::reorder::ReorderBuffer;
use crate::source::{PartitionProgress, Source};
use crate::view_operator::ViewOperator;
use crate::view_task::{finish_all, ViewTask};
use crate::watermark::{WatermarkState, Watermarks};
use quiver_store::online::OnlineStore;
use quiver_store::{FeatureRowWriter, StagedFile};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// Checkpoint figures for the run summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointStats {
    /// Checkpoints committed by this process.
    pub count: u64,
    /// Size of the last checkpoint file in bytes.
    pub last_bytes: u64,
    /// Seconds ingestion was paused for checkpoints (sending barriers, staging dead letters,
    /// waiting for the previous checkpoint), in total; the views' snapshots, writing and
    /// publishing overlap with the next epoch.
    pub total_s: f64,
    /// The longest pause, in seconds.
    pub max_s: f64,
    /// The longest time from a barrier to its checkpoint being durable and published.
    pub max_commit_s: f64,
    /// Size of the largest checkpoint file in bytes.
    pub max_bytes: u64,
    /// The epoch this process resumed from, if it resumed.
    pub resumed_from: Option<u64>,
    /// The last checkpoint's time from barrier to durable and published, seconds.
    pub last_commit_s: Option<f64>,
    /// Feature rows per view as of the last durable checkpoint.
    pub view_rows: Vec<(String, u64)>,
    /// Checkpoints with incremental window state (the changed keys only).
    pub incremental: u64,
    /// Times incremental checkpoints were merged into whole state beside the job.
    pub merges: u64,
}

/// What the coordinator captured at a barrier, besides the views' answers.
pub struct Captured {
    /// Source progress per partition.
    pub partitions: Vec<PartitionProgress>,
    /// Watermarks.
    pub watermarks: WatermarkState,
    /// Events waiting for the watermark.
    pub reorder: ReorderState,
    /// Totals so far.
    pub counters: Counters,
    /// Each partition's end offset as last heard (live sources): the consumer lag.
    pub end_offsets: Option<Vec<Option<u64>>>,
}

impl Captured {
    /// What the coordinator keeps at a barrier: source progress, watermarks, the events still
    /// buffered, and the run's totals (`accepted` events so far).
    pub fn at_barrier(
        source: &Source,
        watermarks: &Watermarks,
        reorder: &ReorderBuffer,
        accepted: u64,
        outputs: &Outputs,
    ) -> Result<Captured, JobError> {
        Ok(Captured {
            partitions: source.partitions.clone(),
            watermarks: watermarks.snapshot(),
            reorder: reorder
                .snapshot()
                .map_err(|e| JobError::Checkpoint(format!("cannot save buffered events: {e}")))?,
            counters: Counters {
                events: source.events,
                accepted,
                dead_letters: outputs.dead_letter_counts(),
                files_done: source.files_done,
            },
            end_offsets: source.cached_end_offsets(),
        })
    }
}

impl Captured {
    /// What a job without a source (a backfill of an event log) captures at its barrier.
    pub fn without_source(
        reorder: &ReorderBuffer,
        accepted: u64,
        outputs: &Outputs,
    ) -> Result<Captured, JobError> {
        Ok(Captured {
            partitions: Vec::new(),
            watermarks: Watermarks::new(0, 0, false, None).snapshot(),
            reorder: reorder
                .snapshot()
                .map_err(|e| JobError::Checkpoint(format!("cannot save buffered events: {e}")))?,
            counters: Counters {
                events: accepted,
                accepted,
                dead_letters: outputs.dead_letter_counts(),
                files_done: 0,
            },
            end_offsets: None,
        })
    }
}

/// The coordinator of one job.
pub struct Coordinator {
    dir: CheckpointDir,
    /// This job's hold on the checkpoint directory.
    _lock: JobLock,
    paths: OutputPaths,
    /// Run identifier (names output files).
    pub run: String,
    pipeline: String,
    source: String,
    identities: Vec<ViewIdentity>,
    /// The epoch in progress.
    pub epoch: u64,
    replaced: bool,
    /// The previous epoch's write and publication, still running.
    in_flight: Option<InFlight>,
    /// Figures for the summary.
    pub stats: CheckpointStats,
    /// A store run's Delta tables, per view: the table and `view@version`.
    store_tables: Option<Vec<(std::path::PathBuf, String)>>,
    /// The shard of the job this run is, named in its store commits.
    shard: Option<quiver_sql::KeyShard>,
    /// The pipeline's event-time column.
    event_time: String,
    /// The output topics (`output.kafka`), written at each commit.
    kafka: Option<Arc<KafkaOutput>>,
    /// The online store, written at each commit.
    online: Option<Arc<dyn OnlineStore>>,
    /// Source positions of a checkpoint that became durable and were not handed out yet.
    durable: Option<Vec<PartitionProgress>>,
    /// Incremental checkpoints since the last whole one, merged beside the job.
    chain: CheckpointChain,
}

/// What writing a checkpoint answers: its size in bytes, each view's committed rows, and
/// whether its state was incremental.
type Written = (u64, Vec<(String, u64)>, bool);

/// What the task writing a checkpoint returned (see [`Coordinator::writer_done`]).
pub struct WriterResult(Result<Result<Written, JobError>, tokio::task::JoinError>);

/// A checkpoint being written and published on a blocking thread.
struct InFlight {
    epoch: u64,
    started: Instant,
    handle: tokio::task::JoinHandle<Result<Written, JobError>>,
    /// The source positions the checkpoint holds.
    positions: Vec<PartitionProgress>,
}

impl Coordinator {
    /// Finishes whatever the latest checkpoint committed (a crash may have interrupted its
    /// publication), clears uncommitted staged files, and decides how the run starts: it
    /// resumes an unfinished run of the same pipeline, source and views unless `fresh`.
    /// `kafka` is the run's output topics and `online` opens its online store, if any
    /// (recovery may have to write the last epoch's messages and online state); `held` is the
    /// checkpoints' lock when the caller already took it (a standby that waited for it).
    pub fn begin(
        pipeline: &CompiledPipeline,
        paths: OutputPaths,
        source_fingerprint: &str,
        fresh: bool,
        kafka: Option<Arc<KafkaOutput>>,
        online: impl FnOnce() -> Result<Option<Arc<dyn OnlineStore>>, JobError>,
        held: Option<JobLock>,
    ) -> Result<(Self, Option<Checkpoint>), JobError> {
        let lock = match held {
            Some(lock) => lock,
            None => JobLock::acquire(&paths.checkpoints)?,
        };
        // Opened once the job holds its checkpoints: a second job is told about the job,
        // not about the store's file lock.
        let online = online()?;
        let dir = CheckpointDir::new(paths.checkpoints.clone());
        let latest = if fresh {
            // A damaged checkpoint must not stop a user who asked to start over.
            dir.latest().ok().flatten()
        } else {
            dir.latest()?
        };
        if let Some(c) = &latest {
            let effects = Effects {
                kafka: kafka.as_deref(),
                online: online.as_deref(),
                online_writes: None,
                views: Some(&c.views),
                store: paths.object_store.as_ref(),
            };
            roll_forward(&c.commit, &c.run, effects)?;
        }
        let first_epoch = dir.max_epoch()?.map_or(1, |e| e + 1);
        paths.clear_staging()?;
        let name = pipeline.loaded.config.name.clone();
        let identities = pipeline.view_identities.clone();
        let mut coordinator = Coordinator {
            dir: dir.clone(),
            _lock: lock,
            paths,
            run: format!("{:x}", crate::clock::now_ms()),
            pipeline: name,
            source: source_fingerprint.to_string(),
            identities,
            epoch: first_epoch,
            replaced: false,
            in_flight: None,
            stats: CheckpointStats::default(),
            store_tables: None,
            shard: None,
            event_time: pipeline.event_time().to_string(),
            kafka,
            online,
            durable: None,
            chain: CheckpointChain::new(dir, pipeline.loaded.config.checkpoint.max_increments),
        };
        let resume = match startup(latest, fresh) {
            Startup::Fresh => None,
            Startup::Resume(c) => {
                coordinator.check_fits(&c)?;
                coordinator.run = c.run.clone();
                coordinator.epoch = c.epoch + 1;
                coordinator.replaced = true;
                coordinator.stats.resumed_from = Some(c.epoch);
                Some(*c)
            }
        };
        Ok((coordinator, resume))
    }

    /// Whether an unfinished run's checkpoint can continue with the pipeline as it is now.
    fn check_fits(&self, c: &Checkpoint) -> Result<(), JobError> {
        let refuse = |what: String| {
            JobError::Checkpoint(format!(
                "cannot resume the unfinished run in `{}` (checkpoint {}): {what}. Run with --fresh to start over (the unfinished run's output is replaced at the first new checkpoint), or restore the previous definition to resume",
                self.dir.path().display(),
                c.epoch
            ))
        };
        if c.pipeline != self.pipeline {
            return Err(refuse(format!(
                "it belongs to pipeline `{}`, not `{}`",
                c.pipeline, self.pipeline
            )));
        }
        if c.source != self.source {
            return Err(refuse(format!(
                "the input changed (then {}, now {})",
                c.source, self.source
            )));
        }
        let then: Vec<ViewIdentity> = c.views.iter().map(|v| v.identity.clone()).collect();
        let changes = view_changes(&then, &self.identities);
        if !changes.is_empty() {
            return Err(refuse(changes.join("; ")));
        }
        Ok(())
    }

    /// Commits every epoch into these Delta tables (one per view, in view order, with its
    /// `view@version`) besides publishing its files, and leaves other runs' files alone; the
    /// commits name `shard` when the run is one shard of a job.
    pub fn with_store_tables(
        mut self,
        tables: Vec<(std::path::PathBuf, String)>,
        shard: Option<quiver_sql::KeyShard>,
    ) -> Self {
        self.store_tables = Some(tables);
        self.shard = shard;
        self
    }

    /// Ends the epoch in progress: a barrier to every view (after everything sent before),
    /// the epoch's dead letters synced, the checkpoint written (the commit point), the
    /// epoch's files published. `complete` marks the end of the input.
    pub async fn commit(
        &mut self,
        complete: bool,
        tasks: &[ViewTask],
        outputs: &mut Outputs,
        captured: Captured,
    ) -> Result<(), JobError> {
        let started = Instant::now();
        let epoch = self.epoch;
        // A process's first checkpoint holds whole state, later ones what changed since the
        // one before, and the last one of a finished input none (it is never resumed).
        let request = if complete {
            StateRequest::Nothing
        } else if self.stats.count == 0 || !self.chain.incremental() {
            StateRequest::Whole
        } else {
            StateRequest::Changes
        };
        let mut replies = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (reply, answer) = oneshot::channel();
            let barrier = Barrier {
                epoch,
                state: request,
                reply,
            };
            if !task.send(Message::Barrier(barrier)).await {
                return Err(JobError::Other(format!(
                    "a view stopped before checkpoint {epoch}"
                )));
            }
            replies.push(answer);
        }
        let dead_letters = outputs.stage_dead_letters()?;
        // The next epoch's dead letters follow this one's in the file.
        outputs.committed(&dead_letters);
        let staged_events = outputs.stage_events(epoch)?;
        // What every Delta commit of a store run's epoch records: where the source stands.
        let epoch_info = self.store_tables.as_ref().map(|_| {
            serde_json::json!({
                "run": self.run,
                "epoch": epoch,
                "shard": self.shard.map(|s| s.to_string()),
                "watermark": captured.watermarks.job,
                "positions": captured.partitions,
                "end_offsets": captured.end_offsets,
                "partition_max_event_us": captured
                    .watermarks
                    .clocks
                    .iter()
                    .map(|c| c.max_seen)
                    .collect::<Vec<_>>(),
            })
        });
        // Checkpoints commit in order: the previous one must be durable first.
        self.wait_in_flight().await?;
        let positions = captured.partitions.clone();
        // The views hold every event older than the job watermark and none at or after it;
        // at the end of the input, every event: the online state's watermark is then just
        // after the newest. Reads are exact from the watermark on.
        let newest = (captured.watermarks.clocks.iter())
            .filter_map(|c| c.max_seen)
            .max();
        let captured_watermark = match (complete, newest) {
            (true, Some(newest)) => captured.watermarks.job.max(newest.saturating_add(1)),
            _ => captured.watermarks.job,
        };
        let identities = self.identities.clone();
        let mut draft = Checkpoint {
            epoch,
            run: self.run.clone(),
            complete,
            written_unix_ms: 0,
            pipeline: self.pipeline.clone(),
            source: self.source.clone(),
            partitions: captured.partitions,
            watermarks: captured.watermarks,
            reorder: captured.reorder,
            views: Vec::new(),
            counters: captured.counters,
            commit: CommitRecord {
                root: self.paths.root.clone(),
                // A store run never removes files: tables keep every run's rows.
                views: match self.store_tables {
                    Some(_) => Vec::new(),
                    None => identities.iter().map(|v| v.name.clone()).collect(),
                },
                files: Vec::new(),
                dead_letters,
                replaces_previous: !self.replaced,
                tables: Vec::new(),
                store: self.paths.object_store.as_ref().map(|s| s.to_string()),
                kafka: None,
                online: None,
            },
        };
        let app = format!("quiver-run/{}", self.run);
        // One Delta commit per table of a store run: `info` plus what `extra` adds.
        let table_commit = {
            let (app, event_time, info) =
                (app.clone(), self.event_time.clone(), epoch_info.clone());
            move |table: std::path::PathBuf, files: &[StagedFile], extra: Option<&str>| {
                let mut info = info.clone().unwrap_or_default();
                if let Some(view) = extra {
                    info["view"] = serde_json::json!(view);
                }
                TableCommit {
                    table,
                    files: files.iter().map(|f| f.committed.clone()).collect(),
                    app: app.clone(),
                    epoch,
                    info: info.to_string(),
                    event_time: event_time.clone(),
                }
            }
        };
        for (table, files) in staged_events {
            draft.commit.tables.push(table_commit(table, &files, None));
            draft.commit.files.extend(files);
        }
        let store_tables = self.store_tables.clone();
        let kafka = self.kafka.clone();
        let online = self.online.clone();
        let staged_online = crate::online::epoch::staged_path(&self.paths.staging, epoch);
        let watermark = (captured_watermark > i64::MIN).then_some(captured_watermark);
        let dir = self.dir.clone();
        let paths = self.paths.clone();
        // Ingestion goes on while the views answer (their next messages queue behind the
        // barrier) and while the checkpoint is written and published.
        let handle = tokio::spawn(async move {
            let mut acks: EpochAcks<BarrierAck> = EpochAcks::new(epoch, replies.len());
            for (i, answer) in replies.into_iter().enumerate() {
                let ack = answer.await.map_err(|_| {
                    JobError::Other(format!("a view stopped during checkpoint {epoch}"))
                })??;
                acks.ack(i, ack.epoch, ack)
                    .map_err(|e| JobError::Checkpoint(e.to_string()))?;
            }
            let acks = acks.complete().map_err(|_| {
                JobError::Checkpoint(format!("checkpoint {epoch}: a view did not answer"))
            })?;
            let mut checkpoint = draft;
            let mut messages = KafkaCommit {
                epoch,
                parts: Vec::new(),
            };
            let mut online_writes = Vec::new();
            let mut online_tables = Vec::new();
            for (i, (mut ack, identity)) in acks.into_iter().zip(identities).enumerate() {
                if let Some(write) = ack.state.online.take() {
                    online_tables.push((
                        identity.name.clone(),
                        write.table.clone(),
                        write.stamp.fingerprint,
                    ));
                    online_writes.push(write);
                }
                if let Some((topic, keys)) =
                    kafka.as_ref().and_then(|k| k.view_topic(&identity.name))
                {
                    messages.parts.push(TopicPart::Rows {
                        topic: topic.to_string(),
                        view: identity.name.clone(),
                        keys: keys.to_vec(),
                        files: ack.files.iter().map(|f| f.committed.clone()).collect(),
                    });
                }
                if let Some((table, version)) = store_tables.as_ref().and_then(|t| t.get(i)) {
                    let commit = table_commit(table.clone(), &ack.files, Some(version));
                    checkpoint.commit.tables.push(commit);
                }
                checkpoint.commit.files.extend(ack.files);
                checkpoint.views.push(ViewCheckpoint {
                    identity,
                    state: ack.state.state,
                    incremental: ack.state.incremental,
                    rows: ack.rows,
                });
            }
            if let Some(topic) = kafka.as_ref().and_then(|k| k.dead_letter_topic()) {
                let letters = &checkpoint.commit.dead_letters;
                if letters.len_after > letters.len_before {
                    messages.parts.push(TopicPart::DeadLetters {
                        topic: topic.to_string(),
                        path: letters.path.clone(),
                        from: letters.len_before,
                        to: letters.len_after,
                    });
                }
            }
            if kafka.is_some() {
                checkpoint.commit.kafka = Some(messages);
            }
            if !online_writes.is_empty() {
                let commit = crate::online::epoch::OnlineCommit {
                    epoch,
                    watermark,
                    tables: online_tables,
                    // A checkpoint with state rebuilds the epoch from it; only the last one of
                    // a finished input, which has none, stages its writes.
                    staged: checkpoint.complete.then_some(staged_online),
                };
                for write in &mut online_writes {
                    write.replace = checkpoint.commit.replaces_previous;
                    write.stamp = commit.stamp(&checkpoint.run, write.stamp.fingerprint);
                }
                checkpoint.commit.online = Some(commit);
            }
            checkpoint.written_unix_ms = crate::clock::now_ms();
            tokio::task::spawn_blocking(move || {
                if let Some(staged) = checkpoint
                    .commit
                    .online
                    .as_ref()
                    .and_then(|c| c.staged.as_ref())
                {
                    crate::online::epoch::stage(staged, &online_writes)?;
                }
                crash_point("before_checkpoint");
                let written = dir.write(&checkpoint)?;
                crash_point("after_checkpoint");
                let effects = Effects {
                    kafka: kafka.as_deref(),
                    online: online.as_deref(),
                    online_writes: Some(&online_writes),
                    views: None,
                    store: paths.object_store.as_ref(),
                };
                roll_forward(&checkpoint.commit, &checkpoint.run, effects)?;
                if checkpoint.complete {
                    paths.clear_staging()?;
                }
                let rows = (checkpoint.views.iter())
                    .map(|v| (v.identity.name.clone(), v.rows))
                    .collect();
                Ok((written.bytes, rows, checkpoint.is_incremental()))
            })
            .await
            .map_err(|e| JobError::Checkpoint(format!("the checkpoint writer stopped: {e}")))?
        });
        self.in_flight = Some(InFlight {
            epoch,
            started,
            handle,
            positions,
        });
        self.replaced = true;
        self.epoch += 1;
        let paused = started.elapsed().as_secs_f64();
        self.stats.count += 1;
        self.stats.total_s += paused;
        self.stats.max_s = self.stats.max_s.max(paused);
        if complete {
            self.wait_in_flight().await?;
        }
        Ok(())
    }

    /// Whether a checkpoint is being written (the next one waits for it).
    pub fn writing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Waits until the checkpoint being written has been written (forever when none is) and
    /// gives what the writer returned, for [`Coordinator::written`]. Cancel-safe: dropped
    /// before it is ready, the checkpoint stays in flight.
    pub async fn writer_done(&mut self) -> WriterResult {
        match self.in_flight.as_mut() {
            Some(in_flight) => WriterResult((&mut in_flight.handle).await),
            None => std::future::pending().await,
        }
    }

    /// Records what [`Coordinator::writer_done`] gave: the checkpoint in flight is durable
    /// and published (or its error).
    pub async fn written(&mut self, result: WriterResult) -> Result<(), JobError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        self.record_durable(in_flight, result).await
    }

    /// Waits until the checkpoint being written is durable and published.
    async fn wait_in_flight(&mut self) -> Result<(), JobError> {
        let Some(mut in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let result = WriterResult((&mut in_flight.handle).await);
        self.record_durable(in_flight, result).await
    }

    async fn record_durable(
        &mut self,
        in_flight: InFlight,
        result: WriterResult,
    ) -> Result<(), JobError> {
        let (bytes, rows, incremental) = result
            .0
            .map_err(|e| JobError::Checkpoint(format!("the checkpoint writer stopped: {e}")))??;
        self.chain
            .durable(in_flight.epoch, bytes, incremental)
            .await?;
        self.stats.incremental += u64::from(incremental);
        self.stats.merges = self.chain.merges;
        self.durable = Some(in_flight.positions);
        self.stats.last_bytes = bytes;
        self.stats.max_bytes = self.stats.max_bytes.max(bytes);
        let took = in_flight.started.elapsed().as_secs_f64();
        self.stats.max_commit_s = self.stats.max_commit_s.max(took);
        self.stats.last_commit_s = Some(took);
        self.stats.view_rows = rows;
        Ok(())
    }

    /// The source positions of the newest checkpoint that became durable since the last call,
    /// if any (a checkpoint still being written is waited for only if it is done).
    pub async fn newly_durable(&mut self) -> Result<Option<Vec<PartitionProgress>>, JobError> {
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.handle.is_finished())
        {
            self.wait_in_flight().await?;
        }
        Ok(self.durable.take())
    }

    /// Commits the last epoch (`complete`: the input ended) and stops the views; returns each
    /// view's operator and writer for the summary.
    pub async fn finish(
        &mut self,
        complete: bool,
        tasks: Vec<ViewTask>,
        outputs: &mut Outputs,
        captured: Captured,
    ) -> Result<Vec<(ViewOperator, FeatureRowWriter)>, JobError> {
        let committed = match self.commit(complete, &tasks, outputs, captured).await {
            Ok(()) => self.wait_in_flight().await,
            Err(e) => Err(e),
        };
        let committed = match committed {
            Ok(()) => self.chain.finish(true).await,
            Err(e) => Err(e),
        };
        // Epochs the store may have kept in memory only are made durable (a crash before
        // this is repaired from the checkpoint by the next run).
        let committed = match (committed, self.online.clone()) {
            (Ok(()), Some(online)) => tokio::task::spawn_blocking(move || online.sync())
                .await
                .map_err(|e| JobError::Checkpoint(format!("the online store's sync stopped: {e}")))?
                .map_err(|e| JobError::Checkpoint(format!("cannot sync the online store: {e}"))),
            (committed, _) => committed,
        };
        self.stats.merges = self.chain.merges;
        let done = finish_all(tasks).await;
        committed?;
        done
    }
}
