//! Models kept where users keep them: S3, GCS, Azure Blob and HTTP(S) locations,
//! fetched into a local content-addressed cache that plugins and restarts share.
//!
//! * Credentials come from each store's usual environment (`AWS_*`, `GOOGLE_*`,
//!   `AZURE_*`, instance metadata: `object_store`'s builders `from_env`), never from
//!   a plugin.
//! * A download goes to a temporary file, is hashed (SHA-256) on the way, checked
//!   against the entry's pin, and only then renamed to `blobs/<sha256>`: a
//!   half-downloaded or refused object is never served, and processes sharing the
//!   cache never see each other's partial files.
//! * `refs/<blake3 of the URL>.json` remembers what a URL last resolved to (object,
//!   revision, blob): an unchanged object is not downloaded again, and a start with
//!   the store down serves the cached copy.
//! * Past the size cap, the least recently used blobs are removed (a loaded model
//!   holds its bytes in memory, so removing its blob never disturbs it).

use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio_stream::StreamExt;
use url::Url;

use crate::metrics::StoreMetrics;

/// Where the cache lives and how much it may hold.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The cache directory (`<cache>/models` by default, beside the compile cache).
    pub cache_dir: PathBuf,
    /// Bytes of blobs kept at most; the least recently used go past it.
    pub max_bytes: u64,
    /// URL prefixes plugins may fetch models from; `{plugin}` stands for the
    /// plugin's name (`s3://models/{plugin}/` keeps each tenant in its own prefix,
    /// with the host's credentials). Empty: any URL of a known store.
    pub allow: Vec<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let base = crate::plugin::compile::CompileCache::default_dir()
            .unwrap_or_else(|| std::env::temp_dir().join("runinfer"));
        StoreConfig {
            cache_dir: base.join("models"),
            max_bytes: 20 << 30,
            allow: Vec::new(),
        }
    }
}

/// Why a remote model could not be had.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store answered with an error, or could not be reached, and the cache
    /// holds no copy.
    #[error("cannot fetch {url}: {source}")]
    Store {
        /// The model's URL.
        url: String,
        /// What the store (or the network) said.
        source: object_store::Error,
    },
    /// A pattern matched no object.
    #[error("no object matches {url}")]
    NoMatch {
        /// The pattern.
        url: String,
    },
    /// The bytes are not the pinned ones.
    #[error("{url} has SHA-256 {actual}, not the pinned {expected}: refused")]
    Digest {
        /// The object.
        url: String,
        /// The pin.
        expected: String,
        /// What was downloaded.
        actual: String,
    },
    /// The object is larger than the whole cache.
    #[error("{url} is {size} bytes, more than the model cache holds ({cap} bytes)")]
    TooLarge {
        /// The object.
        url: String,
        /// Its size.
        size: u64,
        /// The cache's cap.
        cap: u64,
    },
    /// The operator does not let this plugin fetch from there.
    #[error("{url} is outside the model locations this host allows plugin `{plugin}` ({allowed})")]
    NotAllowed {
        /// The model's URL.
        url: String,
        /// The plugin.
        plugin: String,
        /// The allowed prefixes, for that plugin.
        allowed: String,
    },
    /// The cache directory could not be written or read.
    #[error("model cache {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A remote model, present in the cache.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fetched {
    /// The object's URL (for a pattern, the newest match).
    pub location: String,
    /// What changes when the object does: its ETag, else its time and size.
    pub revision: String,
    /// SHA-256 of the bytes; the blob's name.
    pub sha256: String,
}

/// The model stores and the cache of one host.
pub struct ModelStore {
    config: StoreConfig,
    metrics: StoreMetrics,
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// One client per model URL (each store's builder reads the environment once).
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    /// Serialises eviction and ref updates of this process (other processes only
    /// ever see complete files, by rename).
    cache_lock: Mutex<()>,
}

impl ModelStore {
    pub(crate) fn new(config: StoreConfig, metrics: StoreMetrics) -> ModelStore {
        ModelStore {
            config,
            metrics,
            runtime: OnceLock::new(),
            stores: Mutex::default(),
            cache_lock: Mutex::new(()),
        }
    }

    /// The cache's blob for a fetched model.
    pub fn blob(&self, fetched: &Fetched) -> PathBuf {
        self.blob_path(&fetched.sha256)
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.config.cache_dir.join("blobs").join(sha256)
    }

    fn ref_path(&self, url: &Url) -> PathBuf {
        let key = blake3::hash(url.as_str().as_bytes()).to_hex();
        self.config
            .cache_dir
            .join("refs")
            .join(format!("{}.json", &key[..32]))
    }

    /// Refuses a URL outside the operator's allowed prefixes for `plugin`. The
    /// URL is compared parsed (normalised: no `..`, no `%2e`), so a prefix cannot
    /// be escaped by spelling.
    pub fn check_allowed(&self, plugin: &str, url: &Url) -> Result<(), StoreError> {
        if self.config.allow.is_empty() {
            return Ok(());
        }
        let prefixes: Vec<String> = self
            .config
            .allow
            .iter()
            .map(|p| p.replace("{plugin}", plugin))
            .collect();
        let text = url.as_str();
        if prefixes.iter().any(|p| text.starts_with(p.as_str())) {
            return Ok(());
        }
        Err(StoreError::NotAllowed {
            url: text.to_string(),
            plugin: plugin.to_string(),
            allowed: prefixes.join(", "),
        })
    }

    /// The model at `url` (an object, or the newest object matching a pattern) in
    /// the cache: found unchanged, downloaded, or, when the store cannot be
    /// reached, the copy fetched last (logged and counted). A pinned object this URL
    /// already resolved to is used without asking the store.
    pub fn fetch(
        &self,
        url: &Url,
        pattern: bool,
        pin: Option<&str>,
    ) -> Result<Fetched, StoreError> {
        let pin = pin.map(str::to_ascii_lowercase);
        let remembered = self.remembered(url);
        // Only a blob this URL itself resolved to: a pin alone must not reach a blob
        // another plugin fetched from a store this one cannot read.
        if let Some(copy) = &remembered
            && pin.as_deref() == Some(copy.sha256.as_str())
        {
            self.metrics.cache_hits.inc();
            touch(&self.blob(copy));
            return Ok(copy.clone());
        }
        let store_error = |source| StoreError::Store {
            url: url.to_string(),
            source,
        };
        let (store, path) = self.store_for(url).map_err(store_error)?;
        let meta = match self.block_on(newest(store.clone(), path, pattern)) {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                self.metrics.errors.inc();
                return Err(StoreError::NoMatch {
                    url: url.to_string(),
                });
            }
            Err(source) => {
                self.metrics.errors.inc();
                let missing = matches!(source, object_store::Error::NotFound { .. });
                return match remembered {
                    Some(copy) if !missing => {
                        check_pin(&copy.location, pin.as_deref(), &copy.sha256)?;
                        let error =
                            crate::untrusted::escape_control(&source.to_string()).into_owned();
                        tracing::warn!(%url, %error, location = %copy.location,
                            "model store unreachable; using the cached copy");
                        self.metrics.cache_hits.inc();
                        touch(&self.blob(&copy));
                        Ok(copy)
                    }
                    _ => Err(store_error(source)),
                };
            }
        };
        let location = object_url(url, &meta.location);
        let revision = revision(&meta);
        if let Some(copy) = remembered
            && copy.location == location
            && copy.revision == revision
        {
            check_pin(&location, pin.as_deref(), &copy.sha256).inspect_err(|_| {
                self.metrics.errors.inc();
            })?;
            self.metrics.cache_hits.inc();
            touch(&self.blob(&copy));
            return Ok(copy);
        }
        if meta.size > self.config.max_bytes {
            self.metrics.errors.inc();
            return Err(StoreError::TooLarge {
                url: location,
                size: meta.size,
                cap: self.config.max_bytes,
            });
        }
        let fetched = self
            .download(store, &meta, &location, revision, pin.as_deref())
            .inspect_err(|_| {
                self.metrics.errors.inc();
            })?;
        self.remember(url, &fetched)?;
        self.evict(&fetched.sha256);
        Ok(fetched)
    }

    /// What `url` resolved to last, if its blob is still cached.
    fn remembered(&self, url: &Url) -> Option<Fetched> {
        let text = std::fs::read(self.ref_path(url)).ok()?;
        let copy: Fetched = serde_json::from_slice(&text).ok()?;
        let valid = copy.sha256.len() == 64 && copy.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && self.blob(&copy).is_file()).then_some(copy)
    }

    fn remember(&self, url: &Url, fetched: &Fetched) -> Result<(), StoreError> {
        let path = self.ref_path(url);
        let json = serde_json::to_vec(fetched).expect("a ref serialises");
        write_atomically(&path, &json).map_err(|source| StoreError::Cache { path, source })
    }

    fn download(
        &self,
        store: Arc<dyn ObjectStore>,
        meta: &ObjectMeta,
        location: &str,
        revision: String,
        pin: Option<&str>,
    ) -> Result<Fetched, StoreError> {
        let cache_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Cache { path, source }
        };
        let tmp_dir = self.config.cache_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(cache_error(&tmp_dir))?;
        let tmp = tmp_dir.join(unique_name());
        let start = Instant::now();
        let progress = progress_bar(location, meta.size);
        let written = {
            let file = std::fs::File::create(&tmp).map_err(cache_error(&tmp))?;
            let (object, cap, bar) = (
                meta.location.clone(),
                self.config.max_bytes,
                progress.clone(),
            );
            self.block_on(async move {
                let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                let mut hasher = Sha256::new();
                let mut size = 0u64;
                let mut body = store
                    .get(&object)
                    .await
                    .map_err(Failure::Store)?
                    .into_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(Failure::Store)?;
                    size += chunk.len() as u64;
                    if size > cap {
                        return Err(Failure::TooLarge(size));
                    }
                    hasher.update(&chunk);
                    out.write_all(&chunk).map_err(Failure::Io)?;
                    bar.inc(chunk.len() as u64);
                }
                let file = out.into_inner().map_err(|e| Failure::Io(e.into_error()))?;
                file.sync_all().map_err(Failure::Io)?;
                Ok((hex(&hasher.finalize()), size))
            })
        };
        progress.finish_and_clear();
        let (sha256, size) = match written {
            Ok(done) => done,
            Err(failure) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(match failure {
                    Failure::Store(source) => StoreError::Store {
                        url: location.to_string(),
                        source,
                    },
                    Failure::Io(source) => StoreError::Cache { path: tmp, source },
                    Failure::TooLarge(size) => StoreError::TooLarge {
                        url: location.to_string(),
                        size,
                        cap: self.config.max_bytes,
                    },
                });
            }
        };
        if let Err(e) = check_pin(location, pin, &sha256) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let blob = self.blob_path(&sha256);
        let blobs = self.config.cache_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(cache_error(&blobs))?;
        std::fs::rename(&tmp, &blob).map_err(cache_error(&blob))?;
        let took = start.elapsed();
        self.metrics.downloads.inc();
        self.metrics.download_bytes.inc_by(size);
        self.metrics.download_seconds.observe(took.as_secs_f64());
        tracing::info!(
            location,
            bytes = size,
            millis = took.as_millis() as u64,
            "model downloaded"
        );
        Ok(Fetched {
            location: location.to_string(),
            revision,
            sha256,
        })
    }

    /// Removes the least recently used blobs until the cache fits its cap; `keep`
    /// (the blob just fetched) stays.
    fn evict(&self, keep: &str) {
        let _guard = self.cache_lock.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(entries) = std::fs::read_dir(self.config.cache_dir.join("blobs")) else {
            return;
        };
        let mut blobs: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        blobs.sort();
        for (_, size, path) in blobs {
            if total <= self.config.max_bytes {
                break;
            }
            if path.file_name().is_some_and(|n| n == keep) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
                tracing::info!(blob = %path.display(), bytes = size, "model cache: evicted");
            }
        }
    }

    fn store_for(&self, url: &Url) -> object_store::Result<(Arc<dyn ObjectStore>, ObjectPath)> {
        let (scheme, path) =
            ObjectStoreScheme::parse(url).map_err(|e| object_store::Error::Generic {
                store: "URL",
                source: Box::new(e),
            })?;
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store) = stores.get(url.as_str()) {
            return Ok((store.clone(), path));
        }
        // reqwest's TLS needs a process-wide provider before a client is built;
        // installing one twice is harmless (the first stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        use object_store::aws::AmazonS3ConfigKey as S3;
        use object_store::azure::{AzureConfigKey as Az, MicrosoftAzureBuilder};
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as Gcs};
        // A stalled transfer fails after 30 s without data, not after a fixed total
        // (models are large); a store that is down is given up after two retries.
        let client = [
            (ClientConfigKey::ConnectTimeout, "5 seconds"),
            (ClientConfigKey::ReadTimeout, "30 seconds"),
            (ClientConfigKey::Timeout, "6 hours"),
        ];
        let retry = object_store::RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let store: Arc<dyn ObjectStore> = match scheme {
            ObjectStoreScheme::AmazonS3 => Arc::new(
                client
                    .iter()
                    .fold(s3_from_env(), |b, (k, v)| b.with_config(S3::Client(*k), *v))
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()?,
            ),
            ObjectStoreScheme::GoogleCloudStorage => Arc::new(
                client
                    .iter()
                    .fold(GoogleCloudStorageBuilder::from_env(), |b, (k, v)| {
                        b.with_config(Gcs::Client(*k), *v)
                    })
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()?,
            ),
            ObjectStoreScheme::MicrosoftAzure => Arc::new(
                client
                    .iter()
                    .fold(MicrosoftAzureBuilder::from_env(), |b, (k, v)| {
                        b.with_config(Az::Client(*k), *v)
                    })
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .build()?,
            ),
            _ => {
                // The manifest wrote http:// on purpose (a store inside a cluster).
                let options = client.iter().fold(
                    object_store::ClientOptions::new().with_allow_http(url.scheme() == "http"),
                    |o, (k, v)| o.with_config(*k, *v),
                );
                Arc::new(
                    object_store::http::HttpBuilder::new()
                        .with_url(&url[..url::Position::BeforePath])
                        .with_client_options(options)
                        .with_retry(retry)
                        .build()?,
                )
            }
        };
        stores.insert(url.to_string(), store.clone());
        Ok((store, path))
    }

    /// Runs `future` on the store's runtime and waits for it: callers are blocking
    /// threads (model loads), possibly inside another runtime.
    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("runinfer-store")
                .enable_all()
                .build()
                .expect("cannot start the model store's runtime")
        });
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().expect("the model store's runtime stopped")
    }
}

/// S3's settings from the environment (`AWS_*`). An endpoint the operator wrote
/// as `http://` (MinIO, a store inside the cluster) is meant: plain HTTP is allowed
/// for it without also setting `AWS_ALLOW_HTTP`.
fn s3_from_env() -> object_store::aws::AmazonS3Builder {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let builder = AmazonS3Builder::from_env();
    let http_endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .is_some_and(|endpoint| endpoint.starts_with("http://"));
    if http_endpoint {
        builder.with_allow_http(true)
    } else {
        builder
    }
}

enum Failure {
    Store(object_store::Error),
    Io(std::io::Error),
    TooLarge(u64),
}

/// The object `path` names, or for a pattern the newest object that matches it
/// (latest modification, then name); `None` when nothing matches.
async fn newest(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    pattern: bool,
) -> object_store::Result<Option<ObjectMeta>> {
    if !pattern {
        return store.head(&path).await.map(Some);
    }
    let text = path.as_ref();
    let literal = &text[..text.find(['*', '?', '[']).unwrap_or(text.len())];
    let prefix = literal.rfind('/').map(|i| ObjectPath::from(&literal[..i]));
    let glob = glob::Pattern::new(text).map_err(|e| object_store::Error::Generic {
        store: "pattern",
        source: Box::new(e),
    })?;
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let mut listing = store.list(prefix.as_ref());
    let mut best: Option<ObjectMeta> = None;
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let hidden = meta.location.filename().is_some_and(|n| n.starts_with('.'));
        if hidden || !glob.matches_with(meta.location.as_ref(), options) {
            continue;
        }
        let newer = best.as_ref().is_none_or(|b| {
            (meta.last_modified, meta.location.as_ref()) > (b.last_modified, b.location.as_ref())
        });
        if newer {
            best = Some(meta);
        }
    }
    Ok(best)
}

/// The URL of an object of the store `url` names.
fn object_url(url: &Url, object: &ObjectPath) -> String {
    let mut located = url.clone();
    if matches!(url.scheme(), "http" | "https") || url.host_str().is_some() {
        let keep = match ObjectStoreScheme::parse(url) {
            // `https://account.blob.core.windows.net/container/key`: the container
            // stays in the path.
            Ok((_, path)) => url.path().len() - path.as_ref().len(),
            Err(_) => 1,
        };
        let base = url.path()[..keep.min(url.path().len())]
            .trim_end_matches('/')
            .to_string();
        located.set_path(&format!("{base}/{object}"));
    }
    located.set_query(None);
    located.to_string()
}

fn revision(meta: &ObjectMeta) -> String {
    match &meta.e_tag {
        Some(etag) => format!("etag:{etag}"),
        None => format!(
            "modified:{}:size:{}",
            meta.last_modified.timestamp_micros(),
            meta.size
        ),
    }
}

fn check_pin(location: &str, pin: Option<&str>, sha256: &str) -> Result<(), StoreError> {
    match pin {
        Some(pin) if pin != sha256 => Err(StoreError::Digest {
            url: location.to_string(),
            expected: pin.to_string(),
            actual: sha256.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Marks a blob as just used (its modification time orders the LRU).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}", unique_name()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A name no other writer of this cache (thread or process) uses at the same time.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}.part",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Lower-case hex, as SHA-256 pins are written.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A progress bar on stderr for large downloads when stderr is a terminal
/// (indicatif draws nothing otherwise).
fn progress_bar(location: &str, size: u64) -> indicatif::ProgressBar {
    if size < 16 << 20 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(size),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template"),
    );
    bar.set_message(format!("downloading {location}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_urls_keep_the_bucket_and_drop_the_query() {
        let url = Url::parse("s3://bucket/models/iris-*.onnx").unwrap();
        assert_eq!(
            object_url(&url, &ObjectPath::from("models/iris-2.onnx")),
            "s3://bucket/models/iris-2.onnx"
        );
        let url = Url::parse("https://host:8080/a/b.onnx?token=x").unwrap();
        assert_eq!(
            object_url(&url, &ObjectPath::from("a/b.onnx")),
            "https://host:8080/a/b.onnx"
        );
        let url = Url::parse("https://acct.blob.core.windows.net/models/a/m.onnx").unwrap();
        assert_eq!(
            object_url(&url, &ObjectPath::from("a/m.onnx")),
            "https://acct.blob.core.windows.net/models/a/m.onnx"
        );
    }

    #[test]
    fn operators_confine_each_plugin_to_its_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig {
            cache_dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            allow: Vec::new(),
        };
        let url = |text: &str| Url::parse(text).unwrap();
        let open = ModelStore::new(config.clone(), StoreMetrics::default());
        assert!(open.check_allowed("a", &url("s3://any/m.onnx")).is_ok());

        config.allow = vec![
            "s3://models/{plugin}/".into(),
            "https://hub.example/".into(),
        ];
        let store = ModelStore::new(config, StoreMetrics::default());
        assert!(
            store
                .check_allowed("a", &url("s3://models/a/m.onnx"))
                .is_ok()
        );
        assert!(
            store
                .check_allowed("a", &url("https://hub.example/x/m.onnx"))
                .is_ok()
        );
        for refused in [
            "s3://models/b/m.onnx",
            "s3://models/ab/m.onnx",
            // Dot segments are resolved before the comparison.
            "s3://models/a/../b/m.onnx",
            "s3://models/a/%2e%2e/b/m.onnx",
            "https://hub.example.evil/m.onnx",
        ] {
            let err = store.check_allowed("a", &url(refused)).unwrap_err();
            assert!(
                err.to_string()
                    .contains("s3://models/a/, https://hub.example/"),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn eviction_removes_the_least_recently_used_blobs_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::new(
            StoreConfig {
                cache_dir: dir.path().to_path_buf(),
                max_bytes: 25,
                allow: Vec::new(),
            },
            StoreMetrics::default(),
        );
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let now = SystemTime::now();
        for (i, name) in ["old", "mid", "new"].iter().enumerate() {
            let path = blobs.join(name);
            std::fs::write(&path, [0u8; 10]).unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(now - Duration::from_secs(100 - i as u64 * 10))
                .unwrap();
        }
        // "old" is the least recent, but it is the one just fetched: "mid" goes.
        store.evict("old");
        let left: std::collections::BTreeSet<String> = std::fs::read_dir(&blobs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["new", "old"].map(String::from).into());
    }
}
