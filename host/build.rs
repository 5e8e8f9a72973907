//! Builds the bundled guest plugins (`plugins/*`) and the test plugins
//! (`tests/plugins/*`) to wasm32-wasip2 components and puts each next to its sources
//! (`<dir>/<dir>.wasm`), so that `cargo run` and `cargo test` need no other step.
//! Skipped outside this repository, or with `RUNINFER_SKIP_GUEST_BUILD=1`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    println!("cargo:rerun-if-env-changed=RUNINFER_SKIP_GUEST_BUILD");
    let host_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = host_dir.parent().expect("host/ has a parent").to_path_buf();
    let plugins = root.join("plugins");
    if !plugins.join("Cargo.toml").exists() || env::var_os("RUNINFER_SKIP_GUEST_BUILD").is_some() {
        return;
    }

    for path in [
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let mut members = guest_members(&plugins);
    members.extend(guest_members(&root.join("tests").join("plugins")));
    for member in &members {
        // Not the whole directory: the built component is written into it.
        println!("cargo:rerun-if-changed={}", member.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            member.join("Cargo.toml").display()
        );
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_target();
    let target_dir = root.join("target").join("guests");
    let mut command = Command::new(&cargo);
    command
        .current_dir(&plugins)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings are for the host, not for wasm guests.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            )
        {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run `{cargo}` to build the guest plugins: {e}"));
    if !status.success() {
        panic!(
            "building the guest plugins in {} failed ({status})",
            plugins.display()
        );
    }

    let out = target_dir.join(TARGET).join("release");
    for member in &members {
        let name = member
            .file_name()
            .expect("a crate directory")
            .to_string_lossy();
        let built = out.join(format!("{}.wasm", name.replace('-', "_")));
        copy_if_changed(&built, &member.join(format!("{name}.wasm")));
    }
}

/// Guest crates: the directories under `dir` with a Cargo.toml.
fn guest_members(dir: &Path) -> Vec<PathBuf> {
    let mut members: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.join("Cargo.toml").exists())
        .collect();
    members.sort();
    members
}

/// `rust-toolchain.toml` names the wasm target, but rustup only installs it when it
/// installs the toolchain; on a machine that already had the toolchain, add it here.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let installed = sysroot
        .as_deref()
        .is_some_and(|s| Path::new(s).join("lib/rustlib").join(TARGET).exists());
    if installed {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        panic!(
            "the {TARGET} target is not installed and `rustup target add {TARGET}` failed \
             ({status:?}); install it, then build again"
        );
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() == Some(new.as_slice()) {
        return;
    }
    // Write then rename, so a running host never sees half a component.
    let tmp = to.with_extension("wasm.tmp");
    std::fs::write(&tmp, &new).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("cannot write {}: {e}", to.display()));
}
