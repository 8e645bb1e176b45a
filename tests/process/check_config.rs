//! `licensing-gateway check-config` as an operator runs it: against the
//! configuration a running `licensing-gateway sandbox` wrote.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::sandbox_process::SandboxProcess;

fn check_config(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_licensing-gateway"))
        .arg("check-config")
        .arg("--config")
        .arg(config)
        .env_clear()
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn the_sandbox_configuration_passes_and_a_broken_one_fails_with_one_line_per_problem() {
    // Arrange: the configuration the sandbox wrote, and a broken copy
    let gateway = SandboxProcess::start(&[]).await;
    // The sandbox names its files by their resolved paths.
    let dir = gateway.dir().canonicalize().expect("sandbox dir");
    let valid = dir.join("gateway.toml");
    let broken = dir.join("broken.toml");
    let text = std::fs::read_to_string(&valid)
        .expect("config")
        .replace(
            &dir.join("ca.pem").display().to_string(),
            &dir.join("server.pem").display().to_string(),
        )
        .replace("[ledger]\nurl = ", "[ledger]\nurl = \"mysql://db\"\n# ")
        + "\n[admin]\naddr = \"not-an-address\"\n";
    std::fs::write(&broken, text).expect("write");

    // Act
    let ok = check_config(&valid);
    let failed = check_config(&broken);
    let missing = check_config(&dir.join("nope.toml"));

    // Assert
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "configuration is valid\n"
    );
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.starts_with("invalid configuration (3 problems):"),
        "{stderr}"
    );
    for expected in ["is not a CA", "ledger.url", "admin.addr"] {
        assert_eq!(
            stderr
                .lines()
                .filter(|line| line.contains(expected))
                .count(),
            1,
            "{expected:?} once in {stderr}"
        );
    }
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    gateway.stop();
}

#[test]
fn serve_logs_the_configuration_warnings_at_start_up() {
    // Arrange: a public-only gateway whose admin listener is on every interface.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[public]\naddr = \"127.0.0.1:0\"\n\n[internal]\nenabled = false\n\n\
         [sign_up]\nenabled = false\n\n[admin]\naddr = \"0.0.0.0:0\"\n\n\
         [cryptlex]\nbase_url = \"http://127.0.0.1:9\"\naccount_alias = \"acme\"\n",
    )
    .expect("write");

    // Act: start it and read its log until the warning shows (or 30 s pass).
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_licensing-gateway"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = gateway.stdout.take().expect("piped stdout");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut before = Vec::new();
    let warning = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("admin.addr 0.0.0.0:0") => break Some(line),
            Ok(line) => before.push(line),
            Err(_) => break None,
        }
    };
    let _ = gateway.kill();
    let _ = gateway.wait();

    // Assert
    let warning = warning.unwrap_or_else(|| panic!("no admin.addr warning in {before:#?}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("without credentials"), "{warning}");
}
