"""One XMPP user for tern's real-peer tests (tests/tests/federation.rs), driven over
JSON lines: commands on stdin, events on stdout, one object per line.

    python peer.py JID PASSWORD HOST PORT [--no-presence]

Logs in with slixmpp over plain TCP on loopback (no TLS; SCRAM or PLAIN, as the test
Prosody of scripts/xmpp/prosody.sh offers), fetches the roster, sends its initial
presence (unless --no-presence) and prints {"event": "connected", "jid": ...}. It never
answers anything by itself (subscription requests, receipts): the test decides.

Commands ({"cmd": NAME, ...}; after each one, {"event": "done", "cmd": NAME}):
  subscribe / approve / deny / unsubscribe   {"to"}: presence subscribe / subscribed /
                                             unsubscribed / unsubscribe
  presence     {"show"?, "status"?, "priority"?, "to"?}: an available presence
  unavailable  {"status"?, "to"?}
  send         {"to", "body"?, "id"?, "origin_id"? (default: id; null: none),
                "receipt"? (ask for a XEP-0184 receipt), "type"? (default chat)}
  receipt      {"to", "id"}: a XEP-0184 <received id=.../>
  send_raw     {"xml"}: written to the stream as it is
  roster       answered by {"event": "roster", "items": {jid: {"subscription", "ask"}}}
  quit         disconnects; the process exits after {"event": "closed"}

Events (every stanza received, as it came; "xml" is the whole stanza):
  presence  {"from", "to", "type" (available when absent), "show", "status",
             "priority" (texts or null), "id", "xml"}
  message   {"from", "to", "type", "id", "origin_id", "body", "request" (a receipt is
             asked for), "namespaces" (of the payload elements), "xml"}
  receipt   {"from", "to", "id" (of the message received), "stanza_id", "xml"}
  error     {"stanza" (message, presence or iq), "from", "id", "error_type",
             "condition", "text", "xml"}: any stanza of type error
  iq        {"from", "type", "id", "xml"}: iqs other than errors
  closed    {"reason"}: the stream ended (the process then exits)
  connect_failed / auth_failed / bad_command {"reason"}
Closing stdin also disconnects.
"""

import asyncio
import json
import sys
from xml.etree import ElementTree as ET

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

CLIENT = "jabber:client"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
RECEIPTS = "urn:xmpp:receipts"
SID = "urn:xmpp:sid:0"


def emit(event, **fields):
    fields = {"event": event, **fields}
    try:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        sys.exit(0)


def text_of(xml, name):
    node = xml.find(f"{{{CLIENT}}}{name}")
    return None if node is None else (node.text or "")


def error_of(stanza):
    """The fields of a stanza of type error."""
    xml = stanza.xml
    err = xml.find(f"{{{CLIENT}}}error")
    condition = text = error_type = None
    if err is not None:
        error_type = err.get("type")
        for child in err:
            if child.tag == f"{{{STANZAS}}}text":
                text = child.text
            elif child.tag.startswith(f"{{{STANZAS}}}") and condition is None:
                condition = child.tag.split("}", 1)[1]
    return {
        "stanza": stanza.name,
        "from": xml.get("from"),
        "id": xml.get("id"),
        "error_type": error_type,
        "condition": condition,
        "text": text,
        "xml": str(stanza),
    }


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, host, port, presence):
        super().__init__(jid, password)
        self.address = (host, int(port))
        self.initial_presence = presence
        # No TLS on the loopback test server: plain TCP, SCRAM (or PLAIN) over it.
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        # Subscription requests wait for the test's approve or deny.
        self.auto_authorize = None
        self.auto_subscribe = False
        self.ready = asyncio.get_event_loop().create_future()
        self.done = asyncio.get_event_loop().create_future()
        for name, handle in (
            ("message", self.on_message),
            ("presence", self.on_presence),
            ("iq", self.on_iq),
        ):
            self.register_handler(Callback(f"peer {name}", MatchXPath(f"{{{CLIENT}}}{name}"), handle))
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("failed_all_auth", lambda _: self.fail("auth_failed", "authentication failed"))
        self.add_event_handler("connection_failed", lambda e: self.fail("connect_failed", str(e)))

    def fail(self, event, reason):
        emit(event, reason=reason)
        self.abort()
        if not self.done.done():
            self.done.set_result(1)

    async def on_start(self, _):
        await self.get_roster()
        if self.initial_presence:
            self.send_presence()
        emit("connected", jid=self.boundjid.full)
        if not self.ready.done():
            self.ready.set_result(None)

    def on_disconnected(self, reason):
        emit("closed", reason=str(reason) if reason else None)
        if not self.done.done():
            self.done.set_result(0)

    # ---- received --------------------------------------------------------------------

    def on_presence(self, stanza):
        xml = stanza.xml
        if xml.get("type") == "error":
            return emit("error", **error_of(stanza))
        emit(
            "presence",
            **{
                "from": xml.get("from"),
                "to": xml.get("to"),
                "type": xml.get("type") or "available",
                "show": text_of(xml, "show"),
                "status": text_of(xml, "status"),
                "priority": text_of(xml, "priority"),
                "id": xml.get("id"),
                "xml": str(stanza),
            },
        )

    def on_message(self, stanza):
        xml = stanza.xml
        if xml.get("type") == "error":
            return emit("error", **error_of(stanza))
        received = xml.find(f"{{{RECEIPTS}}}received")
        if received is not None:
            return emit(
                "receipt",
                **{
                    "from": xml.get("from"),
                    "to": xml.get("to"),
                    "id": received.get("id"),
                    "stanza_id": xml.get("id"),
                    "xml": str(stanza),
                },
            )
        origin = xml.find(f"{{{SID}}}origin-id")
        emit(
            "message",
            **{
                "from": xml.get("from"),
                "to": xml.get("to"),
                "type": xml.get("type") or "normal",
                "id": xml.get("id"),
                "origin_id": None if origin is None else origin.get("id"),
                "body": text_of(xml, "body"),
                "request": xml.find(f"{{{RECEIPTS}}}request") is not None,
                "namespaces": sorted({c.tag[1:].split("}", 1)[0] for c in xml} - {CLIENT}),
                "xml": str(stanza),
            },
        )

    def on_iq(self, stanza):
        xml = stanza.xml
        if xml.get("type") == "error":
            return emit("error", **error_of(stanza))
        emit("iq", **{"from": xml.get("from"), "type": xml.get("type"), "id": xml.get("id"), "xml": str(stanza)})

    # ---- commands --------------------------------------------------------------------

    async def command(self, cmd):
        name = cmd.get("cmd")
        kinds = {"subscribe": "subscribe", "approve": "subscribed", "deny": "unsubscribed",
                 "unsubscribe": "unsubscribe"}
        if name in kinds:
            self.send_presence(pto=cmd["to"], ptype=kinds[name])
        elif name == "presence":
            self.send_presence(pto=cmd.get("to"), pshow=cmd.get("show"), pstatus=cmd.get("status"),
                               ppriority=cmd.get("priority"))
        elif name == "unavailable":
            self.send_presence(pto=cmd.get("to"), ptype="unavailable", pstatus=cmd.get("status"))
        elif name == "send":
            msg = self.make_message(mto=cmd["to"], mbody=cmd.get("body"), mtype=cmd.get("type", "chat"))
            if cmd.get("id") is not None:
                msg["id"] = cmd["id"]
            origin = cmd.get("origin_id", cmd.get("id"))
            if origin is not None:
                ET.SubElement(msg.xml, f"{{{SID}}}origin-id").set("id", origin)
            if cmd.get("receipt"):
                ET.SubElement(msg.xml, f"{{{RECEIPTS}}}request")
            msg.send()
        elif name == "receipt":
            msg = self.make_message(mto=cmd["to"])
            ET.SubElement(msg.xml, f"{{{RECEIPTS}}}received").set("id", cmd["id"])
            msg.send()
        elif name == "send_raw":
            self.send_raw(cmd["xml"])
        elif name == "roster":
            # Without a roster version, so that the whole roster comes back.
            result = await self.make_iq_get(queryxmlns="jabber:iq:roster").send()
            items = {}
            for item in result.xml.iter("{jabber:iq:roster}item"):
                items[item.get("jid")] = {"subscription": item.get("subscription"), "ask": item.get("ask")}
            emit("roster", items=items)
        elif name == "quit":
            emit("done", cmd=name)
            self.disconnect(wait=2.0)
            return
        else:
            return emit("bad_command", reason=f"unknown command {name!r}")
        emit("done", cmd=name)


async def read_commands(peer):
    """Reads commands once the session has started."""
    await peer.ready
    loop = asyncio.get_event_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            peer.disconnect(wait=2.0)
            return
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            await peer.command(cmd)
        except Exception as e:  # noqa: BLE001 - reported, the peer keeps going
            emit("bad_command", reason=f"{type(e).__name__}: {e}", line=line.decode(errors="replace"))


async def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 4:
        sys.exit("usage: peer.py JID PASSWORD HOST PORT [--no-presence]")
    jid, password, host, port = args
    peer = Peer(jid, password, host, port, "--no-presence" not in sys.argv)
    peer.connect(*peer.address)
    commands = asyncio.ensure_future(read_commands(peer))
    status = await peer.done
    commands.cancel()
    sys.exit(status)


if __name__ == "__main__":
    asyncio.run(main())
