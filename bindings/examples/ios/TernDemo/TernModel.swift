// The app's state over one TernClient: connection, buddy list with presence, chats.
// No SwiftUI in this file (the views observe it); it uses only the Tern module,
// Foundation and Observation.

import Foundation
import Observation
import Tern

/// What the app shows about the connection.
enum ConnectionPhase: Equatable {
    case signedOut
    case connecting
    case connected
    case reconnecting(String)
    case failed(String)
}

/// One chat line.
struct ChatLine: Identifiable, Equatable {
    enum Status: Equatable { case sending, delivered, stored, relayed, failed(String), received }

    let id: String
    let from: String
    let text: String
    let outgoing: Bool
    var status: Status
}

/// A buddy's presence as the list shows it: a word, a symbol and a colour name, so that
/// no state is told by colour alone.
struct PresenceSummary: Equatable {
    enum Kind: Equatable { case available, away, busy, offline, unknown }

    let kind: Kind
    let note: String?

    init(_ doc: PresenceDoc?) {
        guard let doc else {
            kind = .unknown
            note = nil
            return
        }
        note = doc.note
        if !doc.isOpen {
            kind = .offline
        } else {
            switch doc.availability {
            case "away", "idle", "xa", "asleep": kind = .away
            case "busy", "dnd": kind = .busy
            default: kind = .available
            }
        }
    }

    /// The word shown next to the dot and read by VoiceOver.
    var label: String {
        switch kind {
        case .available: "Available"
        case .away: "Away"
        case .busy: "Busy"
        case .offline: "Offline"
        case .unknown: "Unknown"
        }
    }

    /// An SF Symbol whose shape differs by state.
    var symbol: String {
        switch kind {
        case .available: "circle.fill"
        case .away: "moon.fill"
        case .busy: "minus.circle.fill"
        case .offline: "circle"
        case .unknown: "questionmark.circle"
        }
    }
}

@MainActor
@Observable
final class TernModel {
    private(set) var phase: ConnectionPhase = .signedOut
    /// The buddies the user watches, in the order added, with their last presence.
    private(set) var buddies: [String] = []
    private(set) var presence: [String: PresenceDoc] = [:]
    private(set) var chats: [String: [ChatLine]] = [:]
    private(set) var lastError: String?

    private var client: TernClient?
    private var eventsTask: Task<Void, Never>?

    var me: String? { client?.user() }

    /// Connects, starts taking events, and subscribes to `buddies`.
    func signIn(gateway: String, user: String, token: String, caPem: Data, buddies: [String]) async {
        guard client == nil else { return }
        phase = .connecting
        do {
            let client = try await TernClient.connect(
                gateway: gateway, user: user, token: token, caPem: caPem,
                stateDir: try TernClient.defaultStateDirectory(for: user))
            self.client = client
            phase = .connected
            eventsTask = Task { [weak self] in
                for await event in client.events {
                    self?.handle(event)
                }
            }
            try await client.publish(presence: .single(availability: "available"))
            for buddy in buddies { await add(buddy: buddy) }
        } catch let error as TernError {
            phase = .failed(Self.describe(error))
        } catch {
            phase = .failed(error.localizedDescription)
        }
    }

    /// Watches one more buddy.
    func add(buddy: String) async {
        guard let client else { return }
        if !buddies.contains(buddy) { buddies.append(buddy) }
        do {
            switch try await client.subscribe(presentity: buddy) {
            case .granted(let doc): presence[buddy] = doc
            case .pending: presence[buddy] = nil  // they decide later
            }
        } catch {
            lastError = "Cannot watch \(buddy): \(Self.describe(error))"
        }
    }

    /// Sends a text and shows its receipt.
    func send(_ text: String, to buddy: String) async {
        guard let client, !text.isEmpty else { return }
        let pendingID = UUID().uuidString
        append(ChatLine(id: pendingID, from: me ?? "", text: text, outgoing: true, status: .sending), to: buddy)
        let status: ChatLine.Status
        do {
            let receipt = try await client.send(text, to: buddy)
            switch receipt.status {
            case .delivered: status = .delivered
            case .stored: status = .stored
            case .failed(_, let reason): status = .failed(reason)
            case .relayed: status = .relayed
            }
        } catch {
            status = .failed(Self.describe(error))
        }
        if let i = chats[buddy]?.firstIndex(where: { $0.id == pendingID }) {
            chats[buddy]?[i].status = status
        }
    }

    /// scenePhase changed: foreground (`true`) or background.
    func setForeground(_ foreground: Bool) {
        client?.setMode(mode: foreground ? .active : .inactive)
    }

    /// NWPathMonitor saw a new usable network path.
    func networkChanged() {
        client?.networkChanged()
    }

    func dismissError() {
        lastError = nil
    }

    func signOut() async {
        eventsTask?.cancel()
        eventsTask = nil
        await client?.close()
        client = nil
        phase = .signedOut
    }

    private func handle(_ event: Event) {
        switch event {
        case .presence(let doc):
            presence[doc.presentity] = doc
        case .subscriptionEnded(let who):
            presence[who] = nil
        case .subscriptionChanged(let target, let state) where state == .denied:
            lastError = "\(target) declined to share presence"
        case .message(let message):
            let line = ChatLine(
                id: message.id.map { String(format: "%02x", $0) }.joined(),
                from: message.from, text: message.text ?? "(\(message.body.count) bytes)",
                outgoing: false, status: .received)
            if !buddies.contains(message.from) { buddies.append(message.from) }
            append(line, to: message.from)
        case .connection(.connected):
            phase = .connected
        case .connection(.reconnecting(let reason)):
            phase = .reconnecting(reason)
        case .connection(.disconnected(let reason)):
            phase = .failed(reason)
        default:
            break
        }
    }

    private func append(_ line: ChatLine, to buddy: String) {
        chats[buddy, default: []].append(line)
    }

    static func describe(_ error: Error) -> String {
        switch error as? TernError {
        case .Rejected(4, _)?: "Wrong user name or token."
        case .Rejected(_, let reason)?: "The server refused the session: \(reason)"
        case .Disconnected?, .Timeout?: "The server cannot be reached right now."
        case .Failed(6, _)?: "No such user."
        case .Refused?: "Not allowed."
        case .RateLimited(let ms)?: "Too fast; try again in \(max(1, ms / 1000)) s."
        default: String(describing: error)
        }
    }
}
