//! The online tables of a sharded job (`shards: N`, `quiver run --shard I/N`).
//!
//! Each shard writes its keys' window state into a table of its own,
//! `view@version/shard-I-of-N`, with its own stamp: shards commit their epochs independently
//! (each is a whole job with its own run, epochs and checkpoints), so one stamp per shard is
//! what keeps the epoch contract (an epoch visible whole, applied once) true per shard. A read
//! takes each entity from the table of the shard owning its key ([`KeyShard::of_key`], the
//! hash the shard's views keep their keys by).
//!
//! Which layout a view's tables have: the config's `source.kafka.shards` when it has one,
//! else what the store holds (the unsharded table when it exists, else the shard tables of the
//! most recently committed layout), so `quiver run --shard I/N` over any source is read back
//! without configuring anything.

use quiver_sql::KeyShard;
use quiver_store::online::OnlineStamp;
use std::path::{Path, PathBuf};

/// The table shard `shard` writes for the view version whose table is `table` (`view@version`).
pub fn shard_table(table: &str, shard: KeyShard) -> String {
    format!("{table}/{}", shard.dir_name())
}

/// A table name split: the unsharded table it belongs to (`view@version`) and its shard.
pub fn split_table(name: &str) -> (&str, Option<KeyShard>) {
    match name.rsplit_once('/') {
        Some((base, suffix)) => match KeyShard::of_dir_name(suffix) {
            Some(shard) => (base, Some(shard)),
            None => (name, None),
        },
        None => (name, None),
    }
}

/// The layout of the view version with table `table` in a store holding `tables`: `None`
/// when unsharded (its table exists, or nothing was written), else the shard count whose
/// tables were committed most recently.
pub fn discovered_layout(tables: &[(String, OnlineStamp)], table: &str) -> Option<u32> {
    if tables.iter().any(|(t, _)| t == table) {
        return None;
    }
    (tables.iter())
        .filter_map(|(t, stamp)| match split_table(t) {
            (base, Some(shard)) if base == table => Some((stamp.committed_unix_ms, shard.count())),
            _ => None,
        })
        .max()
        .map(|(_, count)| count)
}

/// The embedded store file shard `shard` writes when the job's file is `path`: the file of the
/// same name in the shard's directory beside it (`<dir>/shard-I-of-N/online.redb`, where the
/// shard's checkpoints and outputs are when `path` is the default).
pub fn shard_file(path: &Path, shard: KeyShard) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new(""));
    let name = path.file_name().unwrap_or(path.as_os_str());
    dir.join(shard.dir_name()).join(name)
}

/// The files of all `count` shards for the job file `path`, in shard order.
pub fn shard_files(path: &Path, count: u32) -> Vec<PathBuf> {
    KeyShard::all(count)
        .map(|shard| shard_file(path, shard))
        .collect()
}

/// The shard files of the job file `path` when some exist beside it: every shard's file (in
/// shard order, existing or not) of the layout whose newest file is the newest.
pub fn existing_shard_files(path: &Path) -> Option<Vec<PathBuf>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name()?;
    let newest = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let shard = entry.file_name().to_str().and_then(KeyShard::of_dir_name)?;
            let meta = std::fs::metadata(entry.path().join(name)).ok()?;
            Some((
                meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                shard.count(),
            ))
        })
        .max()?;
    Some(shard_files(path, newest.1))
}

/// What the tables of a sharded view version read together are as of, as one stamp: the
/// shard whose epoch committed longest ago gives the run, epoch and commit time (the values
/// are at least that fresh), the newest watermark among them the watermark (every window of
/// the read ends at or after it, so the read is exact for each shard), and the keys add up.
/// `None` for no stamps.
pub fn combined_stamp<'a>(
    stamps: impl IntoIterator<Item = &'a OnlineStamp>,
) -> Option<OnlineStamp> {
    let stamps: Vec<&OnlineStamp> = stamps.into_iter().collect();
    let oldest = stamps
        .iter()
        .min_by_key(|s| (s.committed_unix_ms, s.epoch))?;
    Some(OnlineStamp {
        watermark: stamps.iter().filter_map(|s| s.watermark).max(),
        keys: stamps.iter().map(|s| s.keys).sum(),
        ..(*oldest).clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(committed: u64, watermark: i64, keys: u64) -> OnlineStamp {
        OnlineStamp {
            run: format!("r{committed}"),
            epoch: committed,
            watermark: Some(watermark),
            committed_unix_ms: committed,
            fingerprint: 1,
            keys,
        }
    }

    #[test]
    fn shard_tables_name_their_shard_and_split_back() {
        let shard = KeyShard::new(2, 3).unwrap();
        let table = shard_table("cards@abc", shard);
        assert_eq!(table, "cards@abc/shard-2-of-3");
        assert_eq!(split_table(&table), ("cards@abc", Some(shard)));
        assert_eq!(split_table("cards@abc"), ("cards@abc", None));
        assert_eq!(split_table("a/b@c"), ("a/b@c", None));
    }

    #[test]
    fn the_layout_is_the_unsharded_table_else_the_newest_shard_count() {
        let table = |name: &str, committed| (name.to_string(), stamp(committed, 0, 1));
        let sharded = vec![
            table("cards@v/shard-0-of-2", 5),
            table("cards@v/shard-1-of-2", 6),
            table("cards@v/shard-0-of-3", 2),
            table("cards@w", 9),
        ];
        assert_eq!(discovered_layout(&sharded, "cards@v"), Some(2));
        assert_eq!(discovered_layout(&sharded, "cards@w"), None);
        assert_eq!(discovered_layout(&sharded, "cards@x"), None);
        let mut both = sharded;
        both.push(table("cards@v", 1));
        assert_eq!(discovered_layout(&both, "cards@v"), None);
    }

    #[test]
    fn shard_files_sit_in_the_shards_directories_and_are_found_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        assert_eq!(
            shard_file(&path, KeyShard::new(1, 4).unwrap()),
            dir.path().join("shard-1-of-4").join("online.redb")
        );
        assert_eq!(existing_shard_files(&path), None);
        for i in [0, 2] {
            let file = shard_file(&path, KeyShard::new(i, 3).unwrap());
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, b"x").unwrap();
        }
        let files = existing_shard_files(&path).unwrap();
        assert_eq!(files, shard_files(&path, 3));
        assert_eq!(
            files[1],
            dir.path().join("shard-1-of-3").join("online.redb")
        );
    }

    #[test]
    fn a_combined_stamp_is_as_fresh_as_its_oldest_shard_and_exact_from_the_newest_watermark() {
        let stamps = [stamp(10, 500, 3), stamp(7, 400, 4), stamp(12, 450, 5)];
        let combined = combined_stamp(&stamps).unwrap();
        assert_eq!(combined.committed_unix_ms, 7);
        assert_eq!(combined.run, "r7");
        assert_eq!(combined.watermark, Some(500));
        assert_eq!(combined.keys, 12);
        assert_eq!(combined_stamp(&Vec::new()), None);
    }
}
