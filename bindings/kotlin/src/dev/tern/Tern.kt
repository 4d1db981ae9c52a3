// The idiomatic Kotlin layer over tern's generated bindings (package dev.tern).
//
// uniffi generates the rest of the package into tern.kt: the records, the enums, the
// TernClient class (its async methods are already `suspend` functions), TernException
// and defaultConfig.
// This file adds only what a Kotlin or Android developer expects on top: the client's
// events as a Flow, a connect function with named arguments, and a presence builder.
//
// Its JVM facade class is named TernSdk: the generated tern.kt already compiles to
// dev.tern.TernKt. (Keep the generated file in its own source directory too: tern.kt and
// Tern.kt in one directory clash on case-insensitive file systems such as macOS'.)
@file:JvmName("TernSdk")

package dev.tern

import java.util.WeakHashMap
import java.util.concurrent.CountDownLatch
import java.util.concurrent.atomic.AtomicInteger
import kotlin.coroutines.cancellation.CancellationException
import kotlin.time.Duration
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.SendChannel
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.currentCoroutineContext
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.flow
import kotlinx.coroutines.isActive

/**
 * The client's events, as a cold [Flow].
 *
 * Each collection registers a listener with [TernClient.listen] and stops it (with
 * [ListenerHandle.stop]) when the collection ends: when the collecting coroutine is
 * cancelled, or when the flow completes by itself after [ConnectionState.Disconnected]
 * (the connection is gone for good and no more events follow; that event is emitted
 * first). After your own `disconnect()` (the Rust `close`, renamed for Kotlin) no more
 * events come, but the flow does not complete: cancel its collection.
 *
 * Collect it in one long-lived place per client (an application-wide scope or a
 * service) and fan out from there, for example into a `StateFlow` for the buddy list
 * and your message store: the client hands every event to one listener, so two
 * collections at a time would split the events between them.
 *
 * Acknowledgement: a message or receipt from the gateway's inbox is acknowledged (the
 * gateway drops it and tells the sender it was delivered) once the collector has
 * *returned* from handling it: the flow has no buffer, and the client's listener thread
 * waits for the collector. So a process that dies while handling a message gets it again
 * in its next session (with a state directory). If the collection is cancelled while an
 * event waits to be handed over or is being handled, the event is not dropped: it goes
 * to the collection of the same client that runs then, or is kept in memory and emitted
 * first by the next one (so `repeatOnLifecycle` loses nothing while the process lives;
 * an event cut short may come twice). Adding `.buffer(n)` or `.flowOn(...)` after
 * `events()` makes events be acknowledged once they are in that buffer.
 *
 * ```kotlin
 * appScope.launch {
 *     client.events().collect { event ->
 *         when (event) {
 *             is Event.Presence -> buddies.update { it + (event.presence.presentity to event.presence) }
 *             is Event.Message -> messageStore.insert(event.message)
 *             is Event.Connection -> connection.value = event.state
 *             else -> {}
 *         }
 *     }
 * }
 * ```
 */
fun TernClient.events(): Flow<Event> {
    val handover = Handover.of(this)
    // Not callbackFlow: when its collector is cancelled, callbackFlow closes its channel
    // without cancelling it, and a listener blocked in trySendBlocking stays blocked for
    // good (kotlinx-coroutines 1.8), its event lost. This flow owns its channel.
    return flow {
        // An offer the channel could not deliver (cancelled) goes back to its listener.
        val inbox = Channel<Offer>(Channel.RENDEZVOUS, onUndeliveredElement = { it.undelivered() })
        val handle =
            listen(
                object : EventListener {
                    // On the client's listener thread (its own, not the network one), one
                    // event at a time; the event is acknowledged when this returns.
                    override fun onEvent(event: Event) = handover.offer(inbox, event)
                },
            )
        try {
            // Events an earlier collection could not hand over come first.
            val earlier = handover.attach(inbox)
            earlier.forEachIndexed { i, event ->
                try {
                    emit(event)
                } catch (e: CancellationException) {
                    handover.putBack(earlier.drop(if (cutShort()) i else i + 1))
                    throw e
                }
            }
            for (offer in inbox) {
                try {
                    emit(offer.event)
                } catch (e: CancellationException) {
                    if (cutShort()) offer.undelivered() // to the next collection
                    throw e
                } finally {
                    offer.handled() // unless undelivered; also when the collector threw
                }
                if ((offer.event as? Event.Connection)?.state is ConnectionState.Disconnected) break
            }
        } finally {
            handover.detach(inbox)
            handle.stop()
            // Wakes a listener waiting to hand an event over: it passes the event on.
            inbox.cancel()
            handle.destroy()
        }
    }
}

/**
 * Whether a [CancellationException] out of `emit` cut the event short: the collecting
 * coroutine was cancelled. (Operators such as `first()` and `take(n)` end a collection
 * with one too, but after the collector took the event, and the coroutine stays active.)
 */
private suspend fun cutShort(): Boolean = !currentCoroutineContext().isActive

/**
 * An event on its way to a collector. The listener's thread waits on [done] until the
 * collector returned ([handled]) or the event must go elsewhere ([undelivered]);
 * whichever comes first counts.
 */
private class Offer(val event: Event) {
    private val state = AtomicInteger(PENDING)
    val done = CountDownLatch(1)
    val wasUndelivered: Boolean get() = state.get() == UNDELIVERED

    fun handled() = settle(HANDLED)

    fun undelivered() = settle(UNDELIVERED)

    private fun settle(to: Int) {
        if (state.compareAndSet(PENDING, to)) done.countDown()
    }

    private companion object {
        const val PENDING = 0
        const val HANDLED = 1
        const val UNDELIVERED = 2
    }
}

/**
 * The hand-over between a client's listener and the collections of [events]: the
 * running collection's channel, and what no collection could take yet.
 */
private class Handover {
    private var active: SendChannel<Offer>? = null
    private val leftOver = ArrayDeque<Event>()

    /** Makes [inbox] the running collection's; returns the events kept for it. */
    @Synchronized
    fun attach(inbox: SendChannel<Offer>): List<Event> {
        active = inbox
        return leftOver.toList().also { leftOver.clear() }
    }

    @Synchronized
    fun detach(inbox: SendChannel<Offer>) {
        if (active === inbox) active = null
    }

    @Synchronized
    fun putBack(events: List<Event>) {
        leftOver.addAll(0, events)
    }

    /**
     * Hands [event] to the collector behind [inbox] and waits until it returned; if that
     * collection ended first, to the running one, else keeps it for the next.
     */
    fun offer(inbox: SendChannel<Offer>, event: Event) {
        val offer = Offer(event)
        if (inbox.trySendBlocking(offer).isFailure) offer.undelivered()
        offer.done.await()
        if (!offer.wasUndelivered) return
        val next =
            synchronized(this) {
                active?.takeIf { it !== inbox } ?: run {
                    leftOver.addLast(event)
                    return
                }
            }
        offer(next, event)
    }

    companion object {
        private val byClient = WeakHashMap<TernClient, Handover>()

        fun of(client: TernClient): Handover = synchronized(byClient) { byClient.getOrPut(client) { Handover() } }
    }
}

/**
 * Connects to a tern gateway and returns the open client; suspends until the session is
 * open (or fails).
 *
 * Only the first four arguments are needed; every other one has the core's default
 * (from [defaultConfig]) when left out or `null`:
 *
 * ```kotlin
 * val client = connectTern(
 *     gateway = "tern.example.com:4433",
 *     user = "alice@example.com",
 *     token = token,
 *     caPem = context.assets.open("tern-ca.pem").readBytes(),
 *     stateDir = File(context.filesDir, "tern").path,
 * )
 * ```
 *
 * @param gateway the gateway's `host:port`.
 * @param user the user's address, `name@domain`.
 * @param token the access token the gateway's operator issued for [user].
 * @param caPem the PEM certificate(s) to trust for the gateway (its own self-signed
 *   certificate, or the CA that signed it).
 * @param stateDir a directory the client may keep its state in (outbox, inbox position,
 *   cached presence) across restarts; on Android, a folder under `Context.filesDir`.
 *   `null` keeps nothing on disk: unsent messages are lost when the process dies.
 * @param serverName the TLS server name the gateway's certificate must carry; `null`:
 *   the domain of [user].
 * @param mode [ClientMode.ACTIVE] in the foreground; see [TernClient.setMode].
 * @param inbox whether messages sent while this user was offline are delivered here.
 * @param anonymous open an anonymous session as `anonymous@<domain of user>` (no
 *   token, no inbox, no state directory), where the gateway's operator allows it.
 * @param reconnect whether the client reconnects by itself after the link drops.
 * @param keepAlive how often a quiet link is kept alive; [Duration.ZERO] turns the
 *   client's keep-alive off (see the battery notes in docs/sdk-kotlin.md).
 * @param idleTimeout how long a silent link is kept before it counts as lost.
 * @param requestTimeout how long the handshake and each request wait for an answer.
 * @throws TernException.Rejected if the gateway refuses the session (wrong token,
 *   unknown user), [TernException.InvalidArgument] for an unusable argument,
 *   [TernException.Timeout] or [TernException.Disconnected] if it cannot be reached.
 */
suspend fun connectTern(
    gateway: String,
    user: String,
    token: String,
    caPem: ByteArray,
    stateDir: String? = null,
    serverName: String? = null,
    mode: ClientMode = ClientMode.ACTIVE,
    inbox: Boolean? = null,
    anonymous: Boolean? = null,
    reconnect: Boolean? = null,
    keepAlive: Duration? = null,
    idleTimeout: Duration? = null,
    requestTimeout: Duration? = null,
): TernClient {
    val defaults = defaultConfig(gateway, user, token, caPem)
    val config =
        defaults.copy(
            stateDir = stateDir ?: defaults.stateDir,
            serverName = serverName ?: defaults.serverName,
            mode = mode,
            inbox = inbox ?: defaults.inbox,
            anonymous = anonymous ?: defaults.anonymous,
            reconnect = reconnect ?: defaults.reconnect,
            keepaliveMs = keepAlive?.toMillis() ?: defaults.keepaliveMs,
            idleTimeoutMs = idleTimeout?.toMillis() ?: defaults.idleTimeoutMs,
            requestTimeoutMs = requestTimeout?.toMillis() ?: defaults.requestTimeoutMs,
        )
    return TernClient.connect(config)
}

private fun Duration.toMillis(): ULong {
    require(!isNegative()) { "a duration must not be negative: $this" }
    return inWholeMilliseconds.toULong()
}

/**
 * A presence with one tuple, for [TernClient.publish]: the common case of "I am online,
 * available, with this note".
 *
 * @param open whether the user can be reached (`false`: offline).
 * @param availability `"available"`, `"away"`, `"busy"`, `"idle"`, `"dnd"`, `"xa"`,
 *   `"asleep"`, or `null` for none.
 * @param note a free text for people ("at my desk").
 * @param contact where to reach the user, if not at this address.
 * @param id the tuple's id (the command-line client's default is `"default"`).
 */
fun presenceOf(
    open: Boolean = true,
    availability: String? = "available",
    note: String? = null,
    contact: String? = null,
    id: String = "default",
): Presence =
    Presence(
        tuples =
            listOf(
                Tuple(
                    id = id,
                    open = open,
                    availability = availability,
                    contact = contact,
                    note = note,
                    at = (System.currentTimeMillis() / 1000).toULong(),
                ),
            ),
        card = emptyList(),
    )
