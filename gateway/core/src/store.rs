//! The storage port of the gateway core.
//!
//! [`Store`] is what the core needs from durable storage, as plain synchronous calls
//! inside one transaction that the runtime opens, commits or rolls back around a batch
//! of events (group commit: one fsync for many requests, and no response leaves the
//! gateway before the commit that made it true). The core never opens, commits or
//! closes anything itself. [`MemStore`] is an in-memory implementation for tests and
//! simulations; the runtime's SQLite implementation lives in `tern-gateway`.

use std::collections::{BTreeMap, HashMap};

use tern_wire::{InboxItem, PresenceDoc, ReceiptStatus, Rules, Slot, Version};

use crate::federation::Outbound;

/// A storage failure; the event that met it is rolled back and answered `internal`.
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

/// A provisioned principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The principal's normalised identifier; also its presentity and default inbox.
    pub address: String,
    /// SHA-256 of the access token, never the token itself.
    pub token_hash: [u8; 32],
    /// Whether the principal has a presentity (RFC 2779 2.1.2).
    pub presentity: bool,
    /// Whether the principal has an instant inbox at its own address (2.1.2, 2.1.3).
    pub inbox: bool,
    /// Further inbox addresses that deliver to this principal's inbox (2.1.2).
    pub aliases: Vec<String>,
    /// When it was provisioned, Unix milliseconds.
    pub created: u64,
}

/// Where an accepted message went, kept per (sender, message id) to deliver it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRecord {
    /// The principal whose inbox took the message.
    pub owner: String,
    /// Sequence number of the message in that inbox log.
    pub seq: u64,
}

/// What the gateway keeps about one device of a principal that takes inbox items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The highest inbox sequence number this device acknowledged: nothing at or below
    /// it is delivered to the device again (receive-only-once, RFC 2779 5.4.2).
    pub acked: u64,
    /// When the device last opened a session or acknowledged, Unix milliseconds.
    pub seen: u64,
}

/// A presentity's presence document with its version: 1 for the first document stored,
/// then one more per document stored for the same presentity. Versions are never reused
/// while the presentity exists, so (presentity, version) names one document for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The version.
    pub version: Version,
    /// The document.
    pub doc: PresenceDoc,
}

/// One subscription, with the slot that names it in its watcher's batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The subscribed principal.
    pub watcher: String,
    /// The presentity.
    pub target: String,
    /// Assigned when the subscription was made: one more than the watcher's last slot,
    /// never reused for another subscription of that watcher (until the watcher is
    /// removed).
    pub slot: Slot,
}

/// A principal's rules as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRules {
    /// The rules.
    pub rules: Rules,
    /// The version of the principal's document made when the rules last changed what
    /// some watcher sees: no delta may span it (views before and after differ).
    pub epoch: Version,
}

/// A subscription waiting for the presentity's principal to decide (rule *ask*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The principal asking to watch.
    pub watcher: String,
    /// The presentity.
    pub target: String,
    /// When it asked, Unix ms.
    pub at: u64,
}

/// A message that crossed the bridge to or from XMPP, kept per (sender, message id):
/// resends are recognised, and receipts find what they answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// The other end: the remote recipient of a message a local principal sent, or the
    /// full JID of a remote sender whose message asked for a receipt (the receipt goes
    /// there).
    pub peer: String,
    /// What is known of it: `Relayed`, then `Delivered` or `Failed` for a message sent
    /// out; `Stored`, then `Delivered` (receipt sent) for a message that came in.
    pub status: ReceiptStatus,
}

/// One administrator action, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRecord {
    /// When, Unix ms.
    pub at: u64,
    /// The administered domain.
    pub domain: String,
    /// The principal acted on.
    pub user: String,
    /// What was done, for people (e.g. `cancel bob@example.test`).
    pub action: String,
}

/// Durable state of the gateway, seen through one open transaction.
pub trait Store {
    /// The principal with this normalised address.
    fn user(&self, address: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Creates or replaces a principal (and its aliases).
    fn put_user(&mut self, user: &UserRecord) -> Result<(), StoreError>;
    /// Removes a principal with its presence, subscriptions, inbox and aliases.
    fn remove_user(&mut self, address: &str) -> Result<bool, StoreError>;
    /// All principals, ordered by address.
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// The principal whose inbox this address reaches: its own address (if it has an
    /// inbox) or one of its aliases.
    fn inbox_owner(&self, address: &str) -> Result<Option<String>, StoreError>;

    /// The last presence document stored for a presentity, with its version.
    fn presence(&self, presentity: &str) -> Result<Option<Versioned>, StoreError>;
    /// Stores a presentity's presence document, replacing the previous one. The caller
    /// gives the version: one more than the stored one's (1 for the first).
    fn put_presence(&mut self, doc: &Versioned) -> Result<(), StoreError>;
    /// Every stored presence document (read once at start).
    fn presences(&self) -> Result<Vec<Versioned>, StoreError>;

    /// Records that `watcher` subscribes to `target` and returns the subscription's slot:
    /// the existing one if it already did, else the watcher's next, never-used slot
    /// (the first is 1).
    fn add_subscription(&mut self, watcher: &str, target: &str) -> Result<Slot, StoreError>;
    /// Ends a subscription; false if there was none. Its slot is not reused.
    fn remove_subscription(&mut self, watcher: &str, target: &str) -> Result<bool, StoreError>;
    /// Every subscription, for loading at start.
    fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;
    /// The presentities `watcher` subscribes to, with their slots, in slot order.
    fn subscriptions_of(&self, watcher: &str) -> Result<Vec<(String, Slot)>, StoreError>;
    /// The principals subscribed to `target`, each with its slot for it.
    fn watchers_of(&self, target: &str) -> Result<Vec<(String, Slot)>, StoreError>;

    /// Appends to an inbox log, returning the item's sequence number: one more than the
    /// last ever appended to that inbox (numbers are never reused, even after removal).
    fn inbox_push(&mut self, owner: &str, item: &InboxItem) -> Result<u64, StoreError>;
    /// Up to `limit` items with sequence numbers above `after`, in order.
    fn inbox_after(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InboxItem)>, StoreError>;
    /// The last sequence number ever appended to the inbox (0 if none).
    fn inbox_last(&self, owner: &str) -> Result<u64, StoreError>;
    /// Removes every item up to and including `upto` (every device has it).
    fn inbox_remove(&mut self, owner: &str, upto: u64) -> Result<(), StoreError>;

    /// The record of one device of a principal.
    fn device(&self, owner: &str, device: &[u8]) -> Result<Option<DeviceRecord>, StoreError>;
    /// Creates or replaces the record of one device.
    fn put_device(
        &mut self,
        owner: &str,
        device: &[u8],
        record: DeviceRecord,
    ) -> Result<(), StoreError>;
    /// Every device of a principal with its record.
    fn devices(&self, owner: &str) -> Result<Vec<(Vec<u8>, DeviceRecord)>, StoreError>;

    /// The record of a message already accepted from `sender` with this id.
    fn sent(&self, sender: &str, id: &[u8]) -> Result<Option<SentRecord>, StoreError>;
    /// Records an accepted message for de-duplication.
    fn put_sent(&mut self, sender: &str, id: &[u8], record: SentRecord) -> Result<(), StoreError>;

    /// Every principal's rules (read once at start); principals without rules are
    /// absent.
    fn all_rules(&self) -> Result<Vec<(String, StoredRules)>, StoreError>;
    /// Creates or replaces a principal's rules.
    fn put_rules(&mut self, owner: &str, rules: &StoredRules) -> Result<(), StoreError>;

    /// Records a pending subscription (replacing an earlier one of the same pair).
    fn add_request(&mut self, request: &Request) -> Result<(), StoreError>;
    /// Removes a pending subscription; false if there was none.
    fn remove_request(&mut self, watcher: &str, target: &str) -> Result<bool, StoreError>;
    /// The pending subscriptions to `target`, oldest first.
    fn requests_to(&self, target: &str) -> Result<Vec<Request>, StoreError>;
    /// The pending subscriptions of `watcher`, in target order.
    fn requests_of(&self, watcher: &str) -> Result<Vec<Request>, StoreError>;

    /// The hash of a domain's administrator token ([`crate::auth::hash_token`]).
    fn admin_token(&self, domain: &str) -> Result<Option<[u8; 32]>, StoreError>;
    /// Sets (or replaces) a domain's administrator token hash.
    fn put_admin_token(&mut self, domain: &str, hash: &[u8; 32]) -> Result<(), StoreError>;
    /// Appends to the administrators' audit log.
    fn log_admin(&mut self, record: &AdminRecord) -> Result<(), StoreError>;
    /// The last `limit` entries of a domain's audit log, oldest first.
    fn admin_log(&self, domain: &str, limit: usize) -> Result<Vec<AdminRecord>, StoreError>;

    /// Appends a stanza to the federation outbox and returns its sequence number (one
    /// more than the last ever appended). A stanza with an
    /// [`Outbound::coalesce_key`] first removes any waiting one with the same key.
    fn fed_push(&mut self, stanza: &Outbound) -> Result<u64, StoreError>;
    /// Up to `limit` outbox stanzas with sequence numbers above `after`, in order.
    fn fed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Outbound)>, StoreError>;
    /// Removes every outbox stanza up to and including `upto` (the XMPP server has them).
    fn fed_remove(&mut self, upto: u64) -> Result<(), StoreError>;
    /// The relay record of `sender`'s message `id`.
    fn relay(&self, sender: &str, id: &[u8]) -> Result<Option<Relay>, StoreError>;
    /// Creates or replaces a relay record.
    fn put_relay(&mut self, sender: &str, id: &[u8], relay: &Relay) -> Result<(), StoreError>;
}

/// An in-memory [`Store`] for unit tests and simulations. Not durable.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    users: BTreeMap<String, UserRecord>,
    aliases: HashMap<String, String>,
    presence: HashMap<String, Versioned>,
    /// (watcher, target) → slot.
    subscriptions: BTreeMap<(String, String), Slot>,
    /// Watcher → its last slot.
    slots: HashMap<String, Slot>,
    inboxes: HashMap<String, (u64, BTreeMap<u64, InboxItem>)>,
    devices: BTreeMap<(String, Vec<u8>), DeviceRecord>,
    sent: HashMap<(String, Vec<u8>), SentRecord>,
    rules: BTreeMap<String, StoredRules>,
    /// (watcher, target) → the request.
    requests: BTreeMap<(String, String), Request>,
    admins: HashMap<String, [u8; 32]>,
    admin_log: Vec<AdminRecord>,
    /// The federation outbox and its last sequence number.
    outbox: (u64, BTreeMap<u64, Outbound>),
    /// (from, to) → the waiting presence's number, for coalescing.
    waiting_presence: HashMap<(String, String), u64>,
    relays: HashMap<(String, Vec<u8>), Relay>,
}

impl Store for MemStore {
    fn user(&self, address: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.users.get(address).cloned())
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        self.aliases.retain(|_, owner| *owner != user.address);
        for alias in &user.aliases {
            self.aliases.insert(alias.clone(), user.address.clone());
        }
        self.users.insert(user.address.clone(), user.clone());
        Ok(())
    }

    fn remove_user(&mut self, address: &str) -> Result<bool, StoreError> {
        self.aliases.retain(|_, owner| owner != address);
        self.presence.remove(address);
        self.subscriptions
            .retain(|(w, t), _| w.as_str() != address && t.as_str() != address);
        self.slots.remove(address);
        if let Some((_, items)) = self.inboxes.get_mut(address) {
            items.clear(); // the sequence counter stays: numbers are never reused
        }
        self.devices.retain(|(owner, _), _| owner != address);
        self.sent
            .retain(|(sender, _), record| sender != address && record.owner != address);
        self.rules.remove(address);
        self.requests
            .retain(|(w, t), _| w.as_str() != address && t.as_str() != address);
        Ok(self.users.remove(address).is_some())
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Ok(self.users.values().cloned().collect())
    }

    fn inbox_owner(&self, address: &str) -> Result<Option<String>, StoreError> {
        if let Some(user) = self.users.get(address).filter(|u| u.inbox) {
            return Ok(Some(user.address.clone()));
        }
        Ok(self.aliases.get(address).cloned())
    }

    fn presence(&self, presentity: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.presence.get(presentity).cloned())
    }

    fn put_presence(&mut self, doc: &Versioned) -> Result<(), StoreError> {
        self.presence
            .insert(doc.doc.presentity.clone(), doc.clone());
        Ok(())
    }

    fn presences(&self) -> Result<Vec<Versioned>, StoreError> {
        Ok(self.presence.values().cloned().collect())
    }

    fn add_subscription(&mut self, watcher: &str, target: &str) -> Result<Slot, StoreError> {
        let key = (watcher.to_string(), target.to_string());
        if let Some(slot) = self.subscriptions.get(&key) {
            return Ok(*slot);
        }
        let last = self.slots.entry(watcher.into()).or_default();
        *last += 1;
        self.subscriptions.insert(key, *last);
        Ok(*last)
    }

    fn remove_subscription(&mut self, watcher: &str, target: &str) -> Result<bool, StoreError> {
        let key = (watcher.to_string(), target.to_string());
        Ok(self.subscriptions.remove(&key).is_some())
    }

    fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        Ok(self
            .subscriptions
            .iter()
            .map(|((watcher, target), slot)| Subscription {
                watcher: watcher.clone(),
                target: target.clone(),
                slot: *slot,
            })
            .collect())
    }

    fn subscriptions_of(&self, watcher: &str) -> Result<Vec<(String, Slot)>, StoreError> {
        let mut of: Vec<(String, Slot)> = self
            .subscriptions
            .iter()
            .filter(|((w, _), _)| w == watcher)
            .map(|((_, t), slot)| (t.clone(), *slot))
            .collect();
        of.sort_by_key(|(_, slot)| *slot);
        Ok(of)
    }

    fn watchers_of(&self, target: &str) -> Result<Vec<(String, Slot)>, StoreError> {
        Ok(self
            .subscriptions
            .iter()
            .filter(|((_, t), _)| t == target)
            .map(|((w, _), slot)| (w.clone(), *slot))
            .collect())
    }

    fn inbox_push(&mut self, owner: &str, item: &InboxItem) -> Result<u64, StoreError> {
        let (last, items) = self.inboxes.entry(owner.into()).or_default();
        *last += 1;
        items.insert(*last, item.clone());
        Ok(*last)
    }

    fn inbox_after(
        &self,
        owner: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, InboxItem)>, StoreError> {
        Ok(self.inboxes.get(owner).map_or_else(Vec::new, |(_, items)| {
            items
                .range(after + 1..)
                .take(limit)
                .map(|(seq, item)| (*seq, item.clone()))
                .collect()
        }))
    }

    fn inbox_last(&self, owner: &str) -> Result<u64, StoreError> {
        Ok(self.inboxes.get(owner).map_or(0, |(last, _)| *last))
    }

    fn inbox_remove(&mut self, owner: &str, upto: u64) -> Result<(), StoreError> {
        if let Some((_, items)) = self.inboxes.get_mut(owner) {
            *items = items.split_off(&upto.saturating_add(1));
        }
        Ok(())
    }

    fn device(&self, owner: &str, device: &[u8]) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.devices.get(&(owner.into(), device.to_vec())).copied())
    }

    fn put_device(
        &mut self,
        owner: &str,
        device: &[u8],
        record: DeviceRecord,
    ) -> Result<(), StoreError> {
        self.devices.insert((owner.into(), device.to_vec()), record);
        Ok(())
    }

    fn devices(&self, owner: &str) -> Result<Vec<(Vec<u8>, DeviceRecord)>, StoreError> {
        Ok(self
            .devices
            .iter()
            .filter(|((o, _), _)| o == owner)
            .map(|((_, d), r)| (d.clone(), *r))
            .collect())
    }

    fn sent(&self, sender: &str, id: &[u8]) -> Result<Option<SentRecord>, StoreError> {
        Ok(self.sent.get(&(sender.into(), id.to_vec())).cloned())
    }

    fn put_sent(&mut self, sender: &str, id: &[u8], record: SentRecord) -> Result<(), StoreError> {
        self.sent.insert((sender.into(), id.to_vec()), record);
        Ok(())
    }

    fn all_rules(&self) -> Result<Vec<(String, StoredRules)>, StoreError> {
        Ok(self
            .rules
            .iter()
            .map(|(o, r)| (o.clone(), r.clone()))
            .collect())
    }

    fn put_rules(&mut self, owner: &str, rules: &StoredRules) -> Result<(), StoreError> {
        self.rules.insert(owner.into(), rules.clone());
        Ok(())
    }

    fn add_request(&mut self, request: &Request) -> Result<(), StoreError> {
        let key = (request.watcher.clone(), request.target.clone());
        self.requests.insert(key, request.clone());
        Ok(())
    }

    fn remove_request(&mut self, watcher: &str, target: &str) -> Result<bool, StoreError> {
        Ok(self
            .requests
            .remove(&(watcher.into(), target.into()))
            .is_some())
    }

    fn requests_to(&self, target: &str) -> Result<Vec<Request>, StoreError> {
        let mut found: Vec<Request> = self
            .requests
            .values()
            .filter(|r| r.target == target)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.at, &a.watcher).cmp(&(b.at, &b.watcher)));
        Ok(found)
    }

    fn requests_of(&self, watcher: &str) -> Result<Vec<Request>, StoreError> {
        Ok(self
            .requests
            .values()
            .filter(|r| r.watcher == watcher)
            .cloned()
            .collect())
    }

    fn admin_token(&self, domain: &str) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.admins.get(domain).copied())
    }

    fn put_admin_token(&mut self, domain: &str, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.admins.insert(domain.into(), *hash);
        Ok(())
    }

    fn log_admin(&mut self, record: &AdminRecord) -> Result<(), StoreError> {
        self.admin_log.push(record.clone());
        Ok(())
    }

    fn admin_log(&self, domain: &str, limit: usize) -> Result<Vec<AdminRecord>, StoreError> {
        let mine: Vec<&AdminRecord> = self
            .admin_log
            .iter()
            .filter(|r| r.domain == domain)
            .collect();
        let skip = mine.len().saturating_sub(limit);
        Ok(mine.into_iter().skip(skip).cloned().collect())
    }

    fn fed_push(&mut self, stanza: &Outbound) -> Result<u64, StoreError> {
        let (last, items) = &mut self.outbox;
        *last += 1;
        if let Some((from, to)) = stanza.coalesce_key() {
            let key = (from.to_string(), to.to_string());
            if let Some(old) = self.waiting_presence.insert(key, *last) {
                items.remove(&old);
            }
        }
        items.insert(*last, stanza.clone());
        Ok(*last)
    }

    fn fed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Outbound)>, StoreError> {
        Ok(self
            .outbox
            .1
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(seq, stanza)| (*seq, stanza.clone()))
            .collect())
    }

    fn fed_remove(&mut self, upto: u64) -> Result<(), StoreError> {
        self.outbox.1.retain(|seq, _| *seq > upto);
        self.waiting_presence.retain(|_, seq| *seq > upto);
        Ok(())
    }

    fn relay(&self, sender: &str, id: &[u8]) -> Result<Option<Relay>, StoreError> {
        Ok(self.relays.get(&(sender.into(), id.to_vec())).cloned())
    }

    fn put_relay(&mut self, sender: &str, id: &[u8], relay: &Relay) -> Result<(), StoreError> {
        self.relays
            .insert((sender.into(), id.to_vec()), relay.clone());
        Ok(())
    }
}
