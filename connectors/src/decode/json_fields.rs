//! The declared fields of one JSON object, parsed without building a `serde_json::Value` tree:
//! keys are matched against the declared names as they are read, undeclared values are skipped
//! (still checked for syntax), and strings are borrowed from the record unless they have
//! escapes. Decoding NDJSON this way avoids a map, a key string and a value per field of every
//! line.
//!
//! Only records whose declared fields all convert take this path: anything else (invalid JSON,
//! not an object, a wrong type, a missing non-nullable field) goes through the general decoder,
//! so dead letters keep exactly its reasons and details.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::convert::{Cell, JsonScalar, Target};
use crate::schema::DeclaredSchema;

/// A scalar JSON value of a declared field.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'a> {
    Null,
    Bool(bool),
    /// An integer in the signed 64-bit range.
    Int(i64),
    /// A non-negative integer beyond `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array or an object.
    Nested,
}

impl Scalar<'_> {
    /// The cell of `target`, following the general decoder's rules; `None` when the general
    /// decoder would reject it (then it decodes the record, to say why).
    pub(super) fn cell<'s>(value: Option<&'s Scalar<'_>>, target: &Target<'_>) -> Option<Cell<'s>> {
        let scalar = match value {
            None => return target.null(true).ok(),
            Some(Scalar::Null) => return target.null(false).ok(),
            Some(Scalar::Bool(b)) => JsonScalar::Bool(*b),
            Some(Scalar::Int(i)) => JsonScalar::Int(*i),
            Some(Scalar::UInt(u)) => JsonScalar::UInt(*u),
            Some(Scalar::Float(f)) => JsonScalar::Float(*f),
            Some(Scalar::Str(s)) => JsonScalar::Str(s),
            Some(Scalar::Nested) => JsonScalar::Nested,
        };
        target.convert_scalar(scalar)
    }
}

/// The declared field names of a schema (a handful: a scan beats hashing each key).
pub(super) struct FieldNames {
    names: Vec<String>,
}

impl FieldNames {
    pub(super) fn new(schema: &DeclaredSchema) -> Self {
        FieldNames {
            names: schema.fields.iter().map(|f| f.name.clone()).collect(),
        }
    }

    /// The declared index of the field `key`.
    fn index(&self, key: &str) -> Option<usize> {
        self.names.iter().position(|n| n == key)
    }

    /// The declared fields of the JSON object `record` (by declared index; `None`: absent),
    /// or `None` when `record` is not one object with nothing but whitespace after it.
    pub(super) fn parse<'a>(&self, record: &'a [u8]) -> Option<Vec<Option<Scalar<'a>>>> {
        let mut de = serde_json::Deserializer::from_slice(record);
        let fields = ObjectSeed { names: self }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(fields)
    }
}

struct ObjectSeed<'n> {
    names: &'n FieldNames,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Vec<Option<Scalar<'de>>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Vec<Option<Scalar<'de>>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = vec![None; self.names.names.len()];
        while let Some(key) = map.next_key_seed(KeySeed { names: self.names })? {
            match key {
                // A repeated key keeps its last value, as `serde_json::Value` does.
                Some(i) => fields[i] = Some(map.next_value_seed(ScalarSeed)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A key, as the declared index of its field (`None`: undeclared), without allocating it.
struct KeySeed<'n> {
    names: &'n FieldNames,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.names.index(v))
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(v),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::text_schema as schema;

    #[test]
    fn declared_fields_are_read_and_the_rest_skipped() {
        let names = FieldNames::new(&schema());
        // 1e400 is beyond f64, which serde_json refuses: the general decoder says so.
        assert_eq!(names.parse(br#"{"id":1,"amount":1e400}"#), None);
        let fields = names
            .parse(br#"{"id":1,"extra":[1,{"b":2}],"name":"x\"y","amount":2.5,"id":18446744073709551615}"#)
            .expect("an object");
        assert_eq!(
            fields[0],
            Some(Scalar::UInt(u64::MAX)),
            "the last `id` wins"
        );
        assert_eq!(fields[1], Some(Scalar::Float(2.5)));
        assert_eq!(fields[3], Some(Scalar::Str(Cow::Borrowed("x\"y"))));
        assert_eq!(names.parse(b"[1]"), None);
        assert_eq!(names.parse(br#"{"id":1} x"#), None);
        assert_eq!(names.parse(br#"{"id":1"#), None);
    }
}
