// The idiomatic Swift layer over tern's generated bindings (module `Tern`).
//
// uniffi generates everything else in `Tern.swift`, compiled into the same module: the
// records and enums, `TernClient` (whose `async` methods are Swift `async throws`
// functions already), `TernError`, `defaultConfig(...)` and the `EventListener` protocol.
// This file adds what a Swift or iOS developer expects on top of them: the client's
// events as an `AsyncStream`, a `connect` with labelled, defaulted arguments, and a few
// presence and message helpers. It holds no logic of its own: every call goes to the
// Rust core.

import Foundation

// MARK: - Events as an AsyncStream

/// An `EventListener` that hands every event to an `AsyncStream` continuation.
///
/// The Rust core calls `onEvent` on a thread of its own, one event at a time, and
/// acknowledges a message or receipt to the gateway when `onEvent` returns; `yield` on an
/// unbounded stream never blocks, so the core's listener thread is never held up by the
/// consumer.
///
/// The stream finishes when the connection is gone for good (after yielding
/// `ConnectionState.disconnected`, the last event a client emits), and when the core lets
/// go of this listener: its listener thread ends when the `ListenerHandle` is stopped or
/// the client is closed, and releasing the listener finishes the stream (`deinit`), so a
/// `for await` loop over `TernClient.events` ends after `close()` too.
final class ContinuationEventListener: EventListener {
    private let continuation: AsyncStream<Event>.Continuation

    init(_ continuation: AsyncStream<Event>.Continuation) {
        self.continuation = continuation
    }

    func onEvent(event: Event) {
        continuation.yield(event)
        if case .connection(state: .disconnected) = event {
            continuation.finish()
        }
    }

    deinit {
        continuation.finish()
    }
}

extension TernClient {
    /// The client's events, as an `AsyncStream`.
    ///
    /// Each access registers a new listener with `listen(listener:)`; the stream stops
    /// that listener (`ListenerHandle.stop()`) when it terminates: when the task iterating
    /// it is cancelled (for example when a SwiftUI `.task` ends with its view) or when the
    /// stream is released. It finishes by itself after `ConnectionState.disconnected`
    /// (the connection is gone for good; that event is yielded first) and after
    /// `close()`.
    ///
    /// Iterate it once per client, in one place that fans out to the rest of the app (an
    /// `@Observable` model, for example): the core hands every event to one listener at a
    /// time, so two streams of one client would split the events between them.
    ///
    /// The core's inbox acknowledges a message or receipt to the gateway when the event
    /// is in this stream's buffer, not when the app has finished with it: store a message
    /// you must not lose as the first thing you do with it. The buffer is unbounded
    /// (presence and message traffic is small), so no event is ever dropped and a slow
    /// consumer never stalls the connection.
    ///
    /// ```swift
    /// for await event in client.events {
    ///     switch event {
    ///     case .presence(let doc): roster[doc.presentity] = doc
    ///     case .message(let message): show(message)
    ///     case .connection(let state): banner = state
    ///     default: break
    ///     }
    /// }
    /// ```
    public var events: AsyncStream<Event> {
        AsyncStream(Event.self, bufferingPolicy: .unbounded) { continuation in
            let handle = self.listen(listener: ContinuationEventListener(continuation))
            continuation.onTermination = { _ in handle.stop() }
        }
    }

    /// Connects to a tern gateway and returns the open client once the gateway accepted
    /// the session.
    ///
    /// Only the first four arguments are needed; every other one has the core's default
    /// (from `defaultConfig(gateway:user:token:caPem:)`) when left out or `nil`:
    ///
    /// ```swift
    /// let client = try await TernClient.connect(
    ///     gateway: "tern.example.com:4433",
    ///     user: "alice@example.com",
    ///     token: token,
    ///     caPem: try Data(contentsOf: Bundle.main.url(forResource: "tern-ca", withExtension: "pem")!),
    ///     stateDir: try TernClient.defaultStateDirectory(for: "alice@example.com")
    /// )
    /// ```
    ///
    /// - Parameters:
    ///   - gateway: The gateway's UDP address, `host:port` (`[v6]:port` for IPv6).
    ///   - user: The user's address, `name@domain`.
    ///   - token: The access token the gateway's operator issued for `user`.
    ///   - caPem: The PEM certificate(s) to trust for the gateway: its own self-signed
    ///     certificate, or the CA that signed it. Nothing else is trusted.
    ///   - stateDir: A directory the client keeps its state in across launches (device
    ///     id, outbox, inbox position, presence cache); created if missing. `nil` keeps
    ///     nothing on disk: unsent messages are lost when the process ends. On iOS use a
    ///     folder in Application Support (`TernClient.defaultStateDirectory(for:)`).
    ///   - serverName: The TLS server name the gateway's certificate must carry; `nil`:
    ///     the domain of `user`.
    ///   - mode: `.active` in the foreground, `.inactive` in the background, `.sleepy`
    ///     for devices that wake up rarely; change it later with `setMode(mode:)`.
    ///   - inbox: Whether messages and late receipts are delivered to this client.
    ///   - anonymous: Open the session as `anonymous@<domain of user>` (no token, no
    ///     inbox, no state), where the gateway allows it.
    ///   - reconnect: Whether the client reconnects by itself when the link drops.
    ///   - keepalive: How often a quiet link is pinged, in seconds; `0` turns the
    ///     client's pings off (see docs/sdk-swift.md on battery).
    ///   - idleTimeout: After how many seconds without a packet the link counts as lost.
    ///   - requestTimeout: How long, in seconds, the handshake and each request may take.
    /// - Throws: `TernError.Rejected` (code 4) for a wrong token or an unknown user,
    ///   `TernError.Disconnected` or `TernError.Timeout` when the gateway cannot be
    ///   reached, `TernError.InvalidArgument` for an unusable argument, and
    ///   `TernError.Internal` when `stateDir` cannot be used.
    public static func connect(
        gateway: String,
        user: String,
        token: String,
        caPem: Data,
        stateDir: URL? = nil,
        serverName: String? = nil,
        mode: ClientMode = .active,
        inbox: Bool? = nil,
        anonymous: Bool? = nil,
        reconnect: Bool? = nil,
        keepalive: TimeInterval? = nil,
        idleTimeout: TimeInterval? = nil,
        requestTimeout: TimeInterval? = nil
    ) async throws -> TernClient {
        var config = defaultConfig(gateway: gateway, user: user, token: token, caPem: caPem)
        if let stateDir {
            guard stateDir.isFileURL else {
                throw TernError.InvalidArgument(reason: "stateDir must be a file URL: \(stateDir)")
            }
            config.stateDir = stateDir.path
        }
        config.serverName = serverName ?? config.serverName
        config.mode = mode
        config.inbox = inbox ?? config.inbox
        config.anonymous = anonymous ?? config.anonymous
        config.reconnect = reconnect ?? config.reconnect
        config.keepaliveMs = try milliseconds(keepalive, "keepalive") ?? config.keepaliveMs
        config.idleTimeoutMs = try milliseconds(idleTimeout, "idleTimeout") ?? config.idleTimeoutMs
        config.requestTimeoutMs =
            try milliseconds(requestTimeout, "requestTimeout") ?? config.requestTimeoutMs
        return try await connect(config: config)
    }

    /// `Application Support/tern/<user>` in the app's container: where an iOS app keeps
    /// one user's client state (pass it as `stateDir`). A state directory belongs to one
    /// user and is locked by one client at a time. Application Support is not purged by
    /// the system (unlike Caches) and is backed up; exclude the folder from backups
    /// (`URLResourceValues.isExcludedFromBackup`) if a restored device should start a
    /// fresh session. Creates Application Support if needed; the client creates the rest.
    public static func defaultStateDirectory(for user: String) throws -> URL {
        let base = try FileManager.default.url(
            for: .applicationSupportDirectory, in: .userDomainMask,
            appropriateFor: nil, create: true)
        return base.appendingPathComponent("tern", isDirectory: true)
            .appendingPathComponent(user, isDirectory: true)
    }
}

private func milliseconds(_ seconds: TimeInterval?, _ name: String) throws -> UInt64? {
    guard let seconds else { return nil }
    guard seconds.isFinite, seconds >= 0, seconds * 1000 < Double(UInt64.max) else {
        throw TernError.InvalidArgument(reason: "\(name) must be a finite, non-negative number of seconds: \(seconds)")
    }
    return UInt64((seconds * 1000).rounded())
}

// MARK: - Presence helpers

extension Presence {
    /// A presence with one tuple, for `TernClient.publish(presence:)`: the common case of
    /// "I am online, available, with this note".
    ///
    /// - Parameters:
    ///   - open: Whether the user can be reached (`false`: offline).
    ///   - availability: `"available"`, `"away"`, `"busy"`, `"idle"`, `"dnd"`, `"xa"`,
    ///     `"asleep"`, or `nil` for none.
    ///   - note: A free text for people ("at my desk").
    ///   - contact: Where to reach the user, as a URI, if not at this address.
    ///   - id: The tuple's id (the command-line client's default is `"default"`).
    public static func single(
        open: Bool = true,
        availability: String? = "available",
        note: String? = nil,
        contact: String? = nil,
        id: String = "default"
    ) -> Presence {
        Presence(
            tuples: [
                Tuple(
                    id: id, open: open, availability: availability, contact: contact,
                    note: note, at: UInt64(Date().timeIntervalSince1970))
            ],
            card: [])
    }
}

extension PresenceDoc {
    /// Whether any tuple is OPEN: the presentity can be reached.
    public var isOpen: Bool { presence.tuples.contains { $0.open } }

    /// The availability of the first OPEN tuple that has one (`"available"`, `"away"`,
    /// …), or `nil`.
    public var availability: String? {
        presence.tuples.first { $0.open && $0.availability != nil }?.availability
    }

    /// The note of the first tuple that has one (OPEN tuples first), or `nil`.
    public var note: String? {
        (presence.tuples.first { $0.open && $0.note != nil }
            ?? presence.tuples.first { $0.note != nil })?.note
    }
}

// MARK: - Message helpers

extension Message {
    /// The body as text when the content type is textual (or absent: `text/plain`) and
    /// the bytes are valid UTF-8; `nil` otherwise.
    public var text: String? {
        if let contentType, !contentType.lowercased().hasPrefix("text/") { return nil }
        return String(data: body, encoding: .utf8)
    }
}

extension TernClient {
    /// Sends `text` as a `text/plain` message and waits for its receipt; the same as
    /// `sendText(to:text:)`, with Swift's argument labels.
    @discardableResult
    public func send(_ text: String, to: String) async throws -> Receipt {
        try await sendText(to: to, text: text)
    }
}
