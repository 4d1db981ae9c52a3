//! [`Store`] over an open SQLite transaction or savepoint: one SQL statement or two per
//! call, prepared once and cached by the connection. Opening, committing and rolling
//! back belong to the caller ([`super::SqliteStore`], [`super::Batch`]).

use rusqlite::{Connection, OptionalExtension, params};
use tern_gateway_core::federation::Outbound;
use tern_gateway_core::{
    AdminRecord, DeviceRecord, Relay, Request, SentRecord, Store, StoreError, StoredRules,
    Subscription, UserRecord, Versioned,
};
use tern_wire::{InboxItem, Slot};

/// A view of the database through the connection of an open transaction.
pub(super) struct Tx<'c> {
    conn: &'c Connection,
}

impl<'c> Tx<'c> {
    /// Wraps the connection of an open transaction or savepoint.
    pub(super) fn new(conn: &'c Connection) -> Self {
        Self { conn }
    }

    fn aliases_of(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        self.column(
            "SELECT alias FROM aliases WHERE owner = ?1 ORDER BY rowid",
            owner,
        )
    }

    /// The single text column of every row a one-parameter query returns.
    fn column(&self, sql: &str, param: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        let rows = stmt
            .query_map([param], |row| row.get(0))
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    /// The `requests` rows (watcher, target, at) a one-parameter query returns.
    fn requests(&self, sql: &str, param: &str) -> Result<Vec<Request>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        let rows = stmt
            .query_map([param], |row| {
                Ok(Request {
                    watcher: row.get(0)?,
                    target: row.get(1)?,
                    at: row.get(2)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    /// The (address, slot) rows a one-parameter query returns.
    fn slotted(&self, sql: &str, param: &str) -> Result<Vec<(String, Slot)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        let rows = stmt
            .query_map([param], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }
}

/// A SQLite failure as the core sees it.
pub(super) fn db_error(err: rusqlite::Error) -> StoreError {
    StoreError(format!("sqlite: {err}"))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(|e| StoreError(format!("encoding a value: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError(format!("corrupt {what}: {e}")))
}

/// A `presence` row as the core sees it.
fn versioned(version: u64, blob: &[u8]) -> Result<Versioned, StoreError> {
    Ok(Versioned {
        version,
        doc: decode("presence document", blob)?,
    })
}

/// The columns of a `users` row, before its aliases are attached.
type UserRow = (String, Vec<u8>, bool, bool, u64);

const USER_COLUMNS: &str = "SELECT address, token_hash, presentity, inbox, created FROM users";

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn user_record(row: UserRow, aliases: Vec<String>) -> Result<UserRecord, StoreError> {
    let (address, hash, presentity, inbox, created) = row;
    let token_hash = hash
        .try_into()
        .map_err(|_| StoreError(format!("corrupt token hash of {address}")))?;
    Ok(UserRecord {
        address,
        token_hash,
        presentity,
        inbox,
        aliases,
        created,
    })
}

impl Store for Tx<'_> {
    fn user(&self, address: &str) -> Result<Option<UserRecord>, StoreError> {
        let row = self
            .conn
            .prepare_cached(&format!("{USER_COLUMNS} WHERE address = ?1"))
            .and_then(|mut stmt| stmt.query_row([address], user_row).optional())
            .map_err(db_error)?;
        row.map(|row| user_record(row, self.aliases_of(address)?))
            .transpose()
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        let c = self.conn;
        c.prepare_cached(
            "INSERT INTO users (address, token_hash, presentity, inbox, created)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (address) DO UPDATE SET token_hash = excluded.token_hash,
               presentity = excluded.presentity, inbox = excluded.inbox,
               created = excluded.created",
        )
        .and_then(|mut s| {
            s.execute(params![
                user.address,
                &user.token_hash[..],
                user.presentity,
                user.inbox,
                user.created
            ])
        })
        .map_err(db_error)?;
        c.prepare_cached("DELETE FROM aliases WHERE owner = ?1")
            .and_then(|mut s| s.execute([&user.address]))
            .map_err(db_error)?;
        let mut insert = c
            .prepare_cached(
                "INSERT INTO aliases (alias, owner) VALUES (?1, ?2)
                 ON CONFLICT (alias) DO UPDATE SET owner = excluded.owner",
            )
            .map_err(db_error)?;
        for alias in &user.aliases {
            insert.execute([alias, &user.address]).map_err(db_error)?;
        }
        Ok(())
    }

    fn remove_user(&mut self, address: &str) -> Result<bool, StoreError> {
        let c = self.conn;
        let removed = c
            .prepare_cached("DELETE FROM users WHERE address = ?1")
            .and_then(|mut s| s.execute([address]))
            .map_err(db_error)?;
        // `inbox_seq` stays; `slots` goes with the watcher; `admin_log` is append-only
        // and keeps what was done to the principal: see the schema.
        for sql in [
            "DELETE FROM aliases WHERE owner = ?1",
            "DELETE FROM presence WHERE presentity = ?1",
            "DELETE FROM subscriptions WHERE watcher = ?1 OR target = ?1",
            "DELETE FROM slots WHERE watcher = ?1",
            "DELETE FROM inbox WHERE owner = ?1",
            "DELETE FROM sent WHERE sender = ?1 OR owner = ?1",
            "DELETE FROM devices WHERE owner = ?1",
            "DELETE FROM rules WHERE owner = ?1",
            "DELETE FROM requests WHERE watcher = ?1 OR target = ?1",
            "DELETE FROM relays WHERE sender = ?1",
        ] {
            c.prepare_cached(sql)
                .and_then(|mut s| s.execute([address]))
                .map_err(db_error)?;
        }
        Ok(removed > 0)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{USER_COLUMNS} ORDER BY address"))
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], user_row)
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                let aliases = self.aliases_of(&row.0)?;
                user_record(row, aliases)
            })
            .collect()
    }

    fn inbox_owner(&self, address: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT address FROM users WHERE address = ?1 AND inbox
                 UNION ALL SELECT owner FROM aliases WHERE alias = ?1
                 LIMIT 1",
            )
            .and_then(|mut s| s.query_row([address], |row| row.get(0)).optional())
            .map_err(db_error)
    }

    fn presence(&self, presentity: &str) -> Result<Option<Versioned>, StoreError> {
        let row: Option<(u64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT version, doc FROM presence WHERE presentity = ?1")
            .and_then(|mut s| {
                s.query_row([presentity], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(db_error)?;
        row.map(|(version, blob)| versioned(version, &blob))
            .transpose()
    }

    fn put_presence(&mut self, doc: &Versioned) -> Result<(), StoreError> {
        let blob = encode(&doc.doc)?;
        self.conn
            .prepare_cached(
                "INSERT INTO presence (presentity, version, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (presentity) DO UPDATE SET version = excluded.version,
                   doc = excluded.doc",
            )
            .and_then(|mut s| s.execute(params![doc.doc.presentity, doc.version, blob]))
            .map_err(db_error)?;
        Ok(())
    }

    fn presences(&self) -> Result<Vec<Versioned>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT version, doc FROM presence ORDER BY presentity")
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        rows.iter()
            .map(|(version, blob)| versioned(*version, blob))
            .collect()
    }

    fn add_subscription(&mut self, watcher: &str, target: &str) -> Result<Slot, StoreError> {
        let existing: Option<Slot> = self
            .conn
            .prepare_cached("SELECT slot FROM subscriptions WHERE watcher = ?1 AND target = ?2")
            .and_then(|mut s| s.query_row([watcher, target], |row| row.get(0)).optional())
            .map_err(db_error)?;
        if let Some(slot) = existing {
            return Ok(slot);
        }
        let last: i64 = self
            .conn
            .prepare_cached(
                "INSERT INTO slots (watcher, last) VALUES (?1, 1)
                 ON CONFLICT (watcher) DO UPDATE SET last = last + 1
                 RETURNING last",
            )
            .and_then(|mut s| s.query_row([watcher], |row| row.get(0)))
            .map_err(db_error)?;
        // The caller's savepoint rolls the counter back with the failed event.
        let slot = Slot::try_from(last)
            .map_err(|_| StoreError(format!("{watcher} has used every subscription slot")))?;
        self.conn
            .prepare_cached("INSERT INTO subscriptions (watcher, target, slot) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![watcher, target, slot]))
            .map_err(db_error)?;
        Ok(slot)
    }

    fn remove_subscription(&mut self, watcher: &str, target: &str) -> Result<bool, StoreError> {
        // The slot counter stays: the slot is not reused.
        let n = self
            .conn
            .prepare_cached("DELETE FROM subscriptions WHERE watcher = ?1 AND target = ?2")
            .and_then(|mut s| s.execute([watcher, target]))
            .map_err(db_error)?;
        Ok(n > 0)
    }

    fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT watcher, target, slot FROM subscriptions ORDER BY watcher, target",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Subscription {
                    watcher: row.get(0)?,
                    target: row.get(1)?,
                    slot: row.get(2)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    fn subscriptions_of(&self, watcher: &str) -> Result<Vec<(String, Slot)>, StoreError> {
        self.slotted(
            "SELECT target, slot FROM subscriptions WHERE watcher = ?1 ORDER BY slot",
            watcher,
        )
    }

    fn watchers_of(&self, target: &str) -> Result<Vec<(String, Slot)>, StoreError> {
        self.slotted(
            "SELECT watcher, slot FROM subscriptions WHERE target = ?1 ORDER BY watcher",
            target,
        )
    }

    fn inbox_push(&mut self, owner: &str, item: &InboxItem) -> Result<u64, StoreError> {
        let blob = encode(item)?;
        let seq: u64 = self
            .conn
            .prepare_cached(
                "INSERT INTO inbox_seq (owner, last) VALUES (?1, 1)
                 ON CONFLICT (owner) DO UPDATE SET last = last + 1
                 RETURNING last",
            )
            .and_then(|mut s| s.query_row([owner], |row| row.get(0)))
            .map_err(db_error)?;
        self.conn
            .prepare_cached("INSERT INTO inbox (owner, seq, item) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![owner, seq, blob]))
            .map_err(db_error)?;
        Ok(seq)
    }

    fn inbox_after(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InboxItem)>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        // No `LIMIT ?`: binding a new limit makes SQLite re-prepare the cached statement
        // on every call (measured at 14 % of the hub's CPU); the primary key yields rows
        // in order, so stopping after `limit` rows reads no more than LIMIT would.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, item FROM inbox WHERE owner = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![owner, after], |row| {
                Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db_error)?
            .take(limit)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        rows.into_iter()
            .map(|(seq, blob)| Ok((seq, decode("inbox item", &blob)?)))
            .collect()
    }

    fn inbox_last(&self, owner: &str) -> Result<u64, StoreError> {
        let last: Option<u64> = self
            .conn
            .prepare_cached("SELECT last FROM inbox_seq WHERE owner = ?1")
            .and_then(|mut s| s.query_row([owner], |row| row.get(0)).optional())
            .map_err(db_error)?;
        Ok(last.unwrap_or(0))
    }

    fn inbox_remove(&mut self, owner: &str, upto: u64) -> Result<(), StoreError> {
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached("DELETE FROM inbox WHERE owner = ?1 AND seq <= ?2")
            .and_then(|mut s| s.execute(params![owner, upto]))
            .map_err(db_error)?;
        Ok(())
    }

    fn device(&self, owner: &str, device: &[u8]) -> Result<Option<DeviceRecord>, StoreError> {
        self.conn
            .prepare_cached("SELECT acked, seen FROM devices WHERE owner = ?1 AND device = ?2")
            .and_then(|mut s| {
                s.query_row(params![owner, device], |row| {
                    Ok(DeviceRecord {
                        acked: row.get(0)?,
                        seen: row.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(db_error)
    }

    fn put_device(
        &mut self,
        owner: &str,
        device: &[u8],
        record: DeviceRecord,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO devices (owner, device, acked, seen) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (owner, device) DO UPDATE SET acked = ?3, seen = ?4",
            )
            .and_then(|mut s| s.execute(params![owner, device, record.acked, record.seen]))
            .map_err(db_error)?;
        Ok(())
    }

    fn devices(&self, owner: &str) -> Result<Vec<(Vec<u8>, DeviceRecord)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT device, acked, seen FROM devices WHERE owner = ?1 ORDER BY device",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map([owner], |row| {
                Ok((
                    row.get(0)?,
                    DeviceRecord {
                        acked: row.get(1)?,
                        seen: row.get(2)?,
                    },
                ))
            })
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    fn sent(&self, sender: &str, id: &[u8]) -> Result<Option<SentRecord>, StoreError> {
        self.conn
            .prepare_cached("SELECT owner, seq FROM sent WHERE sender = ?1 AND id = ?2")
            .and_then(|mut s| {
                s.query_row(params![sender, id], |row| {
                    Ok(SentRecord {
                        owner: row.get(0)?,
                        seq: row.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(db_error)
    }

    fn put_sent(&mut self, sender: &str, id: &[u8], record: SentRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO sent (sender, id, owner, seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (sender, id) DO UPDATE SET owner = excluded.owner,
                   seq = excluded.seq",
            )
            .and_then(|mut s| s.execute(params![sender, id, record.owner, record.seq]))
            .map_err(db_error)?;
        Ok(())
    }

    fn all_rules(&self) -> Result<Vec<(String, StoredRules)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT owner, rules, epoch FROM rules ORDER BY owner")
            .map_err(db_error)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, u64>(2)?,
                ))
            })
            .map_err(db_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        rows.into_iter()
            .map(|(owner, blob, epoch)| {
                let rules = decode("rules", &blob)?;
                Ok((owner, StoredRules { rules, epoch }))
            })
            .collect()
    }

    fn put_rules(&mut self, owner: &str, rules: &StoredRules) -> Result<(), StoreError> {
        let blob = encode(&rules.rules)?;
        self.conn
            .prepare_cached(
                "INSERT INTO rules (owner, rules, epoch) VALUES (?1, ?2, ?3)
                 ON CONFLICT (owner) DO UPDATE SET rules = excluded.rules,
                   epoch = excluded.epoch",
            )
            .and_then(|mut s| s.execute(params![owner, blob, rules.epoch]))
            .map_err(db_error)?;
        Ok(())
    }

    fn add_request(&mut self, request: &Request) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO requests (watcher, target, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (watcher, target) DO UPDATE SET at = excluded.at",
            )
            .and_then(|mut s| s.execute(params![request.watcher, request.target, request.at]))
            .map_err(db_error)?;
        Ok(())
    }

    fn remove_request(&mut self, watcher: &str, target: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM requests WHERE watcher = ?1 AND target = ?2")
            .and_then(|mut s| s.execute([watcher, target]))
            .map_err(db_error)?;
        Ok(n > 0)
    }

    fn requests_to(&self, target: &str) -> Result<Vec<Request>, StoreError> {
        self.requests(
            "SELECT watcher, target, at FROM requests WHERE target = ?1 ORDER BY at, watcher",
            target,
        )
    }

    fn requests_of(&self, watcher: &str) -> Result<Vec<Request>, StoreError> {
        self.requests(
            "SELECT watcher, target, at FROM requests WHERE watcher = ?1 ORDER BY target",
            watcher,
        )
    }

    fn admin_token(&self, domain: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let hash: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT token_hash FROM admins WHERE domain = ?1")
            .and_then(|mut s| s.query_row([domain], |row| row.get(0)).optional())
            .map_err(db_error)?;
        hash.map(|hash| {
            hash.try_into()
                .map_err(|_| StoreError(format!("corrupt administrator token hash of {domain}")))
        })
        .transpose()
    }

    fn put_admin_token(&mut self, domain: &str, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO admins (domain, token_hash) VALUES (?1, ?2)
                 ON CONFLICT (domain) DO UPDATE SET token_hash = excluded.token_hash",
            )
            .and_then(|mut s| s.execute(params![domain, &hash[..]]))
            .map_err(db_error)?;
        Ok(())
    }

    fn log_admin(&mut self, record: &AdminRecord) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO admin_log (at, domain, user, action) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    record.at,
                    record.domain,
                    record.user,
                    record.action
                ])
            })
            .map_err(db_error)?;
        Ok(())
    }

    fn admin_log(&self, domain: &str, limit: usize) -> Result<Vec<AdminRecord>, StoreError> {
        // Newest first through the index (no `LIMIT ?`, as in `inbox_after`), then
        // turned around: the last `limit` entries, oldest first.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at, domain, user, action FROM admin_log WHERE domain = ?1
                 ORDER BY id DESC",
            )
            .map_err(db_error)?;
        let mut rows = stmt
            .query_map([domain], |row| {
                Ok(AdminRecord {
                    at: row.get(0)?,
                    domain: row.get(1)?,
                    user: row.get(2)?,
                    action: row.get(3)?,
                })
            })
            .map_err(db_error)?
            .take(limit)
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error)?;
        rows.reverse();
        Ok(rows)
    }

    fn fed_push(&mut self, stanza: &Outbound) -> Result<u64, StoreError> {
        let key = stanza.coalesce_key();
        if let Some((from, to)) = key {
            self.conn
                .prepare_cached(
                    "DELETE FROM fed_outbox WHERE coalesce_from = ?1 AND coalesce_to = ?2",
                )
                .and_then(|mut s| s.execute([from, to]))
                .map_err(db_error)?;
        }
        let (from, to) = key.unzip();
        let blob = encode(stanza)?;
        self.conn
            .prepare_cached(
                "INSERT INTO fed_outbox (coalesce_from, coalesce_to, stanza) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![from, to, blob]))
            .map_err(db_error)?;
        u64::try_from(self.conn.last_insert_rowid())
            .map_err(|_| StoreError("negative outbox sequence number".into()))
    }

    fn fed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Outbound)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, stanza FROM fed_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![after, limit], |row| {
                Ok((row.get::<_, u64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, blob) = row.map_err(db_error)?;
            out.push((seq, decode("outbox stanza", &blob)?));
        }
        Ok(out)
    }

    fn fed_remove(&mut self, upto: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM fed_outbox WHERE seq <= ?1")
            .and_then(|mut s| s.execute([upto]))
            .map_err(db_error)?;
        Ok(())
    }

    fn relay(&self, sender: &str, id: &[u8]) -> Result<Option<Relay>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT peer, status FROM relays WHERE sender = ?1 AND id = ?2")
            .and_then(|mut s| {
                s.query_row(params![sender, id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
                })
                .optional()
            })
            .map_err(db_error)?;
        row.map(|(peer, status)| {
            Ok(Relay {
                peer,
                status: decode("relay status", &status)?,
            })
        })
        .transpose()
    }

    fn put_relay(&mut self, sender: &str, id: &[u8], relay: &Relay) -> Result<(), StoreError> {
        let status = encode(&relay.status)?;
        self.conn
            .prepare_cached(
                "INSERT INTO relays (sender, id, peer, status) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (sender, id) DO UPDATE SET peer = excluded.peer,
                   status = excluded.status",
            )
            .and_then(|mut s| s.execute(params![sender, id, relay.peer, status]))
            .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tern_gateway_core::MemStore;
    use tern_wire::{Basic, Incoming, LateReceipt, Presence, PresenceDoc, ReceiptStatus, Tuple};

    use super::super::SqliteStore;
    use super::*;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn user(address: &str, aliases: &[&str]) -> UserRecord {
        UserRecord {
            address: address.into(),
            token_hash: tern_gateway_core::auth::hash_token(address),
            presentity: true,
            inbox: true,
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            created: 1_700_000_000_000,
        }
    }

    fn message(n: u8) -> InboxItem {
        InboxItem::Message(Incoming {
            id: vec![n; 16],
            from: "bob@x".into(),
            to: "alice@x".into(),
            reply_to: None,
            content_type: Some("text/plain".into()),
            body: vec![n; 100],
            sent: 1_700_000_000_000 + u64::from(n),
        })
    }

    fn doc(presentity: &str, note: &str) -> PresenceDoc {
        PresenceDoc {
            presentity: presentity.into(),
            updated: 42,
            presence: Presence {
                tuples: vec![Tuple {
                    id: "phone".into(),
                    basic: Basic::Open,
                    availability: None,
                    contact: Some(format!("tern:{presentity}")),
                    note: Some(note.into()),
                    at: Some(1),
                    ext: vec![],
                }],
                card: vec![],
            },
        }
    }

    fn stored(presentity: &str, version: u64, note: &str) -> Versioned {
        Versioned {
            version,
            doc: doc(presentity, note),
        }
    }

    fn slotted(rows: &[(&str, Slot)]) -> Vec<(String, Slot)> {
        rows.iter().map(|(a, s)| ((*a).to_owned(), *s)).collect()
    }

    #[test]
    fn users_round_trip_with_aliases_in_order() {
        let (_d, mut store) = open();
        let alice = user("alice@x", &["al@x", "a@x"]);
        let bob = user("bob@x", &[]);
        store
            .write(|s| {
                s.put_user(&bob)?;
                s.put_user(&alice)
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(s.user("alice@x")?, Some(alice.clone()));
                assert_eq!(s.user("nobody@x")?, None);
                assert_eq!(s.users()?, vec![alice.clone(), bob.clone()]);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn put_user_replaces_the_record_and_its_aliases() {
        let (_d, mut store) = open();
        store
            .write(|s| s.put_user(&user("alice@x", &["al@x"])))
            .unwrap();
        let mut changed = user("alice@x", &["ally@x"]);
        changed.inbox = false;
        changed.token_hash = [1; 32];
        store.write(|s| s.put_user(&changed)).unwrap();
        store
            .read(|s| {
                assert_eq!(s.user("alice@x")?, Some(changed.clone()));
                assert_eq!(s.inbox_owner("al@x")?, None);
                assert_eq!(s.inbox_owner("ally@x")?.as_deref(), Some("alice@x"));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn inbox_owner_follows_inbox_flag_and_aliases() {
        let (_d, mut store) = open();
        let mut no_inbox = user("carol@x", &["c@x"]);
        no_inbox.inbox = false;
        store
            .write(|s| {
                s.put_user(&user("alice@x", &["al@x"]))?;
                s.put_user(&no_inbox)
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(s.inbox_owner("alice@x")?.as_deref(), Some("alice@x"));
                assert_eq!(s.inbox_owner("al@x")?.as_deref(), Some("alice@x"));
                assert_eq!(s.inbox_owner("carol@x")?, None);
                assert_eq!(s.inbox_owner("c@x")?.as_deref(), Some("carol@x"));
                assert_eq!(s.inbox_owner("nobody@x")?, None);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn presence_is_stored_and_replaced_with_its_version() {
        let (_d, mut store) = open();
        assert_eq!(store.read(|s| s.presence("alice@x")).unwrap(), None);
        store
            .write(|s| s.put_presence(&stored("alice@x", 1, "one")))
            .unwrap();
        store
            .write(|s| s.put_presence(&stored("alice@x", 2, "two")))
            .unwrap();
        // Versions are the caller's: a large one round-trips too.
        let big = stored("bob@x", u64::from(u32::MAX) + 7, "big");
        store.write(|s| s.put_presence(&big)).unwrap();
        store
            .read(|s| {
                assert_eq!(s.presence("alice@x")?, Some(stored("alice@x", 2, "two")));
                assert_eq!(s.presence("bob@x")?, Some(big.clone()));
                assert_eq!(
                    s.presences()?,
                    vec![stored("alice@x", 2, "two"), big.clone()]
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_version_beyond_sqlite_integers_is_an_error_not_a_panic() {
        let (_d, mut store) = open();
        let err = store.write(|s| s.put_presence(&stored("alice@x", u64::MAX, "x")));
        assert!(matches!(err, Err(super::super::DbError::Store(_))));
        assert_eq!(store.read(|s| s.presence("alice@x")).unwrap(), None);
    }

    #[test]
    fn subscriptions_add_remove_and_list_with_slots() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                assert_eq!(s.add_subscription("bob@x", "carol@x")?, 1);
                assert_eq!(s.add_subscription("bob@x", "alice@x")?, 2);
                assert_eq!(s.add_subscription("alice@x", "bob@x")?, 1, "per watcher");
                assert_eq!(s.add_subscription("carol@x", "alice@x")?, 1);
                assert!(s.remove_subscription("carol@x", "alice@x")?);
                assert!(!s.remove_subscription("carol@x", "alice@x")?);
                Ok(())
            })
            .unwrap();
        let sub = |watcher: &str, target: &str, slot| Subscription {
            watcher: watcher.into(),
            target: target.into(),
            slot,
        };
        store
            .read(|s| {
                assert_eq!(
                    s.subscriptions()?,
                    vec![
                        sub("alice@x", "bob@x", 1),
                        sub("bob@x", "alice@x", 2),
                        sub("bob@x", "carol@x", 1),
                    ]
                );
                assert_eq!(
                    s.subscriptions_of("bob@x")?,
                    slotted(&[("carol@x", 1), ("alice@x", 2)]),
                    "slot order, not name order"
                );
                assert_eq!(s.subscriptions_of("nobody@x")?, vec![]);
                assert_eq!(s.watchers_of("alice@x")?, slotted(&[("bob@x", 2)]));
                assert_eq!(s.watchers_of("bob@x")?, slotted(&[("alice@x", 1)]));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn add_subscription_twice_returns_the_same_slot() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                assert_eq!(s.add_subscription("bob@x", "alice@x")?, 1);
                assert_eq!(s.add_subscription("bob@x", "alice@x")?, 1);
                assert_eq!(s.add_subscription("bob@x", "carol@x")?, 2, "no slot spent");
                Ok(())
            })
            .unwrap();
        // In a later transaction too.
        assert_eq!(
            store
                .write(|s| s.add_subscription("bob@x", "alice@x"))
                .unwrap(),
            1
        );
        assert_eq!(store.read(|s| s.subscriptions()).unwrap().len(), 2);
    }

    #[test]
    fn slots_are_never_reused_after_remove_subscription() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                assert_eq!(s.add_subscription("bob@x", "alice@x")?, 1);
                assert_eq!(s.add_subscription("bob@x", "carol@x")?, 2);
                assert!(s.remove_subscription("bob@x", "carol@x")?);
                assert_eq!(s.add_subscription("bob@x", "dave@x")?, 3);
                assert!(s.remove_subscription("bob@x", "alice@x")?);
                assert!(s.remove_subscription("bob@x", "dave@x")?);
                Ok(())
            })
            .unwrap();
        // Even with no subscription left, and across a reopen of the transaction.
        assert_eq!(store.read(|s| s.subscriptions_of("bob@x")).unwrap(), vec![]);
        store
            .write(|s| {
                assert_eq!(s.add_subscription("bob@x", "alice@x")?, 4, "a new slot");
                assert_eq!(s.add_subscription("bob@x", "carol@x")?, 5);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_failed_event_gives_back_its_slot() {
        // The counter is rolled back with the event, so the slot was never used.
        let (_d, mut store) = open();
        let mut batch = store.begin().unwrap();
        let failed: Result<(), StoreError> = batch.event(|s| {
            assert_eq!(s.add_subscription("bob@x", "alice@x")?, 1);
            Err(StoreError("boom".into()))
        });
        assert!(failed.is_err());
        let slot = batch
            .event(|s| s.add_subscription("bob@x", "carol@x"))
            .unwrap();
        assert_eq!(slot, 1);
        batch.commit().unwrap();
    }

    #[test]
    fn remove_user_resets_the_slot_counter() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                s.put_user(&user("bob@x", &[]))?;
                s.put_user(&user("alice@x", &[]))?;
                assert_eq!(s.add_subscription("bob@x", "alice@x")?, 1);
                assert_eq!(s.add_subscription("bob@x", "carol@x")?, 2);
                assert_eq!(s.add_subscription("alice@x", "carol@x")?, 1);
                assert_eq!(s.add_subscription("alice@x", "bob@x")?, 2);
                assert!(s.remove_user("bob@x")?);
                Ok(())
            })
            .unwrap();
        store
            .write(|s| {
                s.put_user(&user("bob@x", &[]))?;
                assert_eq!(s.add_subscription("bob@x", "carol@x")?, 1, "starts over");
                // Alice's subscription to Bob went with him, but not her counter.
                assert_eq!(s.subscriptions_of("alice@x")?, slotted(&[("carol@x", 1)]));
                assert_eq!(s.add_subscription("alice@x", "bob@x")?, 3);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_slot_beyond_u32_is_an_error_not_a_panic() {
        let (_d, mut store) = open();
        store
            .conn
            .execute(
                "INSERT INTO slots (watcher, last) VALUES ('bob@x', 4294967295)",
                [],
            )
            .unwrap();
        assert!(
            store
                .write(|s| s.add_subscription("bob@x", "alice@x"))
                .is_err()
        );
        assert_eq!(store.read(|s| s.subscriptions()).unwrap(), vec![]);
    }

    /// SQLite's plan for `sql` (one `?1` parameter), its steps joined by `; `.
    fn query_plan(store: &SqliteStore, sql: &str) -> String {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = stmt
            .query_map(["x"], |row| row.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn subscription_lookups_read_only_their_index() {
        // The hub reads both directions at every login: no table scan, no sort, and no
        // lookup into the table for the slot.
        let (_d, store) = open();
        let plan = |sql: &str| query_plan(&store, sql);
        let of = plan("SELECT target, slot FROM subscriptions WHERE watcher = ?1 ORDER BY slot");
        assert!(of.contains("COVERING INDEX subscriptions_slot"), "{of}");
        let watchers =
            plan("SELECT watcher, slot FROM subscriptions WHERE target = ?1 ORDER BY watcher");
        assert!(
            watchers.contains("COVERING INDEX subscriptions_target"),
            "{watchers}"
        );
        for p in [&of, &watchers] {
            assert!(!p.contains("TEMP B-TREE"), "{p}");
        }
    }

    /// One scenario through the in-memory reference store and through SQLite; the two
    /// must answer every call alike.
    #[test]
    fn sqlite_agrees_with_the_reference_store() {
        fn scenario(s: &mut dyn Store) -> Result<Vec<String>, StoreError> {
            let mut seen = Vec::new();
            let mut note = |what: &str, value: String| seen.push(format!("{what}: {value}"));
            s.put_user(&user("alice@x", &[]))?;
            s.put_user(&user("bob@x", &[]))?;
            for (w, t) in [
                ("bob@x", "carol@x"),
                ("bob@x", "alice@x"),
                ("bob@x", "carol@x"),
                ("alice@x", "bob@x"),
                ("carol@x", "alice@x"),
            ] {
                note("add", format!("{w} {t} {}", s.add_subscription(w, t)?));
            }
            note(
                "remove",
                format!("{}", s.remove_subscription("bob@x", "carol@x")?),
            );
            note(
                "remove",
                format!("{}", s.remove_subscription("bob@x", "carol@x")?),
            );
            note("add", format!("{}", s.add_subscription("bob@x", "dave@x")?));
            note(
                "add",
                format!("{}", s.add_subscription("bob@x", "carol@x")?),
            );
            s.put_presence(&stored("alice@x", 1, "one"))?;
            s.put_presence(&stored("alice@x", 2, "two"))?;
            s.put_presence(&stored("bob@x", 1, "b"))?;
            note("presence", format!("{:?}", s.presence("alice@x")?));
            let mut all = s.presences()?;
            all.sort_by(|a, b| a.doc.presentity.cmp(&b.doc.presentity));
            note("presences", format!("{all:?}"));
            note("subscriptions", format!("{:?}", s.subscriptions()?));
            note("of bob", format!("{:?}", s.subscriptions_of("bob@x")?));
            note(
                "watchers of alice",
                format!("{:?}", s.watchers_of("alice@x")?),
            );
            note("remove bob", format!("{}", s.remove_user("bob@x")?));
            note("subscriptions", format!("{:?}", s.subscriptions()?));
            note("presence bob", format!("{:?}", s.presence("bob@x")?));
            note(
                "add",
                format!("{}", s.add_subscription("bob@x", "alice@x")?),
            );
            note(
                "add",
                format!("{}", s.add_subscription("alice@x", "bob@x")?),
            );
            note(
                "watchers of alice",
                format!("{:?}", s.watchers_of("alice@x")?),
            );
            note("of alice", format!("{:?}", s.subscriptions_of("alice@x")?));
            Ok(seen)
        }
        let mut reference = MemStore::default();
        let expected = scenario(&mut reference).unwrap();
        let (_d, mut store) = open();
        let got = store.write(scenario).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn the_federation_outbox_keeps_order_coalesces_presence_and_never_reuses_numbers() {
        use tern_gateway_core::federation::{Outbound, SubKind};
        let presence = |note: &str| Outbound::Presence {
            from: "alice@x".into(),
            to: "romeo@xmpp.test".into(),
            presence: Presence {
                tuples: vec![],
                card: vec![tern_wire::CardField {
                    kind: tern_wire::CardKind::NAME,
                    value: note.into(),
                }],
            },
        };
        let subscribed = Outbound::Subscription {
            from: "alice@x".into(),
            to: "romeo@xmpp.test".into(),
            kind: SubKind::Subscribed,
        };
        let message = Outbound::Message {
            from: "alice@x".into(),
            to: "romeo@xmpp.test".into(),
            id: vec![1, 2],
            body: "hi".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store
            .write(|s| {
                assert_eq!(s.fed_push(&subscribed)?, 1);
                assert_eq!(s.fed_push(&presence("a"))?, 2);
                assert_eq!(s.fed_push(&message)?, 3);
                assert_eq!(s.fed_push(&presence("b"))?, 4, "replaces 2");
                let waiting = s.fed_after(0, 10)?;
                let seqs: Vec<u64> = waiting.iter().map(|(q, _)| *q).collect();
                assert_eq!(seqs, [1, 3, 4]);
                assert_eq!(waiting[2].1, presence("b"));
                assert_eq!(s.fed_after(1, 1)?, vec![(3, message.clone())]);
                s.fed_remove(4)?;
                Ok(())
            })
            .unwrap();
        drop(store);
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store
            .write(|s| {
                assert!(s.fed_after(0, 10)?.is_empty());
                assert_eq!(s.fed_push(&message)?, 5, "numbers are never reused");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn relays_round_trip_and_go_with_their_sender() {
        use tern_gateway_core::Relay;
        use tern_wire::{ErrorCode, ReceiptStatus};
        let (_d, mut store) = open();
        store
            .write(|s| {
                s.put_user(&user("alice@x", &[]))?;
                assert_eq!(s.relay("alice@x", b"m1")?, None);
                let mut relay = Relay {
                    peer: "romeo@xmpp.test".into(),
                    status: ReceiptStatus::Relayed,
                };
                s.put_relay("alice@x", b"m1", &relay)?;
                assert_eq!(s.relay("alice@x", b"m1")?, Some(relay.clone()));
                relay.status = ReceiptStatus::Failed(ErrorCode::UNKNOWN_USER);
                s.put_relay("alice@x", b"m1", &relay)?;
                assert_eq!(s.relay("alice@x", b"m1")?, Some(relay));
                assert_eq!(s.relay("alice@x", b"m2")?, None);
                s.remove_user("alice@x")?;
                assert_eq!(s.relay("alice@x", b"m1")?, None);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn inbox_push_after_last_remove() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                for n in 1..=5u8 {
                    assert_eq!(s.inbox_push("alice@x", &message(n))?, u64::from(n));
                }
                assert_eq!(
                    s.inbox_push("bob@x", &message(9))?,
                    1,
                    "per-owner numbering"
                );
                let page = s.inbox_after("alice@x", 1, 2)?;
                assert_eq!(page, vec![(2, message(2)), (3, message(3))]);
                assert_eq!(s.inbox_after("alice@x", 5, 10)?, vec![]);
                assert_eq!(s.inbox_after("alice@x", 0, usize::MAX)?.len(), 5);
                assert_eq!(s.inbox_last("alice@x")?, 5);
                assert_eq!(s.inbox_last("nobody@x")?, 0);
                s.inbox_remove("alice@x", 3)?;
                let left = s.inbox_after("alice@x", 0, 10)?;
                assert_eq!(left.iter().map(|(q, _)| *q).collect::<Vec<_>>(), [4, 5]);
                s.inbox_remove("alice@x", 3)?; // idempotent
                s.inbox_remove("nobody@x", u64::MAX)?;
                assert_eq!(s.inbox_after("alice@x", 0, 10)?.len(), 2);
                assert_eq!(s.inbox_last("alice@x")?, 5, "removal keeps the counter");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn devices_keep_their_positions() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                assert_eq!(s.device("alice@x", b"phone")?, None);
                s.put_device("alice@x", b"phone", DeviceRecord { acked: 3, seen: 10 })?;
                s.put_device("alice@x", b"laptop", DeviceRecord { acked: 1, seen: 20 })?;
                s.put_device("alice@x", b"phone", DeviceRecord { acked: 4, seen: 30 })?;
                s.put_device("bob@x", b"phone", DeviceRecord { acked: 9, seen: 9 })?;
                assert_eq!(
                    s.device("alice@x", b"phone")?,
                    Some(DeviceRecord { acked: 4, seen: 30 })
                );
                let all = s.devices("alice@x")?;
                assert_eq!(all.len(), 2);
                assert_eq!(
                    all[0],
                    (b"laptop".to_vec(), DeviceRecord { acked: 1, seen: 20 })
                );
                s.put_user(&user("alice@x", &[]))?;
                s.remove_user("alice@x")?;
                assert!(s.devices("alice@x")?.is_empty(), "removed with the user");
                assert_eq!(s.devices("bob@x")?.len(), 1);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn sequence_numbers_are_never_reused_after_ack() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                s.inbox_push("alice@x", &message(1))?;
                s.inbox_push("alice@x", &message(2))?;
                s.inbox_remove("alice@x", u64::MAX)?;
                assert_eq!(s.inbox_push("alice@x", &message(3))?, 3);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn receipts_round_trip_in_the_inbox() {
        let (_d, mut store) = open();
        let receipt = InboxItem::Receipt(LateReceipt {
            id: vec![1, 2, 3],
            to: "alice@x".into(),
            status: ReceiptStatus::Delivered,
        });
        store.write(|s| s.inbox_push("bob@x", &receipt)).unwrap();
        assert_eq!(
            store.read(|s| s.inbox_after("bob@x", 0, 1)).unwrap(),
            vec![(1, receipt)]
        );
    }

    #[test]
    fn sent_records_deduplicate() {
        let (_d, mut store) = open();
        let record = SentRecord {
            owner: "alice@x".into(),
            seq: 7,
        };
        store
            .write(|s| {
                assert_eq!(s.sent("bob@x", b"id1")?, None);
                s.put_sent("bob@x", b"id1", record.clone())?;
                assert_eq!(s.sent("bob@x", b"id1")?, Some(record.clone()));
                assert_eq!(s.sent("bob@x", b"id2")?, None);
                assert_eq!(s.sent("carol@x", b"id1")?, None);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn remove_user_cascades_but_keeps_the_sequence() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                s.put_user(&user("alice@x", &["al@x"]))?;
                s.put_user(&user("bob@x", &[]))?;
                s.put_presence(&stored("alice@x", 1, "here"))?;
                s.add_subscription("alice@x", "bob@x")?;
                s.add_subscription("bob@x", "alice@x")?;
                s.inbox_push("alice@x", &message(1))?;
                s.inbox_push("alice@x", &message(2))?;
                s.put_sent(
                    "alice@x",
                    b"m",
                    SentRecord {
                        owner: "bob@x".into(),
                        seq: 1,
                    },
                )?;
                s.put_sent(
                    "bob@x",
                    b"m",
                    SentRecord {
                        owner: "alice@x".into(),
                        seq: 1,
                    },
                )?;
                assert!(s.remove_user("alice@x")?);
                assert!(!s.remove_user("alice@x")?);
                Ok(())
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(s.user("alice@x")?, None);
                assert_eq!(s.inbox_owner("al@x")?, None);
                assert_eq!(s.presence("alice@x")?, None);
                assert_eq!(s.subscriptions()?, vec![]);
                assert_eq!(s.subscriptions_of("alice@x")?, vec![]);
                assert_eq!(s.inbox_after("alice@x", 0, 10)?, vec![]);
                assert_eq!(s.sent("alice@x", b"m")?, None);
                assert_eq!(s.sent("bob@x", b"m")?, None);
                assert_eq!(s.users()?.len(), 1);
                Ok(())
            })
            .unwrap();
        // Provisioned again, the address continues its numbering.
        store
            .write(|s| {
                s.put_user(&user("alice@x", &[]))?;
                assert_eq!(s.inbox_push("alice@x", &message(3))?, 3);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn everything_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path()).unwrap();
            store
                .write(|s| {
                    s.put_user(&user("alice@x", &["al@x"]))?;
                    s.put_presence(&stored("alice@x", 3, "persisted"))?;
                    s.add_subscription("bob@x", "carol@x")?;
                    s.add_subscription("bob@x", "alice@x")?;
                    s.remove_subscription("bob@x", "carol@x")?;
                    s.inbox_push("alice@x", &message(1))?;
                    s.inbox_push("alice@x", &message(2))?;
                    s.inbox_remove("alice@x", 1)?;
                    s.put_sent(
                        "bob@x",
                        b"m",
                        SentRecord {
                            owner: "alice@x".into(),
                            seq: 2,
                        },
                    )
                })
                .unwrap();
        }
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store
            .read(|s| {
                assert_eq!(s.user("alice@x")?, Some(user("alice@x", &["al@x"])));
                assert_eq!(
                    s.presence("alice@x")?,
                    Some(stored("alice@x", 3, "persisted"))
                );
                assert_eq!(s.subscriptions_of("bob@x")?, slotted(&[("alice@x", 2)]));
                assert_eq!(s.inbox_after("alice@x", 0, 10)?, vec![(2, message(2))]);
                assert_eq!(s.sent("bob@x", b"m")?.map(|r| r.seq), Some(2));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            store
                .write(|s| s.inbox_push("alice@x", &message(3)))
                .unwrap(),
            3
        );
        assert_eq!(
            store
                .write(|s| s.add_subscription("bob@x", "carol@x"))
                .unwrap(),
            3,
            "the slot counter persists"
        );
    }

    #[test]
    fn a_corrupt_blob_is_an_error_not_a_panic() {
        let (_d, mut store) = open();
        store
            .conn
            .execute(
                "INSERT INTO presence (presentity, version, doc) VALUES ('x@x', 1, X'FFFFFFFF')",
                [],
            )
            .unwrap();
        assert!(store.read(|s| s.presence("x@x")).is_err());
        assert!(store.write(|s| s.presence("x@x")).is_err());
    }

    fn rules_of(note: u8) -> StoredRules {
        use tern_wire::{
            Decision, Delegate, Delivery, InboxRule, PresenceRule, Rules, View, When, Who,
        };
        StoredRules {
            rules: Rules {
                presence: vec![
                    PresenceRule {
                        who: Who::User("bob@x".into()),
                        decision: Decision::Allow,
                        view: Some(View {
                            tuples: vec!["phone".into()],
                            hide: View::NOTE | View::CARD,
                            status: Some(tern_wire::Availability::BUSY),
                        }),
                        when: Some(When {
                            days: 0x1f,
                            from: 9 * 60,
                            to: 17 * 60,
                            offset: 60,
                        }),
                    },
                    PresenceRule {
                        who: Who::Domain("y".into()),
                        decision: Decision::Ask,
                        view: None,
                        when: None,
                    },
                ],
                inbox: vec![InboxRule {
                    who: Who::Anonymous,
                    delivery: Delivery::Discard,
                }],
                delegates: vec![Delegate {
                    who: format!("helper{note}@x"),
                    rights: Delegate::PUBLISH | Delegate::READ,
                }],
            },
            epoch: u64::from(note),
        }
    }

    fn request(watcher: &str, target: &str, at: u64) -> Request {
        Request {
            watcher: watcher.into(),
            target: target.into(),
            at,
        }
    }

    fn logged(at: u64, domain: &str, user: &str, action: &str) -> AdminRecord {
        AdminRecord {
            at,
            domain: domain.into(),
            user: user.into(),
            action: action.into(),
        }
    }

    #[test]
    fn rules_round_trip_and_are_replaced_whole() {
        let (_d, mut store) = open();
        assert_eq!(store.read(|s| s.all_rules()).unwrap(), vec![]);
        store
            .write(|s| {
                s.put_rules("carol@x", &rules_of(1))?;
                s.put_rules("alice@x", &StoredRules::default())?;
                s.put_rules("carol@x", &rules_of(2))
            })
            .unwrap();
        // Owner order; the second put replaced the first, epoch too.
        assert_eq!(
            store.read(|s| s.all_rules()).unwrap(),
            vec![
                ("alice@x".to_owned(), StoredRules::default()),
                ("carol@x".to_owned(), rules_of(2)),
            ]
        );
        // An epoch beyond SQLite's integers is an error, and changes nothing.
        let huge = StoredRules {
            epoch: u64::MAX,
            ..rules_of(3)
        };
        assert!(store.write(|s| s.put_rules("carol@x", &huge)).is_err());
        assert_eq!(store.read(|s| s.all_rules()).unwrap()[1].1, rules_of(2));
    }

    #[test]
    fn corrupt_rules_are_an_error_not_a_panic() {
        let (_d, store) = open();
        store
            .conn
            .execute(
                "INSERT INTO rules (owner, rules, epoch) VALUES ('x@x', X'FFFFFFFF', 1)",
                [],
            )
            .unwrap();
        let err = store.read(|s| s.all_rules()).unwrap_err();
        assert!(err.to_string().contains("corrupt rules"), "{err}");
    }

    #[test]
    fn requests_are_listed_oldest_first_and_by_target() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                s.add_request(&request("dave@x", "alice@x", 30))?;
                s.add_request(&request("bob@x", "alice@x", 20))?;
                s.add_request(&request("carol@x", "alice@x", 20))?;
                s.add_request(&request("bob@x", "zed@x", 5))?;
                s.add_request(&request("bob@x", "carol@x", 50))?;
                // Asked again: replaced, with the new time.
                s.add_request(&request("dave@x", "alice@x", 10))
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(
                    s.requests_to("alice@x")?,
                    vec![
                        request("dave@x", "alice@x", 10),
                        request("bob@x", "alice@x", 20),
                        request("carol@x", "alice@x", 20),
                    ],
                    "by time, then watcher"
                );
                assert_eq!(
                    s.requests_of("bob@x")?,
                    vec![
                        request("bob@x", "alice@x", 20),
                        request("bob@x", "carol@x", 50),
                        request("bob@x", "zed@x", 5),
                    ],
                    "by target"
                );
                assert_eq!(s.requests_to("nobody@x")?, vec![]);
                assert_eq!(s.requests_of("nobody@x")?, vec![]);
                Ok(())
            })
            .unwrap();
        store
            .write(|s| {
                assert!(s.remove_request("bob@x", "alice@x")?);
                assert!(!s.remove_request("bob@x", "alice@x")?);
                assert!(!s.remove_request("alice@x", "bob@x")?, "not the other way");
                Ok(())
            })
            .unwrap();
        assert_eq!(
            store.read(|s| s.requests_to("alice@x")).unwrap().len(),
            2,
            "the others stay"
        );
    }

    #[test]
    fn admin_tokens_are_set_and_rotated_per_domain() {
        use tern_gateway_core::auth::hash_token;
        let (_d, mut store) = open();
        assert_eq!(store.read(|s| s.admin_token("x")).unwrap(), None);
        store
            .write(|s| {
                s.put_admin_token("x", &hash_token("one"))?;
                s.put_admin_token("y", &hash_token("other"))?;
                s.put_admin_token("x", &hash_token("two"))
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(s.admin_token("x")?, Some(hash_token("two")), "rotated");
                assert_eq!(s.admin_token("y")?, Some(hash_token("other")));
                assert_eq!(s.admin_token("z")?, None);
                Ok(())
            })
            .unwrap();
        store
            .conn
            .execute(
                "INSERT INTO admins (domain, token_hash) VALUES ('short', X'0102')",
                [],
            )
            .unwrap();
        assert!(store.read(|s| s.admin_token("short")).is_err());
    }

    #[test]
    fn the_admin_log_keeps_the_last_entries_of_a_domain_oldest_first() {
        let (_d, mut store) = open();
        store
            .write(|s| {
                // Times out of order on purpose: the log is in the order written.
                s.log_admin(&logged(30, "x", "alice@x", "get-rules"))?;
                s.log_admin(&logged(10, "y", "bob@y", "watchers"))?;
                s.log_admin(&logged(20, "x", "bob@x", "cancel carol@x"))?;
                s.log_admin(&logged(40, "x", "alice@x", "set-rules"))
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(
                    s.admin_log("x", 10)?,
                    vec![
                        logged(30, "x", "alice@x", "get-rules"),
                        logged(20, "x", "bob@x", "cancel carol@x"),
                        logged(40, "x", "alice@x", "set-rules"),
                    ]
                );
                assert_eq!(
                    s.admin_log("x", 2)?,
                    vec![
                        logged(20, "x", "bob@x", "cancel carol@x"),
                        logged(40, "x", "alice@x", "set-rules"),
                    ]
                );
                assert_eq!(s.admin_log("x", 0)?, vec![]);
                assert_eq!(s.admin_log("y", usize::MAX)?.len(), 1);
                assert_eq!(s.admin_log("z", 10)?, vec![]);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn remove_user_drops_rules_and_requests_both_ways_but_not_the_audit_log() {
        use tern_gateway_core::auth::hash_token;
        let (_d, mut store) = open();
        store
            .write(|s| {
                s.put_user(&user("alice@x", &[]))?;
                s.put_user(&user("bob@x", &[]))?;
                s.put_rules("alice@x", &rules_of(1))?;
                s.put_rules("bob@x", &rules_of(2))?;
                s.add_request(&request("alice@x", "bob@x", 1))?;
                s.add_request(&request("bob@x", "alice@x", 2))?;
                s.add_request(&request("carol@x", "alice@x", 3))?;
                s.add_request(&request("carol@x", "bob@x", 4))?;
                s.put_admin_token("x", &hash_token("admin"))?;
                s.log_admin(&logged(5, "x", "alice@x", "set-rules"))?;
                assert!(s.remove_user("alice@x")?);
                Ok(())
            })
            .unwrap();
        store
            .read(|s| {
                assert_eq!(s.all_rules()?, vec![("bob@x".to_owned(), rules_of(2))]);
                assert_eq!(s.requests_to("alice@x")?, vec![]);
                assert_eq!(s.requests_of("alice@x")?, vec![]);
                assert_eq!(
                    s.requests_to("bob@x")?,
                    vec![request("carol@x", "bob@x", 4)]
                );
                assert_eq!(s.requests_of("bob@x")?, vec![]);
                assert_eq!(s.admin_token("x")?, Some(hash_token("admin")));
                assert_eq!(
                    s.admin_log("x", 10)?,
                    vec![logged(5, "x", "alice@x", "set-rules")]
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn request_and_admin_log_lookups_use_their_indexes() {
        let (_d, store) = open();
        let plan = |sql: &str| query_plan(&store, sql);
        let to =
            plan("SELECT watcher, target, at FROM requests WHERE target = ?1 ORDER BY at, watcher");
        assert!(to.contains("COVERING INDEX requests_target"), "{to}");
        let of =
            plan("SELECT watcher, target, at FROM requests WHERE watcher = ?1 ORDER BY target");
        assert!(of.contains("PRIMARY KEY"), "{of}");
        let log = plan(
            "SELECT at, domain, user, action FROM admin_log WHERE domain = ?1 ORDER BY id DESC",
        );
        assert!(log.contains("INDEX admin_log_domain"), "{log}");
        for p in [&to, &of, &log] {
            assert!(!p.contains("TEMP B-TREE"), "{p}");
        }
    }

    /// The access-rule, request and administrator calls through the reference store and
    /// through SQLite: the two must answer alike, ordering included.
    #[test]
    fn sqlite_agrees_with_the_reference_store_on_rules_requests_and_admins() {
        fn scenario(s: &mut dyn Store) -> Result<Vec<String>, StoreError> {
            use tern_gateway_core::auth::hash_token;
            let mut seen = Vec::new();
            let mut note = |what: &str, value: String| seen.push(format!("{what}: {value}"));
            for who in ["alice@x", "bob@x", "carol@x"] {
                s.put_user(&user(who, &[]))?;
            }
            s.put_rules("carol@x", &rules_of(1))?;
            s.put_rules("alice@x", &rules_of(2))?;
            s.put_rules("bob@x", &rules_of(3))?;
            s.put_rules("alice@x", &rules_of(4))?;
            note("rules", format!("{:?}", s.all_rules()?));
            for (w, t, at) in [
                ("dave@x", "alice@x", 7),
                ("bob@x", "alice@x", 7),
                ("carol@x", "alice@x", 3),
                ("alice@x", "carol@x", 9),
                ("alice@x", "bob@x", 8),
                ("bob@x", "alice@x", 9),
            ] {
                s.add_request(&request(w, t, at))?;
            }
            note("to alice", format!("{:?}", s.requests_to("alice@x")?));
            note("of alice", format!("{:?}", s.requests_of("alice@x")?));
            note(
                "remove",
                format!("{}", s.remove_request("carol@x", "alice@x")?),
            );
            note(
                "remove",
                format!("{}", s.remove_request("carol@x", "alice@x")?),
            );
            s.put_admin_token("x", &hash_token("a"))?;
            s.put_admin_token("x", &hash_token("b"))?;
            note("token", format!("{:?}", s.admin_token("x")?));
            note("token", format!("{:?}", s.admin_token("y")?));
            for n in 0..5u64 {
                let domain = if n % 2 == 0 { "x" } else { "y" };
                s.log_admin(&logged(100 - n, domain, "alice@x", &format!("op {n}")))?;
            }
            for limit in [0, 1, 2, 3, 10] {
                note("log x", format!("{:?}", s.admin_log("x", limit)?));
            }
            note("log y", format!("{:?}", s.admin_log("y", 1)?));
            note("remove alice", format!("{}", s.remove_user("alice@x")?));
            note("rules", format!("{:?}", s.all_rules()?));
            note("to alice", format!("{:?}", s.requests_to("alice@x")?));
            note("of alice", format!("{:?}", s.requests_of("alice@x")?));
            note("to bob", format!("{:?}", s.requests_to("bob@x")?));
            note("of bob", format!("{:?}", s.requests_of("bob@x")?));
            note("of dave", format!("{:?}", s.requests_of("dave@x")?));
            note("log x", format!("{:?}", s.admin_log("x", 10)?));
            Ok(seen)
        }
        let mut reference = MemStore::default();
        let expected = scenario(&mut reference).unwrap();
        let (_d, mut store) = open();
        let got = store.write(scenario).unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn rules_requests_and_admins_persist_across_reopen() {
        use tern_gateway_core::auth::hash_token;
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = SqliteStore::open(dir.path()).unwrap();
            store
                .write(|s| {
                    s.put_rules("alice@x", &rules_of(9))?;
                    s.add_request(&request("bob@x", "alice@x", 3))?;
                    s.put_admin_token("x", &hash_token("admin"))?;
                    s.log_admin(&logged(4, "x", "alice@x", "get-rules"))
                })
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .read(|s| {
                assert_eq!(s.all_rules()?, vec![("alice@x".to_owned(), rules_of(9))]);
                assert_eq!(
                    s.requests_of("bob@x")?,
                    vec![request("bob@x", "alice@x", 3)]
                );
                assert_eq!(s.admin_token("x")?, Some(hash_token("admin")));
                assert_eq!(
                    s.admin_log("x", 1)?,
                    vec![logged(4, "x", "alice@x", "get-rules")]
                );
                Ok(())
            })
            .unwrap();
    }
}
