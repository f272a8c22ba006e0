//! The session: connecting, the consistency every statement runs at, running cached prepared
//! statements, reading typed rows and the outcome of lightweight transactions, and what a
//! driver error means for a caller.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scylla::client::caching_session::CachingSession;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{ExecutionError, PrepareError, RequestAttemptError};
use scylla::frame::types::{Consistency as CqlConsistency, SerialConsistency};
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::unprepared::Statement;
use scylla::value::{CqlValue, Row};
use tomato_store::StoreError;

/// How many prepared statements the session keeps.
const PREPARED_CACHE: usize = 256;
/// How long one schema change may take.
const DDL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one attempt of a statement may take before the driver gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take in all, preparing included (the driver's prepare waits on every
/// node and has no timeout of its own) and a retry of an idempotent statement after a timeout:
/// past it the caller is told the store is unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// The consistency of reads and writes (`store.scylla.consistency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    LocalQuorum,
    Quorum,
    One,
}

/// Where the cluster is and how to use it (`store.scylla.*`).
#[derive(Clone)]
pub struct ScyllaConfig {
    pub nodes: Vec<String>,
    pub keyspace: String,
    pub replication_factor: u32,
    pub consistency: Consistency,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is never printed.
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("consistency", &self.consistency)
            .finish_non_exhaustive()
    }
}

/// The session every store shares.
pub(crate) struct Db {
    session: CachingSession,
    closed: AtomicBool,
}

impl Db {
    /// Connects to the contact points; the keyspace is chosen later, once it exists.
    pub(crate) async fn connect(config: &ScyllaConfig) -> Result<Self, StoreError> {
        let (consistency, serial) = match config.consistency {
            Consistency::LocalQuorum => {
                (CqlConsistency::LocalQuorum, SerialConsistency::LocalSerial)
            }
            Consistency::Quorum => (CqlConsistency::Quorum, SerialConsistency::Serial),
            Consistency::One => (CqlConsistency::One, SerialConsistency::LocalSerial),
        };
        let profile = ExecutionProfile::builder()
            .consistency(consistency)
            .serial_consistency(Some(serial))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .build()
            .into_handle();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .default_execution_profile_handle(profile)
            .connection_timeout(Duration::from_secs(5));
        if !config.username.is_empty() {
            builder = builder.user(&config.username, &config.password);
        }
        let session: Session = builder.build().await.map_err(|err| {
            StoreError::Unavailable(format!(
                "cannot connect to {}: {err}",
                config.nodes.join(", ")
            ))
        })?;
        Ok(Self {
            session: CachingSession::from(session, PREPARED_CACHE),
            closed: AtomicBool::new(false),
        })
    }

    pub(crate) fn session(&self) -> &Session {
        self.session.get_session()
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Refuses every call once the store was closed.
    fn open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// Runs one idempotent statement (a read, or a plain write that may be repeated): the
    /// driver may retry it after a timeout. Prepared on first use, then from the cache.
    pub(crate) async fn run(
        &self,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        let mut statement = Statement::new(cql);
        statement.set_is_idempotent(true);
        self.execute(statement, values).await
    }

    /// Runs a statement that must not run twice (a counter update, a lightweight
    /// transaction): never retried by the driver.
    pub(crate) async fn run_once(
        &self,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.execute(Statement::new(cql), values).await
    }

    async fn execute(
        &self,
        statement: Statement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.open()?;
        let what = short(&statement.contents);
        match tokio::time::timeout(
            CALL_TIMEOUT,
            self.session.execute_unpaged(statement, values),
        )
        .await
        {
            Ok(result) => result.map_err(|err| store_error(&what, err)),
            Err(_) => {
                tracing::warn!(statement = %what, "the store did not answer in {CALL_TIMEOUT:?}");
                Err(StoreError::Unavailable(format!(
                    "the store did not answer in {CALL_TIMEOUT:?}"
                )))
            }
        }
    }

    /// Runs a schema statement, unprepared, with the patience schema changes need (a keyspace
    /// of 30 tables takes seconds on a busy node, and every node must agree).
    pub(crate) async fn ddl(&self, cql: &str) -> Result<(), StoreError> {
        self.open()?;
        let mut statement = Statement::new(cql);
        statement.set_request_timeout(Some(DDL_TIMEOUT));
        self.session()
            .query_unpaged(statement, ())
            .await
            .map(drop)
            .map_err(|err| store_error(&short(cql), err))
    }

    /// Every row the statement answers, typed.
    pub(crate) async fn rows<R>(
        &self,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        typed(self.run(cql, values).await?)
    }

    /// Every row of a statement that may answer many, fetched page by page (so no single
    /// read of the coordinator's walks a whole partition, tombstones and all).
    pub(crate) async fn all_rows<R>(
        &self,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + 'static,
    {
        use futures_util::TryStreamExt;
        self.open()?;
        let mut statement = Statement::new(cql);
        statement.set_is_idempotent(true);
        let pager = self
            .session
            .execute_iter(statement, values)
            .await
            .map_err(|err| StoreError::Unavailable(format!("paging {cql}: {err}")))?;
        pager
            .rows_stream::<R>()
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)
    }

    /// The first row the statement answers, if any.
    pub(crate) async fn row<R>(
        &self,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        Ok(self.rows(cql, values).await?.into_iter().next())
    }

    /// Rows read at SERIAL consistency: what the last lightweight transaction decided, even one
    /// still in flight. `cql` must be used only here (the cache keys statements by their text,
    /// and this one carries its consistency).
    pub(crate) async fn serial_rows<R>(
        &self,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let mut statement = Statement::new(cql);
        statement.set_consistency(CqlConsistency::Serial);
        statement.set_is_idempotent(true);
        typed(self.execute(statement, values).await?)
    }

    /// Runs a lightweight transaction and says whether it applied. Only `[applied]` (column 0)
    /// is read: ScyllaDB sends the current row with it, Cassandra only when not applied.
    pub(crate) async fn applied(
        &self,
        cql: &str,
        values: impl SerializeRow,
    ) -> Result<bool, StoreError> {
        let result = self.run_once(cql, values).await?;
        let rows = result.into_rows_result().map_err(backend)?;
        let first = rows
            .rows::<Row>()
            .map_err(backend)?
            .next()
            .transpose()
            .map_err(|err| StoreError::Corrupt(err.to_string()))?;
        match first.and_then(|row| row.columns.into_iter().next().flatten()) {
            Some(CqlValue::Boolean(applied)) => Ok(applied),
            other => Err(StoreError::Corrupt(format!(
                "a lightweight transaction answered {other:?} for [applied]"
            ))),
        }
    }
}

/// The rows of a result, typed.
fn typed<R>(result: QueryResult) -> Result<Vec<R>, StoreError>
where
    R: for<'f> DeserializeRow<'f, 'f>,
{
    let rows = result.into_rows_result().map_err(backend)?;
    rows.rows::<R>()
        .map_err(backend)?
        .collect::<Result<Vec<R>, _>>()
        .map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn backend(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(err))
}

/// The first words of a statement, enough to name it in a log line.
fn short(cql: &str) -> String {
    cql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
}

/// What a driver error means to a caller: the cluster cannot answer now (a 503 with
/// `Retry-After`: try again), or a failure of ours (a 500). Either way the driver's kind of error
/// and the statement are logged here, since a 5xx body never carries its cause.
pub(crate) fn store_error(statement: &str, err: ExecutionError) -> StoreError {
    let transient = is_transient(&err);
    tracing::warn!(
        statement,
        kind = kind_of(&err),
        transient,
        error = %err,
        "a store call failed"
    );
    if transient {
        StoreError::Unavailable(err.to_string())
    } else {
        backend(err)
    }
}

/// Whether the cluster may answer the same statement later: it was overloaded, short of
/// replicas, timed out, or could not be reached. A syntax error, an invalid request or a
/// refused login will not get better by waiting.
fn is_transient(err: &ExecutionError) -> bool {
    match err {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_) => true,
        ExecutionError::PrepareError(prepare) => match prepare {
            PrepareError::ConnectionPoolError(_) => true,
            PrepareError::AllAttemptsFailed { first_attempt } => {
                attempt_is_transient(first_attempt)
            }
            _ => false,
        },
        ExecutionError::LastAttemptError(attempt) => attempt_is_transient(attempt),
        _ => false,
    }
}

fn attempt_is_transient(attempt: &RequestAttemptError) -> bool {
    use scylla::errors::DbError;
    match attempt {
        RequestAttemptError::DbError(db, _) => matches!(
            db,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::ReadFailure { .. }
                | DbError::WriteFailure { .. }
                | DbError::TruncateError
                | DbError::ServerError
                | DbError::RateLimitReached { .. }
        ),
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => true,
        _ => false,
    }
}

/// The driver's kind of error, for the log: the name of its variant (`WriteTimeout`,
/// `Overloaded`, ...), without the details the error's text already carries.
fn kind_of(err: &ExecutionError) -> String {
    let debug = match err {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => format!("{db:?}"),
        ExecutionError::LastAttemptError(attempt) => format!("{attempt:?}"),
        other => format!("{other:?}"),
    };
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}
