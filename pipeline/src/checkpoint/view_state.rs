//! A view's window state in a checkpoint: each key's state as the online store keeps it, a
//! head and numbered segments ([`quiver_gpu::KeyWindowState::write_parts`]), either every
//! key's (a full snapshot) or only what changed since the previous checkpoint: the changed
//! keys' heads and new segments, the segments they dropped, and the keys forgotten
//! (incremental). Because heads and segments are opaque byte strings here, a chain of
//! checkpoints merges into one full snapshot without decoding any state.

use super::envelope::{self, EnvelopeError, StateKind};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};

/// Window states of some keys (borrowed from the bytes they were decoded from).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct KeyStates<'a> {
    /// Encoded entity key and its head (a full snapshot: sorted by key).
    #[serde(borrow)]
    pub heads: Vec<(&'a [u8], &'a [u8])>,
    /// Encoded entity key, segment id and segment (a full snapshot: sorted by key and id).
    #[serde(borrow)]
    pub segments: Vec<(&'a [u8], u64, &'a [u8])>,
    /// Segments deleted (incremental state only), applied before `heads` and `segments`.
    #[serde(borrow)]
    pub dropped: Vec<(&'a [u8], u64)>,
    /// Keys whose state is gone (incremental state only), applied first.
    #[serde(borrow)]
    pub forgotten: Vec<&'a [u8]>,
}

/// Written as serde would derive it, but with byte strings as bytes, copied whole, instead of
/// sequences of `u8` pushed one at a time (the same postcard bytes: a length, then the
/// bytes), which was most of the time of encoding and merging checkpoints.
impl Serialize for KeyStates<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn head<'a>(&(key, head): &(&'a [u8], &'a [u8])) -> (Raw<'a>, Raw<'a>) {
            (Raw(key), Raw(head))
        }
        fn segment<'a>(&(key, id, bytes): &(&'a [u8], u64, &'a [u8])) -> (Raw<'a>, u64, Raw<'a>) {
            (Raw(key), id, Raw(bytes))
        }
        fn dropped<'a>(&(key, id): &(&'a [u8], u64)) -> (Raw<'a>, u64) {
            (Raw(key), id)
        }
        fn key<'a>(key: &&'a [u8]) -> Raw<'a> {
            Raw(key)
        }
        let mut fields = serializer.serialize_struct("KeyStates", 4)?;
        fields.serialize_field("heads", &SeqOf(&self.heads, head))?;
        fields.serialize_field("segments", &SeqOf(&self.segments, segment))?;
        fields.serialize_field("dropped", &SeqOf(&self.dropped, dropped))?;
        fields.serialize_field("forgotten", &SeqOf(&self.forgotten, key))?;
        fields.end()
    }
}

/// A byte string serialized as bytes.
struct Raw<'a>(&'a [u8]);

impl Serialize for Raw<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A slice serialized as the sequence of what a function makes of its items.
struct SeqOf<'s, T, F>(&'s [T], F);

impl<T, U: Serialize, F: Fn(&T) -> U> Serialize for SeqOf<'_, T, F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(&self.1))
    }
}

/// One key's state in a full snapshot.
pub struct KeyParts<'a> {
    /// The encoded entity key.
    pub key: &'a [u8],
    /// Its head.
    pub head: &'a [u8],
    /// Its segments, by id.
    pub segments: Vec<(u64, &'a [u8])>,
}

impl<'a> KeyStates<'a> {
    /// Encodes the states in an envelope (kind view state) for the plan `fingerprint`.
    pub fn encode(&self, fingerprint: u64) -> Result<Vec<u8>, EnvelopeError> {
        let capacity: usize = (self.heads.iter())
            .map(|(k, s)| k.len() + s.len() + 8)
            .sum::<usize>()
            + (self.segments.iter())
                .map(|(k, _, s)| k.len() + s.len() + 16)
                .sum::<usize>()
            + self
                .dropped
                .iter()
                .map(|(k, _)| k.len() + 12)
                .sum::<usize>()
            + self.forgotten.iter().map(|k| k.len() + 4).sum::<usize>();
        envelope::encode_with_capacity(StateKind::ViewState, fingerprint, self, capacity)
    }

    /// Decodes states written by [`KeyStates::encode`] for the plan `fingerprint`.
    pub fn decode(bytes: &'a [u8], fingerprint: u64) -> Result<Self, EnvelopeError> {
        envelope::decode(bytes, StateKind::ViewState, fingerprint)
    }

    /// Each key of a full snapshot with its head and segments; an error when a segment
    /// belongs to no head or the snapshot is not sorted.
    pub fn keys(&self) -> Result<Vec<KeyParts<'a>>, String> {
        let mut keys: Vec<KeyParts<'a>> = Vec::with_capacity(self.heads.len());
        let mut segments = self.segments.iter().peekable();
        for &(key, head) in &self.heads {
            if keys.last().is_some_and(|last| last.key >= key) {
                return Err("the keys of a whole snapshot are out of order".into());
            }
            let mut own = Vec::new();
            while let Some(&&(k, id, bytes)) = segments.peek() {
                match k.cmp(key) {
                    std::cmp::Ordering::Less => {
                        return Err("a segment belongs to no key's head".into())
                    }
                    std::cmp::Ordering::Greater => break,
                    std::cmp::Ordering::Equal => {
                        own.push((id, bytes));
                        segments.next();
                    }
                }
            }
            keys.push(KeyParts {
                key,
                head,
                segments: own,
            });
        }
        if segments.next().is_some() {
            return Err("a segment belongs to no key's head".into());
        }
        Ok(keys)
    }
}

/// Merges a full snapshot and the incremental states after it, oldest first, into one full
/// snapshot (each envelope for the plan `fingerprint`): a later head or segment of a key
/// replaces the earlier one, a dropped segment goes, a forgotten key goes with its segments.
pub fn merge(full: &[u8], changes: &[&[u8]], fingerprint: u64) -> Result<Vec<u8>, EnvelopeError> {
    let base = KeyStates::decode(full, fingerprint)?;
    let steps = (changes.iter())
        .map(|bytes| KeyStates::decode(bytes, fingerprint))
        .collect::<Result<Vec<_>, _>>()?;
    // What the increments do to each key they touch, folded in order; the snapshot's keys
    // are then copied in order, the touched ones changed, and the new ones put in place.
    let mut touched: HashMap<&[u8], Touched, foldhash::fast::RandomState> = HashMap::default();
    for step in &steps {
        for &key in &step.forgotten {
            touched.insert(key, Touched::forgotten());
        }
        for &(key, id) in &step.dropped {
            touched.entry(key).or_default().segments.insert(id, None);
        }
        for &(key, head) in &step.heads {
            touched.entry(key).or_default().head = Some(Some(head));
        }
        for &(key, id, bytes) in &step.segments {
            (touched.entry(key).or_default().segments).insert(id, Some(bytes));
        }
    }
    let mut touched_keys: Vec<&[u8]> = touched.keys().copied().collect();
    touched_keys.sort_unstable();
    let mut touched_keys = touched_keys.into_iter().peekable();
    let mut heads = base.heads.iter().peekable();
    let mut segments = &base.segments[..];
    let mut merged = KeyStates {
        heads: Vec::with_capacity(base.heads.len() + touched.len()),
        segments: Vec::with_capacity(base.segments.len()),
        dropped: Vec::new(),
        forgotten: Vec::new(),
    };
    loop {
        let key = match (heads.peek(), touched_keys.peek()) {
            (None, None) => break,
            (Some(&&(key, _)), None) => key,
            (None, Some(&key)) => key,
            (Some(&&(a, _)), Some(&b)) => a.min(b),
        };
        let head = heads.next_if(|(k, _)| *k == key).map(|&(_, head)| head);
        let own = segments.iter().take_while(|(k, _, _)| *k == key).count();
        let (own, rest) = segments.split_at(own);
        segments = rest;
        let Some(change) = touched_keys.next_if(|k| *k == key).map(|k| &touched[k]) else {
            if let Some(head) = head {
                merged.heads.push((key, head));
                merged.segments.extend_from_slice(own);
            }
            continue;
        };
        let Some(head) = change.head.unwrap_or(head) else {
            continue;
        };
        merged.heads.push((key, head));
        let kept = own.iter().filter(|_| !change.forgotten);
        let mut parts: BTreeMap<u64, &[u8]> = kept.map(|&(_, id, bytes)| (id, bytes)).collect();
        for (id, bytes) in &change.segments {
            match bytes {
                Some(bytes) => parts.insert(*id, bytes),
                None => parts.remove(id),
            };
        }
        merged
            .segments
            .extend(parts.into_iter().map(|(id, bytes)| (key, id, bytes)));
    }
    if !segments.is_empty() {
        return Err(EnvelopeError::Body(
            "a segment of the full snapshot belongs to no key's head, or is out of order".into(),
        ));
    }
    merged.encode(fingerprint)
}

/// What a chain of increments does to one key.
#[derive(Default)]
struct Touched<'a> {
    /// Its head after them: unchanged (`None`), gone (`Some(None)`) or new.
    head: Option<Option<&'a [u8]>>,
    /// Whether it was forgotten on the way: nothing of the snapshot's state stays.
    forgotten: bool,
    /// Segments written (`Some`) or deleted (`None`) after the snapshot (or the last time
    /// it was forgotten), by id.
    segments: BTreeMap<u64, Option<&'a [u8]>>,
}

impl Touched<'_> {
    fn forgotten() -> Self {
        Touched {
            head: Some(None),
            forgotten: true,
            segments: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Segment<'a> = (&'a [u8], u64, &'a [u8]);

    fn states<'a>(
        heads: &[(&'a [u8], &'a [u8])],
        segments: &[Segment<'a>],
        dropped: &[(&'a [u8], u64)],
        forgotten: &[&'a [u8]],
    ) -> KeyStates<'a> {
        KeyStates {
            heads: heads.to_vec(),
            segments: segments.to_vec(),
            dropped: dropped.to_vec(),
            forgotten: forgotten.to_vec(),
        }
    }

    #[test]
    fn round_trips_borrowing_the_bytes() {
        let s = states(
            &[(b"k1", b"head one"), (b"k2", b"")],
            &[(b"k1", 3, b"events")],
            &[(b"k1", 0)],
            &[b"gone"],
        );
        let bytes = s.encode(7).unwrap();
        assert_eq!(KeyStates::decode(&bytes, 7).unwrap(), s);
        assert!(matches!(
            KeyStates::decode(&bytes, 8),
            Err(EnvelopeError::Fingerprint { .. })
        ));
    }

    #[test]
    fn merging_applies_changes_in_order() {
        let full = states(
            &[(b"a", b"a0"), (b"b", b"b0"), (b"c", b"c0")],
            &[(b"a", 0, b"a-0"), (b"b", 0, b"b-0"), (b"b", 5, b"b-5")],
            &[],
            &[],
        )
        .encode(1)
        .unwrap();
        // `a` drops segment 0 and writes 4; `b` goes; `d` comes.
        let first = states(
            &[(b"a", b"a1"), (b"d", b"d1")],
            &[(b"a", 4, b"a-4"), (b"d", 0, b"d-0")],
            &[(b"a", 0)],
            &[b"b"],
        )
        .encode(1)
        .unwrap();
        // `b` comes back without its old segments, `d` goes again, `a` changes once more.
        let second = states(
            &[(b"b", b"b2"), (b"a", b"a2")],
            &[(b"b", 0, b"b-new"), (b"a", 4, b"a-4b")],
            &[],
            &[b"d", b"never-seen"],
        )
        .encode(1)
        .unwrap();
        let merged = merge(&full, &[&first, &second], 1).unwrap();
        let expected = states(
            &[(b"a", b"a2"), (b"b", b"b2"), (b"c", b"c0")],
            &[(b"a", 4, b"a-4b"), (b"b", 0, b"b-new")],
            &[],
            &[],
        );
        let merged = KeyStates::decode(&merged, 1).unwrap();
        assert_eq!(merged, expected);
        let keys = merged.keys().unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].segments, vec![(4, &b"a-4b"[..])]);
        assert!(keys[2].segments.is_empty());
        // Nothing after the full snapshot: the same keys.
        let alone = merge(&full, &[], 1).unwrap();
        assert_eq!(KeyStates::decode(&alone, 1).unwrap().heads.len(), 3);
    }

    #[test]
    fn a_segment_without_its_head_is_an_error() {
        let orphan = states(&[(b"b", b"b0")], &[(b"a", 0, b"x")], &[], &[]);
        assert!(orphan.keys().is_err());
        let after = states(&[(b"a", b"a0")], &[(b"b", 0, b"x")], &[], &[]);
        assert!(after.keys().is_err());
        let unsorted = states(&[(b"b", b"b0"), (b"a", b"a0")], &[], &[], &[]);
        assert!(unsorted.keys().is_err());
    }

    /// The merge as maps of every key and segment: the oracle of the merge proper.
    fn merge_by_maps(full: &[u8], changes: &[&[u8]]) -> KeyStates<'static> {
        let base = KeyStates::decode(full, 1).unwrap();
        let own = |b: &[u8]| b.to_vec();
        let mut heads: BTreeMap<Vec<u8>, Vec<u8>> =
            base.heads.iter().map(|(k, h)| (own(k), own(h))).collect();
        let mut segments: BTreeMap<(Vec<u8>, u64), Vec<u8>> = (base.segments.iter())
            .map(|(k, id, s)| ((own(k), *id), own(s)))
            .collect();
        for bytes in changes {
            let step = KeyStates::decode(bytes, 1).unwrap();
            for key in step.forgotten {
                heads.remove(key);
                segments.retain(|(k, _), _| k != key);
            }
            for (key, id) in step.dropped {
                segments.remove(&(own(key), id));
            }
            for (k, h) in step.heads {
                heads.insert(own(k), own(h));
            }
            for (k, id, s) in step.segments {
                segments.insert((own(k), id), own(s));
            }
        }
        let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
        KeyStates {
            heads: heads.into_iter().map(|(k, h)| (leak(k), leak(h))).collect(),
            segments: (segments.into_iter())
                .map(|((k, id), s)| (leak(k), id, leak(s)))
                .collect(),
            dropped: Vec::new(),
            forgotten: Vec::new(),
        }
    }

    #[test]
    fn merging_random_chains_equals_merging_by_maps() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let keys: Vec<Vec<u8>> = (0..30).map(|k| format!("k{k:02}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = (0..50).map(|v| format!("v{v}").into_bytes()).collect();
        for _ in 0..200 {
            // A full snapshot of some keys (sorted, each with some segments).
            let mut full = KeyStates::default();
            for key in &keys {
                if next(2) == 0 {
                    full.heads.push((&key[..], &values[next(50) as usize][..]));
                    for id in 0..next(4) {
                        full.segments
                            .push((&key[..], id * 3, &values[next(50) as usize][..]));
                    }
                }
            }
            let full = full.encode(1).unwrap();
            let chain: Vec<Vec<u8>> = (0..next(5))
                .map(|_| {
                    let mut step = KeyStates::default();
                    for _ in 0..next(8) {
                        let key = &keys[next(30) as usize][..];
                        match next(4) {
                            0 => step.forgotten.push(key),
                            1 => step.dropped.push((key, next(4) * 3)),
                            _ => {
                                step.heads.push((key, &values[next(50) as usize][..]));
                                if next(2) == 0 {
                                    step.segments.push((
                                        key,
                                        next(12),
                                        &values[next(50) as usize][..],
                                    ));
                                }
                            }
                        }
                    }
                    step.encode(1).unwrap()
                })
                .collect();
            let chain: Vec<&[u8]> = chain.iter().map(|c| &c[..]).collect();
            let merged = merge(&full, &chain, 1).unwrap();
            assert_eq!(
                KeyStates::decode(&merged, 1).unwrap(),
                merge_by_maps(&full, &chain)
            );
        }
    }

    /// What serde derives for the same fields: checkpoints written before bytes were written
    /// as bytes.
    #[derive(Serialize)]
    struct Derived<'a> {
        heads: Vec<(&'a [u8], &'a [u8])>,
        segments: Vec<(&'a [u8], u64, &'a [u8])>,
        dropped: Vec<(&'a [u8], u64)>,
        forgotten: Vec<&'a [u8]>,
    }

    #[test]
    fn bytes_are_encoded_as_serde_derived_them() {
        let s = states(
            &[(b"k1", b"head one"), (b"k2", b"")],
            &[(b"k1", 3, b"events"), (b"k2", 300, &[7; 200])],
            &[(b"k1", 0)],
            &[b"gone"],
        );
        let derived = Derived {
            heads: s.heads.clone(),
            segments: s.segments.clone(),
            dropped: s.dropped.clone(),
            forgotten: s.forgotten.clone(),
        };
        assert_eq!(
            postcard::to_allocvec(&s).unwrap(),
            postcard::to_allocvec(&derived).unwrap()
        );
    }
}
