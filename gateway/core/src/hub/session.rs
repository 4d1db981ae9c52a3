//! Sessions: the life of one connection (awaiting Hello, active, closing), the
//! authentication at Hello, and the dispatch of each request to its service.
//!
//! Transitions: `AwaitHello --Hello ok--> Active --Bye/close--> Closing --disconnect--> gone`.
//! Any frame other than `Hello` while awaiting it, or a second `Hello`, closes the
//! connection with `protocol`; frames on a closing connection are ignored.

use std::collections::VecDeque;

use tern_wire::addr::Address;
use tern_wire::codec::CodecError;
use tern_wire::frame::Welcome;
use tern_wire::{Down, ErrorCode, Hello, Up, VERSION};

use super::{Action, ConnId, Hub, Millis};
use crate::auth::verify_token;
use crate::store::{Store, StoreError};

/// The state of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Connected; the first frame must be `Hello`.
    AwaitHello,
    /// Authenticated as a principal.
    Active(Session),
    /// A close was sent; waiting for the runtime to report the disconnect.
    Closing,
}

/// An authenticated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The principal's normalised address.
    pub user: String,
    /// Whether the principal has a presentity.
    pub presentity: bool,
    /// Highest inbox sequence number pushed to this session.
    pub(super) pushed: u64,
    /// Sequence numbers pushed and not yet acknowledged, oldest first.
    pub(super) in_flight: VecDeque<u64>,
}

const BAD_LOGIN: &str = "unknown user or wrong token";

impl Hub {
    /// A decoded frame from a connection.
    pub fn handle_frame(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: Up,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let req = frame.req();
        let result = self.dispatch(now, conn, frame, store);
        if result.is_err() {
            self.staged.clear();
            match req {
                Some(req) => self.fail(conn, req, ErrorCode::INTERNAL, "storage failed"),
                None => {
                    // The close itself may need storage (the session departs); if that
                    // fails too, the disconnect will retry the departure.
                    let _ = self.close(now, conn, ErrorCode::INTERNAL, "storage failed", store);
                }
            }
        }
        self.publish_staged();
        result
    }

    /// Bytes from a connection that are not a frame: the connection is closed.
    pub fn handle_bad_frame(&mut self, now: Millis, conn: ConnId, err: CodecError) {
        let (code, text) = match err {
            CodecError::Oversize { .. } => (ErrorCode::TOO_LARGE, "frame over the size limit"),
            CodecError::Malformed | CodecError::BufferTooSmall => {
                (ErrorCode::MALFORMED, "frame could not be decoded")
            }
        };
        // Closing needs no storage unless the session departs; departure is deferred
        // to `handle_disconnect`, which the runtime calls once the connection is gone.
        if self.conns.contains_key(&conn) {
            self.emit(Action::Close {
                conn,
                code,
                text: text.into(),
            });
            self.mark_closing(conn);
        }
        let _ = now;
        self.publish_staged();
    }

    /// The connection is gone (goodbye, idle timeout, error, or closed by the gateway).
    pub fn handle_disconnect(
        &mut self,
        now: Millis,
        conn: ConnId,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let result = match self.conns.remove(&conn) {
            Some(ConnState::Active(session)) => self.depart(now, conn, &session.user, store),
            _ => {
                self.forget_departed(conn);
                Ok(())
            }
        };
        if result.is_err() {
            self.staged.clear();
        }
        self.publish_staged();
        result
    }

    fn dispatch(
        &mut self,
        now: Millis,
        conn: ConnId,
        frame: Up,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let session = match self.conns.get(&conn) {
            None | Some(ConnState::Closing) => return Ok(()),
            Some(ConnState::AwaitHello) => {
                return match frame {
                    Up::Hello(hello) => self.hello(now, conn, hello, store),
                    _ => self.close(
                        now,
                        conn,
                        ErrorCode::PROTOCOL,
                        "Hello must come first",
                        store,
                    ),
                };
            }
            Some(ConnState::Active(session)) => session,
        };
        let user = session.user.clone();
        match frame {
            Up::Hello(_) => self.close(
                now,
                conn,
                ErrorCode::PROTOCOL,
                "Hello was already sent",
                store,
            ),
            Up::Publish { req, presence } => self.publish(now, conn, &user, req, presence, store),
            Up::Fetch { req, target } => self.fetch(conn, &user, req, &target, store),
            Up::Subscribe { req, target } => self.subscribe(conn, &user, req, &target, store),
            Up::Unsubscribe { req, target } => self.unsubscribe(conn, &user, req, &target, store),
            Up::Send { req, msg } => self.send_message(now, conn, &user, req, msg, store),
            Up::Ack { upto } => self.ack(conn, &user, upto, store),
            Up::Bye => self.close(now, conn, ErrorCode::GOODBYE, "goodbye", store),
        }
    }

    fn hello(
        &mut self,
        now: Millis,
        conn: ConnId,
        hello: Hello,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if hello.version != VERSION {
            let text = "this gateway speaks tern version 1";
            return self.close(now, conn, ErrorCode::UNSUPPORTED_VERSION, text, store);
        }
        let Ok(address) = Address::parse(&hello.user) else {
            return self.close(
                now,
                conn,
                ErrorCode::BAD_ADDRESS,
                "user is not local@domain",
                store,
            );
        };
        let record = match self.config.domain(address.domain()) {
            Some(_) => store.user(address.as_str())?,
            None => None,
        };
        let Some(record) = record.filter(|r| verify_token(&hello.token, &r.token_hash)) else {
            return self.close(now, conn, ErrorCode::UNAUTHORIZED, BAD_LOGIN, store);
        };
        let user = address.into_string();
        tracing::debug!(conn, %user, "session opened");
        if self.sessions_of(&user) == 0 {
            self.resync_principal(&user, store)?;
        }
        self.conns.insert(
            conn,
            ConnState::Active(Session {
                user: user.clone(),
                presentity: record.presentity,
                pushed: 0,
                in_flight: VecDeque::new(),
            }),
        );
        self.online.entry(user.clone()).or_default().push(conn);
        let welcome = Welcome {
            version: VERSION,
            user: user.clone(),
            frame_max: self.config.frame_max,
            body_max: self.config.body_max,
            time: now,
        };
        self.send(conn, Down::Welcome(welcome));
        self.send_subscribed_presence(conn, &user, store)?;
        self.deliver_more(conn, store)
    }

    /// Closes a connection with a reason; an active session departs at once.
    fn close(
        &mut self,
        now: Millis,
        conn: ConnId,
        code: ErrorCode,
        text: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.emit(Action::Close {
            conn,
            code,
            text: text.into(),
        });
        if let Some(ConnState::Active(session)) = self.mark_closing(conn) {
            self.depart(now, conn, &session.user, store)?;
        }
        Ok(())
    }

    fn mark_closing(&mut self, conn: ConnId) -> Option<ConnState> {
        let state = self.conns.get_mut(&conn)?;
        Some(std::mem::replace(state, ConnState::Closing))
    }

    /// A session ends: its principal may go out of contact.
    fn depart(
        &mut self,
        now: Millis,
        conn: ConnId,
        user: &str,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        self.forget_departed(conn);
        let still_online = self.online.get_mut(user).is_some_and(|conns| {
            conns.retain(|c| *c != conn);
            !conns.is_empty()
        });
        if still_online {
            return Ok(());
        }
        self.online.remove(user);
        tracing::debug!(conn, %user, "out of contact");
        self.release_waiting_senders(user);
        self.mark_out_of_contact(now, user, store)
    }
}
