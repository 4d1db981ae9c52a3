//! The database schema and its migrations. The schema version is SQLite's
//! `PRAGMA user_version`; migration `i` in [`MIGRATIONS`] takes a database from version
//! `i` to `i + 1`. A migration is only ever appended, never edited once released.

use rusqlite::{Connection, TransactionBehavior};

use super::DbError;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 5;

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

/// Version 2 → 3: versioned presence documents and subscription slots (presence
/// synchronisation: a watcher names its subscriptions by slot in batches, and a document
/// by (presentity, version) in deltas and conditional fetches).
///
/// * `presence.version`: the version of the stored document, chosen by the hub (one more
///   than the previous). Existing documents become version 1. The `DEFAULT` exists only
///   to number those rows (`ADD COLUMN … NOT NULL` needs one, and it rewrites nothing);
///   every write gives the version.
/// * `subscriptions.slot`: the number of the subscription among its watcher's, unique
///   per watcher (`subscriptions_slot`, which also serves the watcher's subscriptions in
///   slot order). `ADD COLUMN` can neither number the existing rows nor add the
///   constraint, so the table is rebuilt: existing subscriptions get 1..n per watcher in
///   target order. `subscriptions_target` is
///   recreated with the watcher and slot in it, so that a presentity's watchers and their
///   slots come from the index alone.
/// * `slots`: each watcher's last slot ever assigned, so that a removed subscription's
///   slot is never reused for that watcher (a client may still hold state under it).
///   Initialised from the numbered subscriptions. It outlives the watcher's
///   subscriptions, but not the watcher: removing the principal deletes its counter
///   (unlike `inbox_seq`), so a principal provisioned again starts at slot 1.
const V3: &str = "
ALTER TABLE presence ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE TABLE subscriptions_v3 (
    watcher TEXT NOT NULL,
    target  TEXT NOT NULL,
    slot    INTEGER NOT NULL,
    PRIMARY KEY (watcher, target)
) STRICT, WITHOUT ROWID;
INSERT INTO subscriptions_v3 (watcher, target, slot)
    SELECT watcher, target, ROW_NUMBER() OVER (PARTITION BY watcher ORDER BY target)
    FROM subscriptions;
DROP TABLE subscriptions;
ALTER TABLE subscriptions_v3 RENAME TO subscriptions;
CREATE UNIQUE INDEX subscriptions_slot ON subscriptions (watcher, slot);
CREATE INDEX subscriptions_target ON subscriptions (target, watcher, slot);
CREATE TABLE slots (
    watcher TEXT PRIMARY KEY NOT NULL,
    last    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO slots (watcher, last)
    SELECT watcher, MAX(slot) FROM subscriptions GROUP BY watcher;
";

/// Version 3 → 4: access rules, pending subscriptions and domain administrators
/// (issue 5). New tables only: existing rows are not touched, so the migration is
/// instant on any database.
///
/// * `rules`: each principal's rules, a postcard-encoded `tern_wire::Rules`, with the
///   `epoch` (the version of its presence document when the rules last changed what a
///   watcher sees). A principal without rules has no row. Deleted with the principal.
/// * `requests`: subscriptions waiting for the presentity's principal to decide (rule
///   *ask*), one per (watcher, target), with when they were asked. `requests_target`
///   serves a presentity's requests oldest first from the index alone. Deleted with
///   either principal.
/// * `admins`: the SHA-256 of each domain's administrator token; a domain has at most
///   one, replaced when rotated. Kept when principals come and go.
/// * `admin_log`: the administrators' audit log, append-only: the triggers refuse any
///   `UPDATE` or `DELETE`, and removing a principal leaves the entries about it. Its
///   rowid orders entries as written; `admin_log_domain` serves one domain's latest
///   entries (the rowid is implicitly in the index).
const V4: &str = "
CREATE TABLE rules (
    owner TEXT PRIMARY KEY NOT NULL,
    rules BLOB NOT NULL,
    epoch INTEGER NOT NULL
) STRICT;
CREATE TABLE requests (
    watcher TEXT NOT NULL,
    target  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (watcher, target)
) STRICT, WITHOUT ROWID;
CREATE INDEX requests_target ON requests (target, at, watcher);
CREATE TABLE admins (
    domain     TEXT PRIMARY KEY NOT NULL,
    token_hash BLOB NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE admin_log (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    domain TEXT NOT NULL,
    user   TEXT NOT NULL,
    action TEXT NOT NULL
) STRICT;
CREATE INDEX admin_log_domain ON admin_log (domain);
CREATE TRIGGER admin_log_no_update BEFORE UPDATE ON admin_log
BEGIN
    SELECT RAISE(ABORT, 'admin_log is append-only');
END;
CREATE TRIGGER admin_log_no_delete BEFORE DELETE ON admin_log
BEGIN
    SELECT RAISE(ABORT, 'admin_log is append-only');
END;
";

/// Version 4 → 5: federation with XMPP (issue 7). New tables only.
///
/// * `fed_outbox`: stanzas for the XMPP network, each a postcard-encoded
///   `tern_gateway_core::federation::Outbound`, kept until the XMPP server has them.
///   `AUTOINCREMENT` so a number is never reused after rows are removed (the bridge
///   confirms "everything up to N"). `coalesce_from`/`coalesce_to` are set for presence,
///   which is state: a newer one for the same pair replaces the waiting one
///   (`fed_outbox_coalesce`).
/// * `relays`: messages that crossed the bridge, per (sender, message id): resends are
///   recognised and receipts find their message. `status` is a postcard-encoded
///   `tern_wire::ReceiptStatus`. Deleted with a local sender.
const V5: &str = "
CREATE TABLE fed_outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    coalesce_from TEXT,
    coalesce_to   TEXT,
    stanza        BLOB NOT NULL
) STRICT;
CREATE INDEX fed_outbox_coalesce ON fed_outbox (coalesce_from, coalesce_to)
    WHERE coalesce_from IS NOT NULL;
CREATE TABLE relays (
    sender TEXT NOT NULL,
    id     BLOB NOT NULL,
    peer   TEXT NOT NULL,
    status BLOB NOT NULL,
    PRIMARY KEY (sender, id)
) STRICT, WITHOUT ROWID;
";

/// Every migration, in order; `MIGRATIONS.len()` is [`SCHEMA_VERSION`].
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5];

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

    /// A database at `version`, as that build of the gateway left it.
    fn database_at(path: &std::path::Path, version: u32) -> Connection {
        let conn = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..version as usize] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", version).unwrap();
        conn
    }

    fn doc(presentity: &str) -> tern_wire::PresenceDoc {
        tern_wire::PresenceDoc {
            presentity: presentity.into(),
            updated: 42,
            presence: tern_wire::Presence {
                tuples: vec![],
                card: vec![],
            },
        }
    }

    #[test]
    fn a_v2_database_migrates_to_v3_with_slots_and_versions() {
        use tern_gateway_core::{Subscription, Versioned};

        use super::super::SqliteStore;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let v2 = database_at(&path, 2);
            for (watcher, target) in [
                ("bob@x", "dave@x"),
                ("bob@x", "alice@x"),
                ("carol@x", "bob@x"),
                ("bob@x", "carol@x"),
                ("alice@x", "bob@x"),
            ] {
                v2.execute(
                    "INSERT INTO subscriptions (watcher, target) VALUES (?1, ?2)",
                    [watcher, target],
                )
                .unwrap();
            }
            for who in ["alice@x", "bob@x"] {
                let blob = postcard::to_stdvec(&doc(who)).unwrap();
                v2.execute(
                    "INSERT INTO presence (presentity, doc) VALUES (?1, ?2)",
                    rusqlite::params![who, blob],
                )
                .unwrap();
            }
        }
        let mut store = SqliteStore::open_file(&path).unwrap();
        // Through version 3 to the current one.
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let sub = |watcher: &str, target: &str, slot| Subscription {
            watcher: watcher.into(),
            target: target.into(),
            slot,
        };
        store
            .read(|s| {
                // 1..n per watcher, in target order.
                assert_eq!(
                    s.subscriptions()?,
                    vec![
                        sub("alice@x", "bob@x", 1),
                        sub("bob@x", "alice@x", 1),
                        sub("bob@x", "carol@x", 2),
                        sub("bob@x", "dave@x", 3),
                        sub("carol@x", "bob@x", 1),
                    ]
                );
                assert_eq!(
                    s.watchers_of("bob@x")?,
                    vec![("alice@x".to_owned(), 1), ("carol@x".to_owned(), 1)]
                );
                assert_eq!(
                    s.presences()?,
                    vec![
                        Versioned {
                            version: 1,
                            doc: doc("alice@x")
                        },
                        Versioned {
                            version: 1,
                            doc: doc("bob@x")
                        },
                    ]
                );
                Ok(())
            })
            .unwrap();
        // The counters continue from the numbered slots.
        store
            .write(|s| {
                assert_eq!(s.add_subscription("bob@x", "erin@x")?, 4);
                assert_eq!(s.add_subscription("carol@x", "alice@x")?, 2);
                assert_eq!(s.add_subscription("dave@x", "alice@x")?, 1);
                Ok(())
            })
            .unwrap();
        drop(store);
        // A slot is unique per watcher, and the indexes exist under their names.
        let conn = Connection::open(&path).unwrap();
        let duplicate = conn.execute(
            "INSERT INTO subscriptions (watcher, target, slot) VALUES ('bob@x', 'zed@x', 2)",
            [],
        );
        assert!(duplicate.is_err(), "a slot used twice by one watcher");
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'subscriptions' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(indexes, ["subscriptions_slot", "subscriptions_target"]);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    /// The names of the indexes created on `table` (not the automatic ones).
    fn indexes_of(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1 AND sql IS NOT NULL ORDER BY name",
        )
        .unwrap()
        .query_map([table], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn a_v3_database_migrates_to_the_current_version_keeping_its_data() {
        use tern_gateway_core::auth::hash_token;
        use tern_gateway_core::{AdminRecord, Request, StoredRules, Subscription, Versioned};

        use super::super::SqliteStore;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let v3 = database_at(&path, 3);
            v3.execute(
                "INSERT INTO users (address, token_hash, presentity, inbox, created)
                 VALUES ('alice@x', ?1, 1, 1, 5)",
                [&hash_token("t")[..]],
            )
            .unwrap();
            v3.execute(
                "INSERT INTO subscriptions (watcher, target, slot) VALUES ('bob@x', 'alice@x', 1)",
                [],
            )
            .unwrap();
            v3.execute("INSERT INTO slots (watcher, last) VALUES ('bob@x', 1)", [])
                .unwrap();
            let blob = postcard::to_stdvec(&doc("alice@x")).unwrap();
            v3.execute(
                "INSERT INTO presence (presentity, doc, version) VALUES ('alice@x', ?1, 7)",
                [blob],
            )
            .unwrap();
        }
        let mut store = SqliteStore::open_file(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store
            .read(|s| {
                // What version 3 held is there as it was.
                assert!(s.user("alice@x")?.is_some());
                assert_eq!(
                    s.subscriptions()?,
                    vec![Subscription {
                        watcher: "bob@x".into(),
                        target: "alice@x".into(),
                        slot: 1,
                    }]
                );
                assert_eq!(
                    s.presence("alice@x")?,
                    Some(Versioned {
                        version: 7,
                        doc: doc("alice@x"),
                    })
                );
                // And nothing of version 4 yet.
                assert_eq!(s.all_rules()?, vec![]);
                assert_eq!(s.requests_to("alice@x")?, vec![]);
                assert_eq!(s.admin_token("x")?, None);
                assert_eq!(s.admin_log("x", 10)?, vec![]);
                assert!(s.fed_after(0, 10)?.is_empty(), "nor of version 5");
                assert_eq!(s.relay("alice@x", b"m")?, None);
                Ok(())
            })
            .unwrap();
        // The new tables work.
        let rules = StoredRules {
            rules: tern_wire::Rules::default(),
            epoch: 7,
        };
        let request = Request {
            watcher: "carol@x".into(),
            target: "alice@x".into(),
            at: 9,
        };
        let record = AdminRecord {
            at: 10,
            domain: "x".into(),
            user: "alice@x".into(),
            action: "get-rules".into(),
        };
        store
            .write(|s| {
                s.put_rules("alice@x", &rules)?;
                s.add_request(&request)?;
                s.put_admin_token("x", &hash_token("admin"))?;
                s.log_admin(&record)
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(s.all_rules()?, vec![("alice@x".to_owned(), rules.clone())]);
                assert_eq!(s.requests_to("alice@x")?, vec![request.clone()]);
                assert_eq!(s.admin_token("x")?, Some(hash_token("admin")));
                assert_eq!(s.admin_log("x", 10)?, vec![record.clone()]);
                Ok(())
            })
            .unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(indexes_of(&conn, "requests"), ["requests_target"]);
        assert_eq!(indexes_of(&conn, "admin_log"), ["admin_log_domain"]);
        for table in ["rules", "requests", "admins", "admin_log"] {
            let strict: i64 = conn
                .query_row(
                    "SELECT strict FROM pragma_table_list WHERE name = ?1",
                    [table],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(strict, 1, "{table} is STRICT");
        }
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn the_admin_log_is_append_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO admin_log (at, domain, user, action) VALUES (1, 'x', 'a@x', 'cancel b@x')",
            [],
        )
        .unwrap();
        for sql in [
            "UPDATE admin_log SET action = 'nothing'",
            "DELETE FROM admin_log WHERE domain = 'x'",
            "DELETE FROM admin_log",
        ] {
            let err = conn.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        let action: String = conn
            .query_row("SELECT action FROM admin_log", [], |row| row.get(0))
            .unwrap();
        assert_eq!(action, "cancel b@x");
    }

    #[test]
    fn an_empty_v2_database_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = database_at(&dir.path().join("empty.db"), 2);
        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let slots: i64 = conn
            .query_row("SELECT count(*) FROM slots", [], |row| row.get(0))
            .unwrap();
        assert_eq!(slots, 0);
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
