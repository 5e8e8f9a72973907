//! `runinfer serve` as a process, driven by clients nobody here wrote: Triton's
//! `tritonclient[http]` and `prometheus_client`'s parser (tests/python/oip_client.py,
//! in a venv that scripts/python-env.sh installs from PyPI). Then SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python, set up on first use; a failure to install is a test failure.
fn client_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("scripts/python-env.sh"))
        .arg(root().join("tests/python/requirements.txt"))
        .arg(root().join("target/py-clients"))
        .output()
        .expect("bash runs scripts/python-env.sh");
    assert!(
        out.status.success(),
        "installing the Python clients failed (tests/python/requirements.txt from PyPI):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn tritonclient_and_prometheus_client_against_runinfer_serve() {
    let python = client_python();
    let mut server = Command::new(env!("CARGO_BIN_EXE_runinfer"))
        .args(["serve", "--port", "0", "--no-watch"])
        .current_dir(root())
        .env(
            "RUNINFER_CACHE_DIR",
            root().join("target/test-compile-cache"),
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // "runinfer: serving <root> on http://127.0.0.1:PORT"
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut log = String::new();
    let address = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("runinfer serve exited before listening:\n{log}");
        }
        log.push_str(&line);
        if let Some((_, address)) = line.trim().rsplit_once(" on http://") {
            break address.to_string();
        }
    };
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });

    let client = Command::new(&python)
        .arg(root().join("tests/python/oip_client.py"))
        .arg(&address)
        .arg(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&client.stdout);

    // Graceful shutdown: SIGTERM ends the process with success.
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait().unwrap();
    let rest = drain.join().unwrap();
    assert!(
        client.status.success(),
        "client failed:\n{stdout}\n{}\nserver log:\n{log}{rest}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(stdout.ends_with("ok\n"), "{stdout}");
    assert!(status.success(), "serve exited with {status}:\n{log}{rest}");
    println!("{stdout}");
}
