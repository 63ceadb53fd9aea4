//! The `quiver` command line.

use anyhow::Context;
use clap::{Parser, Subcommand};
use quiver_connectors::{write_batches, Datagen, DatagenConfig, FileFormat};
use quiver_pipeline::backfill::backfill;
use quiver_pipeline::checkpoint::CheckpointPolicy;
use quiver_pipeline::openlineage::{dataset, observed, LineageEmitter};
use quiver_pipeline::produce_demo::produce_demo;
use quiver_pipeline::registry::{apply, Applied, Registry};
use quiver_pipeline::run::{configured_policy, run, RunOptions};
use quiver_pipeline::source::SourceOverrides;
use quiver_pipeline::validate::validate;
use quiver_pipeline::{CompiledPipeline, LoadedConfig, RunSummary};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc reuses freed memory across the large per-batch buffers instead of returning it to
/// the OS and faulting it back in (measured: backfill spends a quarter of its time in page
/// faults with the system allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Quiver: streaming feature pipelines with exact SQL window semantics.
#[derive(Parser)]
#[command(name = "quiver", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by `run` and `backfill`.
#[derive(clap::Args)]
struct JobArgs {
    /// Pipeline config (YAML), e.g. configs/fraud-demo.yaml.
    config: PathBuf,
    /// Read these files instead of the configured source (path, directory, glob or URL).
    #[arg(long)]
    input: Option<String>,
    /// Number of events to generate (datagen sources only).
    #[arg(long)]
    events: Option<u64>,
    /// Output directory (default: the config's output.path, else `out/<name>`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Do not draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Start over even if an unfinished run (killed or stopped) could be resumed; its output
    /// is replaced at the first new checkpoint.
    #[arg(long)]
    fresh: bool,
    /// Time between checkpoints, e.g. 1s or 500ms (default: the config's checkpoint.interval).
    #[arg(long, value_parser = parse_duration)]
    checkpoint_interval: Option<std::time::Duration>,
    /// Also checkpoint after this many source records.
    #[arg(long)]
    checkpoint_every_events: Option<u64>,
    /// Take no checkpoints before the end (a killed run then starts over).
    #[arg(long, conflicts_with_all = ["checkpoint_interval", "checkpoint_every_events"])]
    no_checkpoints: bool,
    /// Device of backfill's window kernels: auto (CUDA when a GPU is found), cpu or cuda
    /// (default: the config's compute.device).
    #[arg(long)]
    device: Option<quiver_gpu::Device>,
    /// `run` only: commit every epoch into the feature store (DIR, default the config's
    /// `store`), appending to the views' registered versions; `quiver apply` them first.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    store: Option<Option<PathBuf>>,
    /// Kafka sources: stop once every partition has been read to its end (as the config's
    /// `source.kafka.stop_at_end`); backfill always does.
    #[arg(long)]
    until_caught_up: bool,
    /// `run` only: if another instance runs this job (the same checkpoints, e.g. on a shared
    /// volume), stand by and take over from its last checkpoint as soon as it stops or dies.
    #[arg(long)]
    standby: bool,
    /// `run` only: also serve features over HTTP from this process (on ADDR, default the
    /// config's serve.listen), while running and, once the input ends, until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1)]
    serve: Option<Option<String>>,
    /// `backfill` only: the peak resident memory it may use (e.g. 512MiB, 8GiB; default 4GiB, or three quarters of a smaller machine's memory);
    /// a larger input goes to spill files in the output directory and is evaluated a key
    /// partition at a time (a hot key's partition in time slices). Given explicitly, freed
    /// memory is returned to the system as it goes (a little slower).
    #[arg(long, value_parser = quiver_pipeline::byte_size::parse_byte_size)]
    memory_limit: Option<usize>,
    /// `run` only: run shard INDEX/COUNT of the job's key space with its own checkpoints and
    /// outputs under `<output>/shard-INDEX-of-COUNT` (what the instances of a config with
    /// `source.kafka.shards` start for the shards they own).
    #[arg(long, value_name = "INDEX/COUNT", value_parser = quiver_sql::KeyShard::parse)]
    shard: Option<quiver_sql::KeyShard>,
}

fn parse_duration_or_zero(text: &str) -> Result<std::time::Duration, String> {
    let d = quiver_pipeline::duration::Duration::parse(text)?;
    Ok(std::time::Duration::from_micros(d.as_micros().max(0) as u64))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration_or_zero(text)?;
    if d.is_zero() {
        return Err("must be positive".into());
    }
    Ok(d)
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline as a stream: features are emitted as the watermark passes events.
    Run(JobArgs),
    /// Compute a pipeline's views over bounded (historical) input as fast as possible.
    Backfill(JobArgs),
    /// Register the config's views in the feature store: each changed view gets a new version,
    /// backfilled from the events the store holds for its stream (its event log: what earlier
    /// applies read and store runs appended), else from the configured source, then becomes the
    /// view's latest.
    Apply {
        /// Pipeline config (YAML).
        config: PathBuf,
        /// Store directory or object-store URL (default: the config's `store`, else
        /// quiver-store).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Backfill new versions from the configured source (or `--input`/`--events`) even when
        /// the store has an event log of the stream.
        #[arg(long)]
        from_source: bool,
        /// Do not draw a progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Device of the backfill's window kernels: auto, cpu or cuda.
        #[arg(long)]
        device: Option<quiver_gpu::Device>,
        /// Read these files instead of the configured source (path, directory, glob or URL).
        #[arg(long)]
        input: Option<String>,
        /// Number of events to generate (datagen sources only).
        #[arg(long)]
        events: Option<u64>,
        /// The peak resident memory the backfill may use (e.g. 512MiB; default 4GiB, or three quarters of a smaller machine's memory); a larger
        /// input is spilled and evaluated a key partition at a time (a hot key's partition in
        /// time slices).
        #[arg(long, value_parser = quiver_pipeline::byte_size::parse_byte_size)]
        memory_limit: Option<usize>,
    },
    /// List the views of a feature store with their latest version.
    Views {
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a view's definition: `view` (its latest version) or `view@version`.
    Describe {
        /// `view` or `view@version`.
        view: String,
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a view from the store's latest views (its versions stay readable as view@version).
    Remove {
        /// View name.
        view: String,
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
    },
    /// Export a point-in-time training set: each spine row (entity keys, a time, labels) gets
    /// the registered views' features as of its time, computed from the store's event log.
    TrainingSet {
        /// Spine: a Parquet file with the views' key columns, a timestamp and any labels.
        #[arg(long)]
        spine: PathBuf,
        /// Features: `view:feature`, `view:*` or `view@version:feature`, comma-separated.
        #[arg(long)]
        features: String,
        /// Output Parquet file.
        #[arg(long)]
        out: PathBuf,
        /// The spine's time column (default: its only timestamp column).
        #[arg(long)]
        time_column: Option<String>,
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
        /// Device of the window kernels: auto, cpu or cuda.
        #[arg(long, default_value = "auto")]
        device: quiver_gpu::Device,
        /// Encrypt the output (Parquet modular encryption, AES-GCM) with the key in this
        /// environment variable: 32, 48 or 64 hex digits.
        #[arg(long)]
        encrypt_key_env: Option<String>,
        /// Count only events already available in the store at each spine time (committed by
        /// then): what a model in production could have seen.
        #[arg(long)]
        as_known_at: bool,
        /// The peak resident memory the export may use (e.g. 512MiB, 8GiB; default 4GiB, or three quarters of a smaller machine's memory): larger
        /// inputs are partitioned by key into spill files beside the output and evaluated a
        /// partition at a time. Given explicitly, freed memory is returned to the system as it
        /// goes (a little slower).
        #[arg(long, value_parser = quiver_pipeline::byte_size::parse_byte_size)]
        memory_limit: Option<usize>,
    },
    /// Where features come from. With --entity and --at: each feature's value for that entity
    /// at that time and the events in its windows, by source partition and offset range;
    /// without: the definition chain (source, transforms, view) of every version.
    Lineage {
        /// View, optionally `view@version` (default: the latest).
        view: String,
        /// The entity's key value (repeat for a view with several keys, in key order).
        #[arg(long)]
        entity: Vec<String>,
        /// The time the values are as of (RFC 3339, e.g. 2026-01-05T10:00:00Z).
        #[arg(long)]
        at: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
    },
    /// Read features from the online store that `quiver run` writes: each window ends at --at
    /// (default now), so values decay as time passes without new events.
    Get {
        /// Pipeline config (YAML).
        config: PathBuf,
        /// `view` or `view@version`.
        view: String,
        /// Entities by key value; for a view keyed by several columns, the values joined by
        /// commas in key order.
        #[arg(required = true)]
        entities: Vec<String>,
        /// The time windows end at (RFC 3339, e.g. 2026-01-05T10:00:00Z; default now, or the
        /// store's watermark if later).
        #[arg(long)]
        at: Option<String>,
        /// Only these features (comma-separated).
        #[arg(long)]
        features: Option<String>,
        /// The online store file (default: the config's online.path, else online.redb in
        /// its output directory).
        #[arg(long)]
        online: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Read the same entities this many times and print the latency (p50, p99) and reads
        /// per second instead of the values: the store's in-process read speed.
        #[arg(long)]
        repeat: Option<u32>,
    },
    /// Check the online store against the offline store: each entity's online features at T
    /// (default the online watermark) against the point-in-time recomputation from the view
    /// version's event log. Exits non-zero on any mismatch.
    VerifyOnline {
        /// Pipeline config (YAML).
        config: PathBuf,
        /// The view.
        view: String,
        /// The time to compare at (RFC 3339; not before the online store's watermark).
        #[arg(long)]
        at: Option<String>,
        /// Compare about this many entities, spread over the key space (default: all).
        #[arg(long)]
        sample: Option<usize>,
        /// Relative tolerance of float features.
        #[arg(long, default_value_t = 1e-9)]
        rtol: f64,
        /// The online store file (default: the config's).
        #[arg(long)]
        online: Option<PathBuf>,
        /// Store directory (default: the config's `store`).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve features over HTTP/JSON from the online store (`POST /v1/features`, `GET
    /// /v1/views`, `/metrics`, a status page at `/`, `/healthz`, `/readyz`).
    Serve {
        /// Pipeline config (YAML).
        config: PathBuf,
        /// Address to listen on (default: the config's serve.listen, 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// The online store file (default: the config's online.path, else online.redb in
        /// its output directory).
        #[arg(long)]
        online: Option<PathBuf>,
    },
    /// Make a bearer token for `quiver serve`: prints the token (give it to the client) and
    /// the config entry with its SHA-256 (the config never holds the token).
    Token {
        /// Who will hold it (the audit log names requests by it).
        #[arg(long, default_value = "client")]
        name: String,
        /// reader, writer or admin.
        #[arg(long, default_value = "reader")]
        role: String,
    },
    /// Show the store's audit log: registry changes, training-set exports, denied requests.
    Audit {
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Freshness of each view's latest version: rows, commits, newest event, event-to-visible
    /// latency (p50/p99 over recent commits) and whether its freshness_sla holds.
    Status {
        /// Only this view.
        view: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
    },
    /// Merge the small files of the views' latest versions and event logs (store runs add one
    /// per epoch) and delete files removed longer ago than the retention.
    Compact {
        /// Only this view.
        view: Option<String>,
        /// Rows per merged file.
        #[arg(long, default_value_t = 1_000_000)]
        target_rows: u64,
        /// Keep removed files this long for readers of older table versions (0s: delete now).
        #[arg(long, default_value = "7d", value_parser = parse_duration_or_zero)]
        retention: std::time::Duration,
        /// Store directory.
        #[arg(long, default_value = "quiver-store")]
        store: PathBuf,
    },
    /// Compare two output directories view by view: the same rows (matched on keys, times and
    /// every other non-float column) and float features within a relative tolerance, e.g. a
    /// `--device cpu` and a `--device cuda` backfill. Exits non-zero when they differ.
    Compare {
        /// First output directory.
        a: PathBuf,
        /// Second output directory.
        b: PathBuf,
        /// Largest relative difference of float features counted as equal.
        #[arg(long, default_value_t = 1e-9)]
        rtol: f64,
        /// Leave out the lineage columns (`_source_partition`, `_source_offset`): compare the
        /// features of the same events read from different sources (files and Kafka).
        #[arg(long)]
        ignore_lineage: bool,
    },
    /// Check a config and its SQL without running anything.
    Validate {
        /// Pipeline config (YAML).
        config: PathBuf,
    },
    /// Write generated transactions to a file (NDJSON, CSV or Parquet by extension).
    Generate {
        /// Output file, e.g. data/transactions.parquet.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        generator: GeneratorArgs,
    },
    /// Fill a Kafka topic with generated transactions (JSON, keyed by card): the source of a
    /// Kafka pipeline such as configs/fraud-kafka.yaml. Creates the topic if it is missing.
    ProduceDemo {
        /// Pipeline config with a `source.kafka` section (brokers, topic, properties).
        config: PathBuf,
        /// Partitions of the topic if it has to be created.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[command(flatten)]
        generator: GeneratorArgs,
    },
}

/// Settings of the transaction generator (`generate`, `produce-demo`).
#[derive(clap::Args)]
struct GeneratorArgs {
    /// Number of events.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Take the other generator settings from this pipeline config's `source.datagen`.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Number of distinct cards (overrides the config).
    #[arg(long)]
    cards: Option<u64>,
    /// Number of distinct merchants (overrides the config).
    #[arg(long)]
    merchants: Option<u64>,
    /// Mean events per second of event time (overrides the config).
    #[arg(long)]
    events_per_second: Option<f64>,
    /// Event time of the first event, RFC 3339 (overrides the config), e.g. to continue
    /// data a store already holds.
    #[arg(long)]
    start: Option<String>,
}

impl GeneratorArgs {
    /// The generator's settings: `--from`'s (or the defaults), then the flags.
    fn config(self) -> anyhow::Result<DatagenConfig> {
        let mut config = match &self.from {
            Some(path) => LoadedConfig::load(path)?
                .config
                .source
                .datagen
                .with_context(|| format!("`{}` has no source.datagen section", path.display()))?,
            None => DatagenConfig::default(),
        };
        config.events = self.events;
        config.seed = self.seed;
        config.cards = self.cards.unwrap_or(config.cards);
        config.merchants = self.merchants.unwrap_or(config.merchants);
        config.events_per_second = self.events_per_second.unwrap_or(config.events_per_second);
        config.start = self.start.unwrap_or(config.start);
        config.validate()?;
        let end = config.approximate_end_micros()?;
        let now = quiver_pipeline::clock::now_micros();
        if end > now {
            let days = (end - now) as f64 / 86_400e6;
            eprintln!(
                "note: the last events are dated about {days:.0} days after now; pipelines dead-letter event times more than event_time.max_future (default 1d) ahead of the wall clock. Raise --events-per-second (now {}) to fit the events before today.",
                config.events_per_second
            );
        }
        Ok(config)
    }
}

/// Turns transparent huge pages off for this process (mimalloc asks for them on its arenas):
/// the runtime frees and allocates encoding buffers at every checkpoint, and each fresh
/// 2 MiB page was zeroed whole on its first touch (measured: 10-12% of the CPU of a Kafka run
/// with 50 ms checkpoints; the demo ran 2.2-2.3 s with them and 1.7-1.8 s without, backfill
/// the same within noise).
fn no_huge_pages() {
    /// `mi_option_allow_thp` in mimalloc v3's option enum.
    const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    // SAFETY: setting an option is thread-safe in mimalloc and takes plain integers; the
    // prctl takes integers and only changes this process's memory policy (on kernels without
    // it, it fails harmlessly).
    unsafe {
        libmimalloc_sys::mi_option_set(ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    quiver_pipeline::resident::keep_freed_memory();
    no_huge_pages();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => job(args, false).await,
        Command::Backfill(args) => job(args, true).await,
        Command::Apply {
            config,
            store,
            no_progress,
            device,
            input,
            events,
            memory_limit,
            from_source,
        } => {
            // Naming the input means reading it.
            let from_source = from_source || input.is_some() || events.is_some();
            let mut loaded = LoadedConfig::load(&config)?;
            if let (Some(input), Some(files)) = (&input, loaded.config.source.files.as_mut()) {
                // As for run and backfill: the input replaces the configured files.
                files.location = input.clone();
            }
            let registry = loaded.config.store_registry(store.as_deref())?;
            let pipeline = CompiledPipeline::compile(loaded).await?;
            let options = RunOptions {
                source: SourceOverrides {
                    events,
                    input,
                    ..SourceOverrides::default()
                },
                progress: !no_progress && std::io::stderr().is_terminal(),
                handle_signals: true,
                device,
                memory_limit,
                ..RunOptions::default()
            };
            let store_namespace = format!("quiver-store:{}", registry.root());
            let mut lineage = LineageEmitter::of(&pipeline, "apply");
            if lineage.is_some() && !from_source && !pipeline.views.is_empty() {
                // New versions will read the store's event log, not the source: name it.
                let wanted = quiver_pipeline::registry::ViewDefinition::of(&pipeline, 0)?;
                if let Some(log) =
                    quiver_pipeline::registry::apply::reusable_event_log(&registry, &wanted)?
                {
                    lineage = lineage.map(|l| {
                        l.with_inputs(vec![dataset(
                            &store_namespace,
                            &format!("events/{}", log.events),
                            serde_json::json!({"stream": log.stream, "event_log": true}),
                        )])
                    });
                }
            }
            let target = config.display().to_string();
            let report = observed(
                lineage,
                apply(pipeline, &registry, options, from_source),
                |report| {
                    (report.views.iter())
                        .filter_map(|(view, applied)| match applied {
                            Applied::Created { version, rows, .. } => Some(dataset(
                                &store_namespace,
                                &format!("offline/{view}/{version}"),
                                serde_json::json!({"view": view, "version": version, "rows": rows}),
                            )),
                            _ => None,
                        })
                        .collect()
                },
            )
            .await;
            let report = audited(registry.root(), "apply", &target, report)?;
            say(&format!("applied to {}\n{report}", registry.root()));
            Ok(())
        }
        Command::Get {
            config,
            view,
            entities,
            at,
            features,
            online,
            json,
            repeat,
        } => {
            let loaded = LoadedConfig::load(&config)?;
            let store = open_online(&loaded, online.as_deref())?;
            let pipeline = CompiledPipeline::compile(loaded).await?;
            let reader = quiver_pipeline::online::read::OnlineReader::new(pipeline, store)?;
            let request = quiver_pipeline::online::read::ReadRequest {
                view,
                entities: entities
                    .iter()
                    .map(|e| e.split(',').map(str::to_string).collect())
                    .collect(),
                features: features.map(|f| f.split(',').map(|s| s.trim().to_string()).collect()),
                at: at.map(|at| parse_at(&at)).transpose()?,
            };
            let online = reader.resolve(&request.view).await?;
            if let Some(times) = repeat.filter(|&n| n > 0) {
                let mut took = Vec::with_capacity(times as usize);
                let started = std::time::Instant::now();
                for _ in 0..times {
                    let one = std::time::Instant::now();
                    reader.read(&online, &request)?;
                    took.push(one.elapsed().as_secs_f64() * 1e3);
                }
                let total = started.elapsed().as_secs_f64();
                took.sort_by(f64::total_cmp);
                let at = |q: f64| took[((q * took.len() as f64) as usize).min(took.len() - 1)];
                say(&format!(
                    "{times} reads of {} entities in-process: p50 {:.3} ms, p99 {:.3} ms, {:.0} reads/s\n",
                    request.entities.len(),
                    at(0.5),
                    at(0.99),
                    times as f64 / total
                ));
                return Ok(());
            }
            let values = reader.read(&online, &request)?;
            if json {
                say(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&values.to_json())?
                ));
            } else {
                say(&format!("{values}"));
            }
            Ok(())
        }
        Command::VerifyOnline {
            config,
            view,
            at,
            sample,
            rtol,
            online,
            store,
            json,
        } => {
            let loaded = LoadedConfig::load(&config)?;
            let online = open_online(&loaded, online.as_deref())?;
            let registry = loaded.config.store_registry(store.as_deref())?;
            let pipeline = CompiledPipeline::compile(loaded).await?;
            let reader = quiver_pipeline::online::read::OnlineReader::new(pipeline, online)?;
            let options = quiver_pipeline::online::verify::VerifyOptions {
                view,
                at: at.map(|at| parse_at(&at)).transpose()?,
                sample,
                limit: 20,
                rtol,
            };
            let report =
                quiver_pipeline::online::verify::verify_online(&reader, &registry, &options)
                    .await?;
            if json {
                say(&format!("{}\n", serde_json::to_string_pretty(&report)?));
            } else {
                say(&report.to_string());
            }
            if report.mismatched > 0 {
                anyhow::bail!(
                    "{} values of the online store differ from the offline recomputation",
                    report.mismatched
                );
            }
            Ok(())
        }
        Command::Serve {
            config,
            listen,
            online,
        } => {
            let loaded = LoadedConfig::load(&config)?;
            let listen = listen.unwrap_or_else(|| loaded.config.serve.listen.clone());
            let store = open_online(&loaded, online.as_deref())?;
            let pipeline = CompiledPipeline::compile(loaded).await?;
            let (server, listener, tls) = start_server(pipeline, store, &listen).await?;
            quiver_pipeline::serve::serve(
                server,
                listener,
                tls,
                quiver_pipeline::run::stop_requested(true),
            )
            .await?;
            Ok(())
        }
        Command::Token { name, role } => {
            let role: quiver_pipeline::serve::auth::Role =
                serde_json::from_value(serde_json::Value::String(role.clone()))
                    .map_err(|_| anyhow::anyhow!("--role `{role}`: use reader, writer or admin"))?;
            let (token, hash) = quiver_pipeline::serve::auth::new_token()?;
            say(&format!(
                "token (give it to `{name}`; it is not stored anywhere): {token}\n\nadd to the config:\nserve:\n  tokens:\n    - name: {name}\n      role: {role}\n      sha256: {hash}\n"
            ));
            Ok(())
        }
        Command::Audit { store, json } => {
            let log = quiver_pipeline::audit::AuditLog::of_store(
                Registry::at(&store, &Default::default())?.root(),
            );
            let entries = log.read()?;
            if entries.is_empty() && !json {
                say(&format!("no audit entries in {}\n", log.location()));
            }
            for entry in entries {
                if json {
                    say(&format!("{}\n", serde_json::to_string(&entry)?));
                } else {
                    say(&format!("{entry}\n"));
                }
            }
            Ok(())
        }
        Command::Views { store, json } => {
            let registry = Registry::at(&store, &Default::default())?;
            let mut rows = Vec::new();
            for view in registry.views()? {
                let versions = registry.versions(&view)?;
                let latest = registry.latest(&view)?;
                let current = latest
                    .as_ref()
                    .and_then(|l| versions.iter().find(|d| &d.version == l));
                rows.push(serde_json::json!({
                    "view": view,
                    "latest": latest,
                    "versions": versions.len(),
                    "rows": current.map(|d| d.rows),
                    "created": current.map(|d| d.created.clone()),
                    "keys": current.map(|d| d.keys.clone()),
                }));
            }
            if json {
                say(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
            } else if rows.is_empty() {
                say(&format!(
                    "no views in {} (run `quiver apply <config>`)\n",
                    registry.root()
                ));
            } else {
                say("view                      latest                    versions  rows          created\n");
                for r in rows {
                    say(&format!(
                        "{:<25} {:<25} {:>8}  {:<12}  {}\n",
                        r["view"].as_str().unwrap_or(""),
                        r["latest"].as_str().unwrap_or("(removed)"),
                        r["versions"].as_u64().unwrap_or(0),
                        r["rows"]
                            .as_u64()
                            .map(|n| n.to_string())
                            .unwrap_or_default(),
                        r["created"].as_str().unwrap_or(""),
                    ));
                }
            }
            Ok(())
        }
        Command::Describe { view, store, json } => {
            let registry = Registry::at(&store, &Default::default())?;
            let (name, version) = match view.split_once('@') {
                Some((n, v)) => (n, Some(v)),
                None => (view.as_str(), None),
            };
            let d = registry.definition(name, version)?;
            if json {
                say(&format!("{}\n", serde_json::to_string_pretty(&d)?));
            } else {
                let latest = registry.latest(name)?;
                say(&format!(
                    "view {}@{}{}\n  created {} from {}\n  rows {}\n  data {}\n  keys {}\n  event time {}\n  engine {}\n  columns:\n{}\n  transforms:\n{}\n  sql:\n    {}\n",
                    d.view,
                    d.version,
                    if latest.as_deref() == Some(d.version.as_str()) { " (latest)" } else { "" },
                    d.created,
                    d.config,
                    d.rows,
                    registry.data_dir(&d.view, &d.version),
                    d.keys.join(", "),
                    d.event_time,
                    d.engine,
                    d.columns.iter().map(|c| format!("    {c}")).collect::<Vec<_>>().join("\n"),
                    d.transforms.iter().map(|(n, sql)| format!("    {n}: {sql}")).collect::<Vec<_>>().join("\n"),
                    d.sql.replace('\n', "\n    "),
                ));
            }
            Ok(())
        }
        Command::Remove { view, store } => {
            let registry = Registry::at(&store, &Default::default())?;
            audited(registry.root(), "remove", &view, registry.remove(&view))?;
            say(&format!(
                "removed `{view}` from the latest views of {}; its versions stay readable as {view}@<version>\n",
                registry.root()
            ));
            Ok(())
        }
        Command::TrainingSet {
            spine,
            features,
            out,
            time_column,
            store,
            no_progress,
            device,
            encrypt_key_env,
            as_known_at,
            memory_limit,
        } => {
            use quiver_pipeline::training_set::{
                parse_encryption_key, parse_feature_list, training_set, TrainingSetOptions,
            };
            let encryption_key = match encrypt_key_env {
                Some(var) => {
                    let text = std::env::var(&var).map_err(|_| {
                        anyhow::anyhow!("--encrypt-key-env {var}: the variable is not set")
                    })?;
                    Some(parse_encryption_key(&text).with_context(|| format!("${var}"))?)
                }
                None => None,
            };
            let registry = Registry::at(&store, &Default::default())?;
            let target = format!("{} -> {}", features, out.display());
            let report = training_set(
                &registry,
                TrainingSetOptions {
                    spine,
                    time_column,
                    features: parse_feature_list(&features)?,
                    out,
                    progress: !no_progress && std::io::stderr().is_terminal(),
                    device,
                    encryption_key,
                    as_known_at,
                    memory_limit,
                    data_budget: None,
                },
            )
            .await;
            let report = audited(registry.root(), "training-set", &target, report)?;
            say(&report.to_string());
            Ok(())
        }
        Command::Lineage {
            view,
            entity,
            at,
            json,
            store,
        } => {
            let registry = Registry::at(&store, &Default::default())?;
            let (name, version) = match view.split_once('@') {
                Some((n, v)) => (n, Some(v)),
                None => (view.as_str(), None),
            };
            match (entity.is_empty(), at) {
                (true, None) if json => {
                    let versions = registry.versions(name)?;
                    say(&format!("{}\n", serde_json::to_string_pretty(&versions)?));
                }
                (true, None) => {
                    say(&quiver_pipeline::lineage::definition_lineage(
                        &registry, name,
                    )?);
                }
                (false, Some(at)) => {
                    let micros = parse_at(&at)?;
                    let lineage = quiver_pipeline::lineage::entity_lineage(
                        &registry, name, version, &entity, micros,
                    )
                    .await?;
                    if json {
                        say(&format!("{}\n", serde_json::to_string_pretty(&lineage)?));
                    } else {
                        say(&lineage.to_string());
                    }
                }
                _ => anyhow::bail!("give both --entity and --at, or neither"),
            }
            Ok(())
        }
        Command::Status { view, json, store } => {
            let registry = Registry::at(&store, &Default::default())?;
            let views = quiver_pipeline::registry::status::status(&registry, view.as_deref())?;
            if json {
                say(&format!("{}\n", serde_json::to_string_pretty(&views)?));
            } else if views.is_empty() {
                say(&format!(
                    "no views in {} (run `quiver apply <config>`)\n",
                    registry.root()
                ));
            } else {
                for v in &views {
                    say(&v.to_string());
                }
            }
            Ok(())
        }
        Command::Compact {
            view,
            target_rows,
            retention,
            store,
        } => {
            let registry = Registry::at(&store, &Default::default())?;
            let tables = quiver_pipeline::registry::compact::compact(
                &registry,
                view.as_deref(),
                target_rows,
                retention,
            );
            let target = view.as_deref().unwrap_or("all views");
            let tables = audited(registry.root(), "compact", target, tables)?;
            for t in &tables {
                say(&format!("{t}\n"));
            }
            if view.is_none() {
                let removed =
                    quiver_pipeline::registry::compact::remove_unreferenced(&registry, retention);
                for dir in audited(registry.root(), "compact: unreferenced", target, removed)? {
                    say(&format!(
                        "{dir}: no version refers to it (an interrupted apply); removed\n"
                    ));
                }
            }
            Ok(())
        }
        Command::Compare {
            a,
            b,
            rtol,
            ignore_lineage,
        } => {
            let views = quiver_pipeline::compare::compare_outputs(&a, &b, rtol, ignore_lineage)?;
            for view in &views {
                say(&format!("{view}\n"));
            }
            if views.iter().all(|v| v.is_equal()) {
                Ok(())
            } else {
                anyhow::bail!("the outputs differ")
            }
        }
        Command::Validate { config } => {
            let report = validate(&config).await?;
            for line in report.lines {
                say(&format!("{line}\n"));
            }
            Ok(())
        }
        Command::Generate { out, generator } => generate(&out, generator.config()?),
        Command::ProduceDemo {
            config,
            partitions,
            generator,
        } => {
            let loaded = LoadedConfig::load(&config)?;
            let kafka =
                loaded.config.source.kafka.with_context(|| {
                    format!("`{}` has no source.kafka section", config.display())
                })?;
            let datagen = generator.config()?;
            let progress = std::io::stderr().is_terminal();
            let sent = produce_demo(&kafka, datagen, partitions, progress).await?;
            say(&format!(
                "produced {sent} generated transactions to topic `{}` at {}\n",
                kafka.topics[0],
                kafka.brokers()?
            ));
            Ok(())
        }
    }
}

async fn job(args: JobArgs, is_backfill: bool) -> anyhow::Result<()> {
    let mut loaded = LoadedConfig::load(&args.config)?;
    let sharded = (loaded.config.source.kafka.as_ref()).is_some_and(|k| k.shards.is_some());
    if sharded && !is_backfill && args.shard.is_none() {
        return shard_instance(args, &loaded).await;
    }
    if let (Some(input), Some(files)) = (&args.input, loaded.config.source.files.as_mut()) {
        // The input replaces the configured files, for reading and for a schema read from them.
        files.location = input.clone();
    }
    let store = match (&args.store, is_backfill) {
        (Some(_), true) => {
            anyhow::bail!("--store is for `quiver run`; `quiver apply` backfills into the store")
        }
        (Some(dir), false) => Some(loaded.config.store_registry(dir.as_deref())?),
        (None, _) => None,
    };
    if let (Some(_), true) = (args.shard, is_backfill) {
        anyhow::bail!("--shard is for `quiver run`");
    }
    let mut paths = quiver_pipeline::outputs::OutputPaths::of_config(&loaded, args.output.clone());
    if let Some(shard) = args.shard {
        paths = paths.sharded(shard);
    }
    // A standby waits before anything opens the job's stores.
    let held_lock = match (args.standby, is_backfill) {
        (true, true) => anyhow::bail!("--standby is for `quiver run`"),
        (true, false) => {
            let stop = quiver_pipeline::run::stop_requested(true);
            match quiver_pipeline::checkpoint::lock::JobLock::wait(&paths.checkpoints, stop).await?
            {
                Some(lock) => Some(quiver_pipeline::checkpoint::lock::HeldLock::new(lock)),
                None => {
                    say("stopped while standing by; this instance ran nothing\n");
                    return Ok(());
                }
            }
        }
        (false, _) => None,
    };
    let serving = match (&args.serve, is_backfill) {
        (Some(_), true) => anyhow::bail!("--serve is for `quiver run`"),
        (Some(listen), false) => {
            let listen = listen
                .clone()
                .unwrap_or_else(|| loaded.config.serve.listen.clone());
            if args.shard.is_some() {
                anyhow::bail!(quiver_pipeline::shard::SHARD_DOES_NOT_SERVE);
            }
            let store = quiver_pipeline::online::open_for_run(&loaded, &paths.root, None)?;
            let gauges = std::sync::Arc::new(quiver_pipeline::run_gauges::RunGauges::default());
            let (stop, task) =
                spawn_server(&loaded, store.clone(), &listen, Some(gauges.clone())).await?;
            Some((store, gauges, stop, task))
        }
        (None, _) => None,
    };
    let pipeline = CompiledPipeline::compile(loaded).await?;
    let mut policy = configured_policy(&pipeline);
    if args.checkpoint_interval.is_some() || args.checkpoint_every_events.is_some() {
        policy = CheckpointPolicy {
            interval: args.checkpoint_interval,
            every_events: args.checkpoint_every_events,
        };
    }
    if args.no_checkpoints {
        policy = CheckpointPolicy {
            interval: None,
            every_events: None,
        };
    }
    let options = RunOptions {
        source: SourceOverrides {
            events: args.events,
            input: args.input,
            stop_at_end: args.until_caught_up,
        },
        output: args.output,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        fresh: args.fresh,
        checkpoints: Some(policy),
        handle_signals: true,
        device: args.device,
        store,
        online: serving.as_ref().map(|(store, _, _, _)| store.clone()),
        gauges: serving.as_ref().map(|(_, gauges, _, _)| gauges.clone()),
        held_lock,
        memory_limit: args.memory_limit,
        shard: args.shard,
        ..RunOptions::default()
    };
    let lineage = LineageEmitter::of(&pipeline, if is_backfill { "backfill" } else { "run" });
    let job = async {
        if is_backfill {
            backfill(pipeline, options).await
        } else {
            run(pipeline, options).await
        }
    };
    let summary: RunSummary = observed(lineage, job, |summary: &RunSummary| {
        (summary.views.iter())
            .map(|v| {
                dataset(
                    "file",
                    &v.dir.display().to_string(),
                    serde_json::json!({"view": v.view, "rows": v.rows}),
                )
            })
            .collect()
    })
    .await?;
    say(&summary.to_string());
    if let Some(path) = args.summary_json {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some((_, _, stop, task)) = serving {
        if !summary.interrupted {
            say("the run ended; still serving until Ctrl-C\n");
            quiver_pipeline::run::stop_requested(true).await;
        }
        let _ = stop.send(());
        task.await??;
    }
    Ok(())
}

/// `quiver run` of a config with `source.kafka.shards`: this process is one instance of the
/// job, running the shards the group assigns it (see `shard_instance`).
async fn shard_instance(args: JobArgs, loaded: &LoadedConfig) -> anyhow::Result<()> {
    let refused = [
        (
            args.fresh,
            "--fresh (start a shard over with `--shard I/N --fresh`)",
        ),
        (
            args.standby,
            "--standby (every instance of a sharded job runs shards)",
        ),
        (args.summary_json.is_some(), "--summary-json"),
        (args.input.is_some(), "--input"),
        (args.events.is_some(), "--events"),
    ];
    if let Some((_, flag)) = refused.iter().find(|(given, _)| *given) {
        anyhow::bail!("{flag} is not for an instance of a sharded job (`source.kafka.shards`)");
    }
    let mut child_args: Vec<std::ffi::OsString> = Vec::new();
    if let Some(output) = &args.output {
        child_args.extend(["--output".into(), output.clone().into_os_string()]);
    }
    match &args.store {
        Some(Some(dir)) => child_args.extend(["--store".into(), dir.clone().into_os_string()]),
        Some(None) => child_args.push("--store".into()),
        None => {}
    }
    if let Some(interval) = args.checkpoint_interval {
        child_args.extend([
            "--checkpoint-interval".into(),
            format!("{}us", interval.as_micros()).into(),
        ]);
    }
    if let Some(every) = args.checkpoint_every_events {
        child_args.extend(["--checkpoint-every-events".into(), every.to_string().into()]);
    }
    if args.no_checkpoints {
        child_args.push("--no-checkpoints".into());
    }
    if args.until_caught_up {
        child_args.push("--until-caught-up".into());
    }
    let bounded = args.until_caught_up
        || (loaded.config.source.kafka.as_ref()).is_some_and(|k| k.stop_at_end);
    let options = quiver_pipeline::shard_instance::InstanceOptions {
        config: args.config.clone(),
        child_args,
        bounded,
    };
    // Serving next to the shards reads what they all write: the job's Redis server.
    let serving = match &args.serve {
        Some(_) if loaded.config.online.redis.is_none() && loaded.config.online.redis_cluster.is_empty() => anyhow::bail!(
            "--serve on an instance of a sharded job needs `online.redis` (or `redis_cluster`): with the embedded store each shard process writes its own file, which `quiver serve` reads once the shards' runs stop"
        ),
        Some(listen) => {
            let listen = listen
                .clone()
                .unwrap_or_else(|| loaded.config.serve.listen.clone());
            Some(spawn_server(loaded, open_online(loaded, None)?, &listen, None).await?)
        }
        None => None,
    };
    let result = quiver_pipeline::shard_instance::run_instance(loaded, options).await;
    if let Some((stop, task)) = serving {
        let _ = stop.send(());
        task.await??;
    }
    result
}

/// Appends the outcome of command `what` on `target` to the audit log of the store at
/// `store` (a failure to write it is a warning: the command's own outcome stands).
fn audited<T, E: std::fmt::Display>(
    store: &quiver_store::StoreDir,
    what: &str,
    target: &str,
    result: Result<T, E>,
) -> Result<T, E> {
    use quiver_pipeline::audit::{os_user, AuditEntry, AuditLog};
    let entry = match &result {
        Ok(_) => AuditEntry::now(&os_user(), what, "ok"),
        Err(e) => AuditEntry::now(&os_user(), what, "failed").detail(e.to_string()),
    }
    .target(target);
    if let Err(e) = AuditLog::of_store(store).append(&entry) {
        eprintln!("warning: {e}");
    }
    result
}

/// The online store of a config (`file`: an embedded store file instead).
fn open_online(
    loaded: &LoadedConfig,
    file: Option<&Path>,
) -> anyhow::Result<quiver_pipeline::online::SharedOnline> {
    Ok(quiver_pipeline::online::open_configured(
        loaded,
        file,
        &loaded.output_dir(),
    )?)
}

/// A server of `pipeline` over `store` on `listen`, bound, its address announced on stdout.
async fn start_server(
    pipeline: CompiledPipeline,
    store: quiver_pipeline::online::SharedOnline,
    listen: &str,
) -> anyhow::Result<StartedServer> {
    let tls = match &pipeline.loaded.config.serve.tls {
        Some(config) => Some(quiver_pipeline::serve::tls::acceptor(config)?),
        None => None,
    };
    let addr = quiver_pipeline::serve::listen_address(listen)?;
    let server = quiver_pipeline::serve::Server::new(pipeline, store, &addr)?;
    let listener = quiver_pipeline::serve::bind(&addr).await?;
    let local = listener.local_addr()?;
    let access = if server.requires_tokens() {
        "bearer tokens required"
    } else {
        "no tokens configured: open to this machine only"
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    say(&format!("serving on {scheme}://{local} ({access})\n"));
    Ok((server, listener, tls))
}

/// Serves `store` for `loaded`'s views on `listen` (with the figures of the run beside it, if
/// `run`) in a task, until the returned sender is used or dropped.
async fn spawn_server(
    loaded: &LoadedConfig,
    store: quiver_pipeline::online::SharedOnline,
    listen: &str,
    run: Option<std::sync::Arc<quiver_pipeline::run_gauges::RunGauges>>,
) -> anyhow::Result<(
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
)> {
    let pipeline = CompiledPipeline::compile(loaded.clone()).await?;
    let (mut server, listener, tls) = start_server(pipeline, store, listen).await?;
    if let Some(run) = run {
        server = server.with_run(run);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = stopped.await;
        };
        quiver_pipeline::serve::serve(server, listener, tls, stopped).await?;
        Ok(())
    });
    Ok((stop, task))
}

/// A server, its bound socket and its TLS acceptor (HTTPS) if any.
type StartedServer = (
    quiver_pipeline::serve::Server,
    tokio::net::TcpListener,
    Option<tokio_rustls::TlsAcceptor>,
);

fn generate(out: &Path, config: DatagenConfig) -> anyhow::Result<()> {
    let format = FileFormat::from_path(&out.to_string_lossy()).with_context(|| {
        format!(
            "cannot tell the format of `{}`: use .parquet, .ndjson or .csv",
            out.display()
        )
    })?;
    // Batches are written as they are generated: memory holds one, whatever the count.
    let batches = Datagen::new(config)?.map(|b| b.batch);
    let rows = write_batches(format, out, batches)?;
    say(&format!(
        "wrote {rows} generated transactions to {}\n",
        out.display()
    ));
    Ok(())
}

/// Writes to stdout; a closed stdout (e.g. `quiver run ... | head -1`) is not an error worth a
/// panic: the work is done and its outputs are on disk.
/// An RFC 3339 time given on the command line, in µs since the epoch.
fn parse_at(at: &str) -> anyhow::Result<i64> {
    quiver_connectors::parse_rfc3339_micros(at)
        .with_context(|| format!("--at `{at}` is not an RFC 3339 time, e.g. 2026-01-05T10:00:00Z"))
}

fn say(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
