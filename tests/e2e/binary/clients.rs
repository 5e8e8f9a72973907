//! `runinfer serve` as a process, driven by clients nobody here wrote: Triton's
//! `tritonclient[http]` and `tritonclient[grpc]`, and `prometheus_client`'s parser (tests/python/oip_client.py,
//! in a venv that scripts/python-env.sh installs from PyPI). Then SIGTERM.

use super::{bundled_copy, plugin_copy, python_env, root, runinfer};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The venv of the Python clients (tritonclient, prometheus_client, onnxruntime).
fn client_python() -> PathBuf {
    python_env("requirements.txt", "py-clients")
}

/// A child process killed when dropped: a test that panics (a venv that cannot be
/// installed, a failed assertion) must not leave its server running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `runinfer serve` on a free port, with its stderr read until it says where.
struct Server {
    child: KillOnDrop,
    address: String,
    /// Where the OIP gRPC service listens.
    grpc: String,
    log: String,
    drain: std::thread::JoinHandle<String>,
}

impl Server {
    fn start(extra: &[&std::ffi::OsStr]) -> Server {
        let mut child = KillOnDrop(
            runinfer()
                .args(["serve", "--port", "0", "--no-watch"])
                .args(extra)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // "runinfer: OIP gRPC (...) on 127.0.0.1:PORT", then
        // "runinfer: serving <root> on http://127.0.0.1:PORT"
        let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
        let mut log = String::new();
        let mut grpc = None;
        let address = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("runinfer serve exited before listening:\n{log}");
            }
            log.push_str(&line);
            if let Some((_, address)) = line.trim().rsplit_once(" on http://") {
                break address.to_string();
            }
            if line.contains("OIP gRPC") {
                grpc = line.trim().rsplit_once(" on ").map(|(_, a)| a.to_string());
            }
        };
        let grpc = grpc.unwrap_or_else(|| panic!("no gRPC address in:\n{log}"));
        let drain = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
            rest
        });
        Server {
            child,
            address,
            grpc,
            log,
            drain,
        }
    }

    /// Runs a client script with the server's address and the repository root, then
    /// stops the server; the script must succeed and end with "ok". Returns what the
    /// script printed and the server's log.
    fn run_client(self, script: &str) -> (String, String) {
        self.run_client_with(script, &[])
    }

    /// [`Server::run_client`] with more arguments for the script.
    fn run_client_with(self, script: &str, extra: &[&std::ffi::OsStr]) -> (String, String) {
        let address = self.address.clone();
        self.run_clients(&[(script, address.as_str(), extra)])
    }

    /// Runs client scripts one after the other, each with its address (HTTP or
    /// gRPC), the repository root and its arguments, then stops the server; each
    /// must succeed and end with "ok". Returns what they printed and the server's log.
    fn run_clients(self, clients: &[(&str, &str, &[&std::ffi::OsStr])]) -> (String, String) {
        let mut printed = String::new();
        let mut failed = None;
        for (script, address, extra) in clients {
            let client = Command::new(client_python())
                .arg(root().join(script))
                .arg(address)
                .arg(root())
                .args(*extra)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&client.stdout).into_owned();
            printed.push_str(&stdout);
            if !client.status.success() || !stdout.ends_with("ok\n") {
                failed = Some(format!(
                    "{script} failed:\n{stdout}\n{}",
                    String::from_utf8_lossy(&client.stderr)
                ));
                break;
            }
        }
        let log = self.stop();
        if let Some(failure) = failed {
            panic!("{failure}\nserver log:\n{log}");
        }
        println!("{printed}");
        (printed, log)
    }

    /// SIGTERM, which must end the process with success; returns its whole stderr.
    fn stop(mut self) -> String {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.0.wait().unwrap();
        let log = self.log + &self.drain.join().unwrap();
        assert!(status.success(), "serve exited with {status}:\n{log}");
        log
    }
}

#[test]
fn tritonclient_and_prometheus_client_against_runinfer_serve() {
    Server::start(&[]).run_client("tests/python/oip_client.py");
}

#[test]
fn tritonclient_grpc_against_runinfer_serve() {
    let plugins = tempfile::tempdir().unwrap();
    bundled_copy(&["iris", "text-stats"], plugins.path());
    plugin_copy(
        &root().join("plugins/onnx-tensor"),
        "onnx-tensor.wasm",
        &plugins.path().join("onnx-tensor"),
        "name = \"onnx-tensor\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = \"models/tiny_mlp.onnx\"\n[[key_models]]\nkeys = [\"de\"]\nmodels = { model = \"models/tiny_mlp_v2.onnx\" }\n",
    );
    let slow = plugins.path().join("slow");
    plugin_copy(
        &root().join("tests/plugins/hostile"),
        "hostile.wasm",
        &slow,
        "name = \"slow\"\ncomponent = \"hostile.wasm\"\n[limits]\ninstances = 1\ntimeout_ms = 60000\n[batching]\nmax_batch_size = 1\n[grants]\ndirs = [{ path = \"signal\", guest = \"/signal\" }]\n",
    );
    std::fs::create_dir_all(slow.join("signal")).unwrap();
    let server = Server::start(&["--plugins".as_ref(), plugins.path().as_os_str()]);
    let (grpc, http) = (server.grpc.clone(), server.address.clone());
    let (stdout, _) = server.run_clients(&[(
        "tests/python/grpc_client.py",
        &grpc,
        &[http.as_ref(), plugins.path().as_os_str()],
    )]);
    assert!(
        stdout.contains("rows dropped after the deadline"),
        "{stdout}"
    );
}

#[test]
fn tritonclient_reads_the_metadata_and_sends_three_named_inputs() {
    let files = crate::multi_input::example_files();
    let plugins = tempfile::tempdir().unwrap();
    let tensor = root().join("plugins/onnx-tensor");
    for backend in ["tract", "onnxruntime"] {
        let dir = plugins.path().join(format!("minilm-{backend}"));
        plugin_copy(
            &tensor,
            "onnx-tensor.wasm",
            &dir,
            &format!(
                "name = \"minilm-{backend}\"\ncomponent = \"onnx-tensor.wasm\"\n[models]\nmodel = {{ path = \"net.onnx\", backend = \"{backend}\" }}\n"
            ),
        );
        for old in std::fs::read_dir(dir.join("models")).unwrap() {
            std::fs::remove_file(old.unwrap().path()).unwrap();
        }
        std::fs::copy(&files.model, dir.join("net.onnx")).unwrap();
    }
    let library = crate::onnxruntime::library();
    let server = Server::start(&[
        "--plugins".as_ref(),
        plugins.path().as_os_str(),
        "--onnxruntime-lib".as_ref(),
        library.as_os_str(),
    ]);
    let args: &[&std::ffi::OsStr] = &[
        files.examples.as_os_str(),
        files.reference.as_os_str(),
        "minilm-tract".as_ref(),
        "minilm-onnxruntime".as_ref(),
    ];
    let (http, grpc) = (server.address.clone(), format!("grpc://{}", server.grpc));
    let script = "tests/python/multi_input_client.py";
    let (stdout, _) = server.run_clients(&[(script, &http, args), (script, &grpc, args)]);
    for expected in [
        "minilm-onnxruntime: 14 examples x 2 encodings",
        "minilm-onnxruntime: 14 examples x 1 encodings",
        "minilm-tract: 14 examples x 1 encodings",
    ] {
        assert!(stdout.contains(expected), "{stdout}");
    }
}

#[test]
fn a_hostile_tenant_cannot_take_down_the_server_the_scrape_or_its_neighbour() {
    let plugins = tempfile::tempdir().unwrap();
    let iris = root().join("plugins/iris");
    plugin_copy(
        &iris,
        "iris.wasm",
        &plugins.path().join("iris"),
        &std::fs::read_to_string(iris.join("plugin.toml")).unwrap(),
    );
    let hostile = root().join("tests/plugins/hostile");
    for (dir, args) in [
        ("hostile", ""),
        ("batch-bomb", "max_batch_size = \"4000000000\""),
        ("ns-forge", "namespace = \"x_total 1\\nforged_total 9\""),
        ("ns-thief", "namespace = \"iris\""),
    ] {
        plugin_copy(
            &hostile,
            "hostile.wasm",
            &plugins.path().join(dir),
            &format!(
                "name = \"{dir}\"\ncomponent = \"hostile.wasm\"\n[limits]\ninstances = 1\nmax_tensor_mb = 32\n[args]\n{args}\n"
            ),
        );
    }
    let (_, log) = Server::start(&["--plugins".as_ref(), plugins.path().as_os_str()])
        .run_client("tests/python/hostile_client.py");
    // Each refusal is logged with its reason, on one line.
    for (plugin, reason) in [
        (
            "batch-bomb",
            "max_batch_size = 4000000000 is more than the host allows (65536)",
        ),
        ("ns-forge", "invalid metrics namespace"),
        ("ns-thief", "belongs to another plugin"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(plugin) && l.contains(reason)),
            "{plugin}: {reason}\n{log}"
        );
    }
    assert!(log.len() < 256 * 1024, "{} bytes of server log", log.len());
    assert!(!log.contains('\u{1b}'), "a terminal escape reached the log");
}
