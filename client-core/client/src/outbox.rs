//! The outbox: messages accepted by `send`/`send_message` and not yet answered by a
//! receipt, in the order they were accepted.
//!
//! Owns the order of the messages, their ids (each id once), the bound on how many may
//! wait, and which of them are in flight on the current link (by request id). A message
//! leaves the outbox only when the gateway answered it (a receipt or a refusal) or when
//! it cannot be sent at all; a lost link or a request that timed out puts it back to
//! "not in flight", to be sent again, with the same id, on the next session (the gateway
//! accepts each id once and answers a repeat with the first one's status).
//!
//! It is pure: no I/O, no clock. The driver mirrors additions and removals into the
//! state directory, and keeps the callers waiting for each message.

use std::collections::VecDeque;

use tern_wire::Message;
use tern_wire::frame::ReqId;

/// Most messages that may wait for their receipt at once.
pub(crate) const OUTBOX_MAX: usize = 256;

/// One waiting message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its place in the order of acceptance, kept in the state directory.
    pub(crate) seq: u64,
    pub(crate) message: Message,
    /// The request carrying it on the current link, if it was sent there.
    pub(crate) req: Option<ReqId>,
}

/// The waiting messages, oldest first.
#[derive(Debug)]
pub(crate) struct Outbox {
    entries: VecDeque<Entry>,
    next_seq: u64,
    limit: usize,
}

impl Outbox {
    /// An outbox holding `saved` messages (from the state directory, with their order
    /// numbers), none in flight.
    pub(crate) fn new(mut saved: Vec<(u64, Message)>, limit: usize) -> Self {
        saved.sort_by_key(|(seq, _)| *seq);
        let mut outbox = Self {
            entries: VecDeque::new(),
            next_seq: 1,
            limit,
        };
        for (seq, message) in saved {
            if !outbox.contains(&message.id) {
                outbox.next_seq = outbox.next_seq.max(seq.saturating_add(1));
                outbox.entries.push_back(Entry {
                    seq,
                    message,
                    req: None,
                });
            }
        }
        outbox
    }

    /// Whether a message with this id is waiting.
    pub(crate) fn contains(&self, id: &[u8]) -> bool {
        self.entries.iter().any(|e| e.message.id == id)
    }

    /// The waiting message with this id.
    #[cfg(test)]
    fn get(&self, id: &[u8]) -> Option<&Entry> {
        self.entries.iter().find(|e| e.message.id == id)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries.len() >= self.limit
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The order number the next message will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds a message at the end; `false` (nothing changed) when its id is already
    /// waiting or the outbox is full.
    pub(crate) fn push(&mut self, message: Message) -> bool {
        if self.is_full() || self.contains(&message.id) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq = seq.saturating_add(1);
        self.entries.push_back(Entry {
            seq,
            message,
            req: None,
        });
        true
    }

    /// Every waiting message, oldest first: what a new session sends right after `Open`.
    pub(crate) fn messages(&self) -> Vec<Message> {
        self.entries.iter().map(|e| e.message.clone()).collect()
    }

    /// The messages not in flight on the current link, oldest first.
    #[cfg(test)]
    fn unsent(&self) -> Vec<Message> {
        self.entries
            .iter()
            .filter(|e| e.req.is_none())
            .map(|e| e.message.clone())
            .collect()
    }

    /// The oldest message not in flight on the current link.
    pub(crate) fn next_unsent(&self) -> Option<Message> {
        self.entries
            .iter()
            .find(|e| e.req.is_none())
            .map(|e| e.message.clone())
    }

    /// The message `id` went out on the current link as request `req`.
    pub(crate) fn sent(&mut self, id: &[u8], req: ReqId) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.message.id == id) {
            entry.req = Some(req);
        }
    }

    /// The request carrying `id` ended without an answer (timed out, or the session
    /// closed): the message waits to be sent again.
    pub(crate) fn unanswered(&mut self, id: &[u8]) {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.message.id == id) {
            entry.req = None;
        }
    }

    /// The link is gone: nothing is in flight any more.
    pub(crate) fn link_lost(&mut self) {
        for entry in &mut self.entries {
            entry.req = None;
        }
    }

    /// The message `id` was answered (or cannot be sent): it leaves the outbox.
    pub(crate) fn remove(&mut self, id: &[u8]) -> Option<Entry> {
        let at = self.entries.iter().position(|e| e.message.id == id)?;
        self.entries.remove(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u8) -> Message {
        Message {
            id: vec![id; 16],
            to: "bob@example.com".into(),
            reply_to: None,
            content_type: None,
            body: vec![id],
        }
    }

    fn ids(messages: &[Message]) -> Vec<u8> {
        messages.iter().map(|m| m.id[0]).collect()
    }

    #[test]
    fn keeps_the_order_of_acceptance_and_each_id_once() {
        let mut outbox = Outbox::new(Vec::new(), 10);
        assert!(outbox.push(message(3)));
        assert!(outbox.push(message(1)));
        assert!(!outbox.push(message(3)), "an id waits once");
        assert!(outbox.push(message(2)));
        assert_eq!(ids(&outbox.messages()), vec![3, 1, 2]);
        assert_eq!(outbox.get(&[1; 16]).map(|e| e.seq), Some(2));
    }

    #[test]
    fn saved_messages_come_back_in_their_order_and_numbering_continues() {
        let saved = vec![(7, message(2)), (3, message(1)), (9, message(2))];
        let mut outbox = Outbox::new(saved, 10);
        assert_eq!(ids(&outbox.messages()), vec![1, 2]);
        assert_eq!(outbox.next_seq(), 8);
        outbox.push(message(5));
        assert_eq!(outbox.get(&[5; 16]).map(|e| e.seq), Some(8));
    }

    #[test]
    fn what_is_in_flight_is_not_sent_twice_on_one_link_but_again_on_the_next() {
        let mut outbox = Outbox::new(Vec::new(), 10);
        for id in 1..=3 {
            outbox.push(message(id));
        }
        outbox.sent(&[1; 16], 11);
        outbox.sent(&[2; 16], 12);
        assert_eq!(ids(&outbox.unsent()), vec![3]);
        assert_eq!(outbox.next_unsent().map(|m| m.id[0]), Some(3));
        outbox.unanswered(&[2; 16]);
        assert_eq!(ids(&outbox.unsent()), vec![2, 3]);
        outbox.link_lost();
        assert_eq!(ids(&outbox.unsent()), vec![1, 2, 3]);
        let answered = outbox.remove(&[2; 16]).map(|e| e.message);
        assert_eq!(answered, Some(message(2)));
        assert_eq!(ids(&outbox.messages()), vec![1, 3]);
        assert_eq!(outbox.remove(&[2; 16]), None);
    }

    #[test]
    fn is_bounded() {
        let mut outbox = Outbox::new(Vec::new(), 2);
        assert!(outbox.push(message(1)));
        assert!(outbox.push(message(2)));
        assert!(outbox.is_full());
        assert!(!outbox.push(message(3)));
        assert_eq!(outbox.len(), 2);
    }
}
