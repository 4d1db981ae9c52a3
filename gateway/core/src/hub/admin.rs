//! Administrator sessions: one administrator per domain, authenticated by the domain's
//! administrator token (not a user's), acting on that domain's principals as they
//! would themselves (RFC 2779 5.1.16 C1: listing who is subscribed, inspecting and
//! changing rules and presence, removing subscriptions). Every request is logged, to
//! `tracing` (target `tern::admin`) and to the store's audit log.
//!
//! This module owns the administrator's side of the session and the audit trail; what
//! each request does is the presence service's and the rules' own code.

use tern_wire::addr::Address;
use tern_wire::frame::{ReqId, Welcome};
use tern_wire::{AdminOp, Down, ErrorCode, Operate, Up, VERSION};

use super::session::ConnState;
use super::{ConnId, Hub, Millis};
use crate::auth::verify_token;
use crate::store::{AdminRecord, Store, StoreError};

const BAD_ADMIN: &str = "unknown domain or wrong administrator token";

/// What an operation is, for the audit log.
fn describe(op: &AdminOp) -> String {
    match op {
        AdminOp::Watchers => "watchers".into(),
        AdminOp::Subscriptions { incoming } => format!("subscriptions incoming={incoming}"),
        AdminOp::GetRules => "get-rules".into(),
        AdminOp::SetRules(rules) => format!(
            "set-rules presence={} inbox={} delegates={}",
            rules.presence.len(),
            rules.inbox.len(),
            rules.delegates.len()
        ),
        AdminOp::GetPresence => "get-presence".into(),
        AdminOp::SetPresence(p) => format!("set-presence tuples={}", p.tuples.len()),
        AdminOp::Cancel(watcher) => format!("cancel {watcher}"),
    }
}

impl Hub {
    /// `Up::Operate`: opens an administrator's session.
    pub(super) fn operate(
        &mut self,
        now: Millis,
        conn: ConnId,
        operate: Operate,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        if operate.version != VERSION {
            let text = "this gateway speaks tern version 1";
            return self.close(now, conn, ErrorCode::UNSUPPORTED_VERSION, text, store);
        }
        let domain = Address::parse(&format!("admin@{}", operate.domain))
            .ok()
            .map(|a| a.domain().to_string())
            .filter(|d| self.config.domain(d).is_some());
        let stored = match &domain {
            Some(domain) => store.admin_token(domain)?,
            None => None,
        };
        let domain = match (domain, stored) {
            (Some(domain), Some(hash)) if verify_token(&operate.token, &hash) => domain,
            _ => {
                tracing::warn!(target: "tern::admin", conn, domain = %operate.domain, "administrator authentication failed");
                return self.close(now, conn, ErrorCode::UNAUTHORIZED, BAD_ADMIN, store);
            }
        };
        tracing::info!(target: "tern::admin", conn, %domain, "administrator session opened");
        self.conns.insert(conn, ConnState::Admin(domain.clone()));
        self.send(
            conn,
            Down::Welcome(Welcome {
                version: VERSION,
                user: domain,
                frame_max: self.config.frame_max,
                body_max: self.config.body_max,
                time: now,
            }),
        );
        Ok(())
    }

    /// A frame of an administrator's session.
    pub(super) fn admin_frame(
        &mut self,
        now: Millis,
        conn: ConnId,
        domain: &str,
        frame: Up,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        match frame {
            Up::Admin { req, user, op } => self.admin(now, conn, domain, req, &user, op, store),
            Up::Bye => self.close(now, conn, ErrorCode::GOODBYE, "goodbye", store),
            Up::Hello(_) | Up::Open(_) | Up::Operate(_) => {
                let text = "the session is already open";
                self.close(now, conn, ErrorCode::PROTOCOL, text, store)
            }
            other => {
                if let Some(req) = other.req() {
                    let text = "an administrator session takes Admin requests only";
                    self.fail(conn, req, ErrorCode::PROTOCOL, text);
                }
                Ok(())
            }
        }
    }

    /// `Up::Admin`: one request about one principal of the administrator's domain.
    #[allow(clippy::too_many_arguments)]
    fn admin(
        &mut self,
        now: Millis,
        conn: ConnId,
        domain: &str,
        req: ReqId,
        user: &str,
        op: AdminOp,
        store: &mut dyn Store,
    ) -> Result<(), StoreError> {
        let Some(address) = self.address_or_fail(conn, req, user) else {
            return Ok(());
        };
        if address.domain() != domain {
            let text = "that principal is not in your domain";
            self.fail(conn, req, ErrorCode::REFUSED, text);
            return Ok(());
        }
        let user = address.into_string();
        let Some(record) = store.user(&user)? else {
            self.fail(conn, req, ErrorCode::UNKNOWN_USER, "no such principal");
            return Ok(());
        };
        let action = describe(&op);
        tracing::info!(target: "tern::admin", %domain, %user, %action, "administrator action");
        store.log_admin(&AdminRecord {
            at: now,
            domain: domain.into(),
            user: user.clone(),
            action,
        })?;
        match op {
            AdminOp::Watchers => {
                self.watchers(now, conn, &user, req);
                Ok(())
            }
            AdminOp::Subscriptions { incoming } => {
                self.list_subscriptions(conn, &user, req, incoming, store)
            }
            AdminOp::GetRules => {
                self.get_rules(conn, &user, req);
                Ok(())
            }
            AdminOp::SetRules(rules) => self.set_rules(conn, &user, req, rules, store),
            AdminOp::GetPresence => {
                let current = self.current_doc(&user, store)?;
                let (version, doc) = (current.version, current.doc);
                self.send(conn, Down::Versioned { req, version, doc });
                Ok(())
            }
            AdminOp::SetPresence(_) if !record.presentity || !self.presence_enabled(&user) => {
                let text = "this principal has no presentity, or presence is off";
                self.fail(conn, req, ErrorCode::SERVICE_DISABLED, text);
                Ok(())
            }
            AdminOp::SetPresence(presence) => {
                self.write_presence(now, conn, &user, req, presence, store)
            }
            AdminOp::Cancel(watcher) => self.cancel(conn, &user, req, &watcher, store),
        }
    }
}
