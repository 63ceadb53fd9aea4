//! Ranged reads of one object: as the source of a Parquet reader (the footer, then each row
//! group's column chunks, coalesced into few requests by the object store), or piece by piece
//! for text formats; never the whole object.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::ops::Range;
use std::sync::Arc;

/// One object of a store and its size.
#[derive(Clone)]
pub struct ObjectRanges {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
}

impl ObjectRanges {
    /// Object `path` of `store`, `size` bytes long.
    pub fn new(store: Arc<dyn ObjectStore>, path: ObjectPath, size: u64) -> Self {
        ObjectRanges { store, path, size }
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its bytes in `range`.
    pub async fn read(&self, range: Range<u64>) -> object_store::Result<Bytes> {
        self.store.get_range(&self.path, range).await
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectRanges {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move { (self.store.get_ranges(&self.path, &ranges).await).map_err(external) }.boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            // Most footers fit in 64 KiB: one request, a second only for a larger one.
            let reader = ParquetMetaDataReader::new().with_prefetch_hint(Some(64 * 1024));
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}
