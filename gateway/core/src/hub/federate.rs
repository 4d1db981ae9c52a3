//! Federation inside the hub: addresses in domains this gateway does not serve, reached
//! through the XMPP bridge (docs/federation.md).
//!
//! Outbound, every stanza is written to the durable federation outbox
//! ([`Store::fed_push`]) in the transaction of the request that made it and then handed
//! to the runtime as [`Action::Federate`]. Inbound, [`Hub::handle_federated`] takes the
//! bridge's parsed [`Inbound`] values. The rest of the hub treats a remote user much as
//! a local one: a remote presentity's presence is a document in the presence store
//! (versions, deltas and batches for its local watchers come for free), a remote
//! watcher's subscription is a roster entry decided by the presentity's rules, and a
//! remote sender's message goes through the same inbox rules, inbox log and receipts.
//!
//! This module owns the mapping of those flows to stanzas; it never builds XML, and the
//! decisions themselves stay in [`crate::access`].

use tern_wire::addr::Address;
use tern_wire::frame::ReqId;
use tern_wire::{
    Decision, Delivery, Down, ErrorCode, InboxItem, Incoming, LateReceipt, Message, ReceiptStatus,
    SubState, Tuple,
};

use super::limits::Kind;
use super::{Action, ConnId, Hub, Millis};
use crate::access::{self, is_anonymous};
use crate::federation::{Inbound, Outbound, SubKind, carries_as_text, resource_id};
use crate::store::{Relay, SentRecord, Store, StoreError, Versioned};

/// A remote sender's message, as [`Inbound::Message`] carries it.
struct Remote {
    from: String,
    to: String,
    id: Vec<u8>,
    body: String,
    receipt: bool,
    sender: String,
}

impl Hub {
    /// Whether the address is in a domain this gateway serves.
    pub(super) fn serves(&self, address: &str) -> bool {
        let domain = address.rsplit_once('@').map_or(address, |(_, d)| d);
        self.config.domain(domain).is_some()
    }

    /// Whether the address goes through the bridge: federation is on and its domain is
    /// not served here.
    pub(super) fn federates(&self, address: &str) -> bool {
        self.config.federation.is_some() && !self.serves(address)
    }

    /// Whether a local principal is in the domain joined to XMPP (only its principals
    /// may reach remote addresses: the component speaks for that domain alone).
    fn bridged(&self, local: &str) -> bool {
        let domain = local.rsplit_once('@').map_or("", |(_, d)| d);
        self.config.federation.as_deref() == Some(domain)
    }

    /// Writes a stanza to the federation outbox and hands it to the bridge.
    fn federate(&mut self, stanza: Outbound, store: &mut dyn Store) -> Result<(), StoreError> {
        let seq = store.fed_push(&stanza)?;
        self.emit(Action::Federate { seq, stanza });
        Ok(())
    }

    /// A stanza from the XMPP network, parsed and checked by the bridge.
    pub fn handle_federated(
        &mut self,
        now: Millis,
        inbound: Inbound,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.now = now;
        let result = self.federated(now, inbound, store);
        if result.is_err() {
            self.staged.clear();
        }
        self.publish_staged();
        result
    }

    /// The bridge is connected (again): every remote presentity a local principal
    /// watches is probed, so that documents that went stale while the link was down
    /// are brought up to date. (What waits in the outbox is the bridge's to resend.)
    pub fn handle_federation_up(
        &mut self,
        now: Millis,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.now = now;
        // One probe per remote presentity, from one of its local watchers; sorted, so
        // that the same state sends the same stanzas in the same order.
        let mut probes: Vec<(String, String)> = self
            .rosters
            .targets()
            .filter(|(target, _)| self.federates(target))
            .map(|(target, watcher)| (watcher.to_string(), target.to_string()))
            .collect();
        probes.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        let mut result = Ok(());
        for (from, to) in probes {
            let kind = SubKind::Probe;
            result = self.federate(Outbound::Subscription { from, to, kind }, store);
            if result.is_err() {
                break;
            }
        }
        if result.is_err() {
            self.staged.clear();
        }
        self.publish_staged();
        result
    }

    fn federated(
        &mut self,
        now: Millis,
        inbound: Inbound,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        match inbound {
            Inbound::Message {
                from,
                to,
                id,
                body,
                receipt,
                sender,
            } => {
                let message = Remote {
                    from,
                    to,
                    id,
                    body,
                    receipt,
                    sender,
                };
                self.remote_message(now, message, store)
            }
            Inbound::Unreachable { from, to, code } => {
                // Only a pending request fails: a passing error must not end a
                // subscription that exists.
                if store.remove_request(&to, &from)? {
                    tracing::debug!(%from, %to, %code, "remote address unreachable");
                    self.tell_watcher(&to, &from, SubState::Denied, store)?;
                }
                Ok(())
            }
            Inbound::Receipt { from, to, id } => {
                self.remote_outcome(&from, &to, &id, ReceiptStatus::Delivered, store)
            }
            Inbound::Failed {
                from,
                to,
                id,
                code,
                text,
            } => {
                tracing::debug!(%from, %to, %code, %text, "a relayed message bounced");
                self.remote_outcome(&from, &to, &id, ReceiptStatus::Failed(code), store)
            }
            Inbound::Subscription { from, to, kind } => match kind {
                SubKind::Subscribe => self.remote_subscribe(&from, &to, store),
                SubKind::Unsubscribe => self.remote_unsubscribe(&from, &to, store),
                SubKind::Subscribed => self.remote_subscribed(&from, &to, store),
                SubKind::Unsubscribed => self.remote_unsubscribed(&from, &to, store),
                SubKind::Probe => self.remote_probe(&from, &to, store),
            },
            Inbound::Presence {
                from,
                to,
                tuple,
                resource,
            } => self.remote_presence(&from, &to, tuple, &resource, store),
        }
    }

    // ---- Messages ------------------------------------------------------------------

    /// A local principal's message to a remote address: checked, recorded against
    /// resends, written to the outbox, and answered `Relayed`.
    pub(super) fn relay_message(
        &mut self,
        conn: ConnId,
        sender: &str,
        req: ReqId,
        msg: Message,
        to: Address,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let answer = |hub: &mut Self, status| hub.send(conn, Down::Receipt { req, status });
        if let Some(relay) = store.relay(sender, &msg.id)? {
            // A resend: its status, and nothing sent twice.
            answer(self, relay.status);
            return Ok(());
        }
        if is_anonymous(sender) {
            answer(self, ReceiptStatus::Failed(ErrorCode::REFUSED));
            return Ok(());
        }
        if !self.bridged(sender) {
            answer(self, ReceiptStatus::Failed(ErrorCode::UNROUTABLE));
            return Ok(());
        }
        if msg.body.len() > self.config.body_max as usize {
            answer(self, ReceiptStatus::Failed(ErrorCode::TOO_LARGE));
            return Ok(());
        }
        let text = carries_as_text(msg.content_type.as_deref())
            .then(|| String::from_utf8(msg.body).ok())
            .flatten();
        let Some(body) = text else {
            tracing::debug!(%sender, to = %to.as_str(), "not text/plain UTF-8: not relayed");
            answer(self, ReceiptStatus::Failed(ErrorCode::UNSUPPORTED_CONTENT));
            return Ok(());
        };
        let to = to.into_string();
        let relay = Relay {
            peer: to.clone(),
            status: ReceiptStatus::Relayed,
        };
        store.put_relay(sender, &msg.id, &relay)?;
        let stanza = Outbound::Message {
            from: sender.into(),
            to,
            id: msg.id,
            body,
        };
        self.federate(stanza, store)?;
        answer(self, ReceiptStatus::Relayed);
        Ok(())
    }

    /// A receipt or a bounce for a message a local principal relayed: its record
    /// changes, and the sender hears of it through a late receipt in its inbox.
    fn remote_outcome(
        &mut self,
        from: &str,
        sender: &str,
        id: &[u8],
        status: ReceiptStatus,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(mut relay) = store.relay(sender, id)? else {
            tracing::debug!(%from, %sender, "a receipt for no message relayed: ignored");
            return Ok(());
        };
        // Only the recipient may answer, and only once: a receipt after a bounce (or
        // the reverse) changes nothing.
        if relay.peer != from || relay.status != ReceiptStatus::Relayed {
            return Ok(());
        }
        relay.status = status;
        store.put_relay(sender, id, &relay)?;
        if store.user(sender)?.is_some_and(|u| u.inbox) {
            let receipt = LateReceipt {
                id: id.to_vec(),
                to: from.into(),
                status,
            };
            store.inbox_push(sender, &InboxItem::Receipt(receipt))?;
            self.deliver_to_principal(sender, store)?;
        }
        Ok(())
    }

    /// A remote sender's message: the same checks, inbox rules, log and
    /// de-duplication as a local sender's; refusals go back as XMPP errors.
    fn remote_message(
        &mut self,
        now: Millis,
        message: Remote,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Remote {
            from,
            to,
            id,
            body,
            receipt,
            sender,
        } = message;
        let refuse = |hub: &mut Self, store: &mut dyn Store, code, text: &str| {
            let stanza = Outbound::Error {
                from: to.clone(),
                to: sender.clone(),
                id: Some(crate::federation::xmpp_id(&id)),
                message: true,
                code,
                text: text.into(),
            };
            hub.federate(stanza, store)
        };
        let domain = to.rsplit_once('@').map_or("", |(_, d)| d).to_string();
        if !self.config.domain(&domain).is_some_and(|d| d.im) {
            let text = "instant messages are off in this domain";
            return refuse(self, store, ErrorCode::SERVICE_DISABLED, text);
        }
        let Some(owner) = store.inbox_owner(&to)? else {
            return refuse(self, store, ErrorCode::UNKNOWN_USER, "no such user");
        };
        if body.len() > self.config.body_max as usize {
            return refuse(self, store, ErrorCode::TOO_LARGE, "the body is too large");
        }
        if let Err(wait) = self.limiter.check_in(now, &domain, &from, Kind::Message) {
            tracing::debug!(%from, ?wait, "remote sender over its rate");
            return refuse(self, store, ErrorCode::RATE_LIMITED, "too many messages");
        }
        if let Some(sent) = store.sent(&from, &id)? {
            // A resend: delivered once. If it was delivered and a receipt was asked
            // for, the receipt is sent again (the first may be what was lost).
            let delivered = sent.seq <= super::inbox::delivered_upto(&sent.owner, store)?;
            if delivered && store.relay(&from, &id)?.is_some() {
                let stanza = Outbound::Receipt {
                    from: to,
                    to: sender,
                    id,
                };
                self.federate(stanza, store)?;
            }
            return Ok(());
        }
        match access::delivery(self.rules_of(&owner), &from) {
            Delivery::Accept => {}
            Delivery::Refuse => {
                let text = "refused by the recipient's rules";
                return refuse(self, store, ErrorCode::REFUSED, text);
            }
            Delivery::Discard => {
                tracing::debug!(%from, %owner, "remote message discarded by the inbox's rules");
                return Ok(());
            }
        }
        let incoming = Incoming {
            id: id.clone(),
            from: from.clone(),
            to: to.clone(),
            reply_to: None,
            content_type: None,
            body: body.into_bytes(),
            sent: now,
        };
        let seq = store.inbox_push(&owner, &InboxItem::Message(incoming))?;
        let record = SentRecord {
            owner: owner.clone(),
            seq,
        };
        store.put_sent(&from, &id, record)?;
        if receipt {
            let relay = Relay {
                peer: sender,
                status: ReceiptStatus::Stored,
            };
            store.put_relay(&from, &id, &relay)?;
        }
        self.deliver_to_principal(&owner, store)
    }

    /// A remote sender's message left the inbox acknowledged: if it asked for a
    /// receipt, the receipt goes out (once).
    pub(super) fn delivered_to_local(
        &mut self,
        msg: &Incoming,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(mut relay) = store.relay(&msg.from, &msg.id)? else {
            return Ok(());
        };
        if relay.status != ReceiptStatus::Stored {
            return Ok(());
        }
        relay.status = ReceiptStatus::Delivered;
        store.put_relay(&msg.from, &msg.id, &relay)?;
        let stanza = Outbound::Receipt {
            from: msg.to.clone(),
            // The sender's full JID, as its message came.
            to: relay.peer,
            id: msg.id.clone(),
        };
        self.federate(stanza, store)
    }

    // ---- A local principal watching a remote presentity ----------------------------

    /// `Subscribe` to a remote address: a pending request until the remote user
    /// answers (`subscribed` or `unsubscribed`), like a presentity whose rules say ask.
    pub(super) fn subscribe_remote(
        &mut self,
        conn: ConnId,
        user: &str,
        req: ReqId,
        target: String,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if is_anonymous(user) {
            let text = "anonymous peers cannot subscribe beyond this gateway";
            self.fail(conn, req, ErrorCode::REFUSED, text);
            return Ok(());
        }
        if !self.bridged(user) {
            let text = "this domain is not joined to the XMPP network";
            self.fail(conn, req, ErrorCode::UNROUTABLE, text);
            return Ok(());
        }
        let roster = self.rosters.of(user);
        if let Some(slot) = roster.and_then(|r| r.slot(&target)) {
            // Already granted: answered like any subscription that exists.
            let current = self.current_doc(&target, store)?;
            if self.syncs(conn) {
                self.answer_subscribed(conn, req, slot, current);
            } else {
                let doc = current.doc;
                self.send(conn, Down::Presence { req, doc });
            }
            return Ok(());
        }
        if roster.map_or(0, |r| r.len()) >= self.config.max_subscriptions {
            self.fail(conn, req, ErrorCode::REFUSED, "subscription limit reached");
            return Ok(());
        }
        self.record_request(user, &target, store)?;
        let kind = SubKind::Subscribe;
        let stanza = Outbound::Subscription {
            from: user.into(),
            to: target,
            kind,
        };
        self.federate(stanza, store)?;
        self.send(conn, Down::Pending { req });
        Ok(())
    }

    /// `Unsubscribe` from a remote address: ended here (already done by the caller)
    /// and told to the remote side.
    pub(super) fn unsubscribe_remote(
        &mut self,
        user: &str,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let stanza = Outbound::Subscription {
            from: user.into(),
            to: target.into(),
            kind: SubKind::Unsubscribe,
        };
        self.federate(stanza, store)
    }

    /// `Fetch` of a remote presentity: XMPP shares presence with subscribers only, so a
    /// subscriber gets the document the gateway holds and anyone else is refused.
    pub(super) fn fetch_remote(
        &mut self,
        conn: ConnId,
        user: &str,
        req: ReqId,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<Option<Versioned>, StoreError> {
        let subscribed = self.rosters.of(user).and_then(|r| r.slot(target)).is_some();
        if !subscribed {
            let text = "XMPP shares presence with subscribers only: subscribe first";
            self.fail(conn, req, ErrorCode::REFUSED, text);
            return Ok(None);
        }
        Ok(Some(self.current_doc(target, store)?))
    }

    /// The remote user approved a local principal's request.
    fn remote_subscribed(
        &mut self,
        from: &str,
        to: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let asked = store.requests_of(to)?.iter().any(|r| r.target == from);
        if asked {
            tracing::debug!(watcher = %to, target = %from, "remote subscription approved");
            self.grant_request(to, from, store)?;
        }
        Ok(())
    }

    /// The remote user refused a local principal's request, or ended its subscription.
    fn remote_unsubscribed(
        &mut self,
        from: &str,
        to: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if store.remove_request(to, from)? {
            self.tell_watcher(to, from, SubState::Denied, store)?;
        }
        if self.rosters.of(to).and_then(|r| r.slot(from)).is_some() {
            self.end_subscription(to, from, SubState::Cancelled, store)?;
        }
        Ok(())
    }

    /// Presence of a remote resource, for a local principal that watches it: the remote
    /// presentity's document changes (one tuple per resource) and its local watchers are
    /// told as for any presentity. The same presence arriving once per local watcher
    /// changes the document once.
    fn remote_presence(
        &mut self,
        from: &str,
        to: &str,
        tuple: Option<Tuple>,
        resource: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let watched = self.rosters.of(to).and_then(|r| r.slot(from)).is_some();
        if !watched {
            tracing::debug!(%from, %to, "presence from a contact nobody here watches: ignored");
            return Ok(());
        }
        let current = self.current_doc(from, store)?;
        let mut presence = current.doc.presence.clone();
        if tuple.is_some() {
            // The closed placeholder of a contact with no resource online goes.
            presence
                .tuples
                .retain(|t| t.basic == tern_wire::Basic::Open);
        }
        match tuple {
            Some(tuple) => match presence.tuples.iter().position(|t| t.id == tuple.id) {
                Some(at) => presence.tuples[at] = tuple,
                None if presence.tuples.len() < tern_wire::limits::TUPLES_MAX => {
                    presence.tuples.push(tuple);
                }
                None => {
                    tracing::debug!(%from, "more resources than tuples: one ignored");
                    return Ok(());
                }
            },
            None => {
                let id = resource_id(resource);
                presence.tuples.retain(|t| t.id != id);
                if presence.tuples.is_empty() {
                    // No resource online: one CLOSED tuple, as for a tern presentity
                    // out of contact (a document has at least one tuple).
                    presence.tuples.push(offline());
                }
            }
        }
        if presence == current.doc.presence {
            return Ok(());
        }
        if let Err((_, why)) = crate::validate::presence(&presence) {
            tracing::debug!(%from, why, "remote presence not representable: ignored");
            return Ok(());
        }
        let doc = Versioned {
            version: current.version + 1,
            doc: tern_wire::PresenceDoc {
                presentity: from.into(),
                updated: self.now,
                presence,
            },
        };
        store.put_presence(&doc)?;
        self.set_doc(doc, store)
    }

    // ---- A remote watcher of a local presentity -----------------------------------

    /// A remote user asks to watch a local presentity: the presentity's rules decide,
    /// exactly as for a local watcher.
    fn remote_subscribe(
        &mut self,
        from: &str,
        to: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let exists = self.presence_enabled(to) && store.user(to)?.is_some_and(|u| u.presentity);
        if !exists {
            return self.tell_remote(to, from, SubKind::Unsubscribed, store);
        }
        if self.rosters.watchers(to).any(|w| w == from) {
            // Asked again (XMPP servers resend pending and repeated requests): the
            // answer is the same.
            return self.tell_watcher(from, to, SubState::Active, store);
        }
        // A new request counts against the domain's subscription rate, keyed by the
        // remote user. Over it, the request is dropped: XMPP has no "later", and its
        // server sends pending requests again at the user's next login.
        let domain = to.rsplit_once('@').map_or("", |(_, d)| d).to_string();
        if let Err(wait) = self
            .limiter
            .check_in(self.now, &domain, from, Kind::Subscription)
        {
            tracing::debug!(%from, %to, ?wait, "remote subscribe over the rate: dropped");
            return Ok(());
        }
        match self.grant(to, from).decision {
            Decision::Deny | Decision::FetchOnly => {
                self.tell_remote(to, from, SubKind::Unsubscribed, store)
            }
            Decision::Ask => {
                if store.requests_to(to)?.iter().any(|r| r.watcher == from) {
                    return Ok(());
                }
                self.record_request(from, to, store)?;
                self.tell_owner_asked(to, from);
                Ok(())
            }
            decision @ (Decision::Allow | Decision::Polite) => {
                let slot = store.add_subscription(from, to)?;
                self.rosters.add(from, to, slot);
                if decision != Decision::Polite {
                    self.announce_watcher(to, from);
                }
                self.tell_watcher(from, to, SubState::Active, store)
            }
        }
    }

    /// A remote watcher no longer wants a local presentity's presence.
    fn remote_unsubscribe(
        &mut self,
        from: &str,
        to: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        store.remove_request(from, to)?;
        if store.remove_subscription(from, to)? {
            self.rosters.remove(from, to);
        }
        Ok(())
    }

    /// A remote watcher asks for the current presence: a subscriber gets it (in its
    /// view; politely blocked, the document of one who never comes online), anyone
    /// else `unsubscribed` (RFC 6121 4.3.2).
    fn remote_probe(
        &mut self,
        from: &str,
        to: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if self.rosters.watchers(to).any(|w| w == from) {
            return self.presence_to_remote(from, to, store);
        }
        let exists = store.user(to)?.is_some_and(|u| u.presentity);
        if exists {
            self.tell_remote(to, from, SubKind::Unsubscribed, store)?;
        }
        Ok(())
    }

    /// A subscription's new state told to a remote watcher: granted is `subscribed`
    /// and the current presence, ended or refused is `unsubscribed`.
    pub(super) fn tell_remote_watcher(
        &mut self,
        watcher: &str,
        target: &str,
        state: SubState,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        match state {
            SubState::Active => {
                self.tell_remote(target, watcher, SubKind::Subscribed, store)?;
                self.presence_to_remote(watcher, target, store)
            }
            SubState::Pending => Ok(()),
            _ => self.tell_remote(target, watcher, SubKind::Unsubscribed, store),
        }
    }

    /// The presence of local `target` as remote `watcher` may see it.
    fn presence_to_remote(
        &mut self,
        watcher: &str,
        target: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let current = self.current_doc(target, store)?;
        let presence = self.seen(watcher, current).doc.presence;
        let stanza = Outbound::Presence {
            from: target.into(),
            to: watcher.into(),
            presence,
        };
        self.federate(stanza, store)
    }

    /// A local presentity's new document, to every remote watcher but the politely
    /// blocked (who saw a contact that never comes online, and keep seeing it).
    pub(super) fn fan_out_remote(
        &mut self,
        doc: &Versioned,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let presentity = &doc.doc.presentity;
        if !self.bridged(presentity) {
            return Ok(());
        }
        let remote: Vec<String> = self
            .rosters
            .watchers(presentity)
            .filter(|w| !self.serves(w))
            .map(String::from)
            .collect();
        for watcher in remote {
            if self.grant(presentity, &watcher).decision == Decision::Polite {
                continue;
            }
            let presence = self.seen(&watcher, doc.clone()).doc.presence;
            let stanza = Outbound::Presence {
                from: presentity.clone(),
                to: watcher,
                presence,
            };
            self.federate(stanza, store)?;
        }
        Ok(())
    }

    /// A subscription handshake step from a local principal to a remote user.
    fn tell_remote(
        &mut self,
        from: &str,
        to: &str,
        kind: SubKind,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let stanza = Outbound::Subscription {
            from: from.into(),
            to: to.into(),
            kind,
        };
        self.federate(stanza, store)
    }
}

/// The tuple of a remote contact with no resource online.
fn offline() -> Tuple {
    Tuple {
        id: resource_id(""),
        basic: tern_wire::Basic::Closed,
        availability: None,
        contact: None,
        note: None,
        at: None,
        ext: Vec::new(),
    }
}
