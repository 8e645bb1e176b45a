//! `licensing-gateway sandbox` as a child process on port 0: reading the real
//! ports from its banner, capturing everything it prints, and stopping it
//! gracefully.
//!
//! Everything is bounded: the banner and the health check are awaited for at
//! most [`STARTUP_TIMEOUT`], and the child is killed when the guard is
//! dropped.

use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A `licensing-gateway sandbox` child process; killed on drop.
pub struct SandboxProcess {
    child: Child,
    /// The sandbox directory (PKI, PAT file, ledger); removed on drop.
    pub dir: tempfile::TempDir,
    /// The public listener (plaintext gRPC + gRPC-Web).
    pub public: SocketAddr,
    /// The internal mutual-TLS listener.
    pub internal: SocketAddr,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SandboxProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxProcess")
            .field("pid", &self.child.id())
            .field("public", &self.public)
            .field("internal", &self.internal)
            .finish_non_exhaustive()
    }
}

impl SandboxProcess {
    /// Starts the binary as
    /// `licensing-gateway sandbox --dir <tempdir> --public-addr 127.0.0.1:0
    /// --internal-addr 127.0.0.1:0 --cryptlex-addr 127.0.0.1:0` with `env`
    /// added, and waits until its banner is out and health says SERVING.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_licensing-gateway"));
        command
            .arg("sandbox")
            .arg("--dir")
            .arg(dir.path())
            .args(["--public-addr", "127.0.0.1:0"])
            .args(["--internal-addr", "127.0.0.1:0"])
            .args(["--cryptlex-addr", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .env_remove("LICENSING_GATEWAY_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The developer's own overrides must not leak into the test.
        for (key, _) in std::env::vars() {
            if key.starts_with("LICENSING_GATEWAY__") {
                command.env_remove(key);
            }
        }
        // Tests run in parallel: no fixed admin port.
        command.env("LICENSING_GATEWAY__ADMIN__ADDR", "127.0.0.1:0");
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("spawn licensing-gateway");

        let output = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let readers = vec![
            capture(stdout, Arc::clone(&output), Some(lines_tx)),
            capture(stderr, Arc::clone(&output), None),
        ];

        let mut process = SandboxProcess {
            child,
            dir,
            public: "0.0.0.0:0".parse().expect("addr"),
            internal: "0.0.0.0:0".parse().expect("addr"),
            output,
            readers,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (public, internal) = process.read_banner(&lines_rx, deadline);
        process.public = public;
        process.internal = internal;
        process.wait_until_serving(deadline).await;
        process
    }

    /// Parses the listener addresses out of the banner on stdout:
    /// `public (gRPC + gRPC-Web) : http://127.0.0.1:PORT` and
    /// `internal (mutual TLS)    : https://localhost:PORT`.
    fn read_banner(
        &mut self,
        lines: &mpsc::Receiver<String>,
        deadline: Instant,
    ) -> (SocketAddr, SocketAddr) {
        let mut public = None;
        let mut internal = None;
        while public.is_none() || internal.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = after(&line, "public (gRPC + gRPC-Web)", "http://") {
                        public = Some(rest.parse::<SocketAddr>().unwrap_or_else(|e| {
                            panic!("bad public address in banner line {line:?}: {e}")
                        }));
                    } else if let Some(rest) = after(&line, "internal (mutual TLS)", "https://") {
                        let port = rest
                            .rsplit(':')
                            .next()
                            .and_then(|port| port.parse::<u16>().ok())
                            .unwrap_or_else(|| panic!("bad internal address in {line:?}"));
                        internal = Some(SocketAddr::from(([127, 0, 0, 1], port)));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.fail("stdout closed before the banner was complete")
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("exited with {status} before the banner"));
            }
            if Instant::now() >= deadline {
                self.fail("no complete banner within the start-up timeout");
            }
        }
        (public.expect("public"), internal.expect("internal"))
    }

    /// Polls the standard health check until the gateway says SERVING.
    async fn wait_until_serving(&mut self, deadline: Instant) {
        let url = format!("http://{}", self.public);
        loop {
            let attempt = async {
                let channel = tonic::transport::Endpoint::from_shared(url.clone())
                    .expect("uri")
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(2))
                    .connect()
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map_err(|e| format!("check: {e}"))?
                    .into_inner()
                    .status;
                Ok::<i32, String>(status)
            };
            let last = match attempt.await {
                Ok(status) if status == ServingStatus::Serving as i32 => return,
                Ok(status) => format!("status {status}"),
                Err(error) => error,
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("exited with {status} while waiting for SERVING"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("health never said SERVING (last: {last})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The sandbox directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `http://127.0.0.1:PORT` of the public listener.
    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// `https://127.0.0.1:PORT` of the internal listener (its certificate
    /// names `localhost`, 127.0.0.1 and ::1).
    pub fn internal_url(&self) -> String {
        format!("https://{}", self.internal)
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn output_so_far(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("output lock")).into_owned()
    }

    /// Stops the process with SIGTERM (graceful shutdown; SIGKILL after
    /// 10 s), waits for its output to end, and returns all of it.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.output_so_far()
    }

    #[track_caller]
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        panic!(
            "licensing-gateway sandbox: {why}; its output:\n{}",
            self.output_so_far()
        );
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text after `scheme` on a banner line that mentions `label`.
fn after<'line>(line: &'line str, label: &str, scheme: &str) -> Option<&'line str> {
    if !line.contains(label) {
        return None;
    }
    let start = line.find(scheme)? + scheme.len();
    Some(line[start..].trim())
}

/// Copies `stream` into `sink`, forwarding each line to `lines` if given.
fn capture<R: Read + Send + 'static>(
    stream: R,
    sink: Arc<Mutex<Vec<u8>>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    sink.lock().expect("output lock").extend_from_slice(&line);
                    if let Some(lines) = &lines {
                        let _ = lines.send(String::from_utf8_lossy(&line).into_owned());
                    }
                }
            }
        }
    })
}
