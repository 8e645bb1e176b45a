//! `licensing-gateway check-config` as an operator runs it: against the
//! configuration a running `licensing-gateway sandbox` wrote.

use std::path::Path;
use std::process::{Command, Output};

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
