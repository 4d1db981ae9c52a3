"""Smoke test of tern's XMPP test infrastructure, run by scripts/xmpp/selftest.sh.

Drives a real Prosody (started by selftest.sh with scripts/xmpp/prosody.sh) with two
slixmpp peers: an XEP-0114 component for example.com (where the tern gateway will sit)
and a client, alice@xmpp.test. Checks, with the stanzas as they arrive:

  1. alice -> bob@example.com: a chat message and a subscription request reach the
     component, addressed as RFC 6121 says (message from alice's full JID, subscribe
     from her bare JID);
  2. the component answers `subscribed`, sends bob's presence and a message; alice gets
     all three;
  3. alice logs in again: the server probes bob@example.com for her;
  4. the component disconnects: what alice gets for a message and a subscription to
     bob@example.com meanwhile (Prosody bounces them);
  5. a second connection for example.com is refused (conflict), the first one stays;
  6. the server restarts (scripts/xmpp/prosody.sh stop, then start): the component
     reconnects, a message it sends to the offline alice is stored and delivered when
     she logs in, her roster survived, and traffic flows both ways again;
  7. a stanza from outside example.com makes the server close the component's stream
     (invalid-from), and the component reconnects.

Environment: PROSODY_C2S_PORT, PROSODY_COMPONENT_PORT, PROSODY_COMPONENT_SECRET,
PROSODY_DIR (from prosody.sh), XMPP_ALICE_PASSWORD, PROSODY_SH (the script, for the
restart). Prints each check and each step's time; the last line is
"xmpp-selftest: N passed, N failed". Exits 0 only if every check held.
"""

import asyncio
import logging
import os
import sys
import time

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

HOST = "127.0.0.1"
C2S_PORT = int(os.environ["PROSODY_C2S_PORT"])
COMPONENT_PORT = int(os.environ["PROSODY_COMPONENT_PORT"])
SECRET = os.environ["PROSODY_COMPONENT_SECRET"]
PROSODY_DIR = os.environ["PROSODY_DIR"]
PROSODY_SH = os.environ["PROSODY_SH"]
ALICE = "alice@xmpp.test"
ALICE_PASSWORD = os.environ["XMPP_ALICE_PASSWORD"]
COMPONENT = "example.com"
BOB = "bob@example.com"
STEP_TIMEOUT = 10.0
VERBOSE = os.environ.get("XMPP_SELFTEST_VERBOSE") == "1"

passed = 0
failed = 0
timings = []
facts = []


def check(ok, what, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok    {what}", flush=True)
    else:
        failed += 1
        print(f"  FAIL  {what}{': ' + detail if detail else ''}", flush=True)
    return ok


def fact(text):
    facts.append(text)
    print(f"  fact  {text}", flush=True)


class Step:
    """`async with Step("name"):` prints the step and records its duration."""

    def __init__(self, name):
        self.name = name

    async def __aenter__(self):
        print(f"== {self.name}", flush=True)
        self.start = time.monotonic()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        seconds = time.monotonic() - self.start
        timings.append((self.name, seconds))
        print(f"   ({seconds:.3f} s)", flush=True)
        return False


class Recorder:
    """Every message, presence and iq an XMPP stream receives, in order, as it came."""

    def __init__(self, xmpp, ns):
        self.items = []
        self.new = asyncio.Event()
        for name in ("message", "presence", "iq"):
            xmpp.register_handler(
                Callback(f"record {name}", MatchXPath(f"{{{ns}}}{name}"), self._add)
            )

    def _add(self, stanza):
        self.items.append(stanza)
        if VERBOSE:
            print(f"        recv {stanza}", flush=True)
        self.new.set()

    def mark(self):
        return len(self.items)

    async def wait_for(self, pred, since=0, timeout=STEP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for stanza in self.items[since:]:
                if pred(stanza):
                    return stanza
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.new.clear()
            try:
                await asyncio.wait_for(self.new.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def since(self, mark):
        return self.items[mark:]


def kind(stanza):
    return f"{stanza.name}/{stanza['type']}"


def err_condition(stanza):
    try:
        return stanza["error"]["condition"]
    except Exception:  # noqa: BLE001 - any stanza without a usable error
        return None


class Component(slixmpp.ComponentXMPP):
    def __init__(self):
        super().__init__(COMPONENT, SECRET, HOST, COMPONENT_PORT)
        # slixmpp answers probes from its own in-memory roster (with `unsubscribed` for
        # unknown contacts): the test plays the gateway and answers everything itself.
        self.del_event_handler("presence_probe", self._handle_probe)
        self.recorder = Recorder(self, "jabber:component:accept")
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()
        self.stream_errors = []
        self.add_event_handler("session_start", lambda _: self.ready.set())
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(str(e)))

    def _on_disconnected(self, _reason):
        self.ready.clear()
        self.gone.set()

    async def start(self, timeout=STEP_TIMEOUT):
        self.gone.clear()
        self.ready.clear()
        self.connect()
        await asyncio.wait_for(self.ready.wait(), timeout)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        # No TLS on the loopback test server: plain TCP, SCRAM over it.
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.recorder = Recorder(self, "jabber:client")
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_event_handler("failed_all_auth", lambda _: print("  alice: authentication failed"))

    async def _on_start(self, _):
        self.send_presence()
        await self.get_roster()
        self.ready.set()

    async def start(self, timeout=STEP_TIMEOUT):
        self.gone.clear()
        self.ready.clear()
        self.connect(HOST, C2S_PORT)
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def stop(self):
        self.gone.clear()
        self.disconnect(wait=2.0)
        await asyncio.wait_for(self.gone.wait(), STEP_TIMEOUT)


def roster_subscription(client, jid):
    return client.client_roster[jid]["subscription"]


async def eventually(cond, timeout=STEP_TIMEOUT):
    """Polls cond() until it holds (roster pushes arrive after the stanzas they follow)."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return cond()


async def main():
    comp = Component()
    alice = Client(f"{ALICE}/selftest", ALICE_PASSWORD)
    crec, arec = comp.recorder, alice.recorder

    async with Step("component connects as example.com (XEP-0114 handshake)"):
        await comp.start()
        check(comp.ready.is_set(), "the component's handshake is accepted")

    async with Step("alice logs in (c2s, SCRAM over plain TCP) and sends her presence"):
        await alice.start()
        check(alice.boundjid.full == f"{ALICE}/selftest", "alice is bound", alice.boundjid.full)
        probes = [s for s in crec.items if kind(s) == "presence/probe"]
        check(not probes, "no probe for bob before any subscription", str(probes))

    async with Step("alice sends a chat message to bob@example.com"):
        m = crec.mark()
        msg = alice.make_message(mto=BOB, mbody="hello bob, from xmpp", mtype="chat")
        msg["id"] = "selftest-msg-1"
        msg.send()
        got = await crec.wait_for(lambda s: s.name == "message", since=m)
        if check(got is not None, "the component receives the message"):
            check(got["from"].full == f"{ALICE}/selftest", "from is alice's full JID", got["from"].full)
            check(got["to"].full == BOB, "to is bob@example.com", got["to"].full)
            check(got["type"] == "chat", "type chat", got["type"])
            check(got["body"] == "hello bob, from xmpp", "body as sent", got["body"])
            check(got["id"] == "selftest-msg-1", "id as sent", got["id"])
            fact(f"message as the component receives it: {got}")

    async with Step("alice asks to subscribe to bob@example.com's presence"):
        m = crec.mark()
        alice.send_presence_subscription(pto=BOB, ptype="subscribe")
        got = await crec.wait_for(lambda s: kind(s) == "presence/subscribe", since=m)
        if check(got is not None, "the component receives the subscribe"):
            check(got["from"].full == ALICE, "from is alice's bare JID (RFC 6121 3.1.2)", got["from"].full)
            check(got["to"].full == BOB, "to is bob@example.com", got["to"].full)
            fact(f"subscribe as the component receives it: {got}")
        await eventually(lambda: alice.client_roster[BOB]["pending_out"])
        check(roster_subscription(alice, BOB) == "none" and alice.client_roster[BOB]["pending_out"],
              "alice's roster: bob, subscription none, ask=subscribe",
              f"{roster_subscription(alice, BOB)} pending_out={alice.client_roster[BOB]['pending_out']}")
        others = [kind(s) for s in crec.since(m) if kind(s) != "presence/subscribe"]
        if others:
            fact(f"also received by the component after the subscribe: {others}")

    async with Step("the component approves, sends bob's presence and a message to alice"):
        m = arec.mark()
        comp.send_presence(pto=ALICE, pfrom=BOB, ptype="subscribed")
        comp.send_presence(pto=ALICE, pfrom=f"{BOB}/tern", pstatus="on the train")
        comp.send_message(mto=ALICE, mfrom=f"{BOB}/tern", mbody="hi alice, from the component", mtype="chat")
        sub = await arec.wait_for(lambda s: kind(s) == "presence/subscribed", since=m)
        if check(sub is not None, "alice receives subscribed"):
            check(sub["from"].full == BOB, "subscribed from bob@example.com", sub["from"].full)
        pres = await arec.wait_for(lambda s: s.name == "presence" and s["type"] == "available"
                                   and s["from"].bare == BOB, since=m)
        if check(pres is not None, "alice receives bob's available presence"):
            check(pres["status"] == "on the train", "with bob's status", pres["status"])
        got = await arec.wait_for(lambda s: s.name == "message" and s["type"] == "chat", since=m)
        if check(got is not None, "alice receives the component's message"):
            check(got["from"].full == f"{BOB}/tern", "from bob@example.com/tern", got["from"].full)
            check(got["body"] == "hi alice, from the component", "body as sent", got["body"])
        await eventually(lambda: roster_subscription(alice, BOB) == "to")
        check(roster_subscription(alice, BOB) == "to", "alice's roster: subscription to bob",
              roster_subscription(alice, BOB))

    async with Step("alice logs out and in again: the server probes bob@example.com"):
        m = crec.mark()
        await alice.stop()
        after_logout = [f"{kind(s)} from {s['from']}" for s in crec.since(m)]
        fact(f"the component received on alice's logout: {after_logout or 'nothing'}")
        m = crec.mark()
        await alice.start()
        probe = await crec.wait_for(lambda s: kind(s) == "presence/probe", since=m)
        if check(probe is not None, "the component receives a probe for bob"):
            # Prosody 0.12 probes from the full JID of the resource that logged in.
            check(probe["from"].bare == ALICE, "probe from alice (bare or full JID)", probe["from"].full)
            check(probe["to"].full == BOB, "probe to bob@example.com", probe["to"].full)
            fact(f"probe as the component receives it: {probe}")
        await asyncio.sleep(0.3)
        others = [f"{kind(s)} from {s['from']}" for s in crec.since(m) if kind(s) != "presence/probe"]
        fact(f"the component also received on alice's login: {others or 'nothing'}")

    async with Step("the component disconnects: what alice gets for stanzas to bob meanwhile"):
        comp.disconnect(wait=2.0)
        await asyncio.wait_for(comp.gone.wait(), STEP_TIMEOUT)
        m = arec.mark()
        msg = alice.make_message(mto=BOB, mbody="are you there?", mtype="chat")
        msg["id"] = "selftest-msg-while-down"
        msg.send()
        bounce = await arec.wait_for(lambda s: s.name == "message" and s["type"] == "error", since=m)
        if check(bounce is not None, "alice gets an error for her message"):
            check(bounce["id"] == "selftest-msg-while-down", "the error carries the message's id", bounce["id"])
            check(bounce["error"]["type"] == "wait", "error type wait", bounce["error"]["type"])
            check(err_condition(bounce) == "remote-server-timeout", "condition remote-server-timeout",
                  str(err_condition(bounce)))
            fact(f"message bounce while the component is away: {bounce}")
        m = arec.mark()
        alice.send_presence(pto=BOB, ptype="subscribe")
        pbounce = await arec.wait_for(lambda s: s.name == "presence" and s["type"] == "error", since=m,
                                      timeout=3)
        fact("subscribe while the component is away: " +
             (f"bounced: {pbounce}" if pbounce is not None else "no error within 3 s"))
        iq = alice.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info", ito=BOB)
        try:
            await iq.send(timeout=3)
            fact("disco#info to bob while the component is away: answered (unexpected)")
        except slixmpp.exceptions.IqError as e:
            fact(f"disco#info to bob while the component is away: error {e.iq['error']['type']}/"
                 f"{e.iq['error']['condition']}")
        except slixmpp.exceptions.IqTimeout:
            fact("disco#info to bob while the component is away: no answer within 3 s")

    async with Step("the component reconnects"):
        await comp.start()
        check(comp.ready.is_set(), "the component is back")
        m = crec.mark()
        alice.send_message(mto=BOB, mbody="back?", mtype="chat")
        got = await crec.wait_for(lambda s: s.name == "message" and s["body"] == "back?", since=m)
        check(got is not None, "messages reach it again")

    async with Step("a second connection for example.com while the first is up"):
        second = Component()
        second.connect()
        await asyncio.wait_for(second.gone.wait(), STEP_TIMEOUT)
        check(not second.ready.is_set(), "the second connection is refused")
        fact(f"stream error for the second connection: {second.stream_errors or 'none'}")
        m = crec.mark()
        alice.send_message(mto=BOB, mbody="still there?", mtype="chat")
        got = await crec.wait_for(lambda s: s.name == "message" and s["body"] == "still there?", since=m)
        check(comp.ready.is_set() and got is not None, "the first connection keeps working")

    async with Step("the XMPP server restarts (prosody.sh stop, then start)"):
        # The component reconnects as a gateway would: as soon as its stream ends, every
        # 0.2 s until the handshake succeeds.
        async def reconnect():
            await comp.gone.wait()
            gone_at = time.monotonic()
            attempts = 0
            while time.monotonic() - gone_at < 30:
                attempts += 1
                try:
                    await comp.start(timeout=0.5)
                    return gone_at, time.monotonic(), attempts
                except asyncio.TimeoutError:
                    comp.cancel_connection_attempt()
                    await asyncio.sleep(0.2)
            return gone_at, None, attempts

        comp.stream_errors.clear()
        reconnector = asyncio.ensure_future(reconnect())
        await asyncio.sleep(0)
        times = {}
        for action in ("stop", "start"):
            t = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                "bash", PROSODY_SH, action, PROSODY_DIR,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await proc.communicate()
            times[action] = (t, time.monotonic())
            check(proc.returncode == 0, f"prosody.sh {action} succeeds", err.decode(errors="replace"))
        stop_s = times["stop"][1] - times["stop"][0]
        start_s = times["start"][1] - times["start"][0]
        fact(f"prosody.sh stop took {stop_s:.3f} s (SIGTERM until the process is gone)")
        fact(f"prosody.sh start took {start_s:.3f} s (until both ports accept connections)")
        gone_at, back_at, attempts = await reconnector
        check(back_at is not None, "the component reconnects after the restart")
        if back_at is not None:
            fact(f"the component's stream ended {gone_at - times['stop'][0]:.3f} s after the stop began; "
                 f"it was handshaken again {back_at - times['start'][1]:.3f} s after the ports were back, "
                 f"{back_at - gone_at:.3f} s without a connection, {attempts} attempt(s)")
        fact("stream error the component got on shutdown: "
             f"{comp.stream_errors or 'none (the TCP connection just closed)'}")
        if not alice.gone.is_set():
            await asyncio.wait_for(alice.gone.wait(), STEP_TIMEOUT)
        check(alice.gone.is_set(), "alice's stream ended too")

    async with Step("a message to alice while she is offline is stored (mod_offline)"):
        comp.send_message(mto=ALICE, mfrom=f"{BOB}/tern", mbody="while you were away", mtype="chat")
        await asyncio.sleep(0.3)
        m = arec.mark()
        login_mark = crec.mark()
        await alice.start()
        got = await arec.wait_for(lambda s: s.name == "message" and s["body"] == "while you were away",
                                  since=m)
        if check(got is not None, "alice gets it when she logs in"):
            node = got.xml.find("{urn:xmpp:delay}delay")
            delay = None if node is None else dict(node.attrib)
            fact(f"offline message delivered with a XEP-0203 delay stamp: {delay}")

    async with Step("after the restart: roster kept, probe sent, messages both ways"):
        check(roster_subscription(alice, BOB) == "to", "alice's subscription to bob survived the restart",
              roster_subscription(alice, BOB))
        probe = await crec.wait_for(lambda s: kind(s) == "presence/probe", since=login_mark)
        check(probe is not None, "the component got a probe for bob on this login too")
        m = crec.mark()
        alice.send_message(mto=BOB, mbody="after the restart", mtype="chat")
        got = await crec.wait_for(lambda s: s.name == "message" and s["body"] == "after the restart",
                                  since=m)
        check(got is not None, "alice -> component")
        m = arec.mark()
        comp.send_message(mto=ALICE, mfrom=f"{BOB}/tern", mbody="me too", mtype="chat")
        got = await arec.wait_for(lambda s: s.name == "message" and s["body"] == "me too", since=m)
        check(got is not None, "component -> alice")

    async with Step("the component sends from a JID outside example.com"):
        comp.stream_errors.clear()
        comp.gone.clear()
        comp.send_message(mto=ALICE, mfrom="mallory@elsewhere.test", mbody="spoofed", mtype="chat")
        await asyncio.wait_for(comp.gone.wait(), STEP_TIMEOUT)
        check(comp.gone.is_set(), "the server closes the component's stream")
        fact(f"stream error for a foreign from: {comp.stream_errors or 'none'}")
        await comp.start()
        check(comp.ready.is_set(), "the component reconnects")

    async with Step("everyone disconnects"):
        await alice.stop()
        comp.disconnect(wait=2.0)
        await asyncio.wait_for(comp.gone.wait(), STEP_TIMEOUT)


def run():
    if os.environ.get("XMPP_SELFTEST_DEBUG") == "1":
        logging.basicConfig(level=logging.DEBUG)
    start = time.monotonic()
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - any failure is a failed check
        import traceback
        traceback.print_exc()
        check(False, "the test ran to its end", repr(e))
    total = time.monotonic() - start
    print("== timings")
    for name, seconds in timings:
        print(f"  {seconds:7.3f} s  {name}")
    print(f"  {total:7.3f} s  total (python)")
    print(f"xmpp-selftest: {passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    run()
