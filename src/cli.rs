//! The command line: `serve`, `migrate up|down|status`, `config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Application;
use crate::auth::passwords::PasswordHasher;
use crate::auth::service::upsert_superuser as upsert;
use crate::auth::AuthError;
use crate::config::{ConfigSources, LoadedSettings, Settings};
use crate::{db, telemetry};

/// Exit code for a configuration or an argument that cannot be used.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Web server and backend in one binary",
    long_about = "Gatehouse serves static files and a PocketBase-compatible API from one process.\n\n\
        Settings come from config/default.toml (built in), config/$GATEHOUSE_ENV.toml \
        (default: development), --config FILE and GATEHOUSE__SECTION__KEY environment variables, \
        later ones winning."
)]
pub struct Cli {
    /// An extra TOML config file, applied after config/$GATEHOUSE_ENV.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web server and backend (applies pending migrations first when
    /// database.auto_migrate is on).
    Serve {
        /// Listen on ADDR, e.g. 127.0.0.1:8090 (overrides server.bind).
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
    },
    /// Apply, roll back or list database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print the effective configuration as TOML, secrets redacted.
    Config,
    /// Manage superusers (the `_superusers` auth collection).
    Superuser {
        #[command(subcommand)]
        action: SuperuserAction,
    },
}

#[derive(Debug, Subcommand)]
enum SuperuserAction {
    /// Create a superuser, or set the password of an existing one (which also ends
    /// all of its sessions).
    Upsert {
        /// The superuser's email address.
        email: String,
        /// The password, 8 to 256 characters; `-` reads it from standard input.
        password: String,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations.
    Up {
        /// Apply at most N migrations.
        #[arg(long, value_name = "N")]
        steps: Option<u32>,
    },
    /// Roll back applied migrations, newest first.
    Down {
        /// How many to roll back.
        #[arg(long, value_name = "N", default_value_t = 1)]
        steps: u32,
    },
    /// List every migration and whether it is applied.
    Status,
}

/// Parses the command line, loads settings and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match Settings::load(&ConfigSources::from_env(cli.config.clone())) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match cli.command {
        Command::Serve { http } => serve(loaded, http),
        Command::Migrate { action } => migrate(&loaded.settings, action),
        Command::Superuser {
            action: SuperuserAction::Upsert { email, password },
        } => upsert_superuser(&loaded.settings, &email, &password),
        Command::Config => {
            for layer in &loaded.layers {
                println!("# from {layer}");
            }
            print!("{}", loaded.settings.to_redacted_toml());
            ExitCode::SUCCESS
        }
    }
}

fn serve(loaded: LoadedSettings, http: Option<SocketAddr>) -> ExitCode {
    let mut settings = loaded.settings;
    if let Some(addr) = http {
        settings.server.bind = addr;
    }
    telemetry::init_tracing(&settings.log);
    tracing::info!(layers = ?loaded.layers, "configuration loaded");
    actix_web::rt::System::new().block_on(async move {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(err) => {
                tracing::error!(%err, "cannot start");
                eprintln!("gatehouse: cannot start: {err}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("listening on http://{}", app.addr());
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("gatehouse: server error: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("gatehouse: {err}");
            ExitCode::FAILURE
        })
}

fn upsert_superuser(settings: &Settings, email: &str, password: &str) -> ExitCode {
    let password = if password == "-" {
        let mut line = String::new();
        if let Err(err) = std::io::stdin().read_line(&mut line) {
            eprintln!("gatehouse: cannot read the password from standard input: {err}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        password.to_string()
    };
    let hasher = match PasswordHasher::new(&settings.auth.password_hash) {
        Ok(hasher) => hasher,
        Err(err) => {
            eprintln!("gatehouse: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let conn = db::connect(&settings.database).await?;
        if settings.database.auto_migrate {
            db::migrate_up(&conn, None).await?;
        }
        let created = upsert(&conn, &hasher, email, &password).await;
        conn.close().await?;
        Ok::<_, sea_orm::DbErr>(created)
    });
    let email = email.trim().to_lowercase();
    match result {
        Ok(Ok(true)) => {
            println!("Created superuser {email}.");
            ExitCode::SUCCESS
        }
        Ok(Ok(false)) => {
            println!("Updated superuser {email}; its sessions were ended.");
            ExitCode::SUCCESS
        }
        Ok(Err(AuthError::Validation(fields))) => {
            for (field, error) in fields {
                eprintln!("gatehouse: {field}: {}", error.message);
            }
            ExitCode::from(EXIT_USAGE)
        }
        Ok(Err(err)) => {
            eprintln!("gatehouse: superuser upsert: {err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("gatehouse: database: {err}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(settings: &Settings, action: MigrateAction) -> ExitCode {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let conn = db::connect(&settings.database).await?;
        match action {
            MigrateAction::Up { steps } => db::migrate_up(&conn, steps).await?,
            MigrateAction::Down { steps } => db::migrate_down(&conn, steps).await?,
            MigrateAction::Status => {}
        }
        let states = db::migration_status(&conn).await?;
        for state in &states {
            let mark = if state.applied { "applied" } else { "pending" };
            println!("{mark:8} {}", state.name);
        }
        conn.close().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gatehouse: migrate: {err}");
            ExitCode::FAILURE
        }
    }
}
