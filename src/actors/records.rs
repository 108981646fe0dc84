//! Records and collections messages, handled by the database actor: each runs one
//! operation of [`crate::records`] as a task of its own, writes in one transaction,
//! reads straight on the pool.

use std::sync::Arc;

use actix::{Context, Handler, Message, ResponseFuture};
use serde_json::{Map, Value};

use super::database::{AfterCommit, DatabaseActor, QueryJob, TxJob, TxMode};
use crate::collections::definition::CollectionInput;
use crate::collections::{Collection, Registry};
use crate::realtime::{Action, RecordEvent};
use crate::records::read::{self, ListQuery};
use crate::records::write::Passwords;
use crate::records::{collections, write, RecordError, RecordsEnv, Requester};

/// Declares a message answered with `Result<$out, RecordError>` and its handler,
/// which runs `$body` in a transaction with `$txn`, the shared `$env` and `$msg`.
macro_rules! records_message {
    ($(#[$doc:meta])* $mode:ident $name:ident { $($field:ident: $ty:ty),* $(,)? } -> $out:ty, |$txn:ident, $env:ident, $msg:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name { $(pub $field: $ty),* }

        impl Message for $name {
            type Result = Result<$out, RecordError>;
        }

        impl Handler<$name> for DatabaseActor {
            type Result = ResponseFuture<Result<$out, RecordError>>;

            fn handle(&mut self, $msg: $name, ctx: &mut Context<Self>) -> Self::Result {
                let $env = self.records.clone();
                let job: TxJob<$out, RecordError> = Box::new(move |$txn| Box::pin(async move { $body.await }));
                self.transaction(ctx, TxMode::$mode, job)
            }
        }
    };
}

/// Declares a message like [`records_message!`] that only reads: `$body` runs with
/// `$conn`, the pool, without a transaction (PocketBase reads the same way: a page and
/// its total are two statements, each seeing what was committed when it ran).
macro_rules! records_read {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? } -> $out:ty, |$conn:ident, $env:ident, $msg:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name { $(pub $field: $ty),* }

        impl Message for $name {
            type Result = Result<$out, RecordError>;
        }

        impl Handler<$name> for DatabaseActor {
            type Result = ResponseFuture<Result<$out, RecordError>>;

            fn handle(&mut self, $msg: $name, ctx: &mut Context<Self>) -> Self::Result {
                let $env = self.records.clone();
                let job: QueryJob<$out, RecordError> = Box::new(move |$conn| Box::pin(async move { $body.await }));
                self.query(ctx, job)
            }
        }
    };
}

records_read!(
    /// A page of records (`GET /api/collections/{c}/records`).
    ListRecords { collection: String, query: ListQuery, requester: Requester } -> Value,
    |conn, env, msg| read::list(conn, &env, &msg.requester, &msg.collection, &msg.query)
);

records_read!(
    /// One record (`GET /api/collections/{c}/records/{id}`).
    ViewRecord { collection: String, id: String, expand: String, fields: String, requester: Requester } -> Value,
    |conn, env, msg| read::view(conn, &env, &msg.requester, &msg.collection, &msg.id, &msg.expand, &msg.fields)
);

/// Declares a write message like [`records_message!`] whose transaction also yields
/// record changes: they are published to realtime subscribers once it committed, in
/// commit order, never for a write that rolled back. With `prepare`, `$prepare` runs
/// first with `$pconn`, the pool, outside the transaction (panics contained as in it),
/// and `$body` gets its value as `$prepared` (password hashing, which must not hold a
/// write turn).
macro_rules! records_write {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? } -> $out:ty,
     prepare |$pconn:ident, $penv:ident, $pmsg:ident| $prepare:expr,
     |$txn:ident, $env:ident, $msg:ident, $prepared:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name { $(pub $field: $ty),* }

        impl Message for $name {
            type Result = Result<$out, RecordError>;
        }

        impl Handler<$name> for DatabaseActor {
            type Result = ResponseFuture<Result<$out, RecordError>>;

            fn handle(&mut self, $msg: $name, ctx: &mut Context<Self>) -> Self::Result {
                let $env = self.records.clone();
                let transactions = self.transactions(ctx);
                Box::pin(async move {
                    let prepare = async {
                        let ($pconn, $penv, $pmsg) = (transactions.connection(), &$env, &$msg);
                        $prepare.await
                    };
                    let $prepared = transactions.contain(prepare).await??;
                    let hub = $env.realtime.clone();
                    let job: TxJob<($out, Vec<RecordEvent>), RecordError> =
                        Box::new(move |$txn| Box::pin(async move { $body.await }));
                    let publish: AfterCommit<($out, Vec<RecordEvent>)> =
                        Box::new(move |(_, changes)| {
                            for change in changes.drain(..) {
                                hub.publish(change);
                            }
                        });
                    let run = transactions.run(TxMode::Write, job, Some(publish));
                    run.await.map(|(out, _)| out)
                })
            }
        }
    };
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? } -> $out:ty,
     |$txn:ident, $env:ident, $msg:ident| $body:expr) => {
        records_write!(
            $(#[$doc])* $name { $($field: $ty),* } -> $out,
            prepare |_conn, _env, _msg| std::future::ready(Ok::<_, RecordError>(())),
            |$txn, $env, $msg, _prepared| $body
        );
    };
}

records_write!(
    /// Creates a record and answers with it as the requester sees it.
    CreateRecord { collection: String, body: Map<String, Value>, expand: String, fields: String, requester: Requester } -> Value,
    prepare |_conn, env, msg| Passwords::for_create(env, &msg.requester, &msg.collection, &msg.body),
    |txn, env, msg, passwords| async move {
        let record = write::create(txn, &env, &msg.requester, &msg.collection, msg.body, &passwords).await?;
        let change = RecordEvent::new(Action::Create, &record);
        let mut shown = read::present(txn, &env, &msg.requester, vec![record], &msg.expand, &msg.fields).await?;
        Ok((shown.remove(0), vec![change]))
    }
);

records_write!(
    /// Updates a record and answers with it as the requester sees it.
    UpdateRecord { collection: String, id: String, body: Map<String, Value>, expand: String, fields: String, requester: Requester } -> Value,
    prepare |conn, env, msg| Passwords::for_update(conn, env, &msg.requester, (&msg.collection, &msg.id), &msg.body),
    |txn, env, msg, passwords| async move {
        let record = write::update(txn, &env, &msg.requester, &msg.collection, &msg.id, msg.body, &passwords).await?;
        let change = RecordEvent::new(Action::Update, &record);
        let mut shown = read::present(txn, &env, &msg.requester, vec![record], &msg.expand, &msg.fields).await?;
        Ok((shown.remove(0), vec![change]))
    }
);

records_write!(
    /// Deletes a record (and cascades).
    DeleteRecord { collection: String, id: String, requester: Requester } -> (),
    |txn, env, msg| async move {
        write::delete(txn, &env, &msg.requester, &msg.collection, &msg.id).await.map(|changes| ((), changes))
    }
);

records_read!(
    /// Every collection definition.
    ListCollections {} -> Value,
    |_conn, env, _msg| std::future::ready(Ok::<_, RecordError>(collections::list(&env)))
);

records_read!(
    /// One collection definition.
    ViewCollection { id_or_name: String } -> Value,
    |_conn, env, msg| std::future::ready(collections::view(&env, &msg.id_or_name))
);

records_message!(
    /// Deletes every record of a collection.
    Write TruncateCollection { id_or_name: String } -> (),
    |txn, env, msg| collections::truncate(txn, &env, &msg.id_or_name)
);

/// A change to the set of collections: run under the schema lock, and published to
/// the registry only once its transaction has committed.
trait SchemaChange: Send + 'static {
    type Output: Send + 'static;

    fn apply<'c>(
        self,
        txn: &'c sea_orm::DatabaseTransaction,
        working: &'c Registry,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Output, RecordError>> + Send + 'c>,
    >;
}

fn change_schema<C: SchemaChange>(
    actor: &DatabaseActor,
    ctx: &mut Context<DatabaseActor>,
    change: C,
) -> ResponseFuture<Result<C::Output, RecordError>> {
    let env: Arc<RecordsEnv> = actor.records.clone();
    let current = env.clone();
    let job: TxJob<(C::Output, Vec<Collection>), RecordError> = Box::new(move |txn| {
        Box::pin(async move {
            // Taken under the schema lock, so no other change slips in between.
            let snapshot = current
                .registry
                .all()
                .iter()
                .map(|c| c.as_ref().clone())
                .collect();
            let working = Registry::new(snapshot);
            let output = change.apply(txn, &working).await?;
            let collections = working.all().iter().map(|c| c.as_ref().clone()).collect();
            Ok((output, collections))
        })
    });
    let run = actor.transaction(ctx, TxMode::Write, job);
    Box::pin(async move {
        let _guard = env.schema_lock.lock().await;
        let (output, collections) = run.await?;
        env.registry.replace(collections);
        if let Some(bus) = &env.bus {
            bus.publish(crate::cluster::bus::BusMessage::CollectionsChanged);
        }
        Ok(output)
    })
}

/// Creates (`current: None`) or updates a collection; answers with its definition.
pub struct SaveCollection {
    pub current: Option<String>,
    pub input: CollectionInput,
}

impl Message for SaveCollection {
    type Result = Result<Value, RecordError>;
}

impl SchemaChange for SaveCollection {
    type Output = Value;

    fn apply<'c>(
        self,
        txn: &'c sea_orm::DatabaseTransaction,
        working: &'c Registry,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RecordError>> + Send + 'c>>
    {
        Box::pin(async move {
            let saved =
                collections::save(txn, working, self.current.as_deref(), &self.input).await?;
            Ok(saved.to_json())
        })
    }
}

impl Handler<SaveCollection> for DatabaseActor {
    type Result = ResponseFuture<Result<Value, RecordError>>;

    fn handle(&mut self, msg: SaveCollection, ctx: &mut Context<Self>) -> Self::Result {
        change_schema(self, ctx, msg)
    }
}

/// Deletes a collection and its table.
pub struct DeleteCollection {
    pub id_or_name: String,
}

impl Message for DeleteCollection {
    type Result = Result<(), RecordError>;
}

impl SchemaChange for DeleteCollection {
    type Output = ();

    fn apply<'c>(
        self,
        txn: &'c sea_orm::DatabaseTransaction,
        working: &'c Registry,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RecordError>> + Send + 'c>>
    {
        Box::pin(async move { collections::delete(txn, working, &self.id_or_name).await })
    }
}

impl Handler<DeleteCollection> for DatabaseActor {
    type Result = ResponseFuture<Result<(), RecordError>>;

    fn handle(&mut self, msg: DeleteCollection, ctx: &mut Context<Self>) -> Self::Result {
        change_schema(self, ctx, msg)
    }
}

/// Applies an import of collections, all or nothing.
pub struct ImportCollections {
    pub inputs: Vec<CollectionInput>,
    pub delete_missing: bool,
}

impl Message for ImportCollections {
    type Result = Result<(), RecordError>;
}

impl SchemaChange for ImportCollections {
    type Output = ();

    fn apply<'c>(
        self,
        txn: &'c sea_orm::DatabaseTransaction,
        working: &'c Registry,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RecordError>> + Send + 'c>>
    {
        Box::pin(async move {
            collections::import(txn, working, &self.inputs, self.delete_missing).await
        })
    }
}

impl Handler<ImportCollections> for DatabaseActor {
    type Result = ResponseFuture<Result<(), RecordError>>;

    fn handle(&mut self, msg: ImportCollections, ctx: &mut Context<Self>) -> Self::Result {
        change_schema(self, ctx, msg)
    }
}
