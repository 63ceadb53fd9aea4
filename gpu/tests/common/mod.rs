//! Shared by the kernel test suites: a seeded generator and the list of aggregates.

#![allow(dead_code)] // each suite uses its own subset

use quiver_gpu::AggKind;

/// A xorshift generator: deterministic cases without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Every aggregate the kernels compute.
pub const KINDS: [AggKind; 9] = [
    AggKind::Count,
    AggKind::Sum,
    AggKind::Avg,
    AggKind::Min,
    AggKind::Max,
    AggKind::StddevSamp,
    AggKind::VarSamp,
    AggKind::StddevPop,
    AggKind::VarPop,
];
