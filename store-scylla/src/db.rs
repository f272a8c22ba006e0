//! The session: connecting, the consistency every statement runs at, the catalogue of
//! statements (each prepared once, before the node serves, with its tables named in full),
//! reading typed rows and the outcome of lightweight transactions, and what a driver error means
//! for a caller.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{ExecutionError, PrepareError, RequestAttemptError};
use scylla::frame::types::{Consistency as CqlConsistency, SerialConsistency};
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::unprepared::Statement;
use scylla::value::{CqlValue, Row};
use tomato_store::StoreError;

/// How many statements are prepared at once at start.
const PREPARING: usize = 16;
/// How long one schema change may take.
const DDL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one attempt of a statement may take before the driver gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take in all, preparing included (the driver's prepare waits on every
/// node and has no timeout of its own) and a retry of an idempotent statement after a timeout:
/// past it the caller is told the store is unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// Every statement the store runs, gathered from where each is written (by [`cql!`]) when the
/// program is linked, so that a node prepares them all before it serves: a prepare on a request
/// path waits on every node of the cluster, and a node restarted under load would otherwise
/// prepare the same statements once per connection that asks first.
///
/// The linker section that gathers them is what `unsafe_code` guards against; nothing here
/// reads it but `linkme`'s slice.
#[allow(unsafe_code)]
#[linkme::distributed_slice]
pub(crate) static STATEMENTS: [&'static str];

/// A statement of the catalogue: the only kind the session runs. Made by [`cql!`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cql(&'static str);

impl Cql {
    /// Only for [`cql!`], which lists the text in [`STATEMENTS`] too.
    #[doc(hidden)]
    pub(crate) const fn listed(text: &'static str) -> Self {
        Self(text)
    }

    pub(crate) fn text(self) -> &'static str {
        self.0
    }
}

/// A statement of the catalogue: `cql!("SELECT .. FROM orders WHERE id = ?")`. Tables are named
/// without their keyspace; the session names them in full when it prepares them. The text must
/// be a constant (a literal or a `concat!` of them).
macro_rules! cql {
    ($text:expr) => {{
        #[allow(unsafe_code)]
        #[linkme::distributed_slice($crate::db::STATEMENTS)]
        static STATEMENT: &str = $text;
        $crate::db::Cql::listed($text)
    }};
}

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
    session: Session,
    /// The keyspace every table of a statement is in.
    keyspace: String,
    /// The catalogue, prepared (by [`Db::prepare_all`]), by the text it was written with.
    prepared: OnceLock<HashMap<&'static str, PreparedStatement>>,
    closed: AtomicBool,
}

impl Db {
    /// Connects to the contact points. The keyspace need not exist yet: no statement names it
    /// until the schema made it.
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
            session,
            keyspace: config.keyspace.clone(),
            prepared: OnceLock::new(),
            closed: AtomicBool::new(false),
        })
    }

    /// Prepares every statement of the catalogue, the schema being in place; the node serves
    /// only after this.
    pub(crate) async fn prepare_all(&self) -> Result<(), StoreError> {
        use futures_util::{StreamExt, TryStreamExt};
        let mut texts: Vec<&'static str> = STATEMENTS.to_vec();
        texts.sort_unstable();
        texts.dedup();
        let prepared: HashMap<&'static str, PreparedStatement> = futures_util::stream::iter(texts)
            .map(|text| async move {
                let full = qualify(text, &self.keyspace);
                let prepared =
                    tokio::time::timeout(CALL_TIMEOUT, self.session().prepare(full.as_str()))
                        .await
                        .map_err(|_| {
                            StoreError::Unavailable(format!(
                                "preparing {}: no answer in {CALL_TIMEOUT:?}",
                                short(text)
                            ))
                        })?
                        .map_err(|err| prepare_error(text, err))?;
                Ok::<_, StoreError>((text, prepared))
            })
            .buffer_unordered(PREPARING)
            .try_collect()
            .await?;
        tracing::debug!(statements = prepared.len(), "store statements prepared");
        let _ = self.prepared.set(prepared);
        Ok(())
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
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
    /// driver may retry it after a timeout.
    pub(crate) async fn run(
        &self,
        cql: Cql,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.execute(cql, values, |statement| statement.set_is_idempotent(true))
            .await
    }

    /// Runs a statement that must not run twice (a counter update, a lightweight
    /// transaction): never retried by the driver.
    pub(crate) async fn run_once(
        &self,
        cql: Cql,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.execute(cql, values, |_| {}).await
    }

    /// The prepared statement of `cql`, `adjust`ed for this call. Before the catalogue is
    /// prepared (the schema's own statements, run a few times at start) it is prepared here.
    async fn statement(
        &self,
        cql: Cql,
        adjust: impl FnOnce(&mut PreparedStatement),
    ) -> Result<PreparedStatement, StoreError> {
        let mut statement = match self.prepared.get() {
            Some(catalogue) => match catalogue.get(cql.text()) {
                Some(prepared) => prepared.clone(),
                None => {
                    // Only a statement written without `cql!` gets here.
                    debug_assert!(false, "not in the catalogue: {}", cql.text());
                    tracing::warn!(statement = %short(cql.text()), "a statement prepared late");
                    self.prepare_late(cql).await?
                }
            },
            None => self.prepare_late(cql).await?,
        };
        adjust(&mut statement);
        Ok(statement)
    }

    async fn prepare_late(&self, cql: Cql) -> Result<PreparedStatement, StoreError> {
        let full = qualify(cql.text(), &self.keyspace);
        match tokio::time::timeout(CALL_TIMEOUT, self.session.prepare(full)).await {
            Ok(result) => result.map_err(|err| prepare_error(cql.text(), err)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "preparing {}: no answer in {CALL_TIMEOUT:?}",
                short(cql.text())
            ))),
        }
    }

    async fn execute(
        &self,
        cql: Cql,
        values: impl SerializeRow,
        adjust: impl FnOnce(&mut PreparedStatement),
    ) -> Result<QueryResult, StoreError> {
        self.open()?;
        let what = short(cql.text());
        let statement = self.statement(cql, adjust).await?;
        match tokio::time::timeout(
            CALL_TIMEOUT,
            self.session().execute_unpaged(&statement, values),
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
        let mut statement = Statement::new(qualify(cql, &self.keyspace));
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
        cql: Cql,
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
        cql: Cql,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm> + 'static,
    {
        use futures_util::TryStreamExt;
        self.open()?;
        let statement = self
            .statement(cql, |statement| statement.set_is_idempotent(true))
            .await?;
        let pager = self
            .session()
            .execute_iter(statement, values)
            .await
            .map_err(|err| {
                StoreError::Unavailable(format!("paging {}: {err}", short(cql.text())))
            })?;
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
        cql: Cql,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        Ok(self.rows(cql, values).await?.into_iter().next())
    }

    /// Rows read at SERIAL consistency: what the last lightweight transaction decided, even one
    /// still in flight.
    pub(crate) async fn serial_rows<R>(
        &self,
        cql: Cql,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        typed(
            self.execute(cql, values, |statement| {
                statement.set_consistency(CqlConsistency::Serial);
                statement.set_is_idempotent(true);
            })
            .await?,
        )
    }

    /// Runs a lightweight transaction and says whether it applied. Only `[applied]` (column 0)
    /// is read: ScyllaDB sends the current row with it, Cassandra only when not applied.
    pub(crate) async fn applied(
        &self,
        cql: Cql,
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

/// `cql` with every table it names (after `FROM`, `INTO`, `UPDATE` or `TABLE`) named in
/// `keyspace`, unless it names its keyspace already: Cassandra warns at every prepare made under
/// `USE`, whose tables depend on the connection's keyspace.
pub(crate) fn qualify(cql: &str, keyspace: &str) -> String {
    let mut out = String::with_capacity(cql.len() + 4 * keyspace.len());
    let mut rest = cql;
    let mut names_table = false;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '(' || c == ',' || c == ';')
            .unwrap_or(rest.len())
            .max(1);
        let word = &rest[..end];
        if names_table
            && !word.eq_ignore_ascii_case("IF")
            && !word.eq_ignore_ascii_case("NOT")
            && !word.eq_ignore_ascii_case("EXISTS")
        {
            if !word.contains('.') {
                out.push_str(keyspace);
                out.push('.');
            }
            names_table = false;
        } else if ["FROM", "INTO", "UPDATE", "TABLE"]
            .iter()
            .any(|keyword| word.eq_ignore_ascii_case(keyword))
        {
            names_table = true;
        }
        out.push_str(word);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A prepare that failed: the cluster's fault (503) or ours (500), logged as a call's would be.
fn prepare_error(text: &str, err: PrepareError) -> StoreError {
    store_error(&short(text), ExecutionError::PrepareError(err))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_their_tables_in_full() {
        let cases = [
            (
                "SELECT a FROM users WHERE id = ?",
                "SELECT a FROM ks.users WHERE id = ?",
            ),
            (
                "INSERT INTO users (id, a) VALUES (?, ?) IF NOT EXISTS",
                "INSERT INTO ks.users (id, a) VALUES (?, ?) IF NOT EXISTS",
            ),
            (
                "UPDATE riders SET x = ? WHERE id = ? IF EXISTS",
                "UPDATE ks.riders SET x = ? WHERE id = ? IF EXISTS",
            ),
            (
                "delete from carts\n  where a = ?",
                "delete from ks.carts\n  where a = ?",
            ),
            (
                "CREATE TABLE IF NOT EXISTS t(id int PRIMARY KEY)",
                "CREATE TABLE IF NOT EXISTS ks.t(id int PRIMARY KEY)",
            ),
            ("ALTER TABLE t ADD c int", "ALTER TABLE ks.t ADD c int"),
            (
                "SELECT release_version FROM system.local",
                "SELECT release_version FROM system.local",
            ),
            (
                "SELECT updated_at, fromage FROM tables_into",
                "SELECT updated_at, fromage FROM ks.tables_into",
            ),
        ];
        for (written, full) in cases {
            assert_eq!(qualify(written, "ks"), full, "{written}");
        }
    }

    #[test]
    fn the_catalogue_holds_every_statement_once_written() {
        // What `cql!` listed is here, whichever module wrote it.
        assert!(STATEMENTS.iter().any(|s| s.starts_with("SELECT id, email")));
        assert!(
            STATEMENTS
                .iter()
                .any(|s| s.contains("riders_by_user (user_id, rider_id)"))
        );
        assert!(STATEMENTS.len() > 100, "{} statements", STATEMENTS.len());
    }
}
