// The Kotlin bindings' test against a real gateway (scripts/bindings/kotlin.sh runs it).
//
// Reads the gateway from the environment that scripts/bindings/gateway.sh exports
// (TERN_GATEWAY, TERN_CA, TERN_ALICE_TOKEN, TERN_BOB_TOKEN) and checks, in order, what
// the bindings' contract asks of every language's test (checks 1 to 6: connect,
// presence, messages, watchers, errors, lifecycle), through the idiomatic layer
// (connectTern, events(), presenceOf) and the generated API; check 7 tests the layer's
// own promise that cancelling a collection of events() loses no message. Both clients
// say goodbye at the end. Stops at the
// first failed check; prints one line per check and a summary line
// ("kotlin: N passed, N failed"); exits 0 only if every check passed.

import dev.tern.ClientMode
import dev.tern.Event
import dev.tern.ReceiptStatus
import dev.tern.SubscribeOutcome
import dev.tern.TernClient
import dev.tern.TernException
import dev.tern.connectTern
import dev.tern.events
import dev.tern.presenceOf
import java.io.File
import java.nio.file.Files
import kotlin.system.exitProcess
import kotlin.time.Duration
import kotlin.time.Duration.Companion.seconds
import kotlin.time.TimeSource
import kotlinx.coroutines.CompletableDeferred
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitCancellation
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull

const val ALICE = "alice@example.com"
const val BOB = "bob@example.com"
const val NOTE = "from kotlin"
val EVENT_TIMEOUT = 10.seconds
val TOTAL_TIMEOUT = 120.seconds

class CheckFailed(message: String) : Exception(message)

/** Runs the checks in order, stopping at the first failure. */
class Checks {
    var passed = 0
        private set
    var failed = 0
        private set

    suspend fun <T> check(name: String, body: suspend () -> T): T {
        val start = TimeSource.Monotonic.markNow()
        try {
            val result = body()
            passed++
            println("ok   $name (${start.elapsedNow().inWholeMilliseconds} ms)")
            return result
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: ${e::class.simpleName}: ${e.message}")
            throw CheckFailed(name)
        }
    }
}

fun env(name: String): String =
    System.getenv(name)?.takeIf { it.isNotEmpty() }
        ?: throw IllegalStateException("$name is not set (source scripts/bindings/gateway.sh and call tern_gateway_start)")

/** Waits for the first event on [events] that [predicate] accepts; fails after [timeout]. */
suspend fun <T : Any> Channel<Event>.await(what: String, timeout: Duration = EVENT_TIMEOUT, predicate: (Event) -> T?): T =
    withTimeoutOrNull(timeout) {
        var found: T? = null
        while (found == null) found = predicate(receive())
        found
    } ?: throw CheckFailed("no $what within $timeout")

/** The exception [body] throws; fails if it returns normally. */
suspend fun failure(what: String, body: suspend () -> Unit): Throwable {
    try {
        body()
    } catch (e: Throwable) {
        return e
    }
    throw CheckFailed("$what succeeded, but it must fail")
}

fun main() {
    val checks = Checks()
    val start = TimeSource.Monotonic.markNow()
    val bobState = Files.createTempDirectory("tern-kotlin-bob").toFile()
    val ok =
        try {
            runBlocking { withTimeout(TOTAL_TIMEOUT) { run(checks, bobState) } }
            true
        } catch (e: CheckFailed) {
            false
        } catch (e: Throwable) {
            // A timeout of the whole run, or anything outside the checks.
            println("FAIL: ${e::class.simpleName}: ${e.message}")
            false
        } finally {
            bobState.deleteRecursively()
        }
    val failed = if (ok) checks.failed else maxOf(checks.failed, 1)
    println("ran the checks in ${start.elapsedNow().inWholeMilliseconds} ms")
    // The summary alone on its line, in the form test reports read ("N passed, N failed").
    println("kotlin: ${checks.passed} passed, $failed failed")
    exitProcess(if (ok && failed == 0) 0 else 1)
}

suspend fun run(checks: Checks, bobState: File) =
    kotlinx.coroutines.coroutineScope {
        val gateway = env("TERN_GATEWAY")
        val ca = File(env("TERN_CA")).readBytes()
        val aliceToken = env("TERN_ALICE_TOKEN")
        val bobToken = env("TERN_BOB_TOKEN")

        // 1. Both connect; bob keeps his state in a temporary directory.
        val (alice, bob) =
            checks.check("1 alice and bob connect (bob with a state directory)") {
                val alice = connectTern(gateway = gateway, user = ALICE, token = aliceToken, caPem = ca)
                val bob = connectTern(gateway = gateway, user = BOB, token = bobToken, caPem = ca, stateDir = bobState.path)
                check(alice.user() == ALICE) { "alice.user() is ${alice.user()}" }
                check(bob.user() == BOB) { "bob.user() is ${bob.user()}" }
                alice to bob
            }
        // Bob's events, through the Flow of the idiomatic layer, into a channel the checks read.
        val bobEvents = Channel<Event>(Channel.UNLIMITED)
        val collector = launch(Dispatchers.Default) { bob.events().collect { bobEvents.send(it) } }

        // 2. Bob subscribes to alice; alice publishes; bob is told.
        checks.check("2 bob subscribes to alice (granted) and gets her presence with note '$NOTE'") {
            val outcome = bob.subscribe(ALICE)
            check(outcome is SubscribeOutcome.Granted) { "subscribe returned $outcome, not Granted" }
            alice.publish(presenceOf(open = true, availability = "available", note = NOTE))
            val doc =
                bobEvents.await("Event.Presence for $ALICE with note '$NOTE'") { event ->
                    (event as? Event.Presence)?.presence?.takeIf { doc ->
                        doc.presentity == ALICE && doc.presence.tuples.any { it.note == NOTE }
                    }
                }
            val tuple = doc.presence.tuples.first { it.note == NOTE }
            check(tuple.open) { "alice's tuple is not open: $tuple" }
            check(tuple.availability == "available") { "alice's availability is ${tuple.availability}" }
        }

        // 3. Alice sends bob a text; delivered, and bob gets the same bytes.
        checks.check("3 alice's message is delivered and bob gets the same body") {
            val text = "hello bob, from kotlin \u2713"
            val receipt = alice.sendText(BOB, text)
            check(receipt.to == BOB) { "receipt is for ${receipt.to}" }
            check(receipt.status is ReceiptStatus.Delivered) { "receipt status is ${receipt.status}, not Delivered" }
            val message =
                bobEvents.await("Event.Message from $ALICE") { event ->
                    (event as? Event.Message)?.message?.takeIf { it.id.contentEquals(receipt.id) }
                }
            check(message.from == ALICE) { "message is from ${message.from}" }
            check(message.body.contentEquals(text.encodeToByteArray())) {
                "body is '${message.body.decodeToString()}', not '$text'"
            }
        }

        // 4. Alice sees bob among her watchers.
        checks.check("4 alice's watchers() lists bob as a subscriber") {
            val watchers = alice.watchers()
            check(BOB in watchers.subscribers) { "subscribers are ${watchers.subscribers}" }
        }

        // 5. Errors: an unknown presentity, and a wrong token.
        checks.check("5 fetch(nobody) fails with Failed(6) and a wrong token with Rejected(4)") {
            val e = failure("fetch(nobody@example.com)") { alice.fetch("nobody@example.com") }
            check(e is TernException.Failed) { "fetch(nobody) threw $e, not TernException.Failed" }
            check(e.code.toInt() == 6) { "fetch(nobody) failed with code ${e.code} (${e.reason}), not 6" }
            val r =
                failure("connecting with a wrong token") {
                    connectTern(gateway = gateway, user = ALICE, token = "wrong-$aliceToken", caPem = ca, reconnect = false)
                        .let { it.disconnect(); it.destroy() }
                }
            check(r is TernException.Rejected) { "a wrong token threw $r, not TernException.Rejected" }
            check(r.code.toInt() == 4) { "a wrong token was rejected with code ${r.code} (${r.reason}), not 4" }
        }

        // 6. Lifecycle calls; the listener stops (and a new collection takes over).
        checks.check("6 setMode, networkChanged, listener stopped and replaced") {
            alice.setMode(ClientMode.INACTIVE)
            alice.networkChanged()
            alice.setMode(ClientMode.ACTIVE)
            bob.setMode(ClientMode.INACTIVE)
            bob.networkChanged()
            collector.cancelAndJoin() // ends the Flow's collection: its awaitClose stops the handle
            // A new collection of bob's events gets the next message.
            val again = Channel<Event>(Channel.UNLIMITED)
            val second = launch(Dispatchers.Default) { bob.events().collect { again.send(it) } }
            val receipt = alice.sendText(BOB, "second")
            again.await("the second message through a new events() collection") { event ->
                (event as? Event.Message)?.message?.takeIf { it.id.contentEquals(receipt.id) }
            }
            second.cancelAndJoin()
        }

        // 7. The layer's hand-over: a message whose handling is cut short by cancelling
        // the collection is not lost (it was acknowledged to the gateway already); the
        // next collection gets it, and first() ends a collection without a duplicate.
        checks.check("7 events(): a message cut short by a cancelled collection reaches the next one") {
            val holding = CompletableDeferred<Unit>()
            val first =
                launch(Dispatchers.Default) {
                    bob.events().collect { event ->
                        if (event is Event.Message) {
                            holding.complete(Unit)
                            awaitCancellation() // a collector that never finishes this one
                        }
                    }
                }
            val text = "cut short"
            // Delivered only once bob's app has handled it: wait for that in parallel.
            val sending = async { alice.sendText(BOB, text) }
            withTimeoutOrNull(EVENT_TIMEOUT) { holding.await() } ?: throw CheckFailed("the first collection got no message")
            first.cancelAndJoin()
            val again =
                withTimeoutOrNull(EVENT_TIMEOUT) { bob.events().first { it is Event.Message } as Event.Message }
                    ?: throw CheckFailed("the next collection got no message")
            check(again.message.body.decodeToString() == text) { "the next collection got '${again.message.body.decodeToString()}'" }
            val receipt = withTimeout(EVENT_TIMEOUT) { sending.await() }
            check(receipt.status is ReceiptStatus.Delivered) { "receipt status is ${receipt.status}" }
            check(receipt.id.contentEquals(again.message.id)) { "the next collection got another message" }
            // first() took that message: a later collection must not get it again.
            val later = Channel<Event>(Channel.UNLIMITED)
            val third = launch(Dispatchers.Default) { bob.events().collect { later.send(it) } }
            val marker = alice.sendText(BOB, "after")
            val next =
                later.await("the message after") { event ->
                    (event as? Event.Message)?.message
                }
            check(next.id.contentEquals(marker.id)) { "a later collection got '${next.body.decodeToString()}' again, not 'after'" }
            third.cancelAndJoin()
            closeBoth(alice, bob)
        }
    }

suspend fun closeBoth(alice: TernClient, bob: TernClient) {
    for (client in listOf(alice, bob)) {
        client.disconnect()
        client.destroy()
    }
}
