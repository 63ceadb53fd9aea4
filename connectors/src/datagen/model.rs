//! The transaction model: events produced in non-decreasing event-time order, with popular
//! cards and merchants (Zipf), exact timestamp ties, missing amounts and card-testing bursts.

use super::rng::{mix, Rng, Zipf};
use super::DatagenConfig;

/// Merchant category codes: grocery, restaurants, fuel, transit, misc retail, electronics,
/// hotels, money transfer, drug stores, department stores.
const MCCS: [i64; 10] = [5411, 5812, 5541, 4111, 5999, 5732, 7011, 4829, 5912, 5311];

/// Card home countries, repeated to weight them.
const HOME_COUNTRIES: [&str; 12] = [
    "US", "US", "US", "GB", "DE", "FR", "CA", "NL", "ES", "BR", "JP", "MX",
];

/// All countries a transaction may happen in.
const COUNTRIES: [&str; 10] = ["US", "GB", "DE", "FR", "CA", "NL", "ES", "BR", "JP", "MX"];

/// Probability that a transaction happens outside the card's home country.
const FOREIGN_RATIO: f64 = 0.03;

/// Probability that a tie (same timestamp as the previous event) also reuses its card.
const SAME_CARD_TIE_RATIO: f64 = 0.5;

const MICROS_PER_MILLI: i64 = 1_000;

/// One generated transaction.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Event {
    /// Generation sequence number (event-time order), unique.
    pub txn_id: u64,
    pub card: u64,
    pub merchant: u64,
    pub amount: Option<f64>,
    pub mcc: i64,
    pub country: &'static str,
    /// Microseconds since the epoch.
    pub event_time: i64,
}

/// A card-testing burst in progress.
#[derive(Debug, Clone)]
struct Burst {
    card: u64,
    remaining: u32,
    next_time: i64,
}

/// Produces events in non-decreasing event-time order.
pub(super) struct Model {
    rng: Rng,
    seed: u64,
    cards: Zipf,
    merchants: Zipf,
    card_count: u64,
    merchant_count: u64,
    mean_gap_micros: f64,
    tie_ratio: f64,
    null_amount_ratio: f64,
    burst_ratio: f64,
    next_regular_time: i64,
    previous: Option<(i64, u64)>,
    bursts: Vec<Burst>,
    produced: u64,
}

impl Model {
    /// A model starting at `start_micros`; `config` must be validated.
    pub fn new(config: &DatagenConfig, start_micros: i64) -> Self {
        Self {
            rng: Rng::new(config.seed),
            seed: config.seed,
            cards: Zipf::new(config.cards, config.zipf_exponent),
            merchants: Zipf::new(config.merchants, config.zipf_exponent),
            card_count: config.cards.max(1),
            merchant_count: config.merchants.max(1),
            mean_gap_micros: 1_000_000.0 / config.events_per_second,
            tie_ratio: config.tie_ratio,
            null_amount_ratio: config.null_amount_ratio,
            burst_ratio: config.burst_ratio,
            next_regular_time: start_micros,
            previous: None,
            bursts: Vec::new(),
            produced: 0,
        }
    }

    fn home_country(&self, card: u64) -> &'static str {
        HOME_COUNTRIES
            [(mix(card ^ self.seed.rotate_left(17)) % HOME_COUNTRIES.len() as u64) as usize]
    }

    fn mcc(&self, merchant: u64) -> i64 {
        MCCS[(mix(merchant ^ self.seed.rotate_left(29)) % MCCS.len() as u64) as usize]
    }

    fn country(&mut self, card: u64) -> &'static str {
        if self.rng.chance(FOREIGN_RATIO) {
            COUNTRIES[self.rng.below(COUNTRIES.len() as u64) as usize]
        } else {
            self.home_country(card)
        }
    }

    /// A typical purchase amount: log-normal around 25, rounded to cents.
    fn regular_amount(&mut self) -> f64 {
        let raw = (3.2 + 1.1 * self.rng.normal()).exp();
        ((raw * 100.0).round() / 100.0).max(0.01)
    }

    fn millis(&mut self, low: i64, high: i64) -> i64 {
        let span = u64::try_from(high - low).unwrap_or(0);
        (low + self.rng.below(span) as i64) * MICROS_PER_MILLI
    }

    /// The next event in event-time order.
    pub fn next_event(&mut self) -> Event {
        let txn_id = self.produced;
        self.produced += 1;

        let due_burst = self
            .bursts
            .iter()
            .enumerate()
            .min_by_key(|(_, b)| b.next_time)
            .filter(|(_, b)| b.next_time <= self.next_regular_time)
            .map(|(i, _)| i);
        if let Some(index) = due_burst {
            return self.burst_event(index, txn_id);
        }

        let (event_time, card) = match self.previous {
            Some((time, previous_card)) if self.rng.chance(self.tie_ratio) => {
                let card = if self.rng.chance(SAME_CARD_TIE_RATIO) {
                    previous_card
                } else {
                    self.cards.sample(&mut self.rng)
                };
                (time, card)
            }
            _ => {
                let time = self.next_regular_time;
                let gap = self.rng.exponential(self.mean_gap_micros).round() as i64;
                self.next_regular_time = time.saturating_add(gap.max(0));
                (time, self.cards.sample(&mut self.rng))
            }
        };
        let merchant = self.merchants.sample(&mut self.rng);
        let amount = if self.rng.chance(self.null_amount_ratio) {
            None
        } else {
            Some(self.regular_amount())
        };
        let country = self.country(card);
        if self.rng.chance(self.burst_ratio) {
            // Card testing uses stolen cards, so any card, not only popular ones.
            let burst_card = self.rng.below(self.card_count);
            let remaining = 5 + self.rng.below(26) as u32;
            let next_time = event_time + self.millis(0, 2_000);
            self.bursts.push(Burst {
                card: burst_card,
                remaining,
                next_time,
            });
        }
        self.previous = Some((event_time, card));
        Event {
            txn_id,
            card,
            merchant,
            amount,
            mcc: self.mcc(merchant),
            country,
            event_time,
        }
    }

    fn burst_event(&mut self, index: usize, txn_id: u64) -> Event {
        let gap = self.millis(100, 1_500);
        let Some(burst) = self.bursts.get_mut(index) else {
            // Unreachable: `index` came from `self.bursts`; fall back to a regular-time event.
            return Event {
                txn_id,
                card: 0,
                merchant: 0,
                amount: None,
                mcc: MCCS[0],
                country: COUNTRIES[0],
                event_time: self.next_regular_time,
            };
        };
        let event_time = burst.next_time;
        let card = burst.card;
        burst.remaining -= 1;
        burst.next_time += gap;
        if burst.remaining == 0 {
            self.bursts.swap_remove(index);
        }
        let merchant = self.rng.below(self.merchant_count);
        let cents = 1 + self.rng.below(200);
        let country = self.home_country(card);
        self.previous = Some((event_time, card));
        Event {
            txn_id,
            card,
            merchant,
            amount: Some(cents as f64 / 100.0),
            mcc: self.mcc(merchant),
            country,
            event_time,
        }
    }
}
