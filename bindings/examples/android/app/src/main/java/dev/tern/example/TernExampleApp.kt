// The example's Application: owns the one ChatModel (and so the one tern client) for the
// whole process, and tells the client when the network changes.
//
// Not built in tern's CI (no Android SDK there); see bindings/examples/android/README.md.

package dev.tern.example

import android.app.Application
import android.net.ConnectivityManager
import android.net.Network
import dev.tern.connectTern
import java.io.File
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.SupervisorJob

class TernExampleApp : Application() {
    /** Lives as long as the process: the event collection must not end with a screen. */
    private val appScope = CoroutineScope(SupervisorJob() + Dispatchers.Main.immediate)

    lateinit var model: ChatModel
        private set

    override fun onCreate() {
        super.onCreate()
        model =
            ChatModel(appScope) {
                connectTern(
                    gateway = BuildConfig.TERN_GATEWAY,
                    user = BuildConfig.TERN_USER,
                    token = BuildConfig.TERN_TOKEN,
                    // The gateway's certificate (its cert.pem), shipped as an asset.
                    caPem = assets.open("tern-ca.pem").use { it.readBytes() },
                    // Outbox, inbox position and presence cache survive restarts here.
                    stateDir = File(filesDir, "tern").path,
                )
            }
        model.start(contacts = BuildConfig.TERN_CONTACTS.split(',').map { it.trim() }.filter { it.isNotEmpty() })

        // Wi-Fi to cellular and back: the default network changes. Tell the client, so it
        // moves the QUIC connection to the new path at once (connection migration)
        // instead of finding out through timeouts.
        val connectivity = getSystemService(ConnectivityManager::class.java)
        connectivity.registerDefaultNetworkCallback(
            object : ConnectivityManager.NetworkCallback() {
                private var current: Network? = null

                override fun onAvailable(network: Network) {
                    if (current != null && current != network) model.networkChanged()
                    current = network
                }
            },
        )
    }
}
