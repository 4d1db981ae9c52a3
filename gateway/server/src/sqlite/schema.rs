//! The database schema and its migrations. The schema version is SQLite's
//! `PRAGMA user_version`; migration `i` in [`MIGRATIONS`] takes a database from version
//! `i` to `i + 1`. A migration is only ever appended, never edited once released.

use rusqlite::{Connection, TransactionBehavior};

use super::DbError;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 2;

/// Version 0 → 1: the first schema.
///
/// Identifiers are normalised addresses (`TEXT`); documents and inbox items are
/// postcard-encoded `tern-wire` values (`BLOB`); Unix milliseconds and sequence numbers
/// are `INTEGER` (they stay below 2^63). The inbox keeps its rowid because its rows carry
/// message bodies of up to several KiB, for which `WITHOUT ROWID` tables are slow.
/// `inbox_seq` outlives a removed user on purpose: an address never sees a sequence
/// number twice, even when it is provisioned again.
const V1: &str = "
CREATE TABLE users (
    address    TEXT PRIMARY KEY NOT NULL,
    token_hash BLOB NOT NULL,
    presentity INTEGER NOT NULL,
    inbox      INTEGER NOT NULL,
    created    INTEGER NOT NULL
) STRICT;
CREATE TABLE aliases (
    alias TEXT PRIMARY KEY NOT NULL,
    owner TEXT NOT NULL
) STRICT;
CREATE INDEX aliases_owner ON aliases (owner);
CREATE TABLE presence (
    presentity TEXT PRIMARY KEY NOT NULL,
    doc        BLOB NOT NULL
) STRICT;
CREATE TABLE subscriptions (
    watcher TEXT NOT NULL,
    target  TEXT NOT NULL,
    PRIMARY KEY (watcher, target)
) STRICT, WITHOUT ROWID;
CREATE INDEX subscriptions_target ON subscriptions (target);
CREATE TABLE inbox (
    owner TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    item  BLOB NOT NULL,
    PRIMARY KEY (owner, seq)
) STRICT;
CREATE TABLE inbox_seq (
    owner TEXT PRIMARY KEY NOT NULL,
    last  INTEGER NOT NULL
) STRICT;
CREATE TABLE sent (
    sender TEXT NOT NULL,
    id     BLOB NOT NULL,
    owner  TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (sender, id)
) STRICT, WITHOUT ROWID;
CREATE INDEX sent_owner ON sent (owner);
";

/// Version 1 → 2: devices and their delivery positions (resumable sessions). Each
/// device that takes inbox items has the highest sequence number it acknowledged; an
/// inbox item is removed once every device seen recently has it.
const V2: &str = "
CREATE TABLE devices (
    owner  TEXT NOT NULL,
    device BLOB NOT NULL,
    acked  INTEGER NOT NULL,
    seen   INTEGER NOT NULL,
    PRIMARY KEY (owner, device)
) STRICT, WITHOUT ROWID;
";

/// Every migration, in order; `MIGRATIONS.len()` is [`SCHEMA_VERSION`].
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version of an open database.
pub(super) fn version(conn: &Connection) -> Result<u32, DbError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the database up to [`SCHEMA_VERSION`], in one write transaction so that two
/// processes opening a new database at once (gateway and operator CLI) migrate it once.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), DbError> {
    if version(conn)? == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(from, to = from + 1, "migrating database schema");
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_current_version() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        // Idempotent.
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(DbError::TooNew { found, .. }) if found == SCHEMA_VERSION + 1
        ));
    }
}
