//! How [`Moments`] are stored: the count, a mask of the fields that are not zero, and those
//! fields only. Most window state is a few running moments per key, and most of their fields
//! are zero (a count keeps no sums, a sum no spread, a float input no exact sum, and the
//! non-finite counters are almost always 0), so a count is 10 bytes (count, mask and the shift
//! it keeps) instead of 61, and the fraud demo's checkpoints, which write every changed key's
//! head, shrank by about a third.
//!
//! A field is left out when its bits are all zero (so `-0.0` is kept); reading fills the
//! missing ones with zero, giving back the same moments bit for bit.

use super::Moments;
use crate::compensated::CompensatedSum;
use crate::double_double::DoubleDouble;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The fields after the count, one bit each in the mask, in this order.
const SHIFT: u16 = 1 << 0;
const SUM: u16 = 1 << 1;
const SUM_COMPENSATION: u16 = 1 << 2;
const EXACT_SUM: u16 = 1 << 3;
const SHIFTED_SUM_HI: u16 = 1 << 4;
const SHIFTED_SUM_LO: u16 = 1 << 5;
const SHIFTED_SQUARES_HI: u16 = 1 << 6;
const SHIFTED_SQUARES_LO: u16 = 1 << 7;
const NAN: u16 = 1 << 8;
const POS_INF: u16 = 1 << 9;
const NEG_INF: u16 = 1 << 10;
/// Every field's bit.
const ALL: u16 = (1 << 11) - 1;
/// Elements at most: the count, the mask and every field.
const MAX_ELEMENTS: usize = 2 + ALL.count_ones() as usize;

/// The float fields with their bits, as kept.
fn floats(m: &Moments) -> [(u16, f64); 7] {
    let (sum, compensation) = m.sum.parts();
    let (shifted_hi, shifted_lo) = m.shifted_sum.parts();
    let (squares_hi, squares_lo) = m.shifted_squares.parts();
    [
        (SHIFT, m.shift),
        (SUM, sum),
        (SUM_COMPENSATION, compensation),
        (SHIFTED_SUM_HI, shifted_hi),
        (SHIFTED_SUM_LO, shifted_lo),
        (SHIFTED_SQUARES_HI, squares_hi),
        (SHIFTED_SQUARES_LO, squares_lo),
    ]
}

/// The non-finite counters with their bits.
fn counters(m: &Moments) -> [(u16, u64); 3] {
    [(NAN, m.nan), (POS_INF, m.pos_inf), (NEG_INF, m.neg_inf)]
}

/// The bits of the fields that are not zero.
fn mask(m: &Moments) -> u16 {
    let floats = (floats(m).into_iter())
        .filter(|(_, x)| x.to_bits() != 0)
        .fold(0, |mask, (bit, _)| mask | bit);
    let counters = (counters(m).into_iter())
        .filter(|(_, n)| *n != 0)
        .fold(0, |mask, (bit, _)| mask | bit);
    let exact = if m.exact_sum != 0 { EXACT_SUM } else { 0 };
    floats | counters | exact
}

impl Serialize for Moments {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mask = mask(self);
        let mut tuple = serializer.serialize_tuple(2 + mask.count_ones() as usize)?;
        tuple.serialize_element(&self.n)?;
        tuple.serialize_element(&mask)?;
        let [shift, sum, compensation, rest @ ..] = floats(self);
        for (bit, x) in [shift, sum, compensation] {
            if mask & bit != 0 {
                tuple.serialize_element(&x)?;
            }
        }
        if mask & EXACT_SUM != 0 {
            tuple.serialize_element(&self.exact_sum)?;
        }
        for (bit, x) in rest {
            if mask & bit != 0 {
                tuple.serialize_element(&x)?;
            }
        }
        for (bit, n) in counters(self) {
            if mask & bit != 0 {
                tuple.serialize_element(&n)?;
            }
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Moments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_tuple(MAX_ELEMENTS, MomentsVisitor)
    }
}

/// Reads the count, the mask and the fields it names.
struct MomentsVisitor;

impl<'de> Visitor<'de> for MomentsVisitor {
    type Value = Moments;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("running moments: a count, a field mask and the fields it names")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Moments, A::Error> {
        let mut fields = Fields {
            seq,
            read: 0,
            mask: 0,
        };
        let n: u64 = fields.next()?;
        let mask: u16 = fields.next()?;
        if mask & !ALL != 0 {
            return Err(de::Error::custom(format!(
                "running moments name unknown fields (mask {mask:#x})"
            )));
        }
        fields.mask = mask;
        let shift = fields.field::<f64>(SHIFT)?;
        let sum = fields.field::<f64>(SUM)?;
        let compensation = fields.field::<f64>(SUM_COMPENSATION)?;
        let exact_sum: i128 = fields.field(EXACT_SUM)?;
        let shifted_sum_hi = fields.field::<f64>(SHIFTED_SUM_HI)?;
        let shifted_sum_lo = fields.field::<f64>(SHIFTED_SUM_LO)?;
        let shifted_squares_hi = fields.field::<f64>(SHIFTED_SQUARES_HI)?;
        let shifted_squares_lo = fields.field::<f64>(SHIFTED_SQUARES_LO)?;
        Ok(Moments {
            n,
            nan: fields.field(NAN)?,
            pos_inf: fields.field(POS_INF)?,
            neg_inf: fields.field(NEG_INF)?,
            shift,
            sum: CompensatedSum::from_parts(sum, compensation),
            shifted_sum: DoubleDouble::from_parts(shifted_sum_hi, shifted_sum_lo),
            shifted_squares: DoubleDouble::from_parts(shifted_squares_hi, shifted_squares_lo),
            exact_sum,
        })
    }
}

/// The elements of stored moments, read in order.
struct Fields<A> {
    seq: A,
    /// Elements read so far.
    read: usize,
    /// The fields present.
    mask: u16,
}

impl<'de, A: SeqAccess<'de>> Fields<A> {
    /// The next element.
    fn next<T: Deserialize<'de>>(&mut self) -> Result<T, A::Error> {
        let value = self.seq.next_element()?;
        self.read += 1;
        value.ok_or_else(|| de::Error::invalid_length(self.read - 1, &MomentsVisitor))
    }

    /// The field of `bit`: the next element if the mask names it, else zero.
    fn field<T: Deserialize<'de> + Default>(&mut self, bit: u16) -> Result<T, A::Error> {
        match self.mask & bit {
            0 => Ok(T::default()),
            _ => self.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moments::MomentLevel;

    fn round_trip(m: &Moments) -> Vec<u8> {
        let bytes = postcard::to_allocvec(m).unwrap();
        let back: Moments = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{m:?}"), "bit for bit");
        bytes
    }

    #[test]
    fn moments_read_back_bit_for_bit_and_zero_fields_cost_nothing() {
        assert_eq!(round_trip(&Moments::default()), vec![0, 0]);
        let mut count = Moments::default();
        for _ in 0..5 {
            count.add(1.0, MomentLevel::Count);
        }
        assert_eq!(round_trip(&count).len(), 2 + 8, "count and the shift");
        let mut spread = Moments::default();
        let mut seed = 7u64;
        for i in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let x = (seed % 100_000) as f64 / 100.0 - 300.0;
            spread.add(x, MomentLevel::Spread);
            spread.add_exact(i128::from(i) * 1_000_000_000_000_000_000);
            if i % 3 == 0 {
                spread.remove(x, MomentLevel::Spread);
            }
        }
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY] {
            spread.add(x, MomentLevel::Spread);
        }
        let full = round_trip(&spread);
        assert!(full.len() > 7 * 8 + 16, "{}", full.len());
        let mut negative_zero = Moments::default();
        negative_zero.add(-0.0, MomentLevel::Sum);
        assert_eq!(negative_zero.shift.to_bits(), (-0.0f64).to_bits());
        assert_eq!(
            round_trip(&negative_zero).len(),
            2 + 8,
            "the shift -0.0 is kept"
        );
    }

    #[test]
    fn unknown_fields_and_cut_moments_are_errors() {
        let bytes = postcard::to_allocvec(&(3u64, ALL + 1)).unwrap();
        let err = postcard::from_bytes::<Moments>(&bytes).unwrap_err();
        assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
        let mut m = Moments::default();
        m.add(2.5, MomentLevel::Sum);
        let bytes = postcard::to_allocvec(&m).unwrap();
        assert!(postcard::from_bytes::<Moments>(&bytes[..bytes.len() - 1]).is_err());
    }
}
