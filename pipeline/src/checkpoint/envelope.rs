//! The self-describing, versioned and checksummed envelope around every persisted state
//! (checkpoints and per-view window state).
//!
//! Layout (little endian): magic `QVRSTATE` (8 bytes), format version (u16), kind (u8),
//! fingerprint (u64), body length (u64), body, CRC-32 of everything before it (u32). The body
//! is postcard-encoded serde data. A truncated, bit-flipped or foreign file is a clear error,
//! never a panic; a state written for another plan is refused by its fingerprint.

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"QVRSTATE";
const HEADER: usize = 8 + 2 + 1 + 8 + 8;

/// The version of the envelope and body layout this build writes and reads.
///
/// 2: window state keeps exact (integer, decimal) inputs exactly and min/max candidates as
/// ordered integer keys. 3: retained times as differences, count-only inputs as nullness.
/// 4: min/max trackers keyed by `i64` except for decimals. 5: variance sums in double-double.
/// 6: commits into the feature store's Delta tables. 7 to 9: Kafka and online-store commits.
/// 10: view state as separately encoded key states, whole or incremental (checkpoint chains).
/// 12: store commits into an object store (paths relative to it). 13: running moments as
/// their non-zero fields (`quiver_gpu::moments`).
///
/// Plan fingerprints include it ([`crate::checkpoint::state::ViewIdentity::fingerprint`]), so
/// online state written by a build of another format reads as another plan's, not as garbage.
pub const FORMAT_VERSION: u16 = 13;

/// What an envelope holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// A whole checkpoint of a job.
    Checkpoint = 1,
    /// The window state of one feature view.
    ViewState = 2,
    /// An epoch's writes to the online store.
    OnlineWrites = 3,
}

impl StateKind {
    fn name(self) -> &'static str {
        match self {
            StateKind::Checkpoint => "checkpoint",
            StateKind::ViewState => "view state",
            StateKind::OnlineWrites => "online writes",
        }
    }
}

/// Why bytes could not be read back as a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than the header and checksum, or shorter than the length it announces.
    #[error("truncated: {len} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        expected: usize,
    },
    /// Not a Quiver state at all.
    #[error("not a Quiver state file (bad magic bytes)")]
    BadMagic,
    /// Written in another format (by an older or a newer build).
    #[error("written in state format version {found}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// A different kind of state.
    #[error("holds a {found} where a {expected} was expected")]
    WrongKind {
        /// Kind found.
        found: String,
        /// Kind expected.
        expected: &'static str,
    },
    /// The checksum does not match: the bytes were damaged.
    #[error(
        "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is damaged"
    )]
    Checksum {
        /// Stored CRC-32.
        stored: u32,
        /// CRC-32 of the bytes read.
        computed: u32,
    },
    /// Written for a different plan.
    #[error("written for plan fingerprint {found:016x}, but this plan's is {expected:016x}")]
    Fingerprint {
        /// Fingerprint stored.
        found: u64,
        /// Fingerprint of the current plan.
        expected: u64,
    },
    /// The body does not decode (a bug, or damage the checksum missed).
    #[error("the body does not decode: {0}")]
    Body(String),
}

/// Encodes `value` in an envelope of `kind` for plan `fingerprint`.
pub fn encode<T: Serialize>(
    kind: StateKind,
    fingerprint: u64,
    value: &T,
) -> Result<Vec<u8>, EnvelopeError> {
    encode_with_capacity(kind, fingerprint, value, 0)
}

/// [`encode`], into a buffer sized for `capacity` bytes of body up front: the body is encoded
/// in place behind the header, so a large state is neither copied nor grown step by step.
pub fn encode_with_capacity<T: Serialize>(
    kind: StateKind,
    fingerprint: u64,
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, EnvelopeError> {
    let mut out = Vec::with_capacity(HEADER + capacity + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut out =
        postcard::to_extend(value, out).map_err(|e| EnvelopeError::Body(e.to_string()))?;
    let body_len = (out.len() - HEADER) as u64;
    out[HEADER - 8..HEADER].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The fingerprint stored in an envelope, after checking everything but the fingerprint.
pub fn fingerprint_of(bytes: &[u8], kind: StateKind) -> Result<u64, EnvelopeError> {
    check(bytes, kind).map(|(fingerprint, _)| fingerprint)
}

fn check(bytes: &[u8], kind: StateKind) -> Result<(u64, &[u8]), EnvelopeError> {
    let too_short = |expected| EnvelopeError::Truncated {
        len: bytes.len(),
        expected,
    };
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(if bytes.len() < 8 && MAGIC.starts_with(bytes) {
            too_short(HEADER + 4)
        } else {
            EnvelopeError::BadMagic
        });
    }
    if bytes.len() < HEADER + 4 {
        return Err(too_short(HEADER + 4));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedVersion { found: version });
    }
    let body_len = usize::try_from(u64_at(19)).unwrap_or(usize::MAX);
    let expected = HEADER.saturating_add(body_len).saturating_add(4);
    if bytes.len() < expected {
        return Err(too_short(expected));
    }
    let end = HEADER + body_len;
    let stored = u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    let computed = crc32fast::hash(&bytes[..end]);
    if stored != computed {
        return Err(EnvelopeError::Checksum { stored, computed });
    }
    if bytes[10] != kind as u8 {
        let found = match bytes[10] {
            1 => StateKind::Checkpoint.name().to_string(),
            2 => StateKind::ViewState.name().to_string(),
            3 => StateKind::OnlineWrites.name().to_string(),
            other => format!("kind {other}"),
        };
        return Err(EnvelopeError::WrongKind {
            found,
            expected: kind.name(),
        });
    }
    Ok((u64_at(11), &bytes[HEADER..end]))
}

/// Decodes an envelope of `kind` written for plan `fingerprint`.
pub fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    kind: StateKind,
    fingerprint: u64,
) -> Result<T, EnvelopeError> {
    let (found, body) = check(bytes, kind)?;
    if found != fingerprint {
        return Err(EnvelopeError::Fingerprint {
            found,
            expected: fingerprint,
        });
    }
    postcard::from_bytes(body).map_err(|e| EnvelopeError::Body(e.to_string()))
}

/// A stable 64-bit fingerprint (FNV-1a) of `bytes`. Not cryptographic: it tells plans apart,
/// it does not defend against forgery.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(
            StateKind::ViewState,
            7,
            &(vec![1u64, 2, 3], "abc".to_string()),
        )
        .unwrap()
    }

    #[test]
    fn round_trips() {
        let value: (Vec<u64>, String) = decode(&sample(), StateKind::ViewState, 7).unwrap();
        assert_eq!(value, (vec![1, 2, 3], "abc".to_string()));
        assert_eq!(fingerprint_of(&sample(), StateKind::ViewState), Ok(7));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let err = decode::<(Vec<u64>, String)>(&bytes[..len], StateKind::ViewState, 7)
                .expect_err("truncated input must not decode");
            assert!(
                matches!(err, EnvelopeError::Truncated { .. }),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_an_error() {
        let bytes = sample();
        for i in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[i / 8] ^= 1 << (i % 8);
            assert!(
                decode::<(Vec<u64>, String)>(&damaged, StateKind::ViewState, 7).is_err(),
                "bit {i} flipped went unnoticed"
            );
        }
    }

    #[test]
    fn wrong_plan_kind_and_version_are_named() {
        let bytes = sample();
        let err = decode::<(Vec<u64>, String)>(&bytes, StateKind::ViewState, 8).unwrap_err();
        assert!(err.to_string().contains("fingerprint"), "{err}");
        let err = decode::<(Vec<u64>, String)>(&bytes, StateKind::Checkpoint, 7).unwrap_err();
        assert!(err.to_string().contains("view state"), "{err}");
        let mut newer = bytes.clone();
        let next = FORMAT_VERSION + 1;
        newer[8..10].copy_from_slice(&next.to_le_bytes());
        let err = decode::<(Vec<u64>, String)>(&newer, StateKind::ViewState, 7).unwrap_err();
        assert!(matches!(
            err,
            EnvelopeError::UnsupportedVersion { found } if found == next
        ));
        assert_eq!(
            decode::<u8>(
                b"PAR1garbage-and-more-bytes-here-ok",
                StateKind::ViewState,
                7
            ),
            Err(EnvelopeError::BadMagic)
        );
    }
}
