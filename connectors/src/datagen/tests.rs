//! Tests of the generator's contract: determinism, the exact disorder bound, and the presence
//! of ties, null amounts and card-testing bursts.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::TimestampMicrosecondType;

use super::*;

/// Flattened rows: (txn_id, card, amount, event_time, offset).
type Row = (i64, String, Option<f64>, i64, u64);

fn rows(config: DatagenConfig) -> Vec<Row> {
    let mut out = Vec::new();
    for sb in Datagen::new(config).unwrap() {
        assert_eq!(sb.partition, "datagen");
        let b = &sb.batch;
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let cards = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let amounts = b.column(3).as_any().downcast_ref::<Float64Array>().unwrap();
        let times = b.column(6).as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            out.push((
                ids.value(i),
                cards.value(i).to_string(),
                (!amounts.is_null(i)).then(|| amounts.value(i)),
                times.value(i),
                sb.offsets[i],
            ));
        }
    }
    out
}

fn config(events: u64) -> DatagenConfig {
    DatagenConfig {
        events,
        batch_size: 4096,
        ..DatagenConfig::default()
    }
}

#[test]
fn same_seed_same_output_and_schema() {
    let a: Vec<SourceBatch> = Datagen::new(config(20_000)).unwrap().collect();
    let b: Vec<SourceBatch> = Datagen::new(config(20_000)).unwrap().collect();
    assert_eq!(a.len(), 5);
    assert_eq!(
        a.last().map(|s| s.batch.num_rows()),
        Some(20_000 - 4 * 4096)
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.batch, y.batch);
        assert_eq!(x.offsets, y.offsets);
        assert_eq!(x.batch.schema(), datagen_schema().arrow_schema());
    }
    let other: Vec<SourceBatch> = Datagen::new(DatagenConfig {
        seed: 43,
        ..config(20_000)
    })
    .unwrap()
    .collect();
    assert_ne!(a[0].batch, other[0].batch);
    let range = a[1].range().unwrap();
    assert_eq!((range.first_offset, range.last_offset), (4096, 8191));
}

#[test]
fn golden_first_rows_never_change() {
    // Pins the exact output so that a change to the model or the PRNG is a visible decision.
    let first: Vec<Row> = rows(config(3));
    let rendered: Vec<String> = first
        .iter()
        .map(|(id, card, amount, t, offset)| format!("{id} {card} {amount:?} {t} {offset}"))
        .collect();
    assert_eq!(rendered, GOLDEN);
}

const GOLDEN: [&str; 3] = [
    "2 card_010400 Some(9.55) 1767225600048154 0",
    "0 card_009010 Some(37.41) 1767225600000000 1",
    "1 card_049488 Some(19.41) 1767225600004379 2",
];

#[test]
fn disorder_is_bounded_exactly_and_used() {
    let cfg = config(200_000);
    let bound = cfg.max_disorder_ms as i64 * 1000;
    let rows = rows(cfg);
    assert_eq!(rows.len(), 200_000);
    let mut max_seen = i64::MIN;
    let mut worst = 0i64;
    let mut out_of_order = 0u32;
    for (i, (_, _, _, t, offset)) in rows.iter().enumerate() {
        assert_eq!(*offset, i as u64, "offsets are arrival sequence numbers");
        if max_seen != i64::MIN {
            assert!(
                *t >= max_seen - bound,
                "row {i}: event time {t} is more than {bound} us behind {max_seen}"
            );
            if *t < max_seen {
                out_of_order += 1;
                worst = worst.max(max_seen - t);
            }
        }
        max_seen = max_seen.max(*t);
    }
    assert!(
        out_of_order > 1000,
        "only {out_of_order} out-of-order events"
    );
    assert!(
        worst > bound / 2,
        "largest disorder {worst} us barely uses the bound"
    );
    let ids: HashSet<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), rows.len(), "txn ids are unique");

    let in_order = super::rows_in_order_for_test(DatagenConfig {
        max_disorder_ms: 0,
        ..config(10_000)
    });
    assert!(in_order.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn ties_nulls_and_bursts_are_present() {
    let rows = rows(config(200_000));
    let n = rows.len() as f64;

    let mut per_time: HashMap<i64, u32> = HashMap::new();
    let mut per_card_time: HashMap<(&str, i64), u32> = HashMap::new();
    for (_, card, _, t, _) in &rows {
        *per_time.entry(*t).or_default() += 1;
        *per_card_time.entry((card.as_str(), *t)).or_default() += 1;
    }
    let ties = per_time.values().filter(|&&c| c > 1).count();
    let card_ties = per_card_time.values().filter(|&&c| c > 1).count();
    assert!(ties as f64 > 0.01 * n, "{ties} tied timestamps");
    assert!(card_ties > 100, "{card_ties} same-card ties");

    let nulls = rows.iter().filter(|r| r.2.is_none()).count() as f64;
    assert!(
        (0.005..0.015).contains(&(nulls / n)),
        "null ratio {}",
        nulls / n
    );

    // A burst: at least 5 tiny amounts on one card within 60 seconds.
    let mut tiny: HashMap<&str, Vec<i64>> = HashMap::new();
    for (_, card, amount, t, _) in &rows {
        if amount.is_some_and(|a| a <= 2.0) {
            tiny.entry(card.as_str()).or_default().push(*t);
        }
    }
    for times in tiny.values_mut() {
        times.sort_unstable();
    }
    let bursts = tiny
        .values()
        .filter(|times| times.windows(5).any(|w| w[4] - w[0] <= 60_000_000))
        .count();
    // 200k events * 0.0005 = about 100 bursts.
    assert!((50..200).contains(&bursts), "{bursts} cards with bursts");
}

#[test]
fn ids_are_zero_padded() {
    let mut text = String::from("junk");
    padded_id(&mut text, "card_", 123, 6);
    assert_eq!(text, "card_000123");
    padded_id(&mut text, "m_", 0, 5);
    assert_eq!(text, "m_00000");
    padded_id(&mut text, "card_", 12_345_678, 6);
    assert_eq!(text, "card_12345678");
    padded_id(&mut text, "x", u64::MAX, 0);
    assert_eq!(text, format!("x{}", u64::MAX));
}

#[test]
fn rejects_bad_options() {
    let cases: [(&str, DatagenConfig); 7] = [
        (
            "cards",
            DatagenConfig {
                cards: 0,
                ..DatagenConfig::default()
            },
        ),
        (
            "start",
            DatagenConfig {
                start: "yesterday".into(),
                ..DatagenConfig::default()
            },
        ),
        (
            "tie_ratio",
            DatagenConfig {
                tie_ratio: 1.5,
                ..DatagenConfig::default()
            },
        ),
        (
            "burst_ratio",
            DatagenConfig {
                burst_ratio: f64::NAN,
                ..DatagenConfig::default()
            },
        ),
        (
            "events_per_second",
            DatagenConfig {
                events_per_second: 0.0,
                ..DatagenConfig::default()
            },
        ),
        (
            "batch_size",
            DatagenConfig {
                batch_size: 0,
                ..DatagenConfig::default()
            },
        ),
        (
            "zipf_exponent",
            DatagenConfig {
                zipf_exponent: -1.0,
                ..DatagenConfig::default()
            },
        ),
    ];
    for (field, cfg) in cases {
        let err = Datagen::new(cfg).err().unwrap();
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }
    assert!(DatagenConfig::default().validate().is_ok());
    let parsed: DatagenConfig = serde_json::from_str(r#"{"events": 10}"#).unwrap();
    assert_eq!(parsed.events, 10);
    assert_eq!(parsed.seed, 42);
    assert!(serde_json::from_str::<DatagenConfig>(r#"{"evnets": 10}"#).is_err());
    assert_eq!(Datagen::new(config(0)).unwrap().count(), 0);
}
