//! A key's state as a server reads it: its head and only the segments that windows ending
//! at the times it is read for lose events from. A hot key's head indexes its segments
//! (id, end, first event's time); a read just after the key's last event loses none or a few
//! of its oldest events, so it reads the head and at most the oldest segment, not every event
//! the windows hold; a window that every event left by then is read as empty and needs none.

use super::parts::{bad, head_holds_every_event, Events, Head, PartsError, Segment};
use super::{all_left, EventRows, KeyWindowState};
use crate::plan::{Frame, WindowPlan};

/// The events of a [`ReadState`] from one sequence number up to the next span's.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    /// Its first event's sequence number.
    seq: u64,
    /// Where its events are: read, from this row on; or not read, with a time no later than
    /// its first event's.
    at: Result<usize, i64>,
}

/// A key's window state for point-in-time reads ([`crate::read_at()`]): every event its
/// windows hold, or, read from a head that indexes its segments, the head's events and those
/// of the segments that windows ending at the time it was read for lose events from
/// ([`ReadState::serves`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadState {
    /// The key's state, whose `times` and `values` hold the events read, in sequence order.
    pub(crate) state: KeyWindowState,
    /// Where each run of events is, in sequence order; empty when every event was read.
    spans: Vec<Span>,
    /// The sequence number after the key's last event.
    end: u64,
    /// Per range window that reaches back into events not read: the latest time it may end
    /// at before it loses one, and the time from which every event has left it (it reads as
    /// empty). Empty when every event was read.
    limits: Vec<(i64, i64)>,
}

impl From<KeyWindowState> for ReadState {
    fn from(state: KeyWindowState) -> Self {
        ReadState {
            end: state.next_seq(),
            state,
            spans: Vec::new(),
            limits: Vec::new(),
        }
    }
}

impl ReadState {
    /// A key's state from its head and the segments of it that were read (any order): all of
    /// them for a head that does not index its segments, else any of them (for reads up to a
    /// time, those [`segments_needed`] names).
    pub fn from_parts(
        plan: &WindowPlan,
        head: &[u8],
        segments: &[(u64, &[u8])],
    ) -> Result<ReadState, PartsError> {
        let Head { index, body } = Head::decode(head)?;
        let Some(index) = index else {
            return Ok(KeyWindowState::from_parts(head, segments)?.0.into());
        };
        if let Some((id, _)) = (segments.iter()).find(|(id, _)| !index.iter().any(|s| s.id == *id))
        {
            return Err(bad(&format!("segment {id}"), "the head does not index it"));
        }
        let mut events = Events::of(&body);
        let mut spans = Vec::new();
        let mut unread = false;
        for indexed in &index {
            if indexed.end <= events.next {
                continue; // its events all left the windows
            }
            match segments.iter().find(|(id, _)| *id == indexed.id) {
                Some(&(id, bytes)) => {
                    if spans.last().is_none_or(|s: &Span| s.at.is_err()) {
                        spans.push(Span {
                            seq: events.next,
                            at: Ok(events.times.len()),
                        });
                    }
                    events.append(Segment::decode(id, bytes)?, &|| format!("segment {id}"))?;
                }
                None => {
                    spans.push(Span {
                        seq: events.next,
                        at: Err(indexed.first_time),
                    });
                    events.next = indexed.end;
                    unread = true;
                }
            }
        }
        if spans.last().is_none_or(|s| s.at.is_err()) {
            spans.push(Span {
                seq: events.next,
                at: Ok(events.times.len()),
            });
        }
        let end = body.end;
        let state = KeyWindowState::gathered(body, events)?;
        let mut read = ReadState {
            state,
            spans: if unread { spans } else { Vec::new() },
            end,
            limits: Vec::new(),
        };
        read.limits = read.window_limits(plan);
        Ok(read)
    }

    /// The key's newest event time.
    pub fn last_time(&self) -> Option<i64> {
        self.state.last_time
    }

    /// Whether windows ending at `t` lose no event that was not read: each range window
    /// stops before the first unread one, or every event has left it (always, when every
    /// event was read). A read may still need every event of a window, rarely: to rebuild
    /// moments whose shift drifted ([`crate::read_at()`] then names the key).
    pub fn serves(&self, t: i64) -> bool {
        (self.limits.iter()).all(|&(stops_by, empty_after)| t <= stops_by || t > empty_after)
    }

    /// Whether every event the key's windows hold was read.
    pub fn is_whole(&self) -> bool {
        self.spans.is_empty()
    }

    /// [`ReadState::limits`]: per range window, the first unread span inside it may lose
    /// events once the window's start passes that span's first event's time, until the start
    /// passes the key's last event.
    fn window_limits(&self, plan: &WindowPlan) -> Vec<(i64, i64)> {
        let last = self.state.last_time.unwrap_or(i64::MIN);
        let mut limits = Vec::new();
        for (group, g) in self.state.groups.iter().zip(&plan.groups) {
            let Frame::Range { width_micros } = g.frame else {
                continue;
            };
            let ends = (self.spans.iter().skip(1).map(|s| s.seq)).chain([self.end]);
            let first_unread = (self.spans.iter().zip(ends))
                .filter(|(_, end)| *end > group.start)
                .find_map(|(span, _)| span.at.err());
            if let Some(time) = first_unread {
                let widen = |t: i64| t.saturating_add(width_micros);
                limits.push((widen(time), widen(last)));
            }
        }
        limits
    }

    /// The span holding event `seq` (or the last one, for the end).
    fn span_of(&self, seq: u64) -> usize {
        self.spans
            .partition_point(|s| s.seq <= seq)
            .saturating_sub(1)
    }
}

impl EventRows for ReadState {
    #[inline]
    fn end(&self) -> u64 {
        self.end
    }

    #[inline]
    fn row(&self, seq: u64) -> Result<usize, i64> {
        if self.spans.is_empty() {
            return self.state.row(seq);
        }
        let span = self.spans[self.span_of(seq)];
        span.at.map(|row| row + (seq - span.seq) as usize)
    }

    #[inline]
    fn rows_from(&self, seq: u64) -> Option<usize> {
        if self.spans.is_empty() {
            return self.state.rows_from(seq);
        }
        let k = self.span_of(seq);
        let span = self.spans[k];
        match span.at {
            Ok(row) if k + 1 == self.spans.len() => Some(row + (seq - span.seq) as usize),
            _ => None,
        }
    }
}

/// The segments a read of the key whose head is `head` needs for windows ending at `from` and
/// any time up to `until`: the ids of those whose events some range window of `plan` loses by
/// `until`, unless every event has left that window by `from` (it reads as empty); none for a
/// head holding every event. `None` when all are needed (a head that does not index its
/// segments, or bytes that are not a head: reading them reports the error).
pub fn segments_needed(plan: &WindowPlan, head: &[u8], from: i64, until: i64) -> Option<Vec<u64>> {
    if head_holds_every_event(head) {
        return Some(Vec::new());
    }
    let Ok(Head {
        index: Some(index),
        body,
    }) = Head::decode(head)
    else {
        return None;
    };
    if body.groups.len() != plan.groups.len() {
        return None;
    }
    let needed = (index.iter())
        .filter(|s| {
            (body.groups.iter().zip(&plan.groups)).any(|(group, g)| match g.frame {
                Frame::Range { width_micros } => {
                    s.end > group.start
                        && s.first_time < until.saturating_sub(width_micros)
                        && !all_left(body.last_time, width_micros, from)
                }
                _ => false,
            })
        })
        .map(|s| s.id)
        .collect();
    Some(needed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_state::parts::tests_support::Store;
    use crate::plan::WindowSpec;
    use crate::{read_at, AggKind, FeatureOutput, InputValue, KernelError, StoredParts};

    const SECOND: i64 = 1_000_000;

    /// A short and a long range window, and a lifetime count.
    fn plan() -> WindowPlan {
        let short = Frame::Range {
            width_micros: 60 * SECOND,
        };
        let long = Frame::Range {
            width_micros: 1000 * SECOND,
        };
        let spec = |kind, input, frame| WindowSpec { kind, input, frame };
        WindowPlan::new(
            vec![
                spec(AggKind::Count, 0, short),
                spec(AggKind::Sum, 1, short),
                spec(AggKind::Sum, 1, long),
                spec(AggKind::StddevSamp, 1, long),
                spec(AggKind::Max, 1, long),
                spec(AggKind::Count, 0, Frame::Unbounded),
            ],
            2,
        )
        .unwrap()
    }

    /// The state in `store` read with the segments `segments_needed` names for reads from
    /// `from` to `until`, and how many those are.
    fn read_for(store: &Store, plan: &WindowPlan, from: i64, until: i64) -> (ReadState, usize) {
        let ids = segments_needed(plan, &store.head, from, until).expect("an indexed head");
        let parts: Vec<(u64, &[u8])> = (ids.iter())
            .map(|id| (*id, &store.segments[id][..]))
            .collect();
        let read = ReadState::from_parts(plan, &store.head, &parts).unwrap();
        (read, ids.len())
    }

    fn whole(store: &Store, plan: &WindowPlan) -> ReadState {
        ReadState::from_parts(plan, &store.head, &store.parts()).unwrap()
    }

    /// A key's events, one a second up to `n`, written every 7 events: the values between 3,900
    /// and 4,100 seconds are a million times the others (reads that lose them must rebuild the
    /// long window's moments).
    fn written(plan: &WindowPlan, n: i64) -> (KeyWindowState, Store) {
        let mut state = KeyWindowState::new(plan);
        let mut stored = StoredParts::default();
        let mut store = Store::default();
        for i in 0..n {
            let t = i * SECOND;
            let x = if (3900..4100).contains(&i) {
                1e9 + i as f64
            } else {
                (i % 13) as f64
            };
            state.advance(plan, t);
            state.push(plan, t, |input| Some(InputValue::float([1.0, x][input])));
            if i % 7 == 6 || i == n - 1 {
                store.apply(state.write_parts(&mut stored).unwrap());
            }
        }
        (state, store)
    }

    fn same(a: &FeatureOutput, b: &FeatureOutput, what: &str) {
        assert_eq!(a.valid, b.valid, "{what}");
        for (x, y) in a.values.iter().zip(&b.values) {
            let bits = |v: &Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(x), bits(y), "{what}");
        }
    }

    #[test]
    fn a_read_takes_only_the_segments_its_windows_lose_events_from_and_equals_a_whole_read() {
        let plan = plan();
        let (state, store) = written(&plan, 5000);
        let whole = whole(&store, &plan);
        assert!(whole.is_whole());
        assert_eq!(whole.state, state);
        let segments = store.segments.len();
        assert!(segments >= 4, "{segments} segments of at most 1,024 events");
        let last = 4999 * SECOND;
        // Just after the last event each range window loses at most its oldest events: the
        // head and a segment per window at most.
        let (read, taken) = read_for(&store, &plan, last + SECOND, last + SECOND);
        assert!(taken <= 2, "{taken} of {segments}");
        assert!(!read.is_whole() && read.serves(last + SECOND));
        // Once every event left the windows, they read as empty: nothing but the head.
        let (read, taken) = read_for(&store, &plan, last + 1001 * SECOND, i64::MAX);
        assert_eq!(taken, 0);
        assert!(read.serves(last + 1001 * SECOND) && !read.serves(last + 500 * SECOND));
        let (mut partial_reads, mut unread) = (0, 0);
        for step in [0, 1, 2, 30, 61, 100, 150, 151, 400, 999, 1000, 1001, 5000] {
            let at = last + step * SECOND;
            let expected = read_at(&plan, &[Some(&whole)], at).unwrap();
            // Read for exactly `at`, for a minute from `at`, for an earlier time (then read
            // at `at` anyway), and for a time the windows are empty by.
            for (from, until) in [
                (at, at),
                (at, at + 60 * SECOND),
                (last, last),
                (at, i64::MAX),
            ] {
                let (read, taken) = read_for(&store, &plan, from, until);
                match read_at(&plan, &[Some(&read)], at) {
                    Ok(out) => {
                        same(
                            &out,
                            &expected,
                            &format!("at +{step}s, read for {from}..{until}"),
                        );
                        partial_reads += usize::from(taken < segments);
                    }
                    Err(KernelError::UnreadEvents { rows }) => {
                        assert_eq!(rows, vec![0]);
                        // Only when reading past what it was read for, or to rebuild moments
                        // from a window of small values after the large ones left.
                        assert!(!read.serves(at) || (151..=1100).contains(&step), "+{step}s");
                        unread += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert!(partial_reads >= 6, "{partial_reads}");
        assert!(unread >= 1, "no read needed more than it had");
    }

    #[test]
    fn heads_without_an_index_need_every_segment_and_foreign_segments_are_errors() {
        let plan = plan();
        let (state, store) = written(&plan, 3000);
        // A head as written before heads had an index: kind 1, no index.
        let mut legacy = vec![crate::key_state::parts::head_kind::SEGMENTED];
        let mut rest = &store.head[1..];
        crate::key_state::parts::tests_support::skip_index(&mut rest);
        legacy.extend_from_slice(rest);
        assert_eq!(segments_needed(&plan, &legacy, 0, 0), None);
        let parts = store.parts();
        let read = ReadState::from_parts(&plan, &legacy, &parts).unwrap();
        assert!(read.is_whole());
        assert_eq!(read.state, state);
        assert!(ReadState::from_parts(&plan, &legacy, &parts[1..]).is_err());
        // A segment the head does not index.
        let e = ReadState::from_parts(&plan, &store.head, &[(3, parts[0].1)]).unwrap_err();
        assert!(e.to_string().contains("does not index"), "{e}");
        assert_eq!(segments_needed(&plan, b"\x07junk", 0, 0), None);
    }
}
