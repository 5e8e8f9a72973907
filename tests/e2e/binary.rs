//! The `runinfer` binary end to end, as a user runs it: the CLI, `runinfer serve`
//! driven by clients nobody here wrote, the Beam bridge, and Spark and Ray. The
//! helpers these modules share are below.

mod beam;
mod cli;
mod clients;
mod real_handlers;
mod scale_out;
mod stores;

pub(crate) use runinfer_e2e::root;
use std::path::PathBuf;
use std::process::Command;

/// The `runinfer` binary of this build, run from the repository root with the
/// tests' compile cache.
fn runinfer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runinfer"));
    cmd.current_dir(root()).env(
        "RUNINFER_CACHE_DIR",
        root().join("target/test-compile-cache"),
    );
    cmd
}

/// Runs a reference script of `tests/python` in the clients' venv (onnxruntime,
/// numpy, Pillow) with `args`, and returns the JSONL it prints.
pub(crate) fn python_reference(script: &str, args: &[&std::ffi::OsStr]) -> Vec<serde_json::Value> {
    let out = Command::new(python_env("requirements.txt", "py-clients"))
        .arg(root().join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    runinfer_e2e::parse_jsonl(&out.stdout)
}

/// The python of a venv with `requirements` (a file of tests/python) installed from
/// PyPI by scripts/python-env.sh on first use; a failed install fails the test.
pub(crate) fn python_env(requirements: &str, venv: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("scripts/python-env.sh"))
        .arg(root().join("tests/python").join(requirements))
        .arg(root().join("target").join(venv))
        .output()
        .expect("bash runs scripts/python-env.sh");
    assert!(
        out.status.success(),
        "installing tests/python/{requirements} from PyPI failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Copies a plugin directory's files (not its sources) into `to`, with `manifest`.
pub(crate) fn plugin_copy(
    from: &std::path::Path,
    component: &str,
    to: &std::path::Path,
    manifest: &str,
) {
    std::fs::create_dir_all(to.join("models")).unwrap();
    std::fs::copy(from.join(component), to.join(component)).expect("built by host/build.rs");
    if let Ok(models) = std::fs::read_dir(from.join("models")) {
        for model in models {
            let model = model.unwrap();
            std::fs::copy(model.path(), to.join("models").join(model.file_name())).unwrap();
        }
    }
    std::fs::write(to.join("plugin.toml"), manifest).unwrap();
}

/// Copies bundled plugins (`plugins/<name>`, with their own manifests) into `to`.
pub(crate) fn bundled_copy(names: &[&str], to: &std::path::Path) {
    for name in names {
        let from = root().join("plugins").join(name);
        let manifest = std::fs::read_to_string(from.join("plugin.toml")).unwrap();
        plugin_copy(&from, &format!("{name}.wasm"), &to.join(name), &manifest);
    }
}

/// Runs a job script of `tests/python` in the venv of `requirements` with the
/// repository root, this build's binary and `args`, with the tests' compile cache;
/// it must succeed and end with "ok". Prints what it printed.
pub(crate) fn run_python_job(
    requirements: &str,
    venv: &str,
    script: &str,
    args: &[&std::ffi::OsStr],
) {
    // The job's temporary files (Beam's shared-model address files, Ray's and
    // Spark's scratch) go in a directory of its own, removed when it ends; short,
    // since Ray's Unix sockets live under it.
    let temp = tempfile::Builder::new()
        .prefix("job")
        .tempdir_in("/tmp")
        .unwrap();
    let out = Command::new(python_env(requirements, venv))
        .env("TMPDIR", temp.path())
        .arg(root().join("tests/python").join(script))
        .arg(root())
        .arg(env!("CARGO_BIN_EXE_runinfer"))
        .args(args)
        .env(
            "RUNINFER_CACHE_DIR",
            root().join("target/test-compile-cache"),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
}
