//! A contact's own session: `Hello`, then `Publish` after `Publish`, each waited for
//! until its `Ok`. Connected straight to the gateway, not through an emulated link: the
//! benchmark is about the phone's link.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tern_wire::codec::{self, FrameBuf};
use tern_wire::{Down, Hello, Presence, Up, VERSION};

pub(crate) struct Publisher {
    // Kept so that the connection lives as long as the session.
    _conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: FrameBuf,
    req: u32,
}

impl Publisher {
    pub(crate) async fn login(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        user: &str,
        token: &str,
    ) -> Result<Self> {
        let conn = endpoint
            .connect(addr, "localhost")?
            .await
            .with_context(|| format!("{user} connects"))?;
        let (send, recv) = conn.open_bi().await?;
        let mut publisher = Self {
            _conn: conn,
            send,
            recv,
            buf: FrameBuf::new(tern_wire::limits::FRAME_MAX),
            req: 0,
        };
        publisher
            .write(&Up::Hello(Hello {
                version: VERSION,
                user: user.into(),
                token: token.into(),
            }))
            .await?;
        match publisher.next().await? {
            Down::Welcome(_) => Ok(publisher),
            other => bail!("{user} was answered {other:?} instead of Welcome"),
        }
    }

    /// Publishes and waits for the `Ok`; returns when it arrived.
    pub(crate) async fn publish(&mut self, presence: Presence) -> Result<Instant> {
        self.req += 1;
        let req = self.req;
        self.write(&Up::Publish { req, presence }).await?;
        loop {
            match self.next().await? {
                Down::Ok { req: r } if r == req => return Ok(Instant::now()),
                Down::Fail { code, text, .. } => bail!("publish failed: {code:?} {text}"),
                _ => {}
            }
        }
    }

    async fn write(&mut self, frame: &Up) -> Result<()> {
        self.send.write_all(&codec::encode(frame)).await?;
        Ok(())
    }

    async fn next(&mut self) -> Result<Down> {
        loop {
            if let Some(frame) = self.buf.next_frame::<Down>()? {
                return Ok(frame);
            }
            match self.recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => self.buf.extend(&chunk.bytes),
                None => bail!("the gateway ended the session"),
            }
        }
    }

    pub(crate) async fn bye(mut self) {
        let _ = self.write(&Up::Bye).await;
        let _ = self.send.finish();
    }
}
