// tern's Swift bindings against a real gateway: the checks of the bindings contract
// (connect, subscribe and presence, a message and its receipt, watchers, errors, modes,
// listener and close), through the generated API and the idiomatic layer.
//
// Run by scripts/bindings/swift.sh, which starts a gateway and compiles this file with
// the generated Tern.swift and Sources/Tern/Tern+Async.swift into one module
// (-D TERN_SINGLE_MODULE) and with an XCTMain entry point (-D TERN_XCTMAIN, Linux has no
// test discovery without SwiftPM). Environment (from scripts/bindings/gateway.sh):
//   TERN_GATEWAY        host:port of the gateway
//   TERN_CA             path of its certificate (PEM)
//   TERN_ALICE_TOKEN    token of alice@example.com
//   TERN_BOB_TOKEN      token of bob@example.com
// Every wait is bounded (10 s for events, by the core's request timeout for calls).

import Foundation
import XCTest

#if !TERN_SINGLE_MODULE
import Tern
#endif

/// What the tests need from the environment.
struct TestEnvironment {
    let gateway: String
    let ca: Data
    let aliceToken: String
    let bobToken: String

    static let alice = "alice@example.com"
    static let bob = "bob@example.com"

    static func load() throws -> TestEnvironment {
        let env = ProcessInfo.processInfo.environment
        func need(_ name: String) throws -> String {
            guard let value = env[name], !value.isEmpty else {
                throw XCTSkip("\(name) is not set (run scripts/bindings/swift.sh)")
            }
            return value
        }
        let caPath = try need("TERN_CA")
        guard let ca = FileManager.default.contents(atPath: caPath) else {
            throw TestFailure("cannot read TERN_CA=\(caPath)")
        }
        return TestEnvironment(
            gateway: try need("TERN_GATEWAY"), ca: ca,
            aliceToken: try need("TERN_ALICE_TOKEN"), bobToken: try need("TERN_BOB_TOKEN"))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Events a listener received, shared between the listener's thread and the test.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [Event] = []
    private var finished = false

    func append(_ event: Event) { lock.lock(); events.append(event); lock.unlock() }
    func finish() { lock.lock(); finished = true; lock.unlock() }
    var isFinished: Bool { lock.lock(); defer { lock.unlock() }; return finished }
    var all: [Event] { lock.lock(); defer { lock.unlock() }; return events }

    /// The first event `match` accepts, waiting up to `timeout` seconds for it.
    func first<T>(within timeout: TimeInterval, _ match: (Event) -> T?) async -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let found = all.lazy.compactMap(match).first { return found }
            if Date() >= deadline { return nil }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    /// Whether the stream feeding this log finished within `timeout` seconds.
    func finished(within timeout: TimeInterval) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !isFinished {
            if Date() >= deadline { return false }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return true
    }
}

/// A listener through the generated API alone (no AsyncStream), for the raw
/// `listen` / `ListenerHandle.stop()` path.
final class LoggingListener: EventListener {
    let log: EventLog
    init(_ log: EventLog) { self.log = log }
    func onEvent(event: Event) { log.append(event) }
}

/// Runs `body` and returns its error, failing the test when it does not throw.
func expectError<T>(
    _ what: String, file: StaticString = #filePath, line: UInt = #line,
    _ body: () async throws -> T
) async -> Error? {
    do {
        let value = try await body()
        XCTFail("\(what): expected an error, got \(value)", file: file, line: line)
        return nil
    } catch {
        return error
    }
}

final class TernTests: XCTestCase, @unchecked Sendable {
    #if !canImport(ObjectiveC)
    // Linux has no Objective-C runtime to discover tests: XCTMain takes this list.
    nonisolated(unsafe) static let allTests = [
        ("testPresenceMessagesAndWatchers", asyncTest(testPresenceMessagesAndWatchers)),
        ("testErrors", asyncTest(testErrors)),
        ("testEventsStreamStopsWhenCancelled", asyncTest(testEventsStreamStopsWhenCancelled)),
        ("testHelpers", testHelpers),
    ]
    #endif

    /// Contract checks 1-4 and 6: two clients, presence, a message, watchers, modes,
    /// listeners stopped, both closed.
    func testPresenceMessagesAndWatchers() async throws {
        let env = try TestEnvironment.load()
        let stateDir = FileManager.default.temporaryDirectory
            .appendingPathComponent("tern-swift-bob-\(UUID().uuidString)", isDirectory: true)
        defer { try? FileManager.default.removeItem(at: stateDir) }

        // 1. Both connect: alice through the generated constructor with defaultConfig,
        //    bob through the layer's connect, with a state directory.
        let aliceConfig = defaultConfig(
            gateway: env.gateway, user: TestEnvironment.alice, token: env.aliceToken,
            caPem: env.ca)
        XCTAssertTrue(aliceConfig.inbox, "defaultConfig: inbox is on by default")
        XCTAssertTrue(aliceConfig.reconnect, "defaultConfig: reconnect is on by default")
        XCTAssertEqual(aliceConfig.mode, .active, "defaultConfig: mode is active by default")
        XCTAssertNil(aliceConfig.stateDir, "defaultConfig: no state directory by default")
        let alice = try await TernClient.connect(config: aliceConfig)
        XCTAssertEqual(alice.user(), TestEnvironment.alice, "alice's normalised address")
        let bob = try await TernClient.connect(
            gateway: env.gateway, user: TestEnvironment.bob, token: env.bobToken,
            caPem: env.ca, stateDir: stateDir)
        XCTAssertEqual(bob.user(), TestEnvironment.bob, "bob's normalised address")
        XCTAssertTrue(
            FileManager.default.fileExists(atPath: stateDir.path),
            "bob's state directory exists at \(stateDir.path)")

        // A state directory is locked by one client at a time, and belongs to one user.
        let inUse = await expectError("a second client on bob's state directory") {
            try await TernClient.connect(
                gateway: env.gateway, user: TestEnvironment.bob, token: env.bobToken,
                caPem: env.ca, stateDir: stateDir)
        }
        if let inUse {
            guard case TernError.Internal = inUse else {
                XCTFail("a locked state directory: expected TernError.Internal, got \(inUse)")
                return
            }
        }

        // Bob's events through the layer's AsyncStream; alice's through the raw API.
        let bobLog = EventLog()
        let bobEvents = bob.events
        let consumer = Task {
            for await event in bobEvents { bobLog.append(event) }
            bobLog.finish()
        }
        let aliceLog = EventLog()
        let aliceHandle = alice.listen(listener: LoggingListener(aliceLog))

        // 2. Bob subscribes to alice (granted), alice publishes, bob sees the note.
        let outcome = try await bob.subscribe(presentity: TestEnvironment.alice)
        guard case .granted(let initial) = outcome else {
            XCTFail("bob's subscription to alice: expected granted, got \(outcome)")
            return
        }
        XCTAssertEqual(initial.presentity, TestEnvironment.alice, "granted presence is alice's")
        try await alice.publish(
            presence: Presence(
                tuples: [
                    Tuple(
                        id: "swift", open: true, availability: "available", contact: nil,
                        note: "from swift", at: nil)
                ],
                card: []))
        let seen = await bobLog.first(within: 10) { event -> PresenceDoc? in
            guard case .presence(let doc) = event, doc.presentity == TestEnvironment.alice,
                doc.note == "from swift"
            else { return nil }
            return doc
        }
        XCTAssertNotNil(
            seen, "bob receives Event.presence for alice with the note 'from swift' within 10 s;"
                + " got \(bobLog.all)")
        if let seen {
            XCTAssertTrue(seen.isOpen, "alice's published presence is open")
            XCTAssertEqual(seen.availability, "available", "alice's availability")
            XCTAssertEqual(
                bob.cached(presentity: TestEnvironment.alice)?.note, "from swift",
                "bob's presence cache holds alice's new note")
            XCTAssertTrue(
                bob.roster().contains { $0.presentity == TestEnvironment.alice },
                "bob's roster lists alice")
        }

        // 3. Alice sends bob a text: delivered, and bob's listener gets the same bytes.
        let text = "hello from swift \u{1F426}"
        let receipt = try await alice.sendText(to: TestEnvironment.bob, text: text)
        XCTAssertEqual(receipt.status, .delivered, "the receipt of alice's text to online bob")
        XCTAssertEqual(receipt.to, TestEnvironment.bob, "the receipt names bob")
        XCTAssertFalse(receipt.id.isEmpty, "the receipt carries the message id")
        let message = await bobLog.first(within: 10) { event -> Message? in
            guard case .message(let message) = event, message.id == receipt.id else { return nil }
            return message
        }
        XCTAssertNotNil(message, "bob receives Event.message with alice's message id within 10 s")
        if let message {
            XCTAssertEqual(message.body, Data(text.utf8), "the message body bytes are unchanged")
            XCTAssertEqual(message.from, TestEnvironment.alice, "the message is from alice")
            XCTAssertEqual(message.text, text, "Message.text decodes the UTF-8 body")
        }

        // Binary bytes with a content type go through unchanged too.
        let bytes = Data([0x00, 0xFF, 0x7F, 0x80, 0x0A])
        let binary = try await alice.send(
            to: TestEnvironment.bob, body: bytes, contentType: "application/octet-stream")
        XCTAssertEqual(binary.status, .delivered, "the receipt of alice's binary message")
        XCTAssertNotEqual(binary.id, receipt.id, "each send has a new id")
        let binaryMessage = await bobLog.first(within: 10) { event -> Message? in
            guard case .message(let message) = event, message.id == binary.id else { return nil }
            return message
        }
        XCTAssertEqual(binaryMessage?.body, bytes, "bob receives the binary body unchanged")
        XCTAssertEqual(
            binaryMessage?.contentType, "application/octet-stream", "the content type arrives")
        XCTAssertNil(binaryMessage?.text, "Message.text is nil for a binary content type")

        // 4. Alice's watchers include bob.
        let watchers = try await alice.watchers()
        XCTAssertTrue(
            watchers.subscribers.contains(TestEnvironment.bob),
            "alice's watchers list bob as a subscriber: \(watchers.subscribers)")
        let subscriptions = try await bob.subscriptions(incoming: false)
        XCTAssertTrue(
            subscriptions.contains { $0.who == TestEnvironment.alice && $0.state == .active },
            "bob's own subscriptions list alice as active: \(subscriptions)")

        // 6. Modes and the network hint can be called; the listeners stop; both close.
        bob.setMode(mode: .inactive)
        bob.networkChanged()
        bob.setMode(mode: .active)
        alice.setMode(mode: .inactive)
        aliceHandle.stop()
        aliceHandle.stop()  // idempotent
        // After a stop and a pause, no event reaches alice's listener any more.
        try await Task.sleep(nanoseconds: 200_000_000)
        let aliceCount = aliceLog.all.count
        // Nothing takes (and so acknowledges) a message to alice now: the gateway holds
        // the send for a while (5 s by default), then answers Stored.
        let late = try await bob.sendText(to: TestEnvironment.alice, text: "to a stopped listener")
        XCTAssertEqual(
            late.status, .stored,
            "a message to alice, whose only listener is stopped, is stored, not delivered")
        try await Task.sleep(nanoseconds: 500_000_000)
        XCTAssertEqual(
            aliceLog.all.count, aliceCount,
            "a stopped listener gets no more events: \(aliceLog.all.suffix(2))")

        await alice.close()
        await bob.close()
        await bob.close()  // calling it again does nothing
        // The layer's stream finishes by itself once the client is closed.
        let finished = await bobLog.finished(within: 10)
        XCTAssertTrue(finished, "bob's events stream finishes within 10 s of close()")
        consumer.cancel()
        _ = await consumer.value
    }

    /// Contract check 5: the error paths.
    func testErrors() async throws {
        let env = try TestEnvironment.load()
        let alice = try await TernClient.connect(
            gateway: env.gateway, user: TestEnvironment.alice, token: env.aliceToken,
            caPem: env.ca)

        let fetchError = await expectError("fetch nobody@example.com") {
            try await alice.fetch(presentity: "nobody@example.com")
        }
        if let fetchError {
            guard case TernError.Failed(let code, let reason) = fetchError else {
                XCTFail("fetch of an unknown user: expected TernError.Failed, got \(fetchError)")
                await alice.close()
                return
            }
            XCTAssertEqual(code, 6, "fetch of an unknown user fails with code 6 (\(reason))")
        }

        let connectError = await expectError("connect with a wrong token") {
            try await TernClient.connect(
                gateway: env.gateway, user: TestEnvironment.bob, token: "not-bob's-token",
                caPem: env.ca, reconnect: false)
        }
        if let connectError {
            if case TernError.Rejected(let code, let reason) = connectError {
                XCTAssertEqual(code, 4, "a wrong token is rejected with code 4 (\(reason))")
            } else {
                XCTFail("connect with a wrong token: expected TernError.Rejected, got \(connectError)")
            }
        }

        // The layer rejects nonsense before anything is sent.
        let argumentError = await expectError("a negative timeout") {
            try await TernClient.connect(
                gateway: env.gateway, user: TestEnvironment.bob, token: env.bobToken,
                caPem: env.ca, requestTimeout: -1)
        }
        if let argumentError {
            guard case TernError.InvalidArgument = argumentError else {
                XCTFail("a negative timeout: expected TernError.InvalidArgument, got \(argumentError)")
                await alice.close()
                return
            }
        }
        await alice.close()
    }

    /// The layer's stream stops its listener when the consuming task is cancelled; the
    /// client works on and a new stream can take over.
    func testEventsStreamStopsWhenCancelled() async throws {
        let env = try TestEnvironment.load()
        let alice = try await TernClient.connect(
            gateway: env.gateway, user: TestEnvironment.alice, token: env.aliceToken,
            caPem: env.ca)
        let bob = try await TernClient.connect(
            gateway: env.gateway, user: TestEnvironment.bob, token: env.bobToken,
            caPem: env.ca)

        let first = EventLog()
        let firstConsumer = Task {
            for await event in bob.events { first.append(event) }
            first.finish()
        }
        let one = try await alice.send("one", to: TestEnvironment.bob)
        XCTAssertEqual(one.status, .delivered, "the first message is delivered")
        let gotOne = await first.first(within: 10) { event -> Bool? in
            if case .message(let m) = event, m.id == one.id { return true }
            return nil
        }
        XCTAssertEqual(gotOne, true, "the first stream receives the first message within 10 s")

        firstConsumer.cancel()
        _ = await firstConsumer.value
        XCTAssertTrue(first.isFinished, "a cancelled consumer's loop ends")

        // The cancelled stream stopped its listener (onTermination): nothing takes, and so
        // acknowledges, the next message, and the gateway answers Stored after holding
        // the send for a while (5 s by default) instead of Delivered.
        let unheard = try await alice.send("unheard", to: TestEnvironment.bob)
        XCTAssertEqual(
            unheard.status, .stored,
            "after the stream's cancellation no listener acknowledges a message to bob")

        // A new stream takes over: it gets the message that waited, then the next one.
        let second = EventLog()
        let secondConsumer = Task {
            for await event in bob.events { second.append(event) }
            second.finish()
        }
        let gotUnheard = await second.first(within: 10) { event -> Bool? in
            if case .message(let m) = event, m.id == unheard.id { return true }
            return nil
        }
        XCTAssertEqual(gotUnheard, true, "a new stream receives the waiting message within 10 s")
        let two = try await alice.send("two", to: TestEnvironment.bob)
        XCTAssertEqual(two.status, .delivered, "with a new stream, messages are delivered again")
        let gotTwo = await second.first(within: 10) { event -> Bool? in
            if case .message(let m) = event, m.id == two.id { return true }
            return nil
        }
        XCTAssertEqual(gotTwo, true, "the new stream receives the next message within 10 s")
        XCTAssertFalse(
            first.all.contains {
                if case .message(let m) = $0 { return m.id == unheard.id || m.id == two.id }
                return false
            },
            "the cancelled stream got none of the later messages")

        await bob.close()
        let finished = await second.finished(within: 10)
        XCTAssertTrue(finished, "the second stream finishes within 10 s of close()")
        secondConsumer.cancel()
        await alice.close()
    }

    /// The layer's pure helpers (no gateway).
    func testHelpers() throws {
        let presence = Presence.single(availability: "away", note: "lunch")
        XCTAssertEqual(presence.tuples.count, 1, "Presence.single has one tuple")
        XCTAssertEqual(presence.tuples.first?.id, "default", "its default tuple id")
        XCTAssertEqual(presence.tuples.first?.open, true, "it is open by default")
        XCTAssertNotNil(presence.tuples.first?.at, "it is stamped with the time")
        let doc = PresenceDoc(presentity: "x@example.com", updated: 0, presence: presence, version: 0)
        XCTAssertTrue(doc.isOpen, "PresenceDoc.isOpen")
        XCTAssertEqual(doc.availability, "away", "PresenceDoc.availability")
        XCTAssertEqual(doc.note, "lunch", "PresenceDoc.note")
        let closed = PresenceDoc(
            presentity: "x@example.com", updated: 0,
            presence: .single(open: false, availability: nil, note: "gone"), version: 0)
        XCTAssertFalse(closed.isOpen, "a closed presence is not open")
        XCTAssertNil(closed.availability, "a closed presence has no availability")
        XCTAssertEqual(closed.note, "gone", "a closed presence keeps its note")
        let m = Message(
            id: Data([1]), from: "a@example.com", to: "b@example.com", replyTo: nil,
            contentType: nil, body: Data("hi".utf8), sent: 0)
        XCTAssertEqual(m.text, "hi", "a message without content type is text")
        let dir = try TernClient.defaultStateDirectory(for: "alice@example.com")
        XCTAssertEqual(
            Array(dir.pathComponents.suffix(2)), ["tern", "alice@example.com"],
            "the default state directory is tern/<user> in Application Support: \(dir.path)")
        let error = TernError.Failed(code: 6, reason: "unknown_user")
        XCTAssertNotNil(error.errorDescription, "TernError describes itself")
    }
}

#if TERN_XCTMAIN
/// Prints the plain closing line ("swift: N passed, N failed") after XCTest's own.
final class SummaryObserver: NSObject, XCTestObservation {
    private var passed = 0
    private var failed = 0
    private var skipped = 0

    func testCaseDidFinish(_ testCase: XCTestCase) {
        guard let run = testCase.testRun else { return }
        if run.hasSucceeded {
            if run.skipCount > 0 { skipped += 1 } else { passed += 1 }
        } else {
            failed += 1
        }
    }

    func testBundleDidFinish(_ testBundle: Bundle) {
        print("swift: \(passed) passed, \(failed) failed" + (skipped > 0 ? ", \(skipped) skipped" : ""))
    }
}

@main
enum TernTestMain {
    static func main() {
        XCTestObservationCenter.shared.addTestObserver(SummaryObserver())
        XCTMain([testCase(TernTests.allTests)])
    }
}
#endif
