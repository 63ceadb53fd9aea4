//! Serialising non-decreasing event times as the first time and then differences: a retained
//! window's times are close together, so the differences are small varints in compact formats
//! (about 5 bytes instead of 8 for microsecond timestamps an hour apart).

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserializer, Serializer};
use std::collections::VecDeque;

/// Serialises `times` as `[t0, t1 - t0, t2 - t1, ...]` (wrapping differences: any input
/// round-trips). Segments of window state write the same form by hand
/// (`key_state::parts`); this is its serde writer, read back by [`deserialize`].
pub fn serialize<S: Serializer>(times: &VecDeque<i64>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(times.len()))?;
    let mut previous = 0i64;
    for &t in times {
        seq.serialize_element(&t.wrapping_sub(previous))?;
        previous = t;
    }
    seq.end()
}

/// Reads what [`serialize`] wrote.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<VecDeque<i64>, D::Error> {
    struct Deltas;
    impl<'de> Visitor<'de> for Deltas {
        type Value = VecDeque<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a sequence of time differences")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut times = VecDeque::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            let mut previous = 0i64;
            while let Some(delta) = seq.next_element::<i64>()? {
                previous = previous.wrapping_add(delta);
                times.push_back(previous);
            }
            Ok(times)
        }
    }
    deserializer.deserialize_seq(Deltas)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Times(#[serde(with = "super")] std::collections::VecDeque<i64>);

    #[test]
    fn round_trips_and_is_smaller() {
        let times = Times(
            (0..100)
                .map(|i| 1_767_225_600_000_000 + i * 3_600_000_000)
                .collect(),
        );
        let bytes = postcard::to_allocvec(&times).unwrap();
        assert!(bytes.len() < 100 * 6, "{} bytes", bytes.len());
        assert_eq!(postcard::from_bytes::<Times>(&bytes).unwrap(), times);
        let odd = Times([i64::MIN, i64::MAX, 0, -5].into_iter().collect());
        let bytes = postcard::to_allocvec(&odd).unwrap();
        assert_eq!(postcard::from_bytes::<Times>(&bytes).unwrap(), odd);
    }
}
