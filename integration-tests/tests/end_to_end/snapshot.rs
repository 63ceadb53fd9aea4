//! Window state survives a snapshot and restore: an operator restored from a snapshot taken
//! mid-stream produces exactly the features of one that never stopped (the basis of
//! checkpoints, DESIGN.md 3.6).

use arrow::record_batch::RecordBatch;
use quiver_connectors::DatagenConfig;
use quiver_integration_tests::{assert_same_features, generated_in_time_order, write_files};
use quiver_pipeline::view_operator::ViewOperator;
use quiver_pipeline::{CompiledPipeline, LoadedConfig};

const VIEW: &str = "SELECT card_id, event_time, txn_id,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  stddev_samp(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 day' PRECEDING AND CURRENT ROW) AS sd_1d,
  max(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) AS max_1h,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time) AS sum_lifetime
FROM source";

async fn operator(dir: &std::path::Path) -> ViewOperator {
    let yaml = "name: snap\nsource:\n  datagen: {events: 10}\nevent_time:\n  column: event_time\nviews:\n  - name: v\n    file: v.sql\n";
    let path = write_files(dir, &[("p.yaml", yaml), ("v.sql", VIEW)]);
    let mut pipeline = CompiledPipeline::compile(LoadedConfig::load(&path).expect("config"))
        .await
        .expect("compiles");
    let fingerprint = pipeline.view_identities[0].fingerprint();
    ViewOperator::new(pipeline.views.remove(0), fingerprint)
}

/// Generated events sorted by event time, with the hidden lineage columns the runtime adds.
fn events() -> RecordBatch {
    generated_in_time_order(DatagenConfig {
        events: 6_000,
        cards: 40,
        events_per_second: 0.5,
        ..DatagenConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_state_continues_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = events();
    // Split between two distinct times so that no tie group straddles the cut.
    let times = arrow::compute::cast(
        all.column_by_name("event_time").expect("time"),
        &arrow::datatypes::DataType::Int64,
    )
    .expect("cast");
    let times = times
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("i64");
    let mut cut = all.num_rows() / 2;
    while times.value(cut) == times.value(cut - 1) {
        cut += 1;
    }
    let (first, second) = (all.slice(0, cut), all.slice(cut, all.num_rows() - cut));

    let mut uninterrupted = operator(dir.path()).await;
    uninterrupted
        .process(first.clone(), |_| {})
        .await
        .expect("first half");
    let expected = uninterrupted
        .process(second.clone(), |_| {})
        .await
        .expect("second half");

    let mut before_crash = operator(dir.path()).await;
    before_crash
        .process(first, |_| {})
        .await
        .expect("first half");
    // Snapshot in two parts, as per-partition checkpoints would: keys split by a hash of all
    // their bytes (the last byte of an encoded key is the same for every key), and each part
    // must really hold keys.
    let part = |k: &[u8]| k.iter().map(|&b| u32::from(b)).sum::<u32>() % 2;
    let (even_keys, odd_keys) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let even = before_crash
        .snapshot_keys(|k| {
            let take = part(k) == 0;
            even_keys.set(even_keys.get() + usize::from(take));
            take
        })
        .expect("snapshot");
    let odd = before_crash
        .snapshot_keys(|k| {
            let take = part(k) == 1;
            odd_keys.set(odd_keys.get() + usize::from(take));
            take
        })
        .expect("snapshot");
    assert!(
        even_keys.get() > 5 && odd_keys.get() > 5,
        "both parts hold keys: {} and {}",
        even_keys.get(),
        odd_keys.get()
    );
    assert_eq!(
        even_keys.get() + odd_keys.get(),
        before_crash.state_size().0,
        "the parts cover every key"
    );
    drop(before_crash);
    let mut restored = operator(dir.path()).await;
    restored.restore_keys(&even).expect("restore even keys");
    restored.restore_keys(&odd).expect("restore odd keys");
    let got = restored
        .process(second, |_| {})
        .await
        .expect("second half after restore");

    assert!(expected.num_rows() > 1000);
    assert_same_features(
        &got,
        &expected,
        &["card_id", "event_time", "txn_id"],
        "restored vs uninterrupted",
    );
    // A truncated or damaged snapshot is an error naming the view, not a panic.
    let err = operator(dir.path())
        .await
        .restore_keys(&even[..even.len() / 2])
        .expect_err("truncated");
    assert!(err.to_string().contains("view `v`"), "{err}");
    let mut flipped = even.clone();
    flipped[even.len() / 2] ^= 0x10;
    assert!(operator(dir.path()).await.restore_keys(&flipped).is_err());
}
