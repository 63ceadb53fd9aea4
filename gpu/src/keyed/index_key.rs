//! Keys of the index from an entity key to its state slot, short ones held inline.
//!
//! A lookup compares the wanted key with the keys in its hash bucket. Boxed, each compare
//! loaded the key from wherever it was allocated: with tens of thousands of keys, a cache miss
//! per event. Held inline (the demo's card and merchant ids, 11 and 7 characters, encode well
//! under the limit), the key sits in the bucket the lookup already loaded.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Bytes a key holds inline at most (the key then fills 32 bytes with its length and tag).
const INLINE: usize = 30;

/// An encoded entity key as the index holds it. Hashes, compares and borrows as its bytes, so
/// the index is looked up by `&[u8]`.
#[derive(Clone)]
pub(super) enum IndexKey {
    /// A key of at most [`INLINE`] bytes.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A longer key.
    Boxed(Box<[u8]>),
}

impl IndexKey {
    /// The key's bytes.
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            IndexKey::Inline { len, bytes } => &bytes[..*len as usize],
            IndexKey::Boxed(bytes) => bytes,
        }
    }
}

impl From<&[u8]> for IndexKey {
    fn from(key: &[u8]) -> Self {
        if key.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            IndexKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            IndexKey::Boxed(key.into())
        }
    }
}

impl Borrow<[u8]> for IndexKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl Hash for IndexKey {
    /// As the bytes hash (what `Borrow` requires).
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

impl PartialEq for IndexKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for IndexKey {}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.bytes().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_of_every_length_are_found_by_their_bytes() {
        let keys: Vec<Vec<u8>> = (0..=64u8).map(|n| (0..n).collect()).collect();
        let index: HashMap<IndexKey, usize, foldhash::fast::RandomState> = (keys.iter())
            .enumerate()
            .map(|(slot, k)| (IndexKey::from(&k[..]), slot))
            .collect();
        assert_eq!(std::mem::size_of::<IndexKey>(), 32);
        for (slot, k) in keys.iter().enumerate() {
            assert_eq!(index.get(&k[..]), Some(&slot));
            assert_eq!(IndexKey::from(&k[..]).bytes(), &k[..]);
        }
        // A key that is a prefix of another, padded with zeros, is not it.
        assert_eq!(index.get(&[0u8, 1, 2, 0][..]), None);
        assert!(IndexKey::from(&[1u8][..]) != IndexKey::from(&[1u8, 0][..]));
    }
}
