//! Grouping rows by key and ordering them by event time within each key.

use std::collections::HashMap;

/// Rows grouped by key, each key's rows by time (ties in input order).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyTimeOrder {
    /// Row indices in key-then-time order.
    pub order: Vec<u32>,
    /// Key `k`'s rows are `order[offsets[k]..offsets[k + 1]]`.
    pub offsets: Vec<usize>,
}

/// Numbers the distinct keys of `keys` densely (`0..count`, in order of first appearance) and
/// returns each row's number and the count.
pub fn dense_key_ids(keys: &[&[u8]]) -> (Vec<u32>, usize) {
    let mut index: HashMap<&[u8], u32, foldhash::fast::RandomState> = HashMap::default();
    let ids = keys
        .iter()
        .map(|k| {
            let next = index.len() as u32;
            *index.entry(k).or_insert(next)
        })
        .collect();
    (ids, index.len())
}

/// Orders rows by key id (`slots`, each below `key_count`), then by time, ties in input order.
///
/// Rows are grouped by key first (a stable counting sort), then each key's rows are sorted by
/// time on their own: a key's rows are few, and arrive nearly in time order, so these small
/// sorts cost far less than one sort of every row by time.
pub fn key_time_order(slots: &[u32], key_count: usize, times: &[i64]) -> KeyTimeOrder {
    let (grouped, offsets) = group_rows(slots, key_count, 0..slots.len() as u32);
    // (time, row) pairs are distinct, so sorting them orders ties by row: input order.
    let mut by_key: Vec<(i64, u32)> = grouped.iter().map(|&r| (times[r as usize], r)).collect();
    drop(grouped);
    for key in offsets.windows(2) {
        by_key[key[0]..key[1]].sort_unstable();
    }
    let order = by_key.into_iter().map(|(_, row)| row).collect();
    KeyTimeOrder { order, offsets }
}

/// Rows grouped by their group (`slots[row]`, each below `groups`) with a stable counting
/// sort: `rows` (every row once) in that order within each group. Returns the order and each
/// group's start in it (`groups + 1` offsets).
pub fn group_rows(
    slots: &[u32],
    groups: usize,
    rows: impl Iterator<Item = u32>,
) -> (Vec<u32>, Vec<usize>) {
    let mut offsets = vec![0usize; groups + 1];
    for &slot in slots {
        offsets[slot as usize + 1] += 1;
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    let mut next = offsets.clone();
    let mut order = vec![0u32; slots.len()];
    for row in rows {
        let slot = slots[row as usize] as usize;
        order[next[slot]] = row;
        next[slot] += 1;
    }
    (order, offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_keys_and_orders_time_with_ties_in_input_order() {
        let keys: [&[u8]; 6] = [b"b", b"a", b"b", b"a", b"b", b"c"];
        let (ids, count) = dense_key_ids(&keys);
        assert_eq!((ids.clone(), count), (vec![0, 1, 0, 1, 0, 2], 3));
        let sorted = key_time_order(&ids, count, &[5, 9, 1, 2, 5, 0]);
        assert_eq!(sorted.order, vec![2, 0, 4, 3, 1, 5]);
        assert_eq!(sorted.offsets, vec![0, 3, 5, 6]);
    }

    #[test]
    fn orders_as_a_sort_by_key_time_and_row_with_hot_keys_and_disorder() {
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        let rows = 20_000;
        // A third of the rows on one key, times nearly in order with ties and disorder.
        let slots: Vec<u32> = (0..rows)
            .map(|_| match next() % 3 {
                0 => 0,
                _ => (next() % 500) as u32,
            })
            .collect();
        let times: Vec<i64> = (0..rows as i64)
            .map(|i| i / 4 - (next() % 6) as i64)
            .collect();
        let sorted = key_time_order(&slots, 500, &times);
        let mut expected: Vec<u32> = (0..rows as u32).collect();
        expected.sort_by_key(|&r| (slots[r as usize], times[r as usize], r));
        assert_eq!(sorted.order, expected);
        for key in 0..500 {
            let rows = &sorted.order[sorted.offsets[key]..sorted.offsets[key + 1]];
            assert!(rows.iter().all(|&r| slots[r as usize] == key as u32));
        }
    }
}
