//! Shared by the kernel test suites: a seeded generator and the list of aggregates.

#![allow(dead_code)] // each suite uses its own subset

use quiver_gpu::{AggKind, Frame, WindowSpec};

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

/// 1 to `most` random specs over `inputs` inputs: any aggregate, over an unbounded frame, a
/// zero-width one, or one of 1 to `widest_ms` milliseconds.
pub fn random_specs(rng: &mut Rng, most: u64, inputs: u64, widest_ms: u64) -> Vec<WindowSpec> {
    (0..1 + rng.below(most))
        .map(|_| WindowSpec {
            kind: KINDS[rng.below(KINDS.len() as u64) as usize],
            input: rng.below(inputs) as usize,
            frame: match rng.below(4) {
                0 => Frame::Unbounded,
                1 => Frame::Range { width_micros: 0 },
                _ => Frame::Range {
                    width_micros: (1 + rng.below(widest_ms)) as i64 * 1_000,
                },
            },
        })
        .collect()
}
