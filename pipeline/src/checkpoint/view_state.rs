//! A view's window state in a checkpoint: each key's state encoded on its own (the encoding the
//! online store keeps, [`crate::online::encode_state`]), either every key's (a full snapshot)
//! or only the keys that changed since the previous checkpoint and the keys forgotten since
//! (incremental). Because states are opaque byte strings here, a chain of checkpoints merges
//! into one full snapshot without decoding any state.

use super::envelope::{self, EnvelopeError, StateKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Window states of some keys (borrowed from the bytes they were decoded from).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStates<'a> {
    /// Encoded entity key and its encoded window state.
    #[serde(borrow)]
    pub states: Vec<(&'a [u8], &'a [u8])>,
    /// Keys whose state is gone (incremental state only).
    #[serde(borrow)]
    pub forgotten: Vec<&'a [u8]>,
}

impl<'a> KeyStates<'a> {
    /// Encodes the states in an envelope (kind view state) for the plan `fingerprint`.
    pub fn encode(&self, fingerprint: u64) -> Result<Vec<u8>, EnvelopeError> {
        let capacity: usize = (self.states.iter())
            .map(|(k, s)| k.len() + s.len() + 8)
            .sum::<usize>()
            + self.forgotten.iter().map(|k| k.len() + 4).sum::<usize>();
        envelope::encode_with_capacity(StateKind::ViewState, fingerprint, self, capacity)
    }

    /// Decodes states written by [`KeyStates::encode`] for the plan `fingerprint`.
    pub fn decode(bytes: &'a [u8], fingerprint: u64) -> Result<Self, EnvelopeError> {
        envelope::decode(bytes, StateKind::ViewState, fingerprint)
    }
}

/// Merges a full snapshot and the incremental states after it, oldest first, into one full
/// snapshot (each envelope for the plan `fingerprint`): a later state of a key replaces the
/// earlier one, a forgotten key goes.
pub fn merge(full: &[u8], changes: &[&[u8]], fingerprint: u64) -> Result<Vec<u8>, EnvelopeError> {
    let base = KeyStates::decode(full, fingerprint)?;
    let mut keys: BTreeMap<&[u8], &[u8]> = base.states.into_iter().collect();
    for bytes in changes {
        let step = KeyStates::decode(bytes, fingerprint)?;
        for key in step.forgotten {
            keys.remove(key);
        }
        keys.extend(step.states);
    }
    KeyStates {
        states: keys.into_iter().collect(),
        forgotten: Vec::new(),
    }
    .encode(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states<'a>(pairs: &[(&'a [u8], &'a [u8])], forgotten: &[&'a [u8]]) -> KeyStates<'a> {
        KeyStates {
            states: pairs.to_vec(),
            forgotten: forgotten.to_vec(),
        }
    }

    #[test]
    fn round_trips_borrowing_the_bytes() {
        let s = states(&[(b"k1", b"state one"), (b"k2", b"")], &[b"gone"]);
        let bytes = s.encode(7).unwrap();
        assert_eq!(KeyStates::decode(&bytes, 7).unwrap(), s);
        assert!(matches!(
            KeyStates::decode(&bytes, 8),
            Err(EnvelopeError::Fingerprint { .. })
        ));
    }

    #[test]
    fn merging_applies_changes_in_order() {
        let full = states(&[(b"a", b"a0"), (b"b", b"b0"), (b"c", b"c0")], &[])
            .encode(1)
            .unwrap();
        let first = states(&[(b"a", b"a1"), (b"d", b"d1")], &[b"b"])
            .encode(1)
            .unwrap();
        // `b` comes back, `d` goes again, `a` changes once more.
        let second = states(&[(b"b", b"b2"), (b"a", b"a2")], &[b"d", b"never-seen"])
            .encode(1)
            .unwrap();
        let merged = merge(&full, &[&first, &second], 1).unwrap();
        let expected = states(&[(b"a", b"a2"), (b"b", b"b2"), (b"c", b"c0")], &[]);
        assert_eq!(KeyStates::decode(&merged, 1).unwrap(), expected);
        // Nothing after the full snapshot: the same keys.
        let alone = merge(&full, &[], 1).unwrap();
        assert_eq!(KeyStates::decode(&alone, 1).unwrap().states.len(), 3);
    }
}
