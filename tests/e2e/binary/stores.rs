//! Models from object storage and HTTP: `runinfer serve` against moto's S3 server
//! and Python's HTTP file server, both real servers on loopback
//! (tests/python/model_stores.py): load, digest pins, refresh on a new object, the
//! store killed mid-run, and a restart served from the cache with the stores down.

use super::run_python_job;

#[test]
fn models_from_s3_and_http_are_pinned_cached_and_refreshed() {
    run_python_job("requirements.txt", "py-clients", "model_stores.py", &[]);
}
