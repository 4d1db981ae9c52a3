// The app: one TernModel for the whole scene, the client's mode following scenePhase,
// and NWPathMonitor telling the client when the network changes.

import Network
import SwiftUI

@main
struct TernDemoApp: App {
    @State private var model = TernModel()
    @Environment(\.scenePhase) private var scenePhase
    private let network = NetworkWatcher()

    var body: some Scene {
        WindowGroup {
            BuddyListView()
                .environment(model)
                .task { await signIn() }
                .task {
                    // Wi-Fi to cellular and back: the client moves its QUIC connection
                    // (or reconnects) at once instead of waiting for a timeout.
                    for await _ in network.changes() { model.networkChanged() }
                }
        }
        .onChange(of: scenePhase) { _, phase in
            switch phase {
            case .active: model.setForeground(true)  // presence within ~50 ms
            case .background: model.setForeground(false)  // batched, every few minutes
            default: break  // .inactive (app switcher, a call banner): no change
            }
        }
    }

    private func signIn() async {
        guard let url = Bundle.main.url(forResource: "tern-ca", withExtension: "pem"),
            let ca = try? Data(contentsOf: url)
        else {
            assertionFailure("add the gateway's cert.pem to the app as tern-ca.pem")
            return
        }
        await model.signIn(
            gateway: DemoSettings.gateway, user: DemoSettings.user, token: DemoSettings.token,
            caPem: ca, buddies: DemoSettings.buddies)
    }
}

/// Reports each new usable network path (not the first one, nor repeats of the same).
final class NetworkWatcher: Sendable {
    func changes() -> AsyncStream<Void> {
        AsyncStream { continuation in
            let monitor = NWPathMonitor()
            let state = PathState()
            monitor.pathUpdateHandler = { path in
                guard path.status == .satisfied else { return }
                let interfaces = path.availableInterfaces.map(\.name)
                if state.update(interfaces) { continuation.yield() }
            }
            continuation.onTermination = { _ in monitor.cancel() }
            monitor.start(queue: DispatchQueue(label: "tern.path-monitor"))
        }
    }
}

/// The interfaces of the last satisfied path; only touched on the monitor's queue.
private final class PathState: @unchecked Sendable {
    private var last: [String]?

    /// Whether `interfaces` differ from the last ones (the first path is no change).
    func update(_ interfaces: [String]) -> Bool {
        defer { last = interfaces }
        return last != nil && last != interfaces
    }
}

/// The demo's account. A real app asks the user and keeps the token in the Keychain.
enum DemoSettings {
    static let gateway = "tern.example.com:4433"
    static let user = "alice@example.com"
    static let token = "paste the token from `tern-gateway user add` here"
    static let buddies = ["bob@example.com", "carol@example.com"]
}
