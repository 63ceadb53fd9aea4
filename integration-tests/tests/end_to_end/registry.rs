//! The registry: `apply` gives each changed view a new version (a hash of its normalized
//! definition), backfills it, and only then moves `latest`; unchanged definitions (layout and
//! comments aside) keep their version; old versions stay readable; a failed apply leaves every
//! view on its previous version.

use quiver_integration_tests::{local, read_view, write_files, yaml_block};
use quiver_pipeline::registry::{apply, Applied, Registry};
use quiver_pipeline::run::RunOptions;
use quiver_pipeline::{CompiledPipeline, LoadedConfig};
use std::path::Path;

const VIEW: &str = "SELECT card_id, event_time, txn_id,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m
FROM source";

fn config(dir: &Path, view: &str) -> std::path::PathBuf {
    let yaml = format!(
        "name: reg
source:
  files:
    location: {}/in.ndjson
    schema:
      - {{name: txn_id, type: int}}
      - {{name: card_id, type: string}}
      - {{name: event_time, type: timestamp, nullable: false}}
event_time:
  column: event_time
output:
  dead_letter_min_records: 10
views:
  - name: v
    sql: |
{}
store: {}/store
",
        dir.display(),
        yaml_block(view),
        dir.display()
    );
    write_files(dir, &[("p.yaml", &yaml)])
}

fn events(dir: &Path, good: bool) {
    let lines: Vec<String> = (0..500)
        .map(|i| {
            if good {
                format!(
                    "{{\"txn_id\": {i}, \"card_id\": \"c{}\", \"event_time\": {}}}",
                    i % 9,
                    1_767_225_600_000i64 + i * 20_000
                )
            } else {
                "not json".to_string()
            }
        })
        .collect();
    write_files(dir, &[("in.ndjson", &lines.join("\n"))]);
}

async fn apply_config(path: &Path) -> Result<Vec<(String, Applied)>, quiver_pipeline::JobError> {
    Ok(apply_report(path, false).await?.views)
}

/// The report of `quiver apply` (with `--from-source` when `from_source`).
async fn apply_report(
    path: &Path,
    from_source: bool,
) -> Result<quiver_pipeline::registry::ApplyReport, quiver_pipeline::JobError> {
    let loaded = LoadedConfig::load(path)?;
    let registry = loaded.config.store_registry(None)?;
    let pipeline = CompiledPipeline::compile(loaded).await?;
    apply(pipeline, &registry, RunOptions::default(), from_source).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_follow_definitions_and_latest_moves_only_after_a_backfill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::open(quiver_store::StoreDir::local(dir.path().join("store")));
    events(dir.path(), true);

    let first = apply_config(&config(dir.path(), VIEW))
        .await
        .expect("apply");
    let Applied::Created {
        version: v1, rows, ..
    } = first[0].1.clone()
    else {
        panic!("first apply creates a version: {first:?}");
    };
    assert_eq!(rows, 500);
    let v1_rows = read_view(&local(&registry.data_dir("v", &v1)));
    assert_eq!(v1_rows.num_rows(), 500);

    // Layout and comments are not the definition.
    let relaid = format!(
        "-- the same view\n{}",
        VIEW.replace(", txn_id", ",\n   txn_id")
    );
    let again = apply_config(&config(dir.path(), &relaid))
        .await
        .expect("apply");
    assert_eq!(
        again[0].1,
        Applied::Unchanged {
            version: v1.clone()
        }
    );

    // A changed window is a new version; the old one stays readable.
    let wider = VIEW.replace("10 minutes", "1 hour");
    let second = apply_config(&config(dir.path(), &wider))
        .await
        .expect("apply");
    let Applied::Created {
        version: v2,
        previous,
        ..
    } = second[0].1.clone()
    else {
        panic!("a changed view gets a version: {second:?}");
    };
    assert_ne!(v1, v2);
    assert_eq!(previous.as_deref(), Some(v1.as_str()));
    assert_eq!(
        registry.latest("v").expect("latest").as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(
        read_view(&local(&registry.data_dir("v", &v1))),
        v1_rows,
        "old version unchanged"
    );
    assert_eq!(
        registry.definition("v", Some(&v1)).expect("old").version,
        v1
    );
    assert_eq!(registry.versions("v").expect("versions").len(), 2);

    // Back to the first definition: its data is still there, nothing is recomputed.
    let back = apply_config(&config(dir.path(), VIEW))
        .await
        .expect("apply");
    assert_eq!(
        back[0].1,
        Applied::Restored {
            version: v1.clone(),
            previous: Some(v2.clone())
        }
    );

    // A failing backfill (the input turned to garbage, and read with --from-source) leaves
    // `latest` where it was.
    events(dir.path(), false);
    let third = VIEW.replace("10 minutes", "5 minutes");
    let err = apply_report(&config(dir.path(), &third), true)
        .await
        .expect_err("the backfill fails");
    assert!(err.to_string().contains("dead letters"), "{err}");
    assert_eq!(
        registry.latest("v").expect("latest").as_deref(),
        Some(v1.as_str())
    );
    assert_eq!(registry.versions("v").expect("versions").len(), 2);

    // Without --from-source a new version is backfilled from the events the store holds (its
    // event log), not from the source, which is garbage by now: all 500 events count.
    let report = apply_report(&config(dir.path(), &third), false)
        .await
        .expect("apply from the event log");
    let first_log = registry.definition("v", Some(&v1)).expect("v1").events;
    assert_eq!(report.event_log.as_deref(), Some(first_log.as_str()));
    let Applied::Created {
        version: v3, rows, ..
    } = report.views[0].1.clone()
    else {
        panic!("a new version: {report}");
    };
    assert_eq!(rows, 500);
    assert_eq!(
        registry.definition("v", Some(&v3)).expect("v3").events,
        first_log
    );
    let v3_rows = read_view(&local(&registry.data_dir("v", &v3)));
    let n_5m = v3_rows.column_by_name("n_10m").expect("count column");
    let n_10m = v1_rows.column_by_name("n_10m").expect("count column");
    assert!(
        arrow::compute::sum(
            n_5m.as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
        ) < arrow::compute::sum(
            n_10m
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
        ),
        "5-minute windows count fewer events than 10-minute ones"
    );
    registry.set_latest("v", &v1).expect("back to v1");

    // Removing is explicit and keeps the versions readable.
    registry.remove("v").expect("remove");
    assert_eq!(registry.latest("v").expect("latest"), None);
    assert!(registry.definition("v", None).is_err());
    assert_eq!(
        registry
            .definition("v", Some(&v2))
            .expect("by version")
            .version,
        v2
    );
    assert_eq!(registry.views().expect("views"), vec!["v".to_string()]);
}
