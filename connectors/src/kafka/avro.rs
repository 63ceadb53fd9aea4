//! Avro message values: plain Avro binary with the schema from a file, or Confluent's wire
//! format (a zero byte, a 4-byte schema id, Avro binary) with writer schemas fetched from a
//! schema registry by id and cached. A value becomes a JSON object, so the row rules (types,
//! nulls, event time) are those of JSON messages.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::schema::Name;
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{Map, Number, Value};

use crate::dead_letter::DeadLetterReason;
use crate::error::ConnectorError;
use crate::timestamp::micros_to_string;

/// A writer schema and the named types it defines (what its references point to).
struct WriterSchema {
    schema: Schema,
    names: HashMap<Name, Schema>,
}

impl WriterSchema {
    fn new(schema: Schema) -> Self {
        let mut names = HashMap::new();
        named_types(&schema, &mut names);
        WriterSchema { schema, names }
    }
}

/// Collects the named types `schema` defines (records, enums, fixed, and decimals on a named
/// fixed: what a reference to that fixed means).
fn named_types(schema: &Schema, names: &mut HashMap<Name, Schema>) {
    match schema {
        Schema::Record(record) => {
            names.insert(record.name.clone(), schema.clone());
            for field in &record.fields {
                named_types(&field.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema.clone());
        }
        Schema::Fixed(fixed) => {
            names.insert(fixed.name.clone(), schema.clone());
        }
        Schema::Decimal(decimal) => {
            if let Schema::Fixed(fixed) = &*decimal.inner {
                names.insert(fixed.name.clone(), schema.clone());
            }
        }
        Schema::Union(union) => union.variants().iter().for_each(|v| named_types(v, names)),
        Schema::Array(array) => named_types(&array.items, names),
        Schema::Map(map) => named_types(&map.types, names),
        _ => {}
    }
}

/// How values are framed, and where their schemas come from.
enum Framing {
    /// Plain Avro binary, one schema for all messages.
    Plain(Arc<WriterSchema>),
    /// Confluent's wire format; writer schemas by id from the registry at this URL.
    Registry {
        url: String,
        /// TLS settings of an https:// registry.
        tls: Option<Arc<rustls::ClientConfig>>,
        schemas: Mutex<HashMap<u32, Arc<WriterSchema>>>,
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
        let fail = |detail: String| ConnectorError::Kafka {
            context: format!("Avro schema `{path}`"),
            detail,
        };
        let schema = Schema::parse_str(text).map_err(|e| fail(e.to_string()))?;
        Ok(AvroDecoder {
            framing: Framing::Plain(Arc::new(WriterSchema::new(schema))),
        })
    }

    /// Confluent wire-format values with schemas from the registry at `url` (http:// or
    /// https://, trusting the system's roots and the PEM certificates in `ca`).
    pub fn registry(url: &str, ca: Option<&str>) -> Result<Self, ConnectorError> {
        let fail = |detail: String| ConnectorError::Kafka {
            context: "option `schema_registry`".to_string(),
            detail,
        };
        let tls = if url.starts_with("https://") {
            Some(Arc::new(tls_config(ca).map_err(fail)?))
        } else if url.starts_with("http://") {
            None
        } else {
            return Err(fail(format!("`{url}`: give an http:// or https:// URL")));
        };
        Ok(AvroDecoder {
            framing: Framing::Registry {
                url: url.trim_end_matches('/').to_string(),
                tls,
                schemas: Mutex::new(HashMap::new()),
            },
        })
    }

    /// The value `bytes` as a JSON object.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, AvroError> {
        let (schema, mut body) = match &self.framing {
            Framing::Plain(schema) => (schema.clone(), bytes),
            Framing::Registry { url, tls, schemas } => {
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
                        let schema = Arc::new(fetch_schema(url, tls.as_ref(), id)?);
                        if let Ok(mut s) = schemas.lock() {
                            s.insert(id, schema.clone());
                        }
                        schema
                    }
                };
                (schema, &bytes[5..])
            }
        };
        let value = apache_avro::from_avro_datum(&schema.schema, &mut body, None)
            .map_err(|e| bad(format!("not valid Avro for its schema: {e}")))?;
        if !body.is_empty() {
            return Err(bad(format!(
                "{} bytes left over after the Avro record",
                body.len()
            )));
        }
        match to_json(value, &schema.schema, &schema.names) {
            Value::Object(object) => Ok(Value::Object(object)),
            _ => Err(bad("the Avro value is not a record".to_string())),
        }
    }
}

/// TLS settings trusting the system's roots and the PEM certificates in the file `ca`.
fn tls_config(ca: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read the CA `{ca}` (schema_registry_ca): {e}"))?;
        if certs.is_empty() {
            return Err(format!(
                "the CA `{ca}` (schema_registry_ca) holds no certificate"
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("the CA `{ca}` (schema_registry_ca): {e}"))?;
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The writer schema with `id` from the registry at `url` (`GET /schemas/ids/{id}`), over
/// TLS with `tls` for an https:// URL.
fn fetch_schema(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    id: u32,
) -> Result<WriterSchema, AvroError> {
    let failed = |detail: String| {
        AvroError::Registry(ConnectorError::Kafka {
            context: format!("schema registry `{url}`, schema id {id}"),
            detail,
        })
    };
    let rest = url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let (host, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let port = if tls.is_some() { 443 } else { 80 };
    let (name, address) = match host.rsplit_once(':') {
        Some((name, _)) if !host.ends_with(']') => (name, host.to_string()),
        _ => (host, format!("{host}:{port}")),
    };
    let stream =
        TcpStream::connect(&address).map_err(|e| failed(format!("cannot connect: {e}")))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let path = format!("/{prefix}/schemas/ids/{id}").replace("//", "/");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nConnection: close\r\n\r\n"
    );
    let response = match tls {
        None => exchange(stream, &request),
        Some(config) => {
            let server = rustls_pki_types::ServerName::try_from(name.trim_matches(['[', ']']))
                .map_err(|e| failed(format!("`{name}` is not a host name: {e}")))?
                .to_owned();
            let connection = rustls::ClientConnection::new(config.clone(), server)
                .map_err(|e| failed(format!("TLS: {e}")))?;
            exchange(rustls::StreamOwned::new(connection, stream), &request)
        }
    }
    .map_err(failed)?;
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
    let schema =
        Schema::parse_str(text).map_err(|e| failed(format!("the schema does not parse: {e}")))?;
    Ok(WriterSchema::new(schema))
}

/// Sends `request` and reads the answer until the server closes the connection (a TLS
/// server that closes without its close notification still gave a whole answer).
fn exchange(mut stream: impl Read + Write, request: &str) -> Result<String, String> {
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(format!("cannot read the answer: {e}")),
    }
    String::from_utf8(response).map_err(|_| "the answer is not UTF-8 text".to_string())
}

/// An Avro value of `schema` as JSON: records become objects, unions their branch,
/// timestamps and dates RFC 3339 strings (so the column's epoch unit does not matter), enums
/// and UUIDs strings, bytes lowercase hex, decimals numbers (their unscaled value and the
/// schema's scale, as a JSON number would carry them: a `float` column reads them). `names`
/// are the named types references point to.
fn to_json(value: Avro, schema: &Schema, names: &HashMap<Name, Schema>) -> Value {
    let schema = match schema {
        Schema::Ref { name } => names.get(name).unwrap_or(schema),
        schema => schema,
    };
    // Values of a shape the schema does not describe (never from a datum read with it) are
    // converted without one.
    let unknown = &Schema::Null;
    let number = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
    match value {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(i) => Value::from(i),
        Avro::Long(i) => Value::from(i),
        Avro::Float(f) => number(f64::from(f)),
        Avro::Double(f) => number(f),
        Avro::Bytes(b) | Avro::Fixed(_, b) => Value::String(hex::encode(b)),
        Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
        Avro::Union(branch, inner) => {
            let schema = match schema {
                Schema::Union(union) => union.variants().get(branch as usize),
                _ => None,
            };
            to_json(*inner, schema.unwrap_or(unknown), names)
        }
        Avro::Array(items) => {
            let item = match schema {
                Schema::Array(array) => &*array.items,
                _ => unknown,
            };
            Value::Array(items.into_iter().map(|v| to_json(v, item, names)).collect())
        }
        Avro::Map(entries) => {
            let item = match schema {
                Schema::Map(map) => &*map.types,
                _ => unknown,
            };
            let entries = entries.into_iter();
            Value::Object(entries.map(|(k, v)| (k, to_json(v, item, names))).collect())
        }
        Avro::Record(fields) => {
            let field = |name: &str| match schema {
                Schema::Record(record) => (record.lookup.get(name))
                    .map(|&i| &record.fields[i].schema)
                    .unwrap_or(unknown),
                _ => unknown,
            };
            Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| {
                        let value = to_json(v, field(&k), names);
                        (k, value)
                    })
                    .collect::<Map<_, _>>(),
            )
        }
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
        Avro::Decimal(d) => match schema {
            Schema::Decimal(decimal) => decimal_json(&d, decimal.scale),
            _ => Value::String("<Avro decimal without its schema>".to_string()),
        },
        Avro::Duration(_) => Value::String("<Avro duration: not supported>".to_string()),
    }
}

/// A decimal's value as a JSON number: its unscaled value (big-endian two's complement) over
/// 10^`scale`, written out exactly and read as the nearest double, as a JSON number with the
/// same digits would be. Wider than 128 bits (more than 38 digits) it is a string, which a
/// numeric column takes as a wrong-type dead letter naming it.
fn decimal_json(decimal: &apache_avro::Decimal, scale: usize) -> Value {
    let Ok(bytes) = <Vec<u8>>::try_from(decimal) else {
        return Value::String("<Avro decimal: unreadable>".to_string());
    };
    if bytes.len() > 16 {
        return Value::String("<Avro decimal wider than 38 digits: not supported>".to_string());
    }
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut buffer = [if negative { 0xFF } else { 0 }; 16];
    buffer[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(buffer);
    let digits = unscaled.unsigned_abs().to_string();
    let text = if scale == 0 {
        digits
    } else {
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        format!("{whole}.{fraction}")
    };
    let sign = if negative { "-" } else { "" };
    format!("{sign}{text}")
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
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
        assert!(AvroDecoder::registry("ftp://registry", None).is_err());
        let e = AvroDecoder::registry("https://registry", Some("/no/such/ca.pem"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("schema_registry_ca"), "{e}");
    }

    #[test]
    fn decimals_take_their_schemas_scale_in_unions_arrays_and_named_types() {
        const DECIMALS: &str = r#"{"type": "record", "name": "p", "fields": [
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal",
                                        "precision": 10, "scale": 2}},
            {"name": "maybe", "type": ["null", {"type": "bytes", "logicalType": "decimal",
                                                 "precision": 6, "scale": 3}]},
            {"name": "fx", "type": {"type": "fixed", "name": "money", "size": 8,
                                     "logicalType": "decimal", "precision": 18, "scale": 4}},
            {"name": "leg", "type": {"type": "record", "name": "leg", "fields": [
                {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal",
                                             "precision": 9, "scale": 1}}]}},
            {"name": "again", "type": "leg"},
            {"name": "list", "type": {"type": "array", "items": {"type": "bytes",
                "logicalType": "decimal", "precision": 9, "scale": 4}}},
            {"name": "whole", "type": {"type": "bytes", "logicalType": "decimal",
                                        "precision": 5, "scale": 0}}]}"#;
        let decoder = AvroDecoder::plain(DECIMALS, "p.avsc").unwrap();
        let schema = Schema::parse_str(DECIMALS).unwrap();
        let dec = |v: i128, len: usize| {
            Avro::Decimal(apache_avro::Decimal::from(
                v.to_be_bytes()[16 - len..].to_vec(),
            ))
        };
        let leg = |v: i128| Avro::Record(vec![("amount".into(), dec(v, 4))]);
        let record = Avro::Record(vec![
            ("price".into(), dec(12_345, 3)),
            ("maybe".into(), Avro::Union(1, Box::new(dec(-5, 1)))),
            ("fx".into(), dec(-1_234_567, 8)),
            ("leg".into(), leg(15)),
            ("again".into(), leg(-7)),
            ("list".into(), Avro::Array(vec![dec(1, 2)])),
            ("whole".into(), dec(-42, 1)),
        ]);
        let bytes = apache_avro::to_avro_datum(&schema, record).unwrap();
        let json = decoder.decode(&bytes).unwrap();
        assert_eq!(json["price"], 123.45);
        assert_eq!(json["maybe"], -0.005);
        assert_eq!(json["fx"], -123.4567);
        assert_eq!(json["leg"]["amount"], 1.5);
        assert_eq!(json["again"]["amount"], -0.7, "through a reference");
        assert_eq!(json["list"][0], 0.0001);
        assert_eq!(json["whole"], -42.0);
    }

    #[test]
    fn an_https_registry_is_trusted_through_its_ca_and_refused_without() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let tls = match crate::test_ca::TestCa::make(dir.path()) {
            Ok(tls) => tls,
            Err(e) => return eprintln!("skipped: {e}"),
        };
        // `openssl s_server -WWW` serves files under its directory: the registry's answer.
        std::fs::create_dir_all(path("schemas/ids")).unwrap();
        let answer = serde_json::json!({ "schema": SCHEMA }).to_string();
        std::fs::write(path("schemas/ids/7"), answer).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = std::process::Command::new("openssl")
            .args(["s_server", "-WWW", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&tls.cert)
            .arg("-key")
            .arg(&tls.key)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s_server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let record = Avro::Record(vec![
            ("id".into(), Avro::Long(3)),
            ("amount".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("at".into(), Avro::TimestampMillis(1_767_225_600_000)),
        ]);
        let mut message = vec![0, 0, 0, 0, 7];
        message.extend(apache_avro::to_avro_datum(&schema, record).unwrap());
        let url = format!("https://127.0.0.1:{port}");
        let ca = tls.ca.display().to_string();
        let trusted = AvroDecoder::registry(&url, Some(&ca)).unwrap();
        let result = trusted.decode(&message);
        let untrusted = AvroDecoder::registry(&url, None).unwrap().decode(&message);
        let _ = server.kill();
        let _ = server.wait();
        let json = result.unwrap();
        assert_eq!(json["id"], 3);
        assert_eq!(json["at"], "2026-01-01T00:00:00Z");
        match untrusted {
            Err(AvroError::Registry(e)) => {
                assert!(e.to_string().to_lowercase().contains("certificate"), "{e}")
            }
            other => panic!("an unknown certificate was trusted: {other:?}"),
        }
    }
}
