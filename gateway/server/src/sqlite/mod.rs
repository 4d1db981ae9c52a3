//! Durable state in SQLite: the implementation of the core's [`Store`] port.
//!
//! Owns the database file (`data_dir/tern.db`), its schema and migrations (module
//! `schema`), and the transactions around the hub's calls. It knows nothing of QUIC,
//! sessions or the protocol's rules: it stores what the core hands it.
//!
//! SQLite rather than an embedded key-value store because the operator's CLI
//! (`tern-gateway user add`) writes to the same database while the gateway runs: SQLite
//! arbitrates between processes with its file locks. The database runs in WAL mode with
//! `synchronous = FULL`, so a committed transaction is on disk: a `Stored` receipt that
//! leaves the gateway after the commit means the message survives a power cut.
//!
//! ## Transactions
//! * [`SqliteStore::begin`] opens one write transaction for a batch of hub events (group
//!   commit: one fsync for the batch); [`Batch::event`] runs each event in its own
//!   savepoint, so an event whose hub call fails is rolled back alone.
//! * [`SqliteStore::write`] and [`SqliteStore::read`] run one closure in a transaction
//!   (provisioning, loading).

mod schema;
mod tx;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tern_gateway_core::{Store, StoreError};

pub use schema::SCHEMA_VERSION;

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tern.db";

/// How long a writer waits for another process's write lock before failing. Operator
/// commands hold it for milliseconds; the gateway for one batch.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database could not be opened, migrated or committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer gateway.
    #[error("database schema version {found} is newer than this gateway's ({supported})")]
    TooNew {
        /// The database's version.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A store operation inside [`SqliteStore::write`] or [`SqliteStore::read`] failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The gateway's SQLite database: one connection, used by one thread at a time.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database in `data_dir`, creating the
    /// directory too.
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        crate::create_private_dir(data_dir).map_err(|source| DbError::Dir {
            path: data_dir.to_owned(),
            source,
        })?;
        Self::open_file(&data_dir.join(DB_FILE))
    }

    /// Opens (creating and migrating if needed) the database file at `path`.
    pub fn open_file(path: &Path) -> Result<Self, DbError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets readers (and the CLI's `user list`) run beside the gateway's writes;
        // the mode is stored in the file. FULL syncs the WAL at every commit.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32, DbError> {
        schema::version(&self.conn)
    }

    /// Opens a write transaction for a batch of events. Nothing is written until
    /// [`Batch::commit`]; dropping the batch rolls it all back.
    pub fn begin(&mut self) -> Result<Batch<'_>, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(Batch { tx })
    }

    /// Runs `f` in one write transaction, committed when `f` succeeds.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&mut tx::Tx::new(&tx))?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` on one consistent snapshot of the database.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, DbError> {
        let tx = self.conn.unchecked_transaction()?;
        let value = f(&tx::Tx::new(&tx))?;
        tx.commit()?;
        Ok(value)
    }
}

/// One write transaction around a batch of hub events.
#[derive(Debug)]
pub struct Batch<'c> {
    tx: Transaction<'c>,
}

impl Batch<'_> {
    /// Runs one event's storage calls in a savepoint: kept if `f` succeeds, rolled back
    /// (leaving the rest of the batch intact) if it fails.
    pub fn event<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let savepoint = self.tx.savepoint().map_err(tx::db_error)?;
        match f(&mut tx::Tx::new(&savepoint)) {
            Ok(value) => {
                savepoint.commit().map_err(tx::db_error)?;
                Ok(value)
            }
            Err(err) => {
                // `finish` rolls back to the savepoint and releases it.
                if let Err(rollback) = savepoint.finish() {
                    tracing::error!(%rollback, "rolling back a failed event failed");
                }
                Err(err)
            }
        }
    }

    /// Commits the batch; when this returns `Ok` the batch is on disk.
    pub fn commit(self) -> Result<(), DbError> {
        self.tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tern_gateway_core::UserRecord;

    use super::*;

    fn user(address: &str) -> UserRecord {
        UserRecord {
            address: address.into(),
            token_hash: [7; 32],
            presentity: true,
            inbox: true,
            aliases: vec![],
            created: 1,
        }
    }

    #[test]
    fn open_sets_wal_and_schema_and_creates_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested").join("data");
        let store = SqliteStore::open(&data).unwrap();
        assert_eq!(store.path(), data.join(DB_FILE));
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
    }

    #[test]
    fn a_failed_event_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let mut batch = store.begin().unwrap();
        batch.event(|s| s.put_user(&user("a@x"))).unwrap();
        let failed: Result<(), StoreError> = batch.event(|s| {
            s.put_user(&user("b@x"))?;
            Err(StoreError("boom".into()))
        });
        assert!(failed.is_err());
        batch.event(|s| s.put_user(&user("c@x"))).unwrap();
        batch.commit().unwrap();
        let names: Vec<String> = store
            .read(|s| s.users())
            .unwrap()
            .into_iter()
            .map(|u| u.address)
            .collect();
        assert_eq!(names, ["a@x", "c@x"]);
    }

    #[test]
    fn an_uncommitted_batch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        {
            let mut batch = store.begin().unwrap();
            batch.event(|s| s.put_user(&user("a@x"))).unwrap();
        }
        assert!(store.read(|s| s.users()).unwrap().is_empty());
    }

    #[test]
    fn write_commits_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path()).unwrap();
            store.write(|s| s.put_user(&user("a@x"))).unwrap();
            let err = store.write(|s| {
                s.put_user(&user("b@x"))?;
                Err::<(), _>(StoreError("nope".into()))
            });
            assert!(matches!(err, Err(DbError::Store(_))));
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let users = store.read(|s| s.users()).unwrap();
        assert_eq!(users, vec![user("a@x")]);
    }

    #[test]
    fn a_second_process_connection_sees_commits() {
        // The operator CLI opens its own connection while the gateway holds one.
        let dir = tempfile::tempdir().unwrap();
        let gateway = SqliteStore::open(dir.path()).unwrap();
        let mut cli = SqliteStore::open(dir.path()).unwrap();
        cli.write(|s| s.put_user(&user("new@x"))).unwrap();
        assert!(gateway.read(|s| s.user("new@x")).unwrap().is_some());
    }
}
