use std::io::Write;
use std::process::Stdio;

use crate::support::{gatehouse, run, stderr, stdout};

fn with_database(dir: &std::path::Path) -> std::process::Command {
    let mut command = gatehouse(dir);
    command
        .env(
            "GATEHOUSE__DATABASE__URL",
            format!("sqlite://{}/cli.db?mode=rwc", dir.display()),
        )
        .env("GATEHOUSE__DATABASE__AUTO_MIGRATE", "false");
    command
}

#[test]
fn migrate_up_down_and_status_agree() {
    let dir = tempfile::tempdir().unwrap();
    let status = stdout(&run(with_database(dir.path()).args(["migrate", "status"])));
    assert!(status.lines().count() >= 2, "{status}");
    assert!(
        status.lines().all(|line| line.starts_with("pending")),
        "{status}"
    );

    let up = run(with_database(dir.path()).args(["migrate", "up"]));
    assert!(up.status.success(), "{}", stderr(&up));
    let applied = stdout(&up);
    assert!(
        applied.lines().all(|line| line.starts_with("applied")),
        "{applied}"
    );
    assert!(applied.contains("system_collections"), "{applied}");

    let down = run(with_database(dir.path()).args(["migrate", "down"]));
    assert!(down.status.success(), "{}", stderr(&down));
    let after = stdout(&down);
    let last = after.lines().last().unwrap();
    assert!(
        last.starts_with("pending"),
        "the newest migration was rolled back: {after}"
    );
    assert!(
        after.lines().next().unwrap().starts_with("applied"),
        "{after}"
    );

    let up_one = run(with_database(dir.path()).args(["migrate", "up", "--steps", "1"]));
    assert!(stdout(&up_one)
        .lines()
        .all(|line| line.starts_with("applied")));
}

#[test]
fn superuser_upsert_creates_then_updates_and_reads_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = with_database(dir.path());
    command.env("GATEHOUSE__DATABASE__AUTO_MIGRATE", "true");
    let created = run(command.args(["superuser", "upsert", "Root@Example.com", "first-pass-123"]));
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&created).contains("Created superuser root@example.com"));

    let mut child = with_database(dir.path())
        .env("GATEHOUSE__DATABASE__AUTO_MIGRATE", "true")
        .args(["superuser", "upsert", "root@example.com", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"second-pass-456\n")
        .unwrap();
    let updated = child.wait_with_output().unwrap();
    assert!(updated.status.success(), "{}", stderr(&updated));
    assert!(stdout(&updated).contains("Updated superuser root@example.com"));

    let short =
        run(with_database(dir.path()).args(["superuser", "upsert", "root@example.com", "short"]));
    assert_eq!(short.status.code(), Some(2));
    assert!(stderr(&short).contains("password"), "{}", stderr(&short));
    let bad_email =
        run(with_database(dir.path()).args(["superuser", "upsert", "nope", "long-enough-pass"]));
    assert_eq!(bad_email.status.code(), Some(2));
}
