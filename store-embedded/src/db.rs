//! The SQLite connection discipline. SQLite calls block, so none of them runs on a tokio worker:
//! every write goes to one writer thread that owns the only writing connection (SQLite admits one
//! writer at a time anyway, and a single thread turns lock contention into a queue), and reads run
//! on the blocking pool over a small set of read-only connections, which WAL lets proceed while
//! the writer commits. A third thread moves committed pages from the WAL into the main file
//! (the checkpoint), so that the fsyncs of that copy never hold up a commit.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use tomato_store::StoreError;

/// Writes waiting for the writer thread; a full queue makes callers wait (back-pressure) rather
/// than letting memory grow without bound.
const WRITE_QUEUE: usize = 1024;
/// How long a connection waits on a lock held by a checkpoint before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between retries of a read told BUSY (0.5, 1, 2 ... 64 ms: 8 tries).
const READ_RETRY_LIMIT: Duration = Duration::from_millis(64);
/// How often the checkpointer copies what the WAL holds into the main file. SQLite's own
/// default checkpoints on the committing connection once the WAL passes 1 000 pages; that
/// copy and its fsyncs then ran on the writer thread, and every queued order move waited.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;

enum WriterMsg {
    Job(WriteJob),
    Close(oneshot::Sender<()>),
}

/// A handle to one SQLite database file; clones share the writer thread and the readers.
#[derive(Clone)]
pub(crate) struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<WriterMsg>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropping the sender stops the checkpointer.
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path`, runs `prepare` on the writing
    /// connection (migrations) before anything else can touch the file, and starts the writer.
    pub(crate) fn open(
        path: &Path,
        readers: usize,
        prepare: impl FnOnce(&mut Connection) -> Result<(), StoreError>,
    ) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        // WAL lets readers run beside the writer. FULL sync makes every commit durable before it
        // is acknowledged, power loss included: an acknowledged payment or order move is never
        // lost (NORMAL keeps commits across a process crash only, and may lose the last ones
        // when the machine goes down). Its cost is one fsync of the WAL per commit.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Every writer transaction takes the write lock at BEGIN. A deferred one that reads
        // first and then writes is told BUSY at once, without the busy handler, when a reader
        // holds the WAL write lock for a moment (it does while re-reading a changing WAL-index
        // header); a load test of 20 k riders signing up met that. With one writer connection
        // IMMEDIATE costs nothing.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        prepare(&mut conn)?;
        // Commits leave the WAL to the checkpointer.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = start_checkpointer(path)?;

        let read_conns = (0..readers.max(1))
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&reader)?;
                Ok(reader)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run_writer(conn, queue))
            .map_err(|err| StoreError::Backend(Box::new(err)))?;

        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer,
                writer_thread: Mutex::new(Some(thread)),
                checkpointer: Mutex::new(Some(checkpointer)),
                read_permits: Semaphore::new(read_conns.len()),
                readers: Mutex::new(read_conns),
            }),
        })
    }

    /// Runs `f` on the writer thread and returns its result once it has committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            // The caller may have gone away (a cancelled request); the write still happened.
            let _ = reply.send(f(conn));
        });
        self.inner
            .writer
            .send(WriterMsg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        // A dropped reply means the job panicked; the writer itself carries on.
        answer
            .await
            .map_err(|_| StoreError::Backend("write job panicked".into()))?
    }

    /// Runs `f` on a read-only connection on the blocking pool.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inner.writer.is_closed() {
            return Err(StoreError::Closed);
        }
        let permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = Arc::clone(&self.inner);
        let result = tokio::task::spawn_blocking(move || {
            let reader = ReaderGuard::take(&inner)?;
            // Under a heavy write load a reader can be told BUSY at once, without the busy
            // handler (WAL read marks in flux while the writer restarts the log); a read has no
            // side effects, so it is simply tried again a few times before the caller sees 503.
            let mut backoff = Duration::from_micros(500);
            loop {
                match f(reader.conn()) {
                    Err(StoreError::Unavailable(_)) if backoff <= READ_RETRY_LIMIT => {
                        std::thread::sleep(backoff);
                        backoff *= 2;
                    }
                    outcome => return outcome,
                }
            }
        })
        .await
        .map_err(|err| StoreError::Backend(Box::new(err)))?;
        drop(permit);
        result
    }

    /// Lets every queued write finish, checkpoints the WAL into the main file, and stops the
    /// writer. Idempotent.
    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        // The checkpointer stops first, so the writer's last checkpoint does not wait on it.
        let checkpointer = take(&self.inner.checkpointer, "checkpointer")?.map(|(stop, thread)| {
            drop(stop);
            thread
        });
        join(checkpointer, "checkpointer").await?;
        let (done, closed) = oneshot::channel();
        if self.inner.writer.send(WriterMsg::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
        self.inner.read_permits.close();
        join(take(&self.inner.writer_thread, "writer")?, "writer").await
    }
}

/// What `slot` holds, taken out (once: a second close finds nothing).
fn take<T>(slot: &Mutex<Option<T>>, what: &str) -> Result<Option<T>, StoreError> {
    Ok(slot
        .lock()
        .map_err(|_| StoreError::Backend(format!("{what} handle poisoned").into()))?
        .take())
}

/// Waits for a thread to end, off the async runtime.
async fn join(thread: Option<JoinHandle<()>>, what: &str) -> Result<(), StoreError> {
    let Some(thread) = thread else {
        return Ok(());
    };
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|err| StoreError::Backend(Box::new(err)))?
        .map_err(|_| StoreError::Backend(format!("{what} thread panicked").into()))
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Opens the checkpointer's own connection and starts its thread.
fn start_checkpointer(
    path: &Path,
) -> Result<(std::sync::mpsc::Sender<()>, JoinHandle<()>), StoreError> {
    let conn = Connection::open(path)?;
    configure(&conn)?;
    // The copy is synced as the writer's commits are: the WAL is reused once it has been copied,
    // so a copy not on disk could lose acknowledged commits with the power.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("store-checkpointer".into())
        .spawn(move || {
            // Woken by the timeout; a message or a dropped sender means stop.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                // PASSIVE copies what no reader still needs and never waits on the writer or
                // the readers; what it leaves is copied next time.
                if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %err, "wal checkpoint failed");
                }
            }
        })
        .map_err(|err| StoreError::Backend(Box::new(err)))?;
    Ok((stop, thread))
}

fn run_writer(mut conn: Connection, mut queue: mpsc::Receiver<WriterMsg>) {
    while let Some(msg) = queue.blocking_recv() {
        match msg {
            WriterMsg::Job(job) => {
                // A bug in one job must not take every later write down with it.
                if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
                    tracing::error!("store write job panicked");
                }
            }
            WriterMsg::Close(done) => {
                queue.close();
                // Writes that were queued before the close still run.
                while let Ok(WriterMsg::Job(job)) = queue.try_recv() {
                    let _ = catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
                if let Err(err) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
                    tracing::warn!(error = %err, "wal checkpoint at close failed");
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

/// A read connection borrowed from the pool; it goes back even if the read panics.
struct ReaderGuard<'a> {
    inner: &'a Inner,
    conn: Option<Connection>,
}

impl<'a> ReaderGuard<'a> {
    fn take(inner: &'a Inner) -> Result<Self, StoreError> {
        let conn = inner
            .readers
            .lock()
            .map_err(|_| StoreError::Backend("reader pool poisoned".into()))?
            .pop()
            // The semaphore hands out exactly as many permits as there are connections.
            .ok_or_else(|| StoreError::Backend("reader pool exhausted".into()))?;
        Ok(Self {
            inner,
            conn: Some(conn),
        })
    }

    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("the connection is only taken out on drop")
    }
}

impl Drop for ReaderGuard<'_> {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut pool)) = (self.conn.take(), self.inner.readers.lock()) {
            pool.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits land in the WAL; only a checkpoint copies them into the main file. Fewer pages
    /// than SQLite's own threshold (1 000) are written, and the writer's threshold is off, so
    /// the main file grows only if the checkpointer copies them.
    #[tokio::test]
    async fn the_checkpointer_copies_commits_into_the_main_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("checkpoint.db");
        let db = Db::open(&path, 1, |conn| {
            conn.execute_batch("CREATE TABLE blobs (b BLOB NOT NULL)")?;
            Ok(())
        })
        .expect("open");
        let threshold = db
            .write(|conn| {
                Ok(conn.query_row("PRAGMA wal_autocheckpoint", [], |row| row.get::<_, i64>(0))?)
            })
            .await
            .expect("read the setting");
        assert_eq!(threshold, 0, "commits do not checkpoint on the writer");
        let before = std::fs::metadata(&path).expect("main file").len();
        for _ in 0..100 {
            db.write(|conn| {
                conn.execute("INSERT INTO blobs (b) VALUES (zeroblob(8000))", [])?;
                Ok(())
            })
            .await
            .expect("write");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = std::fs::metadata(&path).expect("main file").len();
            if now >= before + 800_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the main file stayed at {now} bytes (from {before}) for 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        db.close().await.expect("close");
        let rows: i64 = Connection::open(&path)
            .expect("reopen")
            .query_row("SELECT count(*) FROM blobs", [], |row| row.get(0))
            .expect("count");
        assert_eq!(rows, 100);
    }
}
