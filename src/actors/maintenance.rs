//! The maintenance actor: every `maintenance.interval`, deletes sessions that expired
//! or were revoked more than `maintenance.session_retention` ago. In a cluster only
//! the instance that takes the Redis lock for the round does the work.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, Supervised, WrapFuture};
use sea_orm::sea_query::{Alias, Cond, Expr, Query};
use sea_orm::ConnectionTrait;

use super::database::{Db, DbError};
use super::supervisor::{contain, Crashed};
use crate::cluster::{lock, Redis};
use crate::config::MaintenanceSettings;
use crate::domain::ids::format_time;
use crate::telemetry::Metrics;

const NAME: &str = "maintenance";

pub struct Maintenance {
    db: Db,
    redis: Option<Redis>,
    settings: MaintenanceSettings,
    metrics: Arc<Metrics>,
}

impl Maintenance {
    pub fn new(
        db: Db,
        redis: Option<Redis>,
        settings: MaintenanceSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            db,
            redis,
            settings,
            metrics,
        }
    }
}

impl Actor for Maintenance {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.settings.interval, |actor, ctx| {
            let round = round(
                actor.db.clone(),
                actor.redis.clone(),
                actor.settings.clone(),
                actor.metrics.clone(),
            );
            let addr = ctx.address();
            ctx.spawn(
                async move {
                    if contain(NAME, addr, round).await.is_err() {
                        tracing::error!("maintenance round panicked");
                    }
                }
                .into_actor(actor),
            );
        });
    }
}

/// One round: take the lock (in a cluster), then clean up.
async fn round(db: Db, redis: Option<Redis>, settings: MaintenanceSettings, metrics: Arc<Metrics>) {
    if let Some(redis) = &redis {
        // Held until it expires, a little before the next round, so that no other
        // instance repeats this round's work.
        let hold = settings
            .interval
            .mul_f64(0.9)
            .max(Duration::from_millis(10));
        match lock::try_acquire(redis, NAME, hold).await {
            Some(lease) => tracing::debug!(
                fencing_token = lease.fencing_token,
                "maintenance lock taken"
            ),
            None => return,
        }
    }
    let cutoff = format_time(
        chrono::Utc::now()
            - chrono::Duration::from_std(settings.session_retention).unwrap_or_default(),
    );
    let removed = db
        .transact::<u64, DbError, _>(move |txn| {
            Box::pin(async move {
                let delete = Query::delete()
                    .from_table(Alias::new("_sessions"))
                    .cond_where(
                        Cond::any()
                            .add(Expr::col(Alias::new("expires")).lt(cutoff.as_str()))
                            .add(
                                Cond::all()
                                    .add(Expr::col(Alias::new("revoked")).eq(true))
                                    .add(Expr::col(Alias::new("refreshed")).lt(cutoff.as_str())),
                            ),
                    )
                    .to_owned();
                Ok(txn
                    .execute(txn.get_database_backend().build(&delete))
                    .await?
                    .rows_affected())
            })
        })
        .await;
    metrics.maintenance_runs.inc();
    match removed {
        Ok(count) => tracing::info!(sessions_removed = count, "maintenance round done"),
        Err(err) => tracing::warn!(%err, "maintenance round failed"),
    }
}

impl Supervised for Maintenance {
    fn restarting(&mut self, _: &mut Context<Self>) {
        self.metrics.actor_restarts.with_label_values(&[NAME]).inc();
    }
}

impl Handler<Crashed> for Maintenance {
    type Result = ();

    fn handle(&mut self, _: Crashed, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
