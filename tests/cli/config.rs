use std::fs;

use crate::support::{gatehouse, run, stderr, stdout};

fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("config")).unwrap();
    dir
}

#[test]
fn layers_apply_in_order_files_then_config_flag_then_environment() {
    let dir = config_dir();
    fs::write(
        dir.path().join("config/production.toml"),
        "[server]\nworkers = 3\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("extra.toml"),
        "[server]\nworkers = 5\n[static]\nroot = \"site\"\n",
    )
    .unwrap();

    let env_only = run(gatehouse(dir.path())
        .env("GATEHOUSE_ENV", "production")
        .arg("config"));
    assert!(env_only.status.success(), "{}", stderr(&env_only));
    let text = stdout(&env_only);
    assert!(text.contains("workers = 3"), "{text}");
    assert!(text.contains("format = \"json\""), "{text}");
    assert!(text.contains("# from built-in defaults"), "{text}");
    assert!(text.contains("production.toml"), "{text}");

    let with_file = run(gatehouse(dir.path())
        .env("GATEHOUSE_ENV", "production")
        .args(["--config", "extra.toml", "config"]));
    let text = stdout(&with_file);
    assert!(text.contains("workers = 5"), "{text}");
    assert!(text.contains("root = \"site\""), "{text}");
    assert!(text.contains("format = \"json\""), "{text}");

    let with_env = run(gatehouse(dir.path())
        .env("GATEHOUSE_ENV", "production")
        .env("GATEHOUSE__SERVER__WORKERS", "7")
        .env("GATEHOUSE__SERVER__BIND", "127.0.0.1:9999")
        .args(["--config", "extra.toml", "config"]));
    let text = stdout(&with_env);
    assert!(text.contains("workers = 7"), "{text}");
    assert!(text.contains("bind = \"127.0.0.1:9999\""), "{text}");
    assert!(text.contains("root = \"site\""), "{text}");
}

#[test]
fn development_is_the_default_environment() {
    let dir = config_dir();
    fs::write(
        dir.path().join("config/development.toml"),
        "[log]\nlevel = \"debug\"\n",
    )
    .unwrap();
    let output = run(gatehouse(dir.path()).arg("config"));
    let text = stdout(&output);
    assert!(text.contains("development.toml"), "{text}");
    assert!(text.contains("level = \"debug\""), "{text}");
    assert!(text.contains("bind = \"127.0.0.1:8080\""), "{text}");
}

#[test]
fn the_shipped_config_files_are_valid() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for env in ["development", "test", "production"] {
        let output = run(gatehouse(repo).env("GATEHOUSE_ENV", env).arg("config"));
        assert!(output.status.success(), "{env}: {}", stderr(&output));
    }
    for file in [
        "config/cluster/front.toml",
        "config/cluster/backend.toml",
        "config/backend-workers.toml",
    ] {
        let output = run(gatehouse(repo).args(["--config", file, "config"]));
        assert!(output.status.success(), "{file}: {}", stderr(&output));
    }
}

#[test]
fn unknown_keys_are_rejected_naming_file_and_key() {
    let dir = config_dir();
    fs::write(
        dir.path().join("extra.toml"),
        "[server]\nbindd = \"0.0.0.0:1\"\n",
    )
    .unwrap();
    let output = run(gatehouse(dir.path()).args(["--config", "extra.toml", "config"]));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("extra.toml"), "{message}");
    assert!(message.contains("server.bindd"), "{message}");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn bad_backend_worker_members_are_rejected_naming_the_server() {
    let dir = config_dir();
    for (member, reason) in [
        ("backend://0", "backend://N, N a number from 1 to 32"),
        ("backend://two", "backend://N, N a number from 1 to 32"),
        ("backend://1/api", "backend://N, N a number from 1 to 32"),
        ("ftp://10.0.0.5", "http://, https:// or backend://N"),
    ] {
        fs::write(
            dir.path().join("pool.toml"),
            format!("[upstreams.app]\nservers = [{{ url = \"backend://1\" }}, {{ url = \"{member}\" }}]\n"),
        )
        .unwrap();
        let output = run(gatehouse(dir.path()).args(["--config", "pool.toml", "config"]));
        assert_eq!(output.status.code(), Some(2), "{member}");
        let message = stderr(&output);
        assert!(
            message.contains("upstreams.app.servers[1].url"),
            "{message}"
        );
        assert!(message.contains(reason), "{message}");
    }

    fs::write(
        dir.path().join("pool.toml"),
        "[upstreams.app]\nservers = [{ url = \"backend://1\" }, { url = \"backend://1\" }]\n",
    )
    .unwrap();
    let output = run(gatehouse(dir.path()).args(["--config", "pool.toml", "config"]));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("upstreams.app.servers[1].url"),
        "{message}"
    );
    assert!(message.contains("already a member"), "{message}");
}

#[test]
fn bad_values_are_rejected_naming_the_source() {
    let dir = config_dir();
    fs::write(
        dir.path().join("config/development.toml"),
        "[log]\nformat = \"xml\"\n",
    )
    .unwrap();
    let output = run(gatehouse(dir.path()).arg("config"));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("development.toml"), "{message}");
    assert!(message.contains("log.format"), "{message}");
    assert!(message.contains("xml"), "{message}");

    let output = run(gatehouse(dir.path())
        .env("GATEHOUSE_ENV", "production")
        .env("GATEHOUSE__SERVER__WORKERS", "lots")
        .arg("config"));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("GATEHOUSE__SERVER__WORKERS"), "{message}");
    assert!(message.contains("server.workers"), "{message}");
}

#[test]
fn values_serde_accepts_are_still_checked() {
    let dir = config_dir();
    let output = run(gatehouse(dir.path())
        .env("GATEHOUSE__DATABASE__URL", "mysql://root@localhost/app")
        .arg("config"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("database.url"),
        "{}",
        stderr(&output)
    );

    let output = run(gatehouse(dir.path())
        .env(
            "GATEHOUSE__API__CORS_ORIGINS",
            "[\"https://app.example.com/path\"]",
        )
        .arg("config"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("api.cors_origins"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_smtp_ca_file_without_a_usable_certificate_is_rejected() {
    let dir = config_dir();
    fs::write(dir.path().join("not-a-ca.pem"), "just some text\n").unwrap();
    for (file, reason) in [
        ("missing.pem", "cannot read"),
        ("not-a-ca.pem", "no PEM certificate"),
    ] {
        let output = run(gatehouse(dir.path())
            .env("GATEHOUSE__MAIL__TRANSPORT", "smtp")
            .env("GATEHOUSE__MAIL__SMTP__CA_FILE", file)
            .arg("config"));
        assert_eq!(output.status.code(), Some(2), "{file}");
        let message = stderr(&output);
        assert!(message.contains("mail.smtp.ca_file"), "{message}");
        assert!(message.contains(file), "{message}");
        assert!(message.contains(reason), "{message}");
    }
}

#[test]
fn a_missing_config_file_or_environment_is_an_error() {
    let dir = config_dir();
    let output = run(gatehouse(dir.path()).args(["--config", "nope.toml", "config"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("nope.toml"));

    let output = run(gatehouse(dir.path())
        .env("GATEHOUSE_ENV", "staging")
        .arg("config"));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("staging"));
}

#[test]
fn secrets_are_redacted_when_printing_the_config() {
    let dir = config_dir();
    let output = run(gatehouse(dir.path())
        .env(
            "GATEHOUSE__DATABASE__URL",
            "postgres://app:hunter2@db.internal/app",
        )
        .arg("config"));
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("db.internal"), "{text}");
}

#[test]
fn help_describes_each_command() {
    let dir = config_dir();
    let top = stdout(&run(gatehouse(dir.path()).arg("--help")));
    for command in ["serve", "migrate", "config"] {
        assert!(top.contains(command), "{top}");
    }
    let serve = stdout(&run(gatehouse(dir.path()).args(["serve", "--help"])));
    assert!(serve.contains("--http"), "{serve}");
    let migrate = stdout(&run(gatehouse(dir.path()).args(["migrate", "--help"])));
    for action in ["up", "down", "status"] {
        assert!(migrate.contains(action), "{migrate}");
    }
}
