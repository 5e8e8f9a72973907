//! `component-tools`: what the C, Go and Zig handlers of the tests are built with.
//!
//! ```text
//! component-tools bindgen c|go WIT_DIR WORLD OUT_DIR   wit-bindgen's C or Go bindings
//! component-tools embed WIT_DIR WORLD CORE OUT         the world's type into a core module
//! component-tools new CORE OUT                         a component, with wasmtime's WASI
//!                                                      preview1 reactor adapter
//! ```
//!
//! The same as `wit-bindgen c|go WIT --world WORLD --out-dir OUT_DIR`,
//! `wasm-tools component embed --world WORLD WIT CORE -o OUT` and
//! `wasm-tools component new CORE --adapt wasi_snapshot_preview1=ADAPTER -o OUT`, with
//! their default options.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_bindgen_core::{Files, WorldGenerator};
use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::{Resolve, WorldId};

const USAGE: &str = "usage: component-tools bindgen c|go WIT_DIR WORLD OUT_DIR\n       \
                     component-tools embed WIT_DIR WORLD CORE OUT\n       \
                     component-tools new CORE OUT";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["bindgen", language, wit, world, out] => {
            let generator: Box<dyn WorldGenerator> = match *language {
                "c" => wit_bindgen_c::Opts::default().build(),
                "go" => wit_bindgen_go::Opts::default().build(),
                other => bail!("no bindings for `{other}` (c or go)\n{USAGE}"),
            };
            bindgen(generator, Path::new(wit), world, Path::new(out))
        }
        ["embed", wit, world, core, out] => {
            let (resolve, world) = world_of(Path::new(wit), world)?;
            let mut module = read(core)?;
            embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8, false)?;
            write(out, &module)
        }
        ["new", core, out] => {
            let component = ComponentEncoder::default()
                .validate(true)
                .module(&read(core)?)?
                .adapter(
                    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                    WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
                )?
                .encode()
                .with_context(|| format!("cannot make a component of {core}"))?;
            write(out, &component)
        }
        _ => bail!("{USAGE}"),
    }
}

fn world_of(wit: &Path, world: &str) -> Result<(Resolve, WorldId)> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("cannot read the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[package], Some(world))?;
    Ok((resolve, world))
}

fn bindgen(
    mut generator: Box<dyn WorldGenerator>,
    wit: &Path,
    world: &str,
    out: &Path,
) -> Result<()> {
    let (mut resolve, world) = world_of(wit, world)?;
    let mut files = Files::default();
    generator.generate(&mut resolve, world, &mut files)?;
    for (name, contents) in files.iter() {
        let path: PathBuf = out.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn read(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {path}"))
}

fn write(path: &str, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {path}"))
}
