//! Quiver sources and sinks: the declared input schema, source positions, dead letters, the
//! deterministic transaction generator, files on object stores, NDJSON/CSV/Parquet decoding and
//! file writing.

pub mod datagen;
pub mod dead_letter;
pub mod decode;
pub mod env;
pub mod error;
pub mod files;
pub mod infer;
pub mod kafka;
pub mod object_ranges;
pub mod partition;
pub mod position;
pub mod schema;
pub mod test_ca;
pub mod writer;

pub mod render;
mod timestamp;

pub use bytes::Bytes;
pub use datagen::{datagen_schema, Datagen, DatagenConfig, DATAGEN_PARTITION};
pub use dead_letter::{DeadLetter, DeadLetterReason, DeadLetterWriter};
pub use decode::{
    decode_file, decode_json_records, decode_parquet_chunks, decode_parquet_object,
    decode_text_object, Decoded, FileFormat, JsonRecord,
};
pub use error::ConnectorError;
pub use files::InputFiles;
pub use infer::infer_fields;
pub use partition::{in_offset_order, PartitionItem};
pub use position::{SourceBatch, SourceRange};
pub use schema::{DeclaredSchema, EpochUnit, FieldSpec, FieldType};
pub use timestamp::parse_rfc3339_micros;
pub use writer::{write_batches, write_file};
