// The example's one screen (Jetpack Compose): the buddy list with presence dots, and a
// chat with the buddy you tap.
//
// Not built in tern's CI (no Android SDK there); see bindings/examples/android/README.md.

package dev.tern.example

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.BackHandler
import androidx.activity.compose.setContent
import androidx.compose.foundation.background
import androidx.compose.foundation.clickable
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.shape.CircleShape
import androidx.compose.material3.Button
import androidx.compose.material3.ExperimentalMaterial3Api
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Text
import androidx.compose.material3.TopAppBar
import androidx.compose.runtime.Composable
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.draw.clip
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.semantics.clearAndSetSemantics
import androidx.compose.ui.semantics.semantics
import androidx.compose.ui.unit.dp

class MainActivity : ComponentActivity() {
    private val model get() = (application as TernExampleApp).model

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent { MaterialTheme { TernScreen(model) } }
    }

    // Foreground: presence changes within milliseconds. Background: the gateway holds
    // them and sends them in batches (every few minutes, or with the keep-alives), so
    // the radio is not woken for each buddy's change.
    override fun onStart() {
        super.onStart()
        model.foreground()
    }

    override fun onStop() {
        model.background()
        super.onStop()
    }
}

@OptIn(ExperimentalMaterial3Api::class)
@Composable
fun TernScreen(model: ChatModel) {
    val buddies by model.buddies.collectAsState()
    val chats by model.chats.collectAsState()
    val status by model.status.collectAsState()
    var peer by rememberSaveable { mutableStateOf<String?>(null) }

    Scaffold(
        topBar = {
            TopAppBar(title = {
                Column {
                    Text(peer ?: "Buddies")
                    Text(status, style = MaterialTheme.typography.bodySmall)
                }
            })
        },
    ) { padding ->
        Column(Modifier.padding(padding).fillMaxSize()) {
            val open = peer
            if (open == null) {
                BuddyList(buddies.values.sortedBy { it.address }, onOpen = { peer = it })
            } else {
                BackHandler { peer = null }
                Chat(
                    peer = open,
                    buddy = buddies[open],
                    lines = chats[open].orEmpty(),
                    onSend = { text -> model.send(open, text) },
                )
            }
        }
    }
}

@Composable
fun BuddyList(buddies: List<Buddy>, onOpen: (String) -> Unit) {
    LazyColumn(Modifier.fillMaxSize()) {
        items(buddies, key = { it.address }) { buddy ->
            // Presence is never colour alone: the dot has a word beside it, and TalkBack
            // reads the row as one item ("bob@example.com, away, at lunch").
            Row(
                Modifier.fillMaxWidth()
                    .clickable { onOpen(buddy.address) }
                    .semantics(mergeDescendants = true) {}
                    .padding(16.dp),
                verticalAlignment = Alignment.CenterVertically,
            ) {
                PresenceDot(buddy.dot)
                Spacer(Modifier.width(12.dp))
                Column {
                    Text(buddy.address, style = MaterialTheme.typography.bodyLarge)
                    Text(
                        listOfNotNull(buddy.dot.label, buddy.note).joinToString(", "),
                        style = MaterialTheme.typography.bodySmall,
                    )
                }
            }
        }
    }
}

@Composable
fun PresenceDot(dot: Dot) {
    val color =
        when (dot) {
            Dot.AVAILABLE -> Color(0xFF2E7D32)
            Dot.AWAY -> Color(0xFFF9A825)
            Dot.BUSY -> Color(0xFFC62828)
            Dot.OFFLINE -> Color(0xFF9E9E9E)
            Dot.PENDING -> Color(0xFF90CAF9)
        }
    // Decorative: the word next to it carries the meaning for screen readers.
    Spacer(Modifier.size(12.dp).clip(CircleShape).background(color).clearAndSetSemantics {})
}

@Composable
fun Chat(peer: String, buddy: Buddy?, lines: List<ChatLine>, onSend: (String) -> Unit) {
    var draft by remember(peer) { mutableStateOf("") }
    Column(Modifier.fillMaxSize()) {
        Row(Modifier.padding(16.dp), verticalAlignment = Alignment.CenterVertically) {
            PresenceDot(buddy?.dot ?: Dot.OFFLINE)
            Spacer(Modifier.width(8.dp))
            Text(buddy?.note ?: "", style = MaterialTheme.typography.bodySmall)
        }
        LazyColumn(Modifier.weight(1f).fillMaxWidth().padding(horizontal = 16.dp)) {
            items(lines) { line ->
                val mine = line.from != peer
                Column(
                    Modifier.fillMaxWidth().padding(vertical = 4.dp),
                    horizontalAlignment = if (mine) Alignment.End else Alignment.Start,
                ) {
                    Text(line.text, style = MaterialTheme.typography.bodyLarge)
                    line.status?.let { Text(it, style = MaterialTheme.typography.labelSmall) }
                }
            }
        }
        Row(
            Modifier.fillMaxWidth().padding(8.dp),
            horizontalArrangement = Arrangement.spacedBy(8.dp),
            verticalAlignment = Alignment.CenterVertically,
        ) {
            OutlinedTextField(draft, { draft = it }, Modifier.weight(1f), placeholder = { Text("Message") })
            Button(
                onClick = {
                    if (draft.isNotBlank()) {
                        onSend(draft)
                        draft = ""
                    }
                },
            ) { Text("Send") }
        }
    }
}
