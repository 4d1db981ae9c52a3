//! The instant-message service: routing to inbox logs, delivering them in order within
//! a window, de-duplicating resends, and receipts (RFC 2779 4.2.1, 5.4.1, 5.4.2).
//!
//! A message is appended to the recipient's inbox log (durable) before anything is
//! answered. If the recipient is online the send request waits, up to
//! `delivery_wait_ms`, for the recipient's acknowledgement and is answered `Delivered`;
//! otherwise it is answered `Stored`, and when the recipient later acknowledges it a
//! [`LateReceipt`] is appended to the sender's own inbox log.

use tern_wire::addr::Address;
use tern_wire::frame::ReqId;
use tern_wire::{
    Delegate, Delivery, Down, ErrorCode, InboxItem, Incoming, Item, LateReceipt, Message,
    ReceiptStatus,
};

use super::session::ConnState;
use super::{ConnId, Hub, Millis, Pending};
use crate::access;
use crate::store::{DeviceRecord, SentRecord, Store, StoreError};
use crate::validate;

/// Most items one `Read` returns.
const READ_MAX: usize = 32;

impl Hub {
    pub(super) fn send_message(
        &mut self,
        now: Millis,
        conn: ConnId,
        sender: &str,
        req: ReqId,
        msg: Message,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if !self.im_enabled(sender) {
            self.fail(
                conn,
                req,
                ErrorCode::SERVICE_DISABLED,
                "instant messages are off",
            );
            return Ok(());
        }
        if let Err((code, why)) = validate::message(&msg) {
            self.fail(conn, req, code, why);
            return Ok(());
        }
        // (Without federation the address is parsed once, by `route`, as before.)
        if self.config.federation.is_some()
            && let Some(to) = Address::parse(&msg.to)
                .ok()
                .filter(|to| self.federates(to.as_str()))
        {
            return self.relay_message(conn, sender, req, msg, to, store);
        }
        if let Some(sent) = store.sent(sender, &msg.id)? {
            // A resend of an accepted message: answer its status, deliver nothing.
            let status = if sent.seq <= delivered_upto(&sent.owner, store)? {
                ReceiptStatus::Delivered
            } else {
                ReceiptStatus::Stored
            };
            self.send(conn, Down::Receipt { req, status });
            return Ok(());
        }
        let (owner, incoming) = match self.route(now, sender, msg, store)? {
            Ok(routed) => routed,
            Err(code) => {
                let status = ReceiptStatus::Failed(code);
                self.send(conn, Down::Receipt { req, status });
                return Ok(());
            }
        };
        match access::delivery(self.rules_of(&owner), sender) {
            Delivery::Accept => {}
            Delivery::Refuse => {
                tracing::debug!(%sender, %owner, "message refused by the inbox's rules");
                let status = ReceiptStatus::Failed(ErrorCode::REFUSED);
                self.send(conn, Down::Receipt { req, status });
                return Ok(());
            }
            Delivery::Discard => {
                // Silence: the receipt of a message waiting for an offline recipient.
                tracing::debug!(%sender, %owner, "message discarded by the inbox's rules");
                let status = ReceiptStatus::Stored;
                self.send(conn, Down::Receipt { req, status });
                return Ok(());
            }
        }
        let id = incoming.id.clone();
        let seq = store.inbox_push(&owner, &InboxItem::Message(incoming))?;
        let record = SentRecord {
            owner: owner.clone(),
            seq,
        };
        store.put_sent(sender, &id, record)?;
        if self.takes_inbox_now(&owner) {
            let deadline = now.saturating_add(self.config.delivery_wait_ms);
            self.pending.insert(
                (owner.clone(), seq),
                Pending {
                    conn,
                    req,
                    deadline,
                },
            );
            self.deadlines.insert((deadline, owner.clone(), seq));
            self.deliver_to_principal(&owner, store)?;
        } else {
            let status = ReceiptStatus::Stored;
            self.send(conn, Down::Receipt { req, status });
        }
        Ok(())
    }

    /// Finds the inbox a message goes to and stamps what the gateway vouches for.
    fn route(
        &self,
        now: Millis,
        sender: &str,
        msg: Message,
        store: &dyn Store,
    ) -> Result<Result<(String, Incoming), ErrorCode>, StoreError> {
        let Ok(to) = Address::parse(&msg.to) else {
            return Ok(Err(ErrorCode::BAD_ADDRESS));
        };
        let reply_to = match msg.reply_to.as_deref().map(Address::parse) {
            None => None,
            Some(Ok(address)) => Some(address.into_string()),
            Some(Err(_)) => return Ok(Err(ErrorCode::BAD_ADDRESS)),
        };
        let Some(domain) = self.config.domain(to.domain()) else {
            return Ok(Err(ErrorCode::UNROUTABLE));
        };
        if !domain.im {
            return Ok(Err(ErrorCode::SERVICE_DISABLED));
        }
        if msg.body.len() > self.config.body_max as usize {
            return Ok(Err(ErrorCode::TOO_LARGE));
        }
        let Some(owner) = store.inbox_owner(to.as_str())? else {
            return Ok(Err(ErrorCode::UNKNOWN_USER));
        };
        let incoming = Incoming {
            id: msg.id,
            // Anonymous senders are marked as such, and only as such (RFC 2779 AD4).
            from: access::public_name(sender).into_owned(),
            to: to.into_string(),
            reply_to,
            content_type: msg.content_type,
            body: msg.body,
            sent: now,
        };
        Ok(Ok((owner, incoming)))
    }

    /// `Up::Read`: a delegate reads another principal's inbox (RFC 2779 2.3.6), without
    /// acknowledging anything.
    pub(super) fn read_for(
        &mut self,
        conn: ConnId,
        reader: &str,
        req: ReqId,
        inbox: &str,
        after: u64,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let Some(address) = self.address_or_fail(conn, req, inbox) else {
            return Ok(());
        };
        let Some(owner) = store.inbox_owner(address.as_str())? else {
            self.fail(conn, req, ErrorCode::UNKNOWN_USER, "no such inbox");
            return Ok(());
        };
        if !access::delegated(self.rules_of(&owner), reader, Delegate::READ) {
            let text = "the inbox's principal has not delegated reading to you";
            self.fail(conn, req, ErrorCode::REFUSED, text);
            return Ok(());
        }
        let mut found = store.inbox_after(&owner, after, READ_MAX + 1)?;
        let more = found.len() > READ_MAX;
        found.truncate(READ_MAX);
        let items = found
            .into_iter()
            .map(|(seq, item)| Item { seq, item })
            .collect();
        tracing::debug!(%reader, %owner, after, "delegate read the inbox");
        self.send(conn, Down::Items { req, items, more });
        Ok(())
    }

    /// A cumulative acknowledgement from a session.
    pub(super) fn ack(
        &mut self,
        now: Millis,
        conn: ConnId,
        upto: u64,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(ConnState::Active(session)) = self.conns.get(&conn) else {
            return Ok(());
        };
        // A session may only acknowledge what it was sent, and only forward.
        let upto = upto.min(session.pushed);
        if !session.inbox || upto <= session.acked {
            return Ok(());
        }
        let (user, device) = (session.user.clone(), session.device.clone());
        self.record_ack(now, &user, &device, upto, store)?;
        if let Some(ConnState::Active(s)) = self.conns.get_mut(&conn) {
            s.acked = upto;
            while s.in_flight.front().is_some_and(|seq| *seq <= upto) {
                s.in_flight.pop_front();
            }
        }
        self.deliver_more(conn, store)
    }

    /// Moves a device's durable position to `upto`: messages no device had before are
    /// now delivered (their senders hear of it), and items every device has are removed.
    pub(super) fn record_ack(
        &mut self,
        now: Millis,
        user: &str,
        device: &[u8],
        upto: u64,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let devices = store.devices(user)?;
        let before = devices.iter().map(|(_, r)| r.acked).max().unwrap_or(0);
        store.put_device(
            user,
            device,
            DeviceRecord {
                acked: upto,
                seen: now,
            },
        )?;
        if upto > before {
            let span = usize::try_from(upto - before).unwrap_or(usize::MAX);
            for (seq, item) in store.inbox_after(user, before, span)? {
                if let (true, InboxItem::Message(msg)) = (seq <= upto, item) {
                    self.delivered(user, seq, msg, store)?;
                }
            }
        }
        let retention = self.config.device_retention_ms;
        let floor = devices
            .iter()
            .filter(|(d, r)| d.as_slice() != device && r.seen.saturating_add(retention) >= now)
            .map(|(_, r)| r.acked)
            .fold(upto, u64::min);
        store.inbox_remove(user, floor)
    }

    /// A message left the inbox acknowledged: tell its sender.
    fn delivered(
        &mut self,
        owner: &str,
        seq: u64,
        msg: Incoming,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if let Some(pending) = self.pending.remove(&(owner.to_string(), seq)) {
            self.deadlines
                .remove(&(pending.deadline, owner.to_string(), seq));
            let status = ReceiptStatus::Delivered;
            self.send(
                pending.conn,
                Down::Receipt {
                    req: pending.req,
                    status,
                },
            );
            return Ok(());
        }
        if self.federates(&msg.from) {
            return self.delivered_to_local(&msg, store);
        }
        let sender_has_inbox = store.user(&msg.from)?.is_some_and(|u| u.inbox);
        if !sender_has_inbox {
            return Ok(());
        }
        let receipt = LateReceipt {
            id: msg.id,
            to: msg.to,
            status: ReceiptStatus::Delivered,
        };
        store.inbox_push(&msg.from, &InboxItem::Receipt(receipt))?;
        self.deliver_to_principal(&msg.from, store)
    }

    /// Pushes what each online session of the principal has room for.
    pub(super) fn deliver_to_principal(
        &mut self,
        owner: &str,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let conns = self.online.get(owner).cloned().unwrap_or_default();
        for conn in conns {
            self.deliver_more(conn, store)?;
        }
        Ok(())
    }

    /// Pushes the next inbox items to a session, up to its window.
    pub(super) fn deliver_more(
        &mut self,
        conn: ConnId,
        store: &dyn Store,
    ) -> Result<(), StoreError> {
        let window = self.config.inbox_window;
        let Some(ConnState::Active(session)) = self.conns.get(&conn) else {
            return Ok(());
        };
        let room = window.saturating_sub(session.in_flight.len() as u64);
        if room == 0 {
            return Ok(());
        }
        let items = store.inbox_after(&session.user, session.pushed, room as usize)?;
        let Some(ConnState::Active(session)) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        if let Some((last, _)) = items.last() {
            session.pushed = *last;
        }
        session.in_flight.extend(items.iter().map(|(seq, _)| *seq));
        let delivered = !items.is_empty();
        for (seq, item) in items {
            self.send(conn, Down::Deliver { seq, item });
        }
        // Waking the radio for a message: pending presence rides along (one wakeup).
        if delivered {
            self.flush(conn, true, store)?;
        }
        Ok(())
    }

    /// Send requests waiting past their deadline are answered `Stored`.
    pub(super) fn answer_overdue_sends(&mut self, now: Millis) {
        while let Some((at, owner, seq)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(pending) = self.pending.remove(&(owner, seq)) {
                let status = ReceiptStatus::Stored;
                self.send(
                    pending.conn,
                    Down::Receipt {
                        req: pending.req,
                        status,
                    },
                );
            }
        }
        self.publish_staged();
    }

    /// The recipient went out of contact: everyone waiting on it hears `Stored` now.
    pub(super) fn release_waiting_senders(&mut self, owner: &str) {
        for pending in self.take_pending(|(o, _), _| o == owner) {
            let status = ReceiptStatus::Stored;
            self.send(
                pending.conn,
                Down::Receipt {
                    req: pending.req,
                    status,
                },
            );
        }
    }

    /// A connection closed: its waiting send requests can no longer be answered; their
    /// messages will be receipted late, through the sender's inbox.
    pub(super) fn forget_departed(&mut self, conn: ConnId) {
        self.take_pending(|_, p| p.conn == conn);
    }

    /// Removes and returns the waiting send requests that `pick` selects.
    fn take_pending(&mut self, pick: impl Fn(&(String, u64), &Pending) -> bool) -> Vec<Pending> {
        let keys: Vec<(String, u64)> = self
            .pending
            .iter()
            .filter(|(key, pending)| pick(key, pending))
            .map(|(key, _)| key.clone())
            .collect();
        let mut taken = Vec::with_capacity(keys.len());
        for (owner, seq) in keys {
            if let Some(pending) = self.pending.remove(&(owner.clone(), seq)) {
                self.deadlines.remove(&(pending.deadline, owner, seq));
                taken.push(pending);
            }
        }
        taken
    }

    /// Whether one of the principal's live sessions takes inbox items now.
    fn takes_inbox_now(&self, owner: &str) -> bool {
        self.online.get(owner).is_some_and(|conns| {
            conns
                .iter()
                .any(|c| matches!(self.conns.get(c), Some(ConnState::Active(s)) if s.inbox))
        })
    }

    fn im_enabled(&self, user: &str) -> bool {
        let domain = user.rsplit_once('@').map_or("", |(_, d)| d);
        self.config.domain(domain).is_some_and(|d| d.im)
    }
}

/// The highest inbox sequence number any device of the principal acknowledged: every
/// message at or below it has been delivered.
pub(super) fn delivered_upto(owner: &str, store: &dyn Store) -> Result<u64, StoreError> {
    Ok(store
        .devices(owner)?
        .iter()
        .map(|(_, r)| r.acked)
        .max()
        .unwrap_or(0))
}
