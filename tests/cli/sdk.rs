//! PocketBase's official JavaScript SDK (npm `pocketbase`, run by Node.js) driving a
//! real `gatehouse serve` process. `tests/sdk/against-pocketbase.sh` runs the same
//! suite against the real PocketBase, so each case is known to encode its behaviour.

use std::path::Path;
use std::process::Command;

use crate::support::{gatehouse, run, stderr, stdout, Server};

const SUPERUSER: (&str, &str) = ("sdk-root@example.com", "sdk-superpass-123");

fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED pocketbase_js_sdk_suite: {reason}"
    );
}

/// Installs the suite's npm packages (pinned by package-lock.json) when missing.
fn install_packages(sdk: &Path) -> Result<(), String> {
    if sdk.join("node_modules/pocketbase").is_dir() && sdk.join("node_modules/eventsource").is_dir()
    {
        return Ok(());
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(sdk)
        .output()
        .map_err(|err| format!("npm: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "npm ci failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn server_command(dir: &Path) -> Command {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = gatehouse(dir);
    command
        .env(
            "GATEHOUSE__DATABASE__URL",
            format!("sqlite://{}/sdk.db?mode=rwc", dir.display()),
        )
        .env("GATEHOUSE__AUTH__SECRET_FILE", dir.join("auth_secret"))
        .env("GATEHOUSE__STATIC__ROOT", repo.join("public"))
        .env("GATEHOUSE__LOG__LEVEL", "warn")
        .env("GATEHOUSE__BATCH__ENABLED", "true");
    for bucket in [
        "LOGIN_PER_IP",
        "LOGIN_PER_ACCOUNT",
        "REGISTER_PER_IP",
        "REQUEST_PER_IP",
        "REQUEST_PER_ACCOUNT",
    ] {
        command.env(
            format!("GATEHOUSE__AUTH__RATE_LIMITS__{bucket}__REQUESTS"),
            "100000",
        );
    }
    command
}

#[tokio::test]
async fn pocketbase_js_sdk_suite_passes_against_gatehouse() {
    if Command::new("node").arg("--version").output().is_err() {
        skip("Node.js is not installed");
        return;
    }
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    install_packages(&sdk).expect("the SDK's npm packages install");

    let dir = tempfile::tempdir().unwrap();
    let upsert =
        run(server_command(dir.path()).args(["superuser", "upsert", SUPERUSER.0, SUPERUSER.1]));
    assert!(upsert.status.success(), "{}", stderr(&upsert));
    let server = Server::start(server_command(dir.path())).await;

    let mut files: Vec<_> = std::fs::read_dir(&sdk)
        .unwrap()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    let output = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .args(&files)
        .current_dir(&sdk)
        .env("BASE_URL", format!("http://{}", server.addr))
        .env("TARGET", "gatehouse")
        .env("SUPERUSER_EMAIL", SUPERUSER.0)
        .env("SUPERUSER_PASSWORD", SUPERUSER.1)
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "SDK suite failed:\n{}\n{}",
        stdout(&output),
        stderr(&output)
    );
}
