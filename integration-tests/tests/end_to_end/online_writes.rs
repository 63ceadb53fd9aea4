//! A view's writes to the online store, epoch by epoch, as a run makes them: the key count a
//! write carries (which spares the embedded store a lookup of every written key) is the count
//! the store reaches by looking them up, while keys come, change and are forgotten.

use arrow::record_batch::RecordBatch;
use quiver_connectors::DatagenConfig;
use quiver_integration_tests::{generated_in_time_order, write_files};
use quiver_pipeline::operator::{Operator, StateRequest};
use quiver_pipeline::view_operator::ViewOperator;
use quiver_pipeline::{CompiledPipeline, LoadedConfig};
use quiver_store::online::{EmbeddedOnline, OnlineStore};

/// Range windows only, so that keys idle for 10 minutes are forgotten.
const VIEW: &str = "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '5 minutes' PRECEDING AND CURRENT ROW) AS sum_5m
FROM source";

/// Generated events in event-time order (with the hidden lineage columns), in epochs of 200,
/// from cards that are often idle for longer than the windows.
fn batches() -> Vec<RecordBatch> {
    let all = generated_in_time_order(DatagenConfig {
        events: 8_000,
        cards: 300,
        events_per_second: 0.4,
        seed: 11,
        ..DatagenConfig::default()
    });
    (0..all.num_rows())
        .step_by(200)
        .map(|start| all.slice(start, 200.min(all.num_rows() - start)))
        .collect()
}

fn newest_time(batch: &RecordBatch) -> i64 {
    let times = arrow::compute::cast(
        batch.column_by_name("event_time").expect("time"),
        &arrow::datatypes::DataType::Int64,
    )
    .expect("cast");
    arrow::compute::max(
        times
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("i64"),
    )
    .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_count_a_view_writes_is_the_count_the_store_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "name: counts\nsource:\n  datagen: {events: 10}\nevent_time:\n  column: event_time\nviews:\n  - name: v\n    file: v.sql\n";
    let path = write_files(dir.path(), &[("p.yaml", yaml), ("v.sql", VIEW)]);
    let mut pipeline = CompiledPipeline::compile(LoadedConfig::load(&path).expect("config"))
        .await
        .expect("compiles");
    let fingerprint = pipeline.view_identities[0].fingerprint();
    let mut view = ViewOperator::new(pipeline.views.remove(0), fingerprint);
    view.enable_online("v@1".into());
    view.track_changes();
    // One store takes the counts the view writes, the other counts by looking keys up.
    let told = EmbeddedOnline::open(&dir.path().join("told.redb")).expect("store");
    let counted = EmbeddedOnline::open(&dir.path().join("counted.redb")).expect("store");
    let (mut forgotten, mut most) = (0, 0);
    for (epoch, batch) in batches().into_iter().enumerate() {
        let watermark = newest_time(&batch);
        view.process(batch, |_| {}).await.expect("batch");
        view.on_watermark(watermark);
        let request = match epoch {
            0 => StateRequest::Whole,
            _ => StateRequest::Changes,
        };
        let state = view.checkpoint(request).expect("checkpoint");
        let mut write = state.online.expect("the view writes the online store");
        write.stamp.run = "r".into();
        write.stamp.epoch = epoch as u64 + 1;
        write.replace = epoch == 0;
        forgotten += write.deletes.len();
        let told_keys = write.keys_after.expect("a view knows its key count");
        most = most.max(told_keys);
        told.apply_recoverable(std::slice::from_ref(&write))
            .expect("apply");
        write.keys_after = None;
        counted
            .apply_recoverable(std::slice::from_ref(&write))
            .expect("apply");
        let (told_stamp, counted_stamp) = (
            &told.tables().unwrap()[0].1,
            &counted.tables().unwrap()[0].1,
        );
        assert_eq!(told_stamp.keys, counted_stamp.keys, "epoch {epoch}");
        assert_eq!(told_stamp.keys, told_keys, "epoch {epoch}");
    }
    assert!(forgotten > 100, "keys were forgotten: {forgotten}");
    assert!(most > 50, "keys were held: {most}");
    // Written to the files, each counts its keys again from what it holds.
    told.sync().unwrap();
    counted.sync().unwrap();
    let keys = |store: &EmbeddedOnline| store.tables().unwrap()[0].1.keys;
    assert_eq!(keys(&told), keys(&counted));
}
