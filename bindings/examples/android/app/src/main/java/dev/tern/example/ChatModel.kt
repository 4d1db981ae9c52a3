// The example's state: one tern client, the buddy list and the conversations.
//
// Plain Kotlin (kotlinx-coroutines and the tern SDK, no Android classes), so that
// scripts/bindings/kotlin.sh compiles it against the real bindings on every run; the
// Android parts (TernExampleApp, MainActivity) only wire it to the lifecycle and the UI.

package dev.tern.example

import dev.tern.ClientMode
import dev.tern.ConnectionState
import dev.tern.Event
import dev.tern.PresenceDoc
import dev.tern.ReceiptStatus
import dev.tern.SubscribeOutcome
import dev.tern.TernClient
import dev.tern.TernException
import dev.tern.events
import dev.tern.presenceOf
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.cancelAndJoin
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch

/** How a buddy's dot is coloured. */
enum class Dot(val label: String) {
    AVAILABLE("available"),
    AWAY("away"),
    BUSY("busy"),
    OFFLINE("offline"),
    PENDING("request pending"),
}

/** One row of the buddy list. */
data class Buddy(val address: String, val dot: Dot, val note: String?)

/** One line of a conversation. */
data class ChatLine(val from: String, val text: String, val sentMillis: Long, val status: String?)

/**
 * The app's one tern client and what it shows. Lives as long as the process (create it
 * in the Application, not in an Activity), so the event collection is never cut by a
 * screen going away.
 *
 * @param scope a scope that lives as long as the process.
 * @param connect opens the client (the app builds it with `connectTern`).
 */
class ChatModel(
    private val scope: CoroutineScope,
    private val connect: suspend () -> TernClient,
) {
    private val _buddies = MutableStateFlow<Map<String, Buddy>>(emptyMap())
    private val _chats = MutableStateFlow<Map<String, List<ChatLine>>>(emptyMap())
    private val _status = MutableStateFlow("connecting")

    /** The buddy list, by address. */
    val buddies: StateFlow<Map<String, Buddy>> = _buddies.asStateFlow()

    /** The conversations, by the other party's address. */
    val chats: StateFlow<Map<String, List<ChatLine>>> = _chats.asStateFlow()

    /** A one-line connection status for the title bar. */
    val status: StateFlow<String> = _status.asStateFlow()

    @Volatile private var client: TernClient? = null
    private var events: Job? = null

    /** Connects, publishes "available", subscribes to [contacts] and follows events. */
    fun start(contacts: List<String>, note: String? = null) {
        scope.launch {
            val c =
                try {
                    connect()
                } catch (e: TernException) {
                    _status.value = "cannot connect: ${e.message}"
                    return@launch
                }
            client = c
            _status.value = "online as ${c.user()}"
            // What the state directory's presence cache already knows, at once.
            for (doc in c.roster()) showPresence(doc)
            events = scope.launch { c.events().collect(::onEvent) }
            try {
                c.publish(presenceOf(open = true, availability = "available", note = note))
                for (contact in contacts) {
                    when (val outcome = c.subscribe(contact)) {
                        is SubscribeOutcome.Granted -> showPresence(outcome.presence)
                        SubscribeOutcome.Pending ->
                            _buddies.update { it + (contact to Buddy(contact, Dot.PENDING, "waiting for approval")) }
                    }
                }
            } catch (e: TernException) {
                _status.value = "error: ${e.message}"
            }
        }
    }

    /** Sends [text] to [to] and shows it with its receipt's status. */
    fun send(to: String, text: String) {
        val c = client ?: return
        scope.launch {
            val status =
                try {
                    when (val s = c.sendText(to, text).status) {
                        ReceiptStatus.Delivered -> "delivered"
                        ReceiptStatus.Stored -> "stored" // the buddy is offline; delivered later
                        is ReceiptStatus.Failed -> "failed: ${s.reason}"
                        ReceiptStatus.Relayed -> "sent to XMPP" // a late receipt may follow
                    }
                } catch (e: TernException.Timeout) {
                    "sending" // stays in the outbox; the receipt comes as Event.Sent
                } catch (e: TernException) {
                    "not sent: ${e.message}"
                }
            addLine(to, ChatLine(c.user(), text, System.currentTimeMillis(), status))
        }
    }

    /** Call from the Activity's onStart: presence changes come within milliseconds. */
    fun foreground() = client?.setMode(ClientMode.ACTIVE)

    /** Call from the Activity's onStop: presence changes wait and come in batches. */
    fun background() = client?.setMode(ClientMode.INACTIVE)

    /** Call from a ConnectivityManager.NetworkCallback: the connection moves at once. */
    fun networkChanged() = client?.networkChanged()

    /** Says goodbye and frees the client. */
    suspend fun stop() {
        events?.cancelAndJoin()
        client?.let {
            it.disconnect()
            it.destroy()
        }
        client = null
        _status.value = "offline"
    }

    private fun onEvent(event: Event) {
        when (event) {
            is Event.Presence -> showPresence(event.presence)
            is Event.SubscriptionEnded -> _buddies.update { it - event.presentity }
            is Event.Message -> {
                val m = event.message
                addLine(m.from, ChatLine(m.from, m.body.decodeToString(), m.sent.toLong(), null))
            }
            is Event.Connection ->
                _status.value =
                    when (val s = event.state) {
                        ConnectionState.Connected -> "online"
                        is ConnectionState.Reconnecting -> "reconnecting (${s.reason})"
                        is ConnectionState.Disconnected -> "offline: ${s.reason}"
                    }
            else -> {} // receipts, watchers, subscription requests: not shown here
        }
    }

    private fun showPresence(doc: PresenceDoc) {
        val open = doc.presence.tuples.filter { it.open }
        val tuple = open.firstOrNull() ?: doc.presence.tuples.firstOrNull()
        val dot =
            when {
                open.isEmpty() -> Dot.OFFLINE
                else ->
                    when (tuple?.availability) {
                        null, "available" -> Dot.AVAILABLE
                        "busy", "dnd" -> Dot.BUSY
                        else -> Dot.AWAY // away, idle, xa, asleep
                    }
            }
        _buddies.update { it + (doc.presentity to Buddy(doc.presentity, dot, tuple?.note)) }
    }

    private fun addLine(peer: String, line: ChatLine) =
        _chats.update { it + (peer to (it[peer].orEmpty() + line)) }
}
