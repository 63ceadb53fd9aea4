//! Shards of a view's key space: what one of several active instances of a job computes.
//!
//! A key belongs to shard `hash(key) mod count`, where `key` is the view's encoded entity key
//! (Arrow's row format, as the window state keys it) and `hash` is FNV-1a with a final
//! avalanche: fixed, so every process and every release puts a key in the same shard.

/// One shard of the key space, `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyShard {
    index: u32,
    count: u32,
}

/// The most shards a job may have (each is a process reading every source partition).
pub const MAX_SHARDS: u32 = 256;

impl KeyShard {
    /// Shard `index` of `count` (`index < count <= MAX_SHARDS`).
    pub fn new(index: u32, count: u32) -> Result<Self, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("a job has 1 to {MAX_SHARDS} shards, not {count}"));
        }
        if index >= count {
            return Err(format!(
                "shard {index} does not exist: shards are numbered 0 to {}",
                count - 1
            ));
        }
        Ok(KeyShard { index, count })
    }

    /// Parses `index/count`, e.g. `2/4`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a shard: write INDEX/COUNT, e.g. 0/4"))?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{text}` is not a shard: write INDEX/COUNT, e.g. 0/4"))
        };
        KeyShard::new(number(index)?, number(count)?)
    }

    /// Every shard of a key space cut into `count` (a count [`KeyShard::new`] accepts), in
    /// order.
    pub fn all(count: u32) -> impl Iterator<Item = KeyShard> {
        (0..count).map(move |index| KeyShard { index, count })
    }

    /// This shard's number.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards the key space has.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of `count` that owns the encoded key `key`.
    pub fn of_key(key: &[u8], count: u32) -> u32 {
        (stable_hash(key) % u64::from(count.max(1))) as u32
    }

    /// Whether this shard owns the encoded key `key`.
    pub fn owns(&self, key: &[u8]) -> bool {
        KeyShard::of_key(key, self.count) == self.index
    }

    /// The name of this shard's own directory (checkpoints, outputs): `shard-<index>-of-<count>`.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// Parses a directory name written by [`KeyShard::dir_name`].
    pub fn of_dir_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("shard-")?;
        let (index, count) = rest.split_once("-of-")?;
        KeyShard::new(index.parse().ok()?, count.parse().ok()?).ok()
    }
}

impl std::fmt::Display for KeyShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// FNV-1a over the bytes, then MurmurHash3's 64-bit finalizer so that every bit of the key
/// reaches the low bits a modulo reads: the hash that places keys in shards and in backfill's
/// key partitions.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_name_their_directories() {
        let shard = KeyShard::parse("2/4").unwrap();
        assert_eq!((shard.index(), shard.count()), (2, 4));
        assert_eq!(shard.dir_name(), "shard-2-of-4");
        assert_eq!(KeyShard::of_dir_name("shard-2-of-4"), Some(shard));
        assert_eq!(shard.to_string(), "2/4");
        for bad in ["4/4", "1/0", "x/2", "3", "0/1000", "-1/2"] {
            assert!(KeyShard::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(KeyShard::of_dir_name("shard-4-of-4"), None);
        assert_eq!(KeyShard::of_dir_name("cards"), None);
    }

    #[test]
    fn every_key_has_exactly_one_shard_and_shards_are_balanced() {
        let count = 4;
        let shards: Vec<KeyShard> = (0..count)
            .map(|i| KeyShard::new(i, count).unwrap())
            .collect();
        let mut sizes = [0usize; 4];
        for n in 0..10_000u32 {
            let key = format!("card-{n}");
            let owners: Vec<_> = shards.iter().filter(|s| s.owns(key.as_bytes())).collect();
            assert_eq!(owners.len(), 1);
            sizes[owners[0].index() as usize] += 1;
        }
        assert!(
            sizes.iter().all(|&n| (2_200..2_800).contains(&n)),
            "{sizes:?}"
        );
        // Fixed for good: a key's shard never changes between releases.
        assert_eq!(stable_hash(b"card-1"), 0x2ef6_cb11_4039_dc73);
        assert_eq!(KeyShard::of_key(b"card-1", 4), 3);
    }
}
