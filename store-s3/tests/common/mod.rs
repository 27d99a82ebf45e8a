//! What the tests against moto share: object_store's S3 client for a
//! bucket on it, and one rustls provider for the process.
#![allow(dead_code, unreachable_pub)]

/// object_store's S3 client for `bucket` on `moto`.
pub fn bucket(moto: &testkit::Moto, bucket: &str) -> object_store::aws::AmazonS3 {
    store_s3::s3_builder(bucket, Some(&moto.endpoint()))
        .with_access_key_id("ferry")
        .with_secret_access_key("ferry")
        .build()
        .unwrap()
}

/// rustls is built with two providers in this workspace (object_store's
/// client brings aws-lc-rs): name one for the process.
pub fn one_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
