//! The `runinfer` command line: one module per command (`run`, `serve`, and `list`
//! with `inspect` in `plugins`); what they share is here.

mod plugins;
mod run;
mod serve;

use anyhow::Result;

/// Examples are decoded on the reader thread, their inferences made on a worker
/// thread and freed by the writer: glibc's allocator pays for every such cross-thread
/// free (arena locks, consolidation) — a fifth of `run`'s CPU on a small model.
/// mimalloc frees them into the owning thread's heap without a lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Args, Parser, Subcommand};
use run::RunArgs;
use runinfer::compile::CompileCache;
use runinfer::model::{BackendKind, OnnxruntimeConfig};
use runinfer::{HandlerPriority, Host, HostConfig, PoolingLimits};
use serve::ServeArgs;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Run model handlers compiled to WebAssembly components.
#[derive(Parser)]
#[command(name = "runinfer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a plugin over JSONL examples: one prediction per line on stdout (or
    /// --output), failures to the dead letters, a summary on stderr.
    Run(Box<RunArgs>),
    /// List the plugins of the plugin root and whether each loads.
    List(CommonArgs),
    /// Serve the plugins of the plugin root over the Open Inference Protocol v2 (HTTP),
    /// watching the root for new plugins and models.
    Serve(ServeArgs),
    /// Show a plugin's handler info, effective batching, models and load times (JSON).
    Inspect {
        /// Plugin name (its directory or its manifest name).
        plugin: String,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Args)]
pub(crate) struct CommonArgs {
    /// Plugin root directory [default: ./plugins if present, else the bundled plugins]
    #[arg(long, env = "RUNINFER_PLUGINS")]
    pub(crate) plugins: Option<PathBuf>,
    /// Compile cache directory [default: $RUNINFER_CACHE_DIR, $XDG_CACHE_HOME/runinfer or ~/.cache/runinfer]
    #[arg(long)]
    pub(crate) cache_dir: Option<PathBuf>,
    /// Compile components at every start instead of caching them.
    #[arg(long, conflicts_with = "cache_dir")]
    pub(crate) no_compile_cache: bool,
    /// Most per-key model sets ([[key_models]]) loaded at once; the least recently
    /// used is evicted.
    #[arg(long, default_value_t = 8)]
    pub(crate) max_key_model_sets: usize,
    /// Instantiate handlers from wasmtime's pooling allocator (pre-reserved slots for
    /// this many instances) instead of allocating on demand.
    #[arg(long, value_name = "INSTANCES")]
    pub(crate) pooling: Option<u32>,
    /// Wasm stack per call, in KiB (one engine serves all plugins).
    #[arg(long, default_value_t = 512)]
    pub(crate) max_wasm_stack_kb: usize,
    /// Engine for models whose plugin.toml entry names none: tract (built in) or
    /// onnxruntime (its shared library loaded at run time).
    #[arg(long, env = "RUNINFER_BACKEND", default_value_t = BackendKind::Tract)]
    pub(crate) backend: BackendKind,
    /// The onnxruntime shared library [default: $ORT_DYLIB_PATH, target/onnxruntime/
    /// as scripts/install-onnxruntime.sh leaves it, then the system's libonnxruntime.so]
    #[arg(long, env = "RUNINFER_ONNXRUNTIME_LIB", value_name = "PATH")]
    pub(crate) onnxruntime_lib: Option<PathBuf>,
    /// Threads one onnxruntime call may use (instances already run in parallel;
    /// 0 lets onnxruntime choose).
    #[arg(long, default_value_t = 1)]
    pub(crate) onnxruntime_threads: usize,
    /// onnxruntime sessions per model at most, shared by the instances that run it
    /// (each holds a copy of the weights) [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub(crate) onnxruntime_sessions: Option<usize>,
    /// Handler calls running at once across all plugins: the core slots, shared
    /// between tenants by weighted fair queuing [default: the number of cores]
    #[arg(long, value_name = "N")]
    pub(crate) workers: Option<usize>,
    /// OS priority of the threads that run handlers: normal, a nice value 1-19, or
    /// idle (Linux SCHED_IDLE: handlers give way at once to the host's own threads
    /// and to the other processes of the server's cgroup or session)
    #[arg(long, default_value_t = HandlerPriority::Normal, value_name = "PRIORITY")]
    pub(crate) handler_priority: HandlerPriority,
    /// Where remote models (s3://, gs://, az://, http(s)://) are cached, shared by
    /// plugins and restarts [default: models/ in the compile cache directory]
    #[arg(long, env = "RUNINFER_MODEL_CACHE", value_name = "DIR")]
    pub(crate) model_cache_dir: Option<PathBuf>,
    /// Size of the model cache in MiB; the least recently used models go past it.
    #[arg(long, default_value_t = 20480, value_name = "MIB")]
    pub(crate) model_cache_mb: u64,
    /// Only these URL prefixes may plugins name as models (repeat, or separate by
    /// commas); `{plugin}` stands for the plugin's name, e.g.
    /// `s3://models/{plugin}/` [default: any URL of a known store]
    #[arg(
        long,
        env = "RUNINFER_MODEL_URL_ALLOW",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub(crate) model_url_allow: Vec<String>,
}

impl CommonArgs {
    fn plugin_root(&self) -> PathBuf {
        if let Some(root) = &self.plugins {
            return root.clone();
        }
        let local = PathBuf::from("plugins");
        if local.join("iris").join("plugin.toml").exists() || !bundled_plugins().exists() {
            return local;
        }
        bundled_plugins()
    }

    fn host(&self) -> Result<Host> {
        let compile_cache = if self.no_compile_cache {
            None
        } else {
            self.cache_dir
                .clone()
                .or_else(CompileCache::default_dir)
                .map(CompileCache::new)
        };
        let mut onnxruntime = OnnxruntimeConfig::default();
        onnxruntime.library = self.onnxruntime_lib.clone();
        onnxruntime.threads = self.onnxruntime_threads;
        if let Some(sessions) = self.onnxruntime_sessions {
            onnxruntime.max_sessions = sessions;
        }
        let mut config = HostConfig::default();
        config.compile_cache = compile_cache;
        config.max_key_model_sets = self.max_key_model_sets.max(1);
        config.max_wasm_stack = self.max_wasm_stack_kb.max(64) * 1024;
        config.pooling = self.pooling.map(|instances| {
            let mut pooling = PoolingLimits::default();
            pooling.instances = instances.max(1);
            pooling
        });
        config.default_backend = self.backend;
        config.workers = self.workers.unwrap_or(0);
        config.handler_priority = self.handler_priority;
        config.onnxruntime = onnxruntime;
        if let Some(dir) = self
            .model_cache_dir
            .clone()
            .or_else(|| self.cache_dir.as_ref().map(|d| d.join("models")))
        {
            config.model_store.cache_dir = dir;
        }
        config.model_store.max_bytes = self.model_cache_mb.max(1) << 20;
        config.model_store.allow = self.model_url_allow.clone();
        Host::new(config)
    }
}

/// The plugins bundled with the source tree this binary was built from.
pub(crate) fn bundled_plugins() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/plugins"))
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNINFER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match real_main() {
        Ok(code) => code,
        // `runinfer run ... | head` is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runinfer: error: {}", error_text(&e));
            std::process::ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: the library's errors
/// already say their cause in their message, anyhow's context does not.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn real_main() -> Result<std::process::ExitCode> {
    match Cli::parse().command {
        Command::Run(args) => run::run(*args),
        Command::List(common) => plugins::list(common),
        Command::Serve(args) => serve::serve(args),
        Command::Inspect { plugin, common } => plugins::inspect(&plugin, common),
    }
}

/// Batching flags get the same caps as a manifest's `[batching]`.
pub(crate) fn check_batch_flags(flags: &[(&str, Option<u32>)]) -> Result<()> {
    for (key, value) in flags {
        runinfer::untrusted::check_batching_value(key, *value).map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}
