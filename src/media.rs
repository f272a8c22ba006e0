//! The store of uploaded images: local disk under `<data_dir>/media` or an S3-compatible bucket
//! (`uploads.store`), opened once at start.

use std::sync::Arc;

use anyhow::Context;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use secrecy::ExposeSecret;

use crate::config::{Settings, UploadStore};

/// Where uploads live under the data directory, and the URL prefix they are served at.
pub const MEDIA_DIR: &str = "media";

/// The configured store of uploads.
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    match settings.uploads.store {
        UploadStore::Local => {
            let dir = settings.store.data_dir.join(MEDIA_DIR);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(Arc::new(
                LocalFileSystem::new_with_prefix(&dir).context("opening the media directory")?,
            ))
        }
        UploadStore::S3 => {
            let s3 = &settings.uploads.s3;
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_access_key_id(&s3.access_key_id)
                .with_secret_access_key(s3.secret_access_key.expose_secret());
            if !s3.endpoint.is_empty() {
                // S3-compatible services are usually addressed by path, often over plain HTTP
                // inside a private network.
                builder = builder
                    .with_endpoint(&s3.endpoint)
                    .with_virtual_hosted_style_request(false)
                    .with_allow_http(s3.endpoint.starts_with("http://"));
            }
            Ok(Arc::new(
                builder.build().context("configuring the S3 bucket")?,
            ))
        }
    }
}
