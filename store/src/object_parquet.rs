//! Parquet files on an object store, read with ranged requests: the footer by a suffix request,
//! then only the column chunks a reader decodes. The requests run on the store's I/O runtime
//! ([`crate::location::block_on`]); decoding runs on the caller's thread.

use crate::error::StoreError;
use crate::location::StoreDir;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, MetadataSuffixFetch, SpawnedReader};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::ops::Range;
use std::sync::Arc;

/// One Parquet object, as the async Parquet reader reads it.
#[derive(Clone, Debug)]
pub struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(parquet_error)
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_via_suffix_and_finish(self)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut ObjectFile {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let options = GetOptions {
            range: Some(GetRange::Suffix(suffix as u64)),
            ..Default::default()
        };
        async move {
            self.store
                .get_opts(&self.path, options)
                .await
                .map_err(parquet_error)?
                .bytes()
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }
}

/// A reader of an object-store Parquet file whose requests run on the store's I/O runtime.
pub type ObjectParquetReader = SpawnedReader<ObjectFile>;

/// A batch reader builder over the Parquet file `name` of the object-store directory `dir`,
/// its footer read; `None` when `dir` is a local directory.
pub fn open(
    dir: &StoreDir,
    name: &str,
) -> Option<Result<ParquetRecordBatchStreamBuilder<ObjectParquetReader>, StoreError>> {
    let (store, path) = dir.object(name)?;
    let reader = SpawnedReader::new(ObjectFile { store, path }, crate::location::io_handle());
    let built = futures::executor::block_on(ParquetRecordBatchStreamBuilder::new(reader));
    Some(built.map_err(|e| StoreError::Object {
        location: dir.join(name).to_string(),
        message: format!("cannot read its Parquet footer: {e}"),
    }))
}
