use std::time::{Duration, Instant};

use reqwest::Method;

use crate::on_both_backends;
use crate::support::{spawn_app_with, Backend};

on_both_backends!(maintenance_deletes_revoked_sessions_past_retention);

async fn maintenance_deletes_revoked_sessions_past_retention(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| {
        s.maintenance.interval = Duration::from_millis(50);
        s.maintenance.session_retention = Duration::ZERO;
    })
    .await
    else {
        return;
    };
    app.register("old@example.com", "password-123").await;
    let (gone, _) = app.login("users", "old@example.com", "password-123").await;
    let (kept, _) = app.login("users", "old@example.com", "password-123").await;
    assert_eq!(
        app.with_token(Method::POST, "/api/collections/users/logout", &gone)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while app.count_rows("_sessions").await != 1 {
        assert!(
            Instant::now() < deadline,
            "the revoked session was not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let live = app
        .with_token(Method::GET, "/api/collections/users/sessions", &kept)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "live sessions are kept");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("gatehouse_maintenance_runs_total"),
        "{metrics}"
    );
}
