//! A key's window state stored as parts: a *head* (where each window starts, its running
//! aggregates, the sequence numbers of the retained events, and its newest events, the *tail*)
//! and older retained events in *segments* of consecutive events, each stored under the
//! sequence number of its first event. A key that changed writes its head, and a segment only
//! when its tail reached [`SEAL_EVENTS`]: a key with few events is one value, as small as its
//! state, and a hot key inside a 24-hour window costs its newest events per checkpoint, not a
//! day of them.
//!
//! Sealed tails merge into segments like a binary counter: a new segment absorbs the newest
//! stored ones while they are not longer than it, up to [`MAX_SEGMENT_EVENTS`], so a key has
//! O(log n) segments below that length (and one per `MAX_SEGMENT_EVENTS` events above it) and
//! each event is rewritten a few times over its life. Events that left every window stay in
//! their segment until all of the segment's events have left; then the segment is deleted.
//!
//! The head indexes the segments (id, end, the time of the first event), so that a read at a
//! time T takes only the segments whose events leave a window by T ([`segments_needed`],
//! [`super::ReadState`]): a hot key's read costs its head and oldest segment, not its day.

use super::{GroupState, KeyWindowState, Retained};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;

/// Events a head carries at most before they go to a segment of their own.
pub const SEAL_EVENTS: u64 = 64;

/// Events a segment holds at most (unless read back from an older store): merging stops
/// there, so that a read needing a key's oldest events reads a bounded segment of them.
pub const MAX_SEGMENT_EVENTS: u64 = 1024;

/// One segment a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StoredSegment {
    /// Its id: the sequence number of its first event when it was first written.
    pub(super) id: u64,
    /// The sequence number after its last event.
    pub(super) end: u64,
    /// A time no later than its first retained event's (the time of its first event when it
    /// was written): a read needs the segment only once a window reaches back before it.
    pub(super) first_time: i64,
}

/// Which segments of a key a store holds, as written by [`KeyWindowState::write_parts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredParts {
    /// The segments, in id order, one after another.
    segments: Vec<StoredSegment>,
    /// Whether the next write writes every segment again (state read back from a store, or
    /// about to go to a store that has none of it).
    rewrite_all: bool,
}

impl StoredParts {
    /// The next write writes every segment again: the store it goes to may lack them.
    pub fn rewrite_all(&mut self) {
        self.rewrite_all = true;
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// What one key writes: its head, and the segments to delete and to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartWrites {
    /// The key's new head.
    pub head: Vec<u8>,
    /// Ids of segments to delete (before `segments` are written).
    pub deletes: Vec<u64>,
    /// Segments to write: id and bytes.
    pub segments: Vec<(u64, Vec<u8>)>,
}

/// Every part of a key, for a whole snapshot: encoded here, or borrowed from parts just
/// written.
#[derive(Debug, Clone, PartialEq)]
pub struct WholeParts<'w> {
    /// The key's head.
    pub head: Cow<'w, [u8]>,
    /// Every segment: id and bytes, by id.
    pub segments: Vec<(u64, Cow<'w, [u8]>)>,
}

/// Parts that do not make a key's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PartsError(String);

pub(super) fn bad(what: &str, e: impl std::fmt::Display) -> PartsError {
    PartsError(format!("{what}: {e}"))
}

/// What a head's first byte says about its key's segments.
pub(super) mod head_kind {
    /// Every retained event is in the head.
    pub(super) const WHOLE: u8 = 0;
    /// Some are in segments, which the head does not index (written before heads had an
    /// index: a read takes every segment).
    pub(in crate::key_state) const SEGMENTED: u8 = 1;
    /// Some are in segments, indexed after this byte.
    pub(super) const INDEXED: u8 = 2;
}

/// A head as written after its kind and index (borrowing the running aggregates), but for its
/// tail: the events in no segment follow it as a [`SegmentRef`], the last field of a
/// [`HeadBody`].
#[derive(Serialize)]
struct HeadRef<'a> {
    base: u64,
    end: u64,
    last_time: Option<i64>,
    groups: &'a [GroupState],
}

/// A head as read, after its kind and index.
#[derive(Deserialize)]
pub(super) struct HeadBody {
    pub(super) base: u64,
    pub(super) end: u64,
    pub(super) last_time: Option<i64>,
    pub(super) groups: Vec<GroupState>,
    pub(super) tail: Segment,
}

/// A head read: its segment index (`None`: the head does not index its segments, all are
/// needed) and the rest.
pub(super) struct Head {
    pub(super) index: Option<Vec<StoredSegment>>,
    pub(super) body: HeadBody,
}

impl Head {
    /// Reads a head's bytes.
    pub(super) fn decode(bytes: &[u8]) -> Result<Head, PartsError> {
        let unreadable = |e: &dyn std::fmt::Display| bad("unreadable head", e);
        let (&kind, mut rest) = bytes.split_first().ok_or_else(|| unreadable(&"empty"))?;
        let index = match kind {
            head_kind::WHOLE => Some(Vec::new()),
            head_kind::SEGMENTED => None,
            head_kind::INDEXED => {
                Some(wire::read_index(&mut rest).ok_or_else(|| unreadable(&"bad segment index"))?)
            }
            other => return Err(unreadable(&format!("unknown kind {other}"))),
        };
        let body = postcard::from_bytes(rest).map_err(|e| unreadable(&e))?;
        Ok(Head { index, body })
    }
}

/// Whether `head` holds every retained event of its key (no segment is needed to read it).
pub(super) fn head_holds_every_event(head: &[u8]) -> bool {
    head.first() == Some(&head_kind::WHOLE)
}

/// A key's events gathered from its segments, in sequence order.
pub(super) struct Events {
    pub(super) times: VecDeque<i64>,
    pub(super) columns: Vec<Retained>,
    /// The sequence number of the next event to gather.
    pub(super) next: u64,
    /// The sequence number after the key's last event.
    pub(super) end: u64,
}

impl Events {
    /// None gathered yet, for `head`'s key.
    pub(super) fn of(head: &HeadBody) -> Self {
        Events {
            times: VecDeque::new(),
            columns: (head.tail.columns.iter())
                .map(Retained::empty_like)
                .collect(),
            next: head.base,
            end: head.end,
        }
    }

    /// Appends the events of `segment` not gathered yet (those before the first retained one
    /// left the windows); the sequence number after its last event.
    pub(super) fn append(
        &mut self,
        segment: Segment,
        what: &dyn Fn() -> String,
    ) -> Result<u64, PartsError> {
        let len = segment.times.len();
        let end = segment.first.saturating_add(len as u64);
        if segment.columns.len() != self.columns.len()
            || segment.columns.iter().any(|c| c.len() != len)
        {
            return Err(bad(&what(), "it does not match the key's inputs"));
        }
        if end > self.end {
            return Err(bad(&what(), "it lies outside the key's events"));
        }
        if end <= self.next {
            return Ok(end); // its events all left the windows
        }
        if segment.first > self.next {
            let next = self.next;
            return Err(bad("segments", format!("events {next}.. are missing")));
        }
        let skip = (self.next - segment.first) as usize;
        if self.times.is_empty() {
            // The first segment gathered (most keys have only their head's): moved, not copied.
            let mut times = segment.times;
            times.drain(..skip);
            self.times = times;
        } else {
            self.times.extend(segment.times.into_iter().skip(skip));
        }
        for (column, part) in self.columns.iter_mut().zip(segment.columns) {
            if !column.append_from(part, skip) {
                return Err(bad(&what(), "it has an input of another kind"));
            }
        }
        self.next = end;
        Ok(end)
    }
}

/// Consecutive events as written: encoded straight from the state's retained events (the
/// wire form of [`Segment`]).
struct SegmentRef<'a> {
    first: u64,
    times: &'a VecDeque<i64>,
    columns: &'a [Retained],
    rows: std::ops::Range<usize>,
}

impl SegmentRef<'_> {
    /// Appends the segment to `out` as postcard writes a [`Segment`] (which reads it back):
    /// the first sequence number, the times as differences ([`crate::delta_times`]), and per
    /// column its `Retained` variant and values. Written by hand, value by value into the
    /// vector: going through serde's per-element calls was most of the cost of a head.
    fn encode(&self, out: &mut Vec<u8>) {
        let rows = self.rows.clone();
        wire::varint(out, self.first);
        wire::varint(out, rows.len() as u64);
        let mut previous = 0i64;
        for &t in self.times.range(rows.clone()) {
            wire::varint(out, wire::zigzag(t.wrapping_sub(previous)));
            previous = t;
        }
        wire::varint(out, self.columns.len() as u64);
        for column in self.columns {
            let variant = match column {
                Retained::Float(_) => 0,
                Retained::Integer(_) => 1,
                Retained::Decimal(_) => 2,
                Retained::Validity(_) => 3,
            };
            wire::varint(out, variant);
            wire::varint(out, rows.len() as u64);
            match column {
                Retained::Float(v) => {
                    for x in v.range(rows.clone()) {
                        wire::option(out, x, |out, x| out.extend_from_slice(&x.to_le_bytes()));
                    }
                }
                Retained::Integer(v) => {
                    for x in v.range(rows.clone()) {
                        wire::option(out, x, |out, &x| wire::varint(out, wire::zigzag(x)));
                    }
                }
                Retained::Decimal(v) => {
                    for x in v.range(rows.clone()) {
                        wire::option(out, x, |out, &x| wire::varint128(out, wire::zigzag128(x)));
                    }
                }
                Retained::Validity(v) => out.extend(v.range(rows.clone()).map(|&b| u8::from(b))),
            }
        }
    }

    /// An upper bound of the bytes [`SegmentRef::encode`] writes for `rows` rows of `columns`
    /// columns (decimals aside), to size a vector once.
    fn capacity(rows: usize, columns: usize) -> usize {
        16 + rows * (10 + 9 * columns) + columns * 12
    }
}

/// What tests elsewhere in `key_state` need of the head's wire form.
#[cfg(test)]
pub(super) mod tests_support {
    use super::{KeyWindowState, PartWrites, StoredParts};
    use std::collections::BTreeMap;

    /// Moves `bytes` past a segment index.
    pub(in crate::key_state) fn skip_index(bytes: &mut &[u8]) {
        super::wire::read_index(bytes).expect("an index");
    }

    /// A store of one key's parts, written as a store would.
    #[derive(Default)]
    pub(in crate::key_state) struct Store {
        pub(in crate::key_state) head: Vec<u8>,
        pub(in crate::key_state) segments: BTreeMap<u64, Vec<u8>>,
    }

    impl Store {
        pub(in crate::key_state) fn apply(&mut self, w: PartWrites) {
            for id in w.deletes {
                self.segments.remove(&id);
            }
            self.segments.extend(w.segments);
            self.head = w.head;
        }

        /// Every segment, by id.
        pub(in crate::key_state) fn parts(&self) -> Vec<(u64, &[u8])> {
            self.segments.iter().map(|(i, b)| (*i, &b[..])).collect()
        }

        pub(in crate::key_state) fn read(&self) -> (KeyWindowState, StoredParts) {
            KeyWindowState::from_parts(&self.head, &self.parts()).unwrap()
        }
    }
}

/// Postcard's encoding of the values a [`SegmentRef`] writes, and a head's segment index.
mod wire {
    use super::StoredSegment;

    /// Appends a head's index of `segments`: their count, then per segment its id (after the
    /// previous one's end, zigzagged), its length and its first time (after the previous
    /// one's, zigzagged): a few bytes a segment.
    pub(super) fn index(out: &mut Vec<u8>, segments: &[StoredSegment]) {
        varint(out, segments.len() as u64);
        let (mut end, mut time) = (0u64, 0i64);
        for s in segments {
            varint(out, zigzag(s.id.wrapping_sub(end) as i64));
            varint(out, s.end.wrapping_sub(s.id));
            varint(out, zigzag(s.first_time.wrapping_sub(time)));
            (end, time) = (s.end, s.first_time);
        }
    }

    /// Reads what [`index`] wrote from the front of `bytes` (advanced past it); `None` when
    /// it is not an index.
    pub(super) fn read_index(bytes: &mut &[u8]) -> Option<Vec<StoredSegment>> {
        let count: u64 = take(bytes)?;
        // Three bytes at least per segment: a count beyond that is not an index.
        if count > bytes.len() as u64 / 3 {
            return None;
        }
        let mut segments = Vec::with_capacity(count as usize);
        let (mut end, mut time) = (0u64, 0i64);
        for _ in 0..count {
            let id = end.wrapping_add(take::<i64>(bytes)? as u64);
            end = id.wrapping_add(take::<u64>(bytes)?);
            time = time.wrapping_add(take::<i64>(bytes)?);
            segments.push(StoredSegment {
                id,
                end,
                first_time: time,
            });
        }
        Some(segments)
    }

    /// Reads a `T` as postcard wrote it (an unsigned integer as [`varint`], a signed one
    /// [`zigzag`]ged) from the front of `bytes` (advanced past it).
    fn take<T: serde::de::DeserializeOwned>(bytes: &mut &[u8]) -> Option<T> {
        let (value, rest) = postcard::take_from_bytes(bytes).ok()?;
        *bytes = rest;
        Some(value)
    }

    /// An unsigned integer as a LEB128 varint.
    #[inline]
    pub(super) fn varint(out: &mut Vec<u8>, mut x: u64) {
        while x >= 0x80 {
            out.push(x as u8 | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }

    /// [`varint`] of a 128-bit integer.
    pub(super) fn varint128(out: &mut Vec<u8>, mut x: u128) {
        while x >= 0x80 {
            out.push(x as u8 | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }

    /// A signed integer zigzagged (small magnitudes stay small).
    #[inline]
    pub(super) fn zigzag(x: i64) -> u64 {
        ((x << 1) ^ (x >> 63)) as u64
    }

    /// [`zigzag`] of a 128-bit integer.
    pub(super) fn zigzag128(x: i128) -> u128 {
        ((x << 1) ^ (x >> 127)) as u128
    }

    /// An option: 0, or 1 and the value.
    #[inline]
    pub(super) fn option<T>(
        out: &mut Vec<u8>,
        x: &Option<T>,
        value: impl FnOnce(&mut Vec<u8>, &T),
    ) {
        match x {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                value(out, x);
            }
        }
    }
}

/// Consecutive events: the sequence number of the first, then their times and per input
/// their values.
#[derive(Deserialize)]
pub(super) struct Segment {
    pub(super) first: u64,
    #[serde(with = "crate::delta_times")]
    pub(super) times: VecDeque<i64>,
    pub(super) columns: Vec<Retained>,
}

impl Segment {
    /// Reads segment `id`'s bytes.
    pub(super) fn decode(id: u64, bytes: &[u8]) -> Result<Segment, PartsError> {
        let what = || format!("segment {id}");
        let segment: Segment = postcard::from_bytes(bytes).map_err(|e| bad(&what(), e))?;
        if segment.first < id {
            return Err(bad(&what(), "it lies outside the key's events"));
        }
        Ok(segment)
    }
}

impl KeyWindowState {
    /// The parts to write for this key given what the store holds (`stored`, updated): its
    /// head, the segments whose events all left the windows (deleted), and once the events
    /// in no segment reach `SEAL_EVENTS` segments of them (merged with the newest stored
    /// segments not longer than them, up to `MAX_SEGMENT_EVENTS`, 1,024 events).
    pub fn write_parts(&self, stored: &mut StoredParts) -> Result<PartWrites, PartsError> {
        let mut deletes = self.drop_left(stored);
        let mut segments = Vec::new();
        if self.next_seq() - self.tail_start(stored) >= SEAL_EVENTS {
            for (id, end) in self.seal_tail(stored, &mut deletes) {
                segments.push((id, self.segment_bytes(id, end)?));
            }
        }
        if std::mem::take(&mut stored.rewrite_all) {
            for s in &stored.segments {
                if !segments.iter().any(|(written, _)| *written == s.id) {
                    segments.push((s.id, self.segment_bytes(s.id, s.end)?));
                }
            }
        }
        Ok(PartWrites {
            head: self.head_bytes(stored)?,
            deletes,
            segments,
        })
    }

    /// The head [`KeyWindowState::write_parts`] would write for `stored` if that were all it
    /// wrote (no segment to delete, no tail to seal, nothing to rewrite); `None` otherwise.
    /// Encoded right after a key changed, while its state is in cache, it saves the cache
    /// misses of encoding the key cold at the checkpoint ([`KeyWindowState::write_parts_with`]).
    pub fn head_only(&self, stored: &StoredParts) -> Option<Vec<u8>> {
        if !self.writes_only_head(stored) {
            return None;
        }
        self.head_bytes(stored).ok()
    }

    /// Whether [`KeyWindowState::write_parts`] would write only a head for `stored`: no
    /// segment whose events all left the windows ([`KeyWindowState::drop_left`]), no tail long
    /// enough to seal, no segment to rewrite.
    fn writes_only_head(&self, stored: &StoredParts) -> bool {
        let drops = (stored.segments.first()).is_some_and(|s| s.end <= self.base);
        let seals = self.next_seq() - self.tail_start(stored) >= SEAL_EVENTS;
        !(stored.rewrite_all || drops || seals)
    }

    /// [`KeyWindowState::write_parts`], taking `head` (from [`KeyWindowState::head_only`] for
    /// this state and `stored`, unchanged since) as the head when a head is still all there
    /// is to write.
    pub fn write_parts_with(
        &self,
        stored: &mut StoredParts,
        head: Option<Vec<u8>>,
    ) -> Result<PartWrites, PartsError> {
        match head {
            Some(head) if self.writes_only_head(stored) => {
                debug_assert_eq!(head, self.head_bytes(stored)?, "a stale head was kept");
                Ok(PartWrites {
                    head,
                    deletes: Vec::new(),
                    segments: Vec::new(),
                })
            }
            _ => self.write_parts(stored),
        }
    }

    /// Every part of this key (a whole snapshot): its head and every stored segment, taking
    /// the head and segments of `written` (what [`KeyWindowState::write_parts`] just gave for
    /// `stored`) as they are instead of encoding them again. Segments whose events all left
    /// the windows are kept, empty, so that the key read back still knows to delete them.
    pub fn whole_parts<'w>(
        &self,
        stored: &StoredParts,
        written: Option<&'w PartWrites>,
    ) -> Result<WholeParts<'w>, PartsError> {
        let done =
            |id: u64| written.and_then(|w| w.segments.iter().find(|(written, _)| *written == id));
        let segments = (stored.segments.iter())
            .map(|s| match done(s.id) {
                Some((_, bytes)) => Ok((s.id, Cow::Borrowed(&bytes[..]))),
                None => Ok((s.id, Cow::Owned(self.segment_bytes(s.id, s.end)?))),
            })
            .collect::<Result<_, PartsError>>()?;
        let head = match written {
            Some(w) => Cow::Borrowed(&w.head[..]),
            None => Cow::Owned(self.head_bytes(stored)?),
        };
        Ok(WholeParts { head, segments })
    }

    /// A key's state from its head and its segments (any order), and what the store holds
    /// (the next write writes every segment again).
    pub fn from_parts(
        head: &[u8],
        segments: &[(u64, &[u8])],
    ) -> Result<(KeyWindowState, StoredParts), PartsError> {
        let Head { index, body } = Head::decode(head)?;
        let mut sorted: Vec<&(u64, &[u8])> = segments.iter().collect();
        sorted.sort_by_key(|(id, _)| *id);
        let mut events = Events::of(&body);
        let mut layout = Vec::with_capacity(sorted.len());
        for &&(id, bytes) in &sorted {
            let segment = Segment::decode(id, bytes)?;
            // A time no later than its first retained event's: its first event's, or (emptied
            // segments) any.
            let first_time = segment.times.front().copied().unwrap_or(i64::MIN);
            let end = events.append(segment, &|| format!("segment {id}"))?;
            layout.push(StoredSegment {
                id,
                end,
                first_time,
            });
        }
        let state = KeyWindowState::gathered(body, events)?;
        // The head's index, when it has one, is what the segments were written with.
        let range = |s: &StoredSegment| (s.id, s.end);
        let same = |index: &[StoredSegment]| index.iter().map(range).eq(layout.iter().map(range));
        let segments = match index {
            Some(index) if same(&index) => index,
            _ => layout,
        };
        let stored = StoredParts {
            segments,
            rewrite_all: true,
        };
        Ok((state, stored))
    }

    /// The state of a head's `body` with every retained event before its tail `gathered`.
    pub(super) fn gathered(
        body: HeadBody,
        mut events: Events,
    ) -> Result<KeyWindowState, PartsError> {
        events.append(body.tail, &|| "the head's events".to_string())?;
        if events.next != body.end {
            let next = events.next;
            return Err(bad("segments", format!("events {next}.. are missing")));
        }
        let state = KeyWindowState {
            base: body.base,
            times: events.times,
            values: events.columns,
            last_time: body.last_time,
            groups: body.groups,
        };
        Ok(state)
    }

    /// Removes from `stored` the segments whose events all left the windows; their ids.
    fn drop_left(&self, stored: &mut StoredParts) -> Vec<u64> {
        let left = (stored.segments.iter())
            .take_while(|s| s.end <= self.base)
            .count();
        stored.segments.drain(..left).map(|s| s.id).collect()
    }

    /// The sequence number of the first event in no stored segment.
    fn tail_start(&self, stored: &StoredParts) -> u64 {
        let written = stored.segments.last().map_or(self.base, |s| s.end);
        written.max(self.base)
    }

    /// Adds the events in no stored segment to `stored` as a segment, merged with the newest
    /// stored segments not longer than it while the merge holds at most
    /// [`MAX_SEGMENT_EVENTS`] (their ids go to `deletes`), or when they are more than that
    /// as segments of that many; the new segments' ids and ends.
    fn seal_tail(&self, stored: &mut StoredParts, deletes: &mut Vec<u64>) -> Vec<(u64, u64)> {
        let end = self.next_seq();
        let mut first = self.tail_start(stored);
        while let Some(&last) = stored.segments.last() {
            let from = last.id.max(self.base);
            if last.end.saturating_sub(from) > end - first || end - from > MAX_SEGMENT_EVENTS {
                break;
            }
            stored.segments.pop();
            deletes.push(last.id);
            first = last.id;
        }
        // The merged segment keeps the id of the oldest it absorbed: written over, not deleted.
        deletes.retain(|&d| d != first);
        let mut sealed = Vec::new();
        let mut from = first.max(self.base);
        let mut id = first;
        while from < end {
            let to = end.min(from + MAX_SEGMENT_EVENTS);
            let first_time = self.times[(from - self.base) as usize];
            stored.segments.push(StoredSegment {
                id,
                end: to,
                first_time,
            });
            sealed.push((id, to));
            (from, id) = (to, to);
        }
        sealed
    }

    fn head_bytes(&self, stored: &StoredParts) -> Result<Vec<u8>, PartsError> {
        let end = self.next_seq();
        let tail = self.tail_start(stored);
        let head = HeadRef {
            base: self.base,
            end,
            last_time: self.last_time,
            groups: &self.groups,
        };
        // Sized at once: growing the vector as it was written cost a tenth of a head.
        let rows = (end - tail) as usize;
        let capacity = 48
            + stored.segments.len() * 16
            + self.groups.len() * 64
            + SegmentRef::capacity(rows, self.values.len());
        let mut out = Vec::with_capacity(capacity);
        if tail > self.base {
            out.push(head_kind::INDEXED);
            wire::index(&mut out, &stored.segments);
        } else {
            out.push(head_kind::WHOLE);
        }
        let mut out =
            postcard::to_extend(&head, out).map_err(|e| bad("cannot encode a head", e))?;
        self.segment(tail, end).encode(&mut out);
        Ok(out)
    }

    /// The encoded segment `id` ending before `end`.
    fn segment_bytes(&self, id: u64, end: u64) -> Result<Vec<u8>, PartsError> {
        let segment = self.segment(id, end);
        let mut out =
            Vec::with_capacity(SegmentRef::capacity(segment.rows.len(), self.values.len()));
        segment.encode(&mut out);
        Ok(out)
    }

    /// The events from `id` to `end` still retained (none when all left).
    fn segment(&self, id: u64, end: u64) -> SegmentRef<'_> {
        let first = id.max(self.base).min(end);
        SegmentRef {
            first,
            times: &self.times,
            columns: &self.values,
            rows: (first - self.base) as usize..(end - self.base) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Frame, WindowPlan, WindowSpec};
    use crate::AggKind;
    use crate::InputValue;

    const SECOND: i64 = 1_000_000;

    fn plan() -> WindowPlan {
        let range = Frame::Range {
            width_micros: 100 * SECOND,
        };
        WindowPlan::new(
            vec![
                WindowSpec {
                    kind: AggKind::Count,
                    input: 0,
                    frame: range,
                },
                WindowSpec {
                    kind: AggKind::Max,
                    input: 0,
                    frame: range,
                },
                WindowSpec {
                    kind: AggKind::Count,
                    input: 0,
                    frame: Frame::Unbounded,
                },
            ],
            1,
        )
        .unwrap()
    }

    use super::tests_support::Store;

    fn push(state: &mut KeyWindowState, plan: &WindowPlan, t: i64) {
        state.advance(plan, t);
        state.push(plan, t, |_| Some(InputValue::float((t % 97) as f64)));
    }

    #[test]
    fn written_parts_read_back_as_the_state_and_stay_few() {
        let plan = plan();
        let mut state = KeyWindowState::new(&plan);
        let mut stored = StoredParts::default();
        let mut store = Store::default();
        let mut t = 0;
        let mut segmented = false;
        for epoch in 0..400 {
            for _ in 0..(epoch % 7) {
                t += SECOND / 2 + (epoch as i64 % 3) * SECOND;
                push(&mut state, &plan, t);
            }
            store.apply(state.write_parts(&mut stored).unwrap());
            let (read, layout) = store.read();
            assert_eq!(read, state, "epoch {epoch}");
            // A head whose events are all its own reads alone.
            if head_holds_every_event(&store.head) {
                let (alone, _) = KeyWindowState::from_parts(&store.head, &[]).unwrap();
                assert_eq!(alone, state, "epoch {epoch}");
            } else {
                assert!(KeyWindowState::from_parts(&store.head, &[]).is_err());
                segmented = true;
            }
            assert_eq!(
                layout.segments, stored.segments,
                "the store holds what is listed"
            );
            // Binary-counter merging: a handful of segments, however long it runs.
            assert!(stored.segment_count() <= 12, "{:?}", stored.segments);
        }
        assert!(state.retained_events() > 50);
        assert!(segmented, "the state grew into segments");
        assert!(!head_holds_every_event(b"not a head"));
    }

    #[test]
    fn segments_encoded_by_hand_read_back_as_postcard_segments_of_every_kind() {
        let times: VecDeque<i64> = [i64::MIN, -5, 0, 0, 7, 1 << 40, i64::MAX].into();
        let floats = [
            None,
            Some(-0.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(1.5),
        ];
        let integers = [None, Some(i64::MIN), Some(-1), Some(0), Some(i64::MAX)];
        let decimals = [
            None,
            Some(i128::MIN),
            Some(-300),
            Some(1 << 70),
            Some(i128::MAX),
        ];
        let columns = vec![
            Retained::Float(floats.iter().cycle().take(times.len()).copied().collect()),
            Retained::Integer(integers.iter().cycle().take(times.len()).copied().collect()),
            Retained::Decimal(decimals.iter().cycle().take(times.len()).copied().collect()),
            Retained::Validity((0..times.len()).map(|i| i % 3 == 0).collect()),
        ];
        for rows in [0..7, 2..5, 3..3] {
            let written = SegmentRef {
                first: 1 << 35,
                times: &times,
                columns: &columns,
                rows: rows.clone(),
            };
            let mut bytes = Vec::new();
            written.encode(&mut bytes);
            assert!(bytes.len() <= SegmentRef::capacity(rows.len(), columns.len()) + 7 * 10);
            let read: Segment = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(read.first, 1 << 35);
            assert_eq!(
                read.times,
                times.range(rows.clone()).copied().collect::<VecDeque<_>>()
            );
            for (read, column) in read.columns.iter().zip(&columns) {
                let expected = match column {
                    Retained::Float(v) => Retained::Float(v.range(rows.clone()).copied().collect()),
                    Retained::Integer(v) => {
                        Retained::Integer(v.range(rows.clone()).copied().collect())
                    }
                    Retained::Decimal(v) => {
                        Retained::Decimal(v.range(rows.clone()).copied().collect())
                    }
                    Retained::Validity(v) => {
                        Retained::Validity(v.range(rows.clone()).copied().collect())
                    }
                };
                // NaN != NaN: compare the columns' debug forms.
                assert_eq!(format!("{read:?}"), format!("{expected:?}"));
            }
            assert_eq!(read.columns.len(), columns.len());
        }
    }

    #[test]
    fn a_key_read_back_rewrites_its_segments_once_and_whole_parts_keep_left_ones() {
        let plan = plan();
        let mut state = KeyWindowState::new(&plan);
        let mut stored = StoredParts::default();
        let mut store = Store::default();
        for i in 0..400 {
            push(&mut state, &plan, i * SECOND / 2);
            store.apply(state.write_parts(&mut stored).unwrap());
        }
        assert!(stored.segment_count() >= 1, "{:?}", stored.segments);
        // Whole parts, read back: the same state, and the same segments known.
        let mut whole_store = Store::default();
        let whole = state.whole_parts(&stored, None).unwrap();
        assert_eq!(whole.segments.len(), stored.segment_count());
        whole_store.apply(PartWrites {
            head: whole.head.into_owned(),
            deletes: Vec::new(),
            segments: (whole.segments.into_iter())
                .map(|(id, b)| (id, b.into_owned()))
                .collect(),
        });
        let (read, mut layout) = whole_store.read();
        assert_eq!(read, state);
        assert_eq!(layout.segments, stored.segments);
        // A store with none of it (a new online table) gets every segment from the next write.
        let mut fresh = Store::default();
        fresh.apply(read.write_parts(&mut layout).unwrap());
        assert_eq!(fresh.read().0, state);
        // Later writes are small again: the head and its few newest events.
        let mut read = read;
        let whole_bytes: usize = fresh.segments.values().map(Vec::len).sum();
        for i in 0..40 {
            push(&mut read, &plan, 200 * SECOND + i * SECOND / 2);
            let w = read.write_parts(&mut layout).unwrap();
            let bytes: usize = w.segments.iter().map(|(_, b)| b.len()).sum();
            assert!(bytes * 4 < whole_bytes, "{bytes} of {whole_bytes}");
            fresh.apply(w);
            assert_eq!(fresh.read().0, read);
        }
        // Every event older than the windows leaves: the store keeps no segment of them.
        push(&mut read, &plan, 10_000 * SECOND);
        fresh.apply(read.write_parts(&mut layout).unwrap());
        assert!(fresh.segments.is_empty());
        assert_eq!(fresh.read().0, read);
    }

    #[test]
    fn segments_hold_at_most_the_maximum_however_many_events_a_write_seals() {
        // A window wide enough to keep every event; 5,000 events sealed at once (a key
        // catching up), then written a few at a time.
        let plan = WindowPlan::new(
            vec![WindowSpec {
                kind: AggKind::Sum,
                input: 0,
                frame: Frame::Range {
                    width_micros: 1 << 50,
                },
            }],
            1,
        )
        .unwrap();
        let mut state = KeyWindowState::new(&plan);
        let mut stored = StoredParts::default();
        let mut store = Store::default();
        let mut t = 0;
        for n in [5000, 3, 60, 61, 700, 1, 2000] {
            for _ in 0..n {
                t += SECOND;
                push(&mut state, &plan, t);
            }
            store.apply(state.write_parts(&mut stored).unwrap());
            let (read, layout) = store.read();
            assert_eq!(read, state);
            assert_eq!(layout.segments, stored.segments);
            for s in &stored.segments {
                assert!(s.end - s.id <= MAX_SEGMENT_EVENTS, "{s:?}");
                assert_eq!(s.first_time, (s.id as i64 + 1) * SECOND, "{s:?}");
            }
            // Contiguous, from the first event to the head's tail.
            let ends = stored.segments.iter().map(|s| s.end);
            assert!((stored.segments.iter().skip(1).map(|s| s.id))
                .eq(ends.take(stored.segments.len() - 1)));
        }
        assert!(stored.segment_count() >= 7, "{:?}", stored.segments);
    }

    #[test]
    fn missing_or_foreign_parts_are_errors() {
        let plan = plan();
        let mut state = KeyWindowState::new(&plan);
        let mut stored = StoredParts::default();
        let mut store = Store::default();
        for i in 0..90 {
            push(&mut state, &plan, i * SECOND);
            store.apply(state.write_parts(&mut stored).unwrap());
        }
        let first = *store.segments.keys().next().unwrap();
        let kept = store.segments.remove(&first).unwrap();
        let parts = store.parts();
        let e = KeyWindowState::from_parts(&store.head, &parts).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(KeyWindowState::from_parts(b"\xff", &[]).is_err());
        assert!(KeyWindowState::from_parts(&store.head, &[(first, &kept[1..])]).is_err());
    }
}
