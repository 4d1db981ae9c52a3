//! The XMPP bridge: the gateway's domain joined to the XMPP network as an XEP-0114
//! component (docs/federation.md).
//!
//! ```text
//!  XMPP server ◀──TCP, jabber:component:accept──▶ bridge task (tokio)
//!                                                   │  FedEvent::Inbound / Up / Written / Down
//!                                                   ▼
//!                                          hub thread: Hub::handle_federated, outbox
//!                                                   │  Action::Federate { seq, stanza }
//!                                                   └──────────▶ bridge task (the Up channel)
//! ```
//!
//! The bridge owns the component connection: connecting, the handshake, reconnecting
//! with backoff, keeping the stream alive, and turning stanzas into the core's
//! [`Inbound`] values and [`Outbound`] values into stanzas ([`stanza`]). It decides
//! nothing about presence or messages (the hub does) and touches no storage: stanzas
//! to send live in the hub's durable outbox until the bridge reports them
//! [`FedEvent::Written`], which it does only when the XMPP server has answered a ping
//! sent after them (TCP keeps order, so the server has read everything before it).

pub(crate) mod bridge;
pub(crate) mod stanza;

use tern_gateway_core::federation::{Inbound, Outbound};
use tokio::sync::mpsc::UnboundedSender;

/// What the bridge tells the hub thread.
#[derive(Debug)]
pub(crate) enum FedEvent {
    /// The component is connected and authenticated: stanzas go to `out` from now on.
    /// The hub thread first sends everything still in the outbox, in order.
    Up {
        /// Where to send `(outbox seq, stanza)`; closed when the connection ends.
        out: UnboundedSender<(u64, Outbound)>,
    },
    /// The XMPP server has every stanza up to this outbox number.
    Written {
        /// The highest outbox number confirmed.
        upto: u64,
    },
    /// A stanza from the XMPP network, parsed and checked.
    Inbound(Inbound),
    /// The connection ended; the bridge reconnects by itself.
    Down,
}
