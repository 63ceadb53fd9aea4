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
pub fn key_time_order(slots: &[u32], key_count: usize, times: &[i64]) -> KeyTimeOrder {
    let mut by_time: Vec<(i64, u32)> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, i as u32))
        .collect();
    by_time.sort_unstable();
    // Stable counting sort by key keeps the time order within each key.
    let (order, offsets) = group_rows(slots, key_count, by_time.iter().map(|&(_, row)| row));
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
}
