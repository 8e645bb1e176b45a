//! The outside clients that `scripts/install-test-clients` puts in `.tools/`
//! (`buf` from npm, Python with grpcio), found and run with bounds: every
//! command runs for at most [`COMMAND_TIMEOUT`], and its exit code, stdout and
//! stderr come back as an [`Outcome`].

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds an outside client: `$var` if set, else `default` under the crate
/// root (where `scripts/install-test-clients` puts it). When it is missing,
/// fails loudly under CI (env `CI` or `LGW_REQUIRE_TOOLS` set, as
/// `scripts/test` does) and otherwise prints a SKIPPED line and returns
/// `None`, so a plain `cargo test` still works on a laptop.
pub fn tool(var: &str, default: &str, test: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = match std::env::var_os(var) {
        Some(value) if !value.is_empty() => root.join(value),
        _ => root.join(default),
    };
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{test}: outside client not found at {} (set {var}, or run scripts/install-test-clients; scripts/test does both)",
        path.display()
    );
    let required = |var: &str| std::env::var_os(var).is_some_and(|value| !value.is_empty());
    if required("CI") || required("LGW_REQUIRE_TOOLS") {
        panic!("{why}");
    }
    // Straight to the process's stderr: the test harness captures
    // `eprintln!` of passing tests, and this line must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
    None
}

/// `buf` from npm `@bufbuild/buf` (env `LGW_BUF`).
pub fn buf(test: &str) -> Option<Buf> {
    tool("LGW_BUF", ".tools/npm/node_modules/.bin/buf", test).map(|path| Buf { path })
}

/// Python with grpcio, grpcio-health-checking and grpcio-reflection (env
/// `LGW_PYTHON`).
pub fn python(test: &str) -> Option<PathBuf> {
    tool("LGW_PYTHON", ".tools/venv/bin/python", test)
}

/// What an outside command did.
#[derive(Debug)]
pub struct Outcome {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// stdout as JSON (buf prints the response there).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// buf's JSON error on stderr, without its `-v` lines.
    #[track_caller]
    pub fn error_json(&self) -> serde_json::Value {
        let body: String = self
            .stderr
            .lines()
            .filter(|line| !line.starts_with("buf: "))
            .collect::<Vec<_>>()
            .join("\n");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("stderr is not a JSON error ({e}): {self:#?}"))
    }

    /// Asserts success and returns stdout as JSON.
    #[track_caller]
    pub fn ok_json(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "the command failed: {self:#?}");
        self.json()
    }

    /// Asserts a failed RPC: buf's exit code is the gRPC code << 3, and the
    /// JSON error names the code.
    #[track_caller]
    pub fn assert_rpc_error(&self, code: tonic::Code, name: &str) -> serde_json::Value {
        assert_eq!(
            self.code,
            (code as i32) << 3,
            "expected {name} (exit {}): {self:#?}",
            (code as i32) << 3
        );
        let error = self.error_json();
        assert_eq!(error["code"], name, "{self:#?}");
        error
    }
}

/// Runs `command` to completion, killing it after [`COMMAND_TIMEOUT`].
pub fn run(command: &mut Command) -> Outcome {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(Box::new(stdout));
    let stderr = read(Box::new(stderr));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command:?} did not finish within {COMMAND_TIMEOUT:?}");
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// `buf curl`, scripted by exit code and JSON.
#[derive(Debug, Clone)]
pub struct Buf {
    pub path: PathBuf,
}

impl Buf {
    /// `buf curl <args>` with a connect timeout.
    pub fn curl(&self, args: &[&str]) -> Outcome {
        run(Command::new(&self.path)
            .arg("curl")
            .args(["--connect-timeout", "5"])
            .args(args))
    }
}
