//! Compiling components, with a disk cache so that a second start does not recompile.
//!
//! A cache entry is the engine's serialized code for one component, named by a digest
//! of the component bytes and of the engine's compatibility hash (wasmtime version,
//! target, settings), so an upgrade or a changed setting misses the cache instead of
//! loading incompatible code. Entries are written to a temporary file and renamed.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component's code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompileSource {
    /// Compiled now with Cranelift.
    Compiled,
    /// Loaded from the compile cache.
    Cache,
}

/// How a component was obtained, for reports and tests.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CompileReport {
    /// Compiled or loaded from cache.
    pub source: CompileSource,
    /// Time to get a ready `Component`.
    pub duration: Duration,
}

/// The on-disk cache of compiled components.
#[derive(Clone, Debug)]
pub struct CompileCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into BLAKE3, which (unlike `DefaultHasher`) is stable across
/// Rust releases.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the full digest is used")
    }
}

impl CompileCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// `$RUNINFER_CACHE_DIR`, else `$XDG_CACHE_HOME/runinfer`, else `~/.cache/runinfer`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("RUNINFER_CACHE_DIR") {
            return Some(dir.into());
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(Path::new(&dir).join("runinfer"));
        }
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache").join("runinfer"))
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = Blake3Hasher(blake3::Hasher::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(wasm);
        let key = hasher.0.finalize().to_hex();
        self.dir.join(format!("{}.cwasm", &key[..32]))
    }
}

/// Compiles `wasm`, or loads its code from `cache` when an entry is there.
pub(crate) fn compile(
    engine: &Engine,
    wasm: &[u8],
    cache: Option<&CompileCache>,
) -> wasmtime::Result<(Component, CompileReport)> {
    let start = Instant::now();
    let Some(cache) = cache else {
        let component = Component::new(engine, wasm)?;
        return Ok((component, report(CompileSource::Compiled, start)));
    };
    let entry = cache.entry(engine, wasm);
    if entry.exists() {
        // Safety: the entry was written by `Engine::precompile_component` for an
        // engine with the same compatibility hash; the cache directory belongs to the
        // operator and must not be writable by untrusted parties (see README).
        match unsafe { Component::deserialize_file(engine, &entry) } {
            Ok(component) => return Ok((component, report(CompileSource::Cache, start))),
            Err(e) => tracing::warn!(
                entry = %entry.display(),
                error = %format!("{e:#}"),
                "unusable compile cache entry; recompiling"
            ),
        }
    }
    let code = engine.precompile_component(wasm)?;
    if let Err(e) = write_atomically(&entry, &code) {
        tracing::warn!(dir = %cache.dir.display(), error = %e, "cannot write the compile cache");
    }
    // Safety: `code` was just produced by this engine.
    let component = unsafe { Component::deserialize(engine, &code)? };
    Ok((component, report(CompileSource::Compiled, start)))
}

fn report(source: CompileSource, start: Instant) -> CompileReport {
    CompileReport {
        source,
        duration: start.elapsed(),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .expect("entry has a name")
            .to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
