//! Avro message values: plain Avro binary with the schema from a file, or Confluent's wire
//! format (a zero byte, a 4-byte schema id, Avro binary) with writer schemas fetched from a
//! schema registry by id and cached. A value becomes a JSON object, so the row rules (types,
//! nulls, event time) are those of JSON messages.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{Map, Number, Value};

use crate::dead_letter::DeadLetterReason;
use crate::error::ConnectorError;
use crate::timestamp::micros_to_string;

/// How values are framed, and where their schemas come from.
enum Framing {
    /// Plain Avro binary, one schema for all messages.
    Plain(Arc<Schema>),
    /// Confluent's wire format; writer schemas by id from the registry at this URL.
    Registry {
        url: String,
        schemas: Mutex<HashMap<u32, Arc<Schema>>>,
    },
}

/// Decodes Avro message values into JSON objects.
pub struct AvroDecoder {
    framing: Framing,
}

/// Why a message could not be decoded: a bad record (a dead letter) or a failing registry
/// (the job cannot go on without it).
#[derive(Debug)]
pub enum AvroError {
    /// The message is bad: reason and detail for its dead letter.
    Record(DeadLetterReason, String),
    /// The registry is unreachable or answers nonsense.
    Registry(ConnectorError),
}

fn bad(detail: String) -> AvroError {
    AvroError::Record(DeadLetterReason::MalformedRecord, detail)
}

impl AvroDecoder {
    /// Plain Avro values in the schema `text` (JSON) read from `path`.
    pub fn plain(text: &str, path: &str) -> Result<Self, ConnectorError> {
        let schema = Schema::parse_str(text).map_err(|e| ConnectorError::Kafka {
            context: format!("Avro schema `{path}`"),
            detail: e.to_string(),
        })?;
        Ok(AvroDecoder {
            framing: Framing::Plain(Arc::new(schema)),
        })
    }

    /// Confluent wire-format values with schemas from the registry at `url` (http://).
    pub fn registry(url: &str) -> Result<Self, ConnectorError> {
        if !url.starts_with("http://") {
            return Err(ConnectorError::Kafka {
                context: "option `schema_registry`".to_string(),
                detail: format!("`{url}`: only http:// registries are supported so far"),
            });
        }
        Ok(AvroDecoder {
            framing: Framing::Registry {
                url: url.trim_end_matches('/').to_string(),
                schemas: Mutex::new(HashMap::new()),
            },
        })
    }

    /// The value `bytes` as a JSON object.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, AvroError> {
        let (schema, mut body) = match &self.framing {
            Framing::Plain(schema) => (schema.clone(), bytes),
            Framing::Registry { url, schemas } => {
                if bytes.len() < 5 || bytes[0] != 0 {
                    return Err(bad(
                        "not in Confluent's wire format (a zero byte, then a 4-byte schema id)"
                            .to_string(),
                    ));
                }
                let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                let cached = schemas.lock().ok().and_then(|s| s.get(&id).cloned());
                let schema = match cached {
                    Some(schema) => schema,
                    None => {
                        let schema = Arc::new(fetch_schema(url, id)?);
                        if let Ok(mut s) = schemas.lock() {
                            s.insert(id, schema.clone());
                        }
                        schema
                    }
                };
                (schema, &bytes[5..])
            }
        };
        let value = apache_avro::from_avro_datum(&schema, &mut body, None)
            .map_err(|e| bad(format!("not valid Avro for its schema: {e}")))?;
        if !body.is_empty() {
            return Err(bad(format!(
                "{} bytes left over after the Avro record",
                body.len()
            )));
        }
        match to_json(value) {
            Value::Object(object) => Ok(Value::Object(object)),
            _ => Err(bad("the Avro value is not a record".to_string())),
        }
    }
}

/// The writer schema with `id` from the registry at `url` (`GET /schemas/ids/{id}`).
fn fetch_schema(url: &str, id: u32) -> Result<Schema, AvroError> {
    let failed = |detail: String| {
        AvroError::Registry(ConnectorError::Kafka {
            context: format!("schema registry `{url}`, schema id {id}"),
            detail,
        })
    };
    let rest = url.trim_start_matches("http://");
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let address = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let mut stream =
        TcpStream::connect(&address).map_err(|e| failed(format!("cannot connect: {e}")))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let path = format!("/{prefix}/schemas/ids/{id}").replace("//", "/");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| failed(format!("cannot send the request: {e}")))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| failed(format!("cannot read the answer: {e}")))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| failed("the answer is not HTTP".to_string()))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status == "404" {
        return Err(bad(format!("schema id {id} is not in the registry")));
    }
    if status != "200" {
        return Err(failed(format!("the registry answered HTTP {status}")));
    }
    let answer: Value =
        serde_json::from_str(body).map_err(|e| failed(format!("the answer is not JSON: {e}")))?;
    let text = answer["schema"]
        .as_str()
        .ok_or_else(|| failed("the answer has no `schema`".to_string()))?;
    Schema::parse_str(text).map_err(|e| failed(format!("the schema does not parse: {e}")))
}

/// An Avro value as JSON: records become objects, unions their branch, timestamps and dates
/// RFC 3339 strings (so the column's epoch unit does not matter), enums and UUIDs strings,
/// bytes lowercase hex.
fn to_json(value: Avro) -> Value {
    let number = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(i) => Value::from(i),
        Avro::Long(i) => Value::from(i),
        Avro::Float(f) => number(f64::from(f)),
        Avro::Double(f) => number(f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => Value::String(hex(&b)),
        Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
        Avro::Union(_, inner) => to_json(*inner),
        Avro::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Avro::Map(entries) => {
            Value::Object(entries.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        Avro::Record(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Avro::Date(days) => Value::String(micros_to_string(i64::from(days) * 86_400_000_000)),
        Avro::TimestampMillis(ms) | Avro::LocalTimestampMillis(ms) => {
            Value::String(micros_to_string(ms.saturating_mul(1000)))
        }
        Avro::TimestampMicros(us) | Avro::LocalTimestampMicros(us) => {
            Value::String(micros_to_string(us))
        }
        Avro::TimestampNanos(ns) | Avro::LocalTimestampNanos(ns) => {
            Value::String(micros_to_string(ns.div_euclid(1000)))
        }
        Avro::TimeMillis(ms) => Value::from(ms),
        Avro::TimeMicros(us) => Value::from(us),
        Avro::BigDecimal(d) => d.to_string().parse::<f64>().map_or(Value::Null, number),
        Avro::Uuid(u) => Value::String(u.to_string()),
        // Decimals need their schema's scale; not supported yet (a declared column reading one
        // is a wrong-type dead letter naming it).
        Avro::Decimal(_) => Value::String("<Avro decimal: not supported yet>".to_string()),
        Avro::Duration(_) => Value::String("<Avro duration: not supported>".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type": "record", "name": "t", "fields": [
        {"name": "id", "type": "long"},
        {"name": "amount", "type": ["null", "double"]},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;

    #[test]
    fn plain_values_become_json_objects_and_garbage_is_a_bad_record() {
        let decoder = AvroDecoder::plain(SCHEMA, "t.avsc").unwrap();
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let record = Avro::Record(vec![
            ("id".into(), Avro::Long(7)),
            ("amount".into(), Avro::Union(1, Box::new(Avro::Double(2.5)))),
            ("at".into(), Avro::TimestampMillis(1_767_225_600_123)),
        ]);
        let bytes = apache_avro::to_avro_datum(&schema, record).unwrap();
        let json = decoder.decode(&bytes).unwrap();
        assert_eq!(json["id"], 7);
        assert_eq!(json["amount"], 2.5);
        assert_eq!(json["at"], "2026-01-01T00:00:00.123Z");
        assert!(matches!(
            decoder.decode(&[0xff, 0xff, 0xff]),
            Err(AvroError::Record(DeadLetterReason::MalformedRecord, _))
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decoder.decode(&longer).is_err(), "trailing bytes");
        assert!(AvroDecoder::plain("{", "bad.avsc").is_err());
        assert!(AvroDecoder::registry("https://registry").is_err());
    }
}
