//! Loading the state of the keys about to be applied while the current one computes.
//!
//! A [`KeyWindowState`] is a tree of heap blocks: the state, then its times, value columns and
//! frame groups, then each column's values and each group's moments and min/max trackers, then
//! each tracker's candidates. A load one level down needs the level above in cache, so the
//! next keys are requested one level deeper the nearer they are ([`prefetch_ahead`]); each
//! level then has two keys' computation (a microsecond or more) to arrive.

use super::KeyWindowState;
use crate::prefetch;

/// Levels of a state's memory ([`KeyWindowState::prefetch_level`]).
const LEVELS: usize = 4;

/// Keys between two levels: a level has this many keys' computation to arrive. Measured on the
/// 2-core VM (`kernel_bench`'s streaming table, 1M events of 50k cards, and `quiver run` of the
/// demo): 2 was as good as 4 and better than 1.
const KEYS_PER_LEVEL: usize = 2;

/// Requests the memory of the states of the next keys to be applied, the eighth next key's
/// state itself, the sixth's blocks, the fourth's contents and the second's candidates:
/// `next(d)` is the slot in `states` of the `d`-th next key (1 is the next one), if any.
#[inline]
pub(crate) fn prefetch_ahead(states: &[KeyWindowState], next: impl Fn(usize) -> Option<usize>) {
    for level in 0..LEVELS {
        let ahead = (LEVELS - level) * KEYS_PER_LEVEL;
        if let Some(state) = next(ahead).and_then(|slot| states.get(slot)) {
            state.prefetch_level(level);
        }
    }
}

impl KeyWindowState {
    /// Requests one level of this state's memory: 0 the state itself, 1 its blocks, 2 their
    /// contents, 3 the trackers' candidates. Reads the level above (requested earlier).
    #[inline]
    fn prefetch_level(&self, level: usize) {
        match level {
            0 => prefetch::slice(std::slice::from_ref(self)),
            1 => {
                prefetch::deque(&self.times);
                prefetch::slice(&self.values);
                prefetch::slice(&self.groups);
            }
            2 => {
                self.values.iter().for_each(|column| column.prefetch());
                for group in &self.groups {
                    prefetch::slice(&group.moments);
                    prefetch::slice(&group.mins);
                    prefetch::slice(&group.maxs);
                }
            }
            _ => (self.groups.iter())
                .flat_map(|group| group.mins.iter().chain(&group.maxs))
                .for_each(|tracker| tracker.prefetch()),
        }
    }
}
