//! A view's writes to the online store, epoch by epoch, as a run makes them: the key count a
//! write carries (which spares the embedded store a lookup of every written key) is the count
//! the store reaches by looking them up, while keys come, change and are forgotten.

use arrow::record_batch::RecordBatch;
use quiver_connectors::{Datagen, DatagenConfig};
use quiver_integration_tests::write_files;
use quiver_pipeline::compile::with_hidden_columns;
use quiver_pipeline::operator::{Operator, StateRequest};
use quiver_pipeline::view_operator::ViewOperator;
use quiver_pipeline::{CompiledPipeline, LoadedConfig};
use quiver_store::online::{EmbeddedOnline, OnlineStore};

/// Range windows only, so that keys idle for 10 minutes are forgotten.
const VIEW: &str = "SELECT card_id, event_time,
  count(*) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) AS n_10m,
  sum(amount) OVER (PARTITION BY card_id ORDER BY event_time RANGE BETWEEN INTERVAL '5 minutes' PRECEDING AND CURRENT ROW) AS sum_5m
FROM source";

/// Generated batches in event-time order (each with the hidden lineage columns), from cards
/// that are often idle for longer than the windows.
fn batches() -> Vec<RecordBatch> {
    let config = DatagenConfig {
        events: 8_000,
        cards: 300,
        events_per_second: 0.4,
        seed: 11,
        ..DatagenConfig::default()
    };
    let mut batches: Vec<RecordBatch> = Datagen::new(config)
        .expect("datagen")
        .map(|b| {
            let rows = b.batch.num_rows();
            let mut columns = b.batch.columns().to_vec();
            columns.push(std::sync::Arc::new(arrow::array::UInt32Array::from(vec![
                0;
                rows
            ])));
            columns.push(std::sync::Arc::new(arrow::array::UInt64Array::from(
                b.offsets,
            )));
            RecordBatch::try_new(with_hidden_columns(&b.batch.schema()), columns).expect("batch")
        })
        .collect();
    // Sorted, then cut into epochs of 200 events.
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
    let times = all.column_by_name("event_time").expect("time").clone();
    let order = arrow::compute::sort_to_indices(&times, None, None).expect("sort");
    let all = arrow::compute::take_record_batch(&all, &order).expect("take");
    batches.clear();
    let mut start = 0;
    while start < all.num_rows() {
        let len = 200.min(all.num_rows() - start);
        batches.push(all.slice(start, len));
        start += len;
    }
    batches
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
