"""End-to-end test of tern's Python bindings against a real gateway.

Run by scripts/bindings/python.sh, which builds the library, generates `tern.py` (with
libtern_ffi.so next to it) and starts a gateway. Needs on PYTHONPATH the directory of
the generated `tern.py`, and in the environment what scripts/bindings/gateway.sh
exports: TERN_GATEWAY, TERN_CA, TERN_ALICE_TOKEN, TERN_BOB_TOKEN.

Checks (the same list as the Kotlin and Swift programs):
1. alice and bob connect (bob with a state directory);
2. bob subscribes to alice (Granted); alice publishes; bob's listener gets her presence;
3. alice sends bob a text: the receipt is Delivered and bob's listener gets the message;
4. alice's watchers() lists bob as a subscriber;
5. errors: fetching an unknown user fails with Failed (code 6), a wrong token with
   Rejected (code 4);
6. set_mode and network_changed can be called; the listener is stopped, the clients
   closed.
Prints one line, `python: N passed, M failed`, and exits non-zero on any failure.
"""

import asyncio
import os
import shutil
import sys
import tempfile
import traceback

import tern

ALICE = "alice@example.com"
BOB = "bob@example.com"
NOTE = "from python"
EVENT_TIMEOUT = 10.0


class QueueListener(tern.EventListener):
    """Hands each event to an asyncio queue. on_event runs on a Rust thread, so the
    event crosses to the loop with call_soon_threadsafe."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def on_event(self, event):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def wait_for(self, what, predicate, timeout=EVENT_TIMEOUT):
        """The first event that satisfies predicate, skipping others, within timeout."""
        deadline = self.loop.time() + timeout
        while True:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout:.0f} s")
            try:
                event = await asyncio.wait_for(self.queue.get(), remaining)
            except asyncio.TimeoutError:
                raise AssertionError(f"no {what} within {timeout:.0f} s") from None
            if predicate(event):
                return event


def config(user, token, ca_pem, state_dir=None):
    cfg = tern.default_config(os.environ["TERN_GATEWAY"], user, token, ca_pem)
    cfg.state_dir = state_dir
    return cfg


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    async def run(self, name, check):
        try:
            await check()
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            self.failed += 1
            print(f"FAIL {name}", file=sys.stderr)
            traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok   {name}", file=sys.stderr)


async def main() -> int:
    loop = asyncio.get_running_loop()
    # Async calls complete on Rust threads; uniffi resumes them on this loop.
    tern.uniffi_set_event_loop(loop)

    with open(os.environ["TERN_CA"], "rb") as f:
        ca_pem = f.read()
    state_dir = tempfile.mkdtemp(prefix="tern-python-bob-")
    checks = Checks()
    alice = bob = handle = None
    listener = QueueListener(loop)

    async def connect():
        nonlocal alice, bob, handle
        alice = await tern.TernClient.connect(
            config(ALICE, os.environ["TERN_ALICE_TOKEN"], ca_pem)
        )
        bob = await tern.TernClient.connect(
            config(BOB, os.environ["TERN_BOB_TOKEN"], ca_pem, state_dir)
        )
        assert alice.user() == ALICE, alice.user()
        assert bob.user() == BOB, bob.user()
        handle = bob.listen(listener)

    async def presence():
        outcome = await bob.subscribe(ALICE)
        assert outcome.is_granted(), f"subscribe: {outcome}"
        await alice.publish(
            tern.Presence(
                tuples=[
                    tern.Tuple(
                        id="python", open=True, availability="available", note=NOTE
                    )
                ]
            )
        )

        def alices_note(event):
            if not event.is_presence() or event.presence.presentity != ALICE:
                return False
            return any(
                t.open and t.availability == "available" and t.note == NOTE
                for t in event.presence.presence.tuples
            )

        await listener.wait_for(f"presence of {ALICE} with note {NOTE!r}", alices_note)
        cached = bob.cached(ALICE)
        assert cached is not None and cached.version > 0, f"cached: {cached}"
        assert any(doc.presentity == ALICE for doc in bob.roster())

    async def message():
        body = "hello from python, ünïcode ✓".encode()
        receipt = await alice.send_text(BOB, body.decode())
        assert receipt.to == BOB, receipt
        assert receipt.status.is_delivered(), f"receipt: {receipt}"
        event = await listener.wait_for(
            "message from alice",
            lambda e: e.is_message() and e.message.id == receipt.id,
        )
        assert event.message.body == body, event.message.body
        assert event.message._from == ALICE, event.message._from

    async def watchers():
        info = await alice.watchers()
        assert BOB in info.subscribers, f"watchers: {info}"

    async def errors():
        try:
            await alice.fetch("nobody@example.com")
        except tern.TernError.Failed as e:
            assert e.code == 6, f"fetch of an unknown user: code {e.code} ({e.reason})"
        else:
            raise AssertionError("fetch of an unknown user succeeded")
        try:
            wrong = await tern.TernClient.connect(config(ALICE, "0" * 64, ca_pem))
        except tern.TernError.Rejected as e:
            assert e.code == 4, f"wrong token: code {e.code} ({e.reason})"
        else:
            await wrong.close()
            raise AssertionError("a wrong token was accepted")

    async def modes():
        bob.set_mode(tern.ClientMode.INACTIVE)
        bob.network_changed()
        bob.set_mode(tern.ClientMode.ACTIVE)
        # The session survives the migration: a request still goes through.
        outcome = await bob.subscriptions(False)
        assert any(s.who == ALICE for s in outcome), f"subscriptions: {outcome}"

    await checks.run("alice and bob connect", connect)
    if alice is not None and bob is not None:
        await checks.run("bob sees alice's presence", presence)
        await checks.run("alice's message reaches bob", message)
        await checks.run("bob watches alice", watchers)
        await checks.run("errors map to TernError", errors)
        await checks.run("set_mode and network_changed", modes)

    async def shutdown():
        if handle is not None:
            handle.stop()
        for client in (bob, alice):
            if client is not None:
                await client.close()
        shutil.rmtree(state_dir, ignore_errors=True)

    await checks.run("stop the listener and close the clients", shutdown)
    print(f"python: {checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
