//! A small, fixed pseudo-random number generator and Zipf sampler.
//!
//! Implemented here (xoshiro256** seeded through splitmix64) rather than taken from a crate so
//! that generated data never changes with a dependency upgrade.

/// One splitmix64 step: advances `state` and returns a well-mixed 64-bit value.
pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stateless hash of a value (one splitmix64 round), for per-entity attributes.
pub(super) fn mix(value: u64) -> u64 {
    let mut state = value;
    splitmix64(&mut state)
}

/// xoshiro256** generator.
#[derive(Debug, Clone)]
pub(super) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Seeds the four state words from splitmix64, which never yields the all-zero state.
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        Self {
            s: [
                splitmix64(&mut state),
                splitmix64(&mut state),
                splitmix64(&mut state),
                splitmix64(&mut state),
            ],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `(0, 1]`, safe to take the logarithm of.
    pub fn unit_open(&mut self) -> f64 {
        1.0 - self.unit()
    }

    /// Uniform integer in `[0, n)` (0 when `n == 0`), by the multiply-high method; the bias is
    /// below 2^-40 for the ranges used here.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal variate (Box-Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let radius = (-2.0 * self.unit_open().ln()).sqrt();
        radius * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// Exponential variate with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -self.unit_open().ln() * mean
    }
}

/// Zipf distribution over `n` items: item `k` (0-based rank) has weight `1 / (k + 1)^s`.
/// Ranks are mapped to ids by a fixed permutation so that the most popular ids are scattered.
#[derive(Debug, Clone)]
pub(super) struct Zipf {
    cumulative: Vec<f64>,
    /// `guide[j]` is the first rank whose cumulative weight exceeds `bound(j)`, so a draw in
    /// `[bound(j), bound(j + 1))` only needs to search between `guide[j]` and `guide[j + 1]`.
    guide: Vec<usize>,
    multiplier: u64,
}

/// `target / total`, 0 for an empty table.
fn rng_fraction(target: f64, total: f64) -> f64 {
    if total > 0.0 {
        target / total
    } else {
        0.0
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Zipf {
    /// Precomputes the cumulative weights; `n` must be at least 1.
    pub fn new(n: u64, exponent: f64) -> Self {
        let n = n.max(1);
        let mut cumulative = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut total = 0.0;
        for k in 0..n {
            total += ((k + 1) as f64).powf(-exponent);
            cumulative.push(total);
        }
        let buckets = cumulative.len();
        let guide = (0..=buckets)
            .map(|j| {
                let bound = Self::bound(j, buckets, total);
                cumulative.partition_point(|&c| c <= bound)
            })
            .collect();
        // A multiplier coprime with n makes `rank * multiplier mod n` a bijection.
        let mut multiplier = ((n as f64 * 0.618_033_988_75) as u64) | 1;
        while gcd(multiplier, n) != 1 {
            multiplier += 1;
        }
        Self {
            cumulative,
            guide,
            multiplier,
        }
    }

    /// Lower edge of guide bucket `j` of `buckets` in cumulative-weight units.
    fn bound(j: usize, buckets: usize, total: f64) -> f64 {
        j as f64 / buckets as f64 * total
    }

    fn len(&self) -> u64 {
        self.cumulative.len() as u64
    }

    /// Draws a rank (0 = most popular).
    pub fn rank(&self, rng: &mut Rng) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.unit() * total;
        let buckets = self.cumulative.len();
        // Exactly the rank a binary search over the whole table would give: every weight
        // before `lo` is <= bound(j) <= target and every weight from `hi` on is > target.
        let j = ((rng_fraction(target, total) * buckets as f64) as usize).min(buckets);
        let guided = match (self.guide.get(j), self.guide.get(j + 1)) {
            (Some(&lo), Some(&hi))
                if Self::bound(j, buckets, total) <= target
                    && target < Self::bound(j + 1, buckets, total)
                    && lo <= hi =>
            {
                self.cumulative
                    .get(lo..hi)
                    .map(|slice| lo + slice.partition_point(|&c| c <= target))
            }
            _ => None,
        };
        let rank = guided.unwrap_or_else(|| self.cumulative.partition_point(|&c| c <= target));
        (rank as u64).min(self.len().saturating_sub(1))
    }

    /// Draws an id in `[0, n)`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        self.id_of_rank(self.rank(rng))
    }

    /// The id that has popularity rank `rank`.
    pub fn id_of_rank(&self, rank: u64) -> u64 {
        let n = self.len().max(1);
        // 64-bit arithmetic whenever it cannot overflow (always for n <= 2^32): a 128-bit
        // modulo is a slow library call.
        match rank.checked_mul(self.multiplier) {
            Some(product) => product % n,
            None => ((u128::from(rank) * u128::from(self.multiplier)) % u128::from(n)) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_deterministically() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut c = Rng::new(8);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        for _ in 0..10_000 {
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(10) < 10);
        }
    }

    #[test]
    fn zipf_is_skewed_and_covers_ids() {
        let zipf = Zipf::new(1000, 1.1);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.rank(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
        let mut ids: Vec<u64> = (0..1000).map(|r| zipf.id_of_rank(r)).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..1000).collect::<Vec<_>>(),
            "rank -> id is a bijection"
        );
        // The guide table never changes the answer of a full binary search.
        let mut rng = Rng::new(3);
        for n in [1, 2, 7, 1000, 50_000] {
            let zipf = Zipf::new(n, 1.1);
            let total = *zipf.cumulative.last().unwrap();
            for _ in 0..20_000 {
                let mut copy = rng.clone();
                let target = copy.unit() * total;
                let full = (zipf.cumulative.partition_point(|&c| c <= target) as u64).min(n - 1);
                assert_eq!(zipf.rank(&mut rng), full);
            }
        }
        let one = Zipf::new(1, 1.1);
        assert_eq!(one.sample(&mut rng), 0);
    }
}
