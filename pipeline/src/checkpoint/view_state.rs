//! A view's window state in a checkpoint: each key's state as the online store keeps it, a
//! head and numbered segments ([`quiver_gpu::KeyWindowState::write_parts`]), either every
//! key's (a full snapshot) or only what changed since the previous checkpoint: the changed
//! keys' heads and new segments, the segments they dropped, and the keys forgotten
//! (incremental). Because heads and segments are opaque byte strings here, a chain of
//! checkpoints merges into one full snapshot without decoding any state.

use super::envelope::{self, EnvelopeError, StateKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Window states of some keys (borrowed from the bytes they were decoded from).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    let mut heads: BTreeMap<&[u8], &[u8]> = base.heads.into_iter().collect();
    let mut segments: BTreeMap<(&[u8], u64), &[u8]> = (base.segments.into_iter())
        .map(|(k, id, s)| ((k, id), s))
        .collect();
    for bytes in changes {
        let step = KeyStates::decode(bytes, fingerprint)?;
        for key in step.forgotten {
            heads.remove(key);
            let gone: Vec<(&[u8], u64)> = (segments.range((key, 0)..=(key, u64::MAX)))
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                segments.remove(&k);
            }
        }
        for key in step.dropped {
            segments.remove(&key);
        }
        heads.extend(step.heads);
        segments.extend(step.segments.into_iter().map(|(k, id, s)| ((k, id), s)));
    }
    KeyStates {
        heads: heads.into_iter().collect(),
        segments: (segments.into_iter())
            .map(|((k, id), s)| (k, id, s))
            .collect(),
        dropped: Vec::new(),
        forgotten: Vec::new(),
    }
    .encode(fingerprint)
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
}
