// The buddy list: each buddy with a presence dot whose shape, word and accessibility
// label say the state (never the colour alone), and a link to the chat.

import SwiftUI
import Tern

struct BuddyListView: View {
    @Environment(TernModel.self) private var model
    @State private var newBuddy = ""

    var body: some View {
        NavigationStack {
            List {
                Section {
                    ForEach(model.buddies, id: \.self) { buddy in
                        NavigationLink(value: buddy) {
                            BuddyRow(address: buddy, summary: PresenceSummary(model.presence[buddy]))
                        }
                    }
                } footer: {
                    ConnectionFooter(phase: model.phase)
                }
                Section("Add a buddy") {
                    HStack {
                        TextField("name@example.com", text: $newBuddy)
                            .textInputAutocapitalization(.never)
                            .keyboardType(.emailAddress)
                            .autocorrectionDisabled()
                        Button("Add") {
                            let buddy = newBuddy.trimmingCharacters(in: .whitespaces)
                            newBuddy = ""
                            Task { await model.add(buddy: buddy) }
                        }
                        .disabled(newBuddy.isEmpty)
                    }
                }
            }
            .navigationTitle(model.me ?? "tern")
            .navigationDestination(for: String.self) { buddy in
                ChatView(buddy: buddy)
            }
            .alert(
                "tern",
                isPresented: Binding(
                    get: { model.lastError != nil }, set: { if !$0 { model.dismissError() } }),
                actions: { Button("OK") {} }, message: { Text(model.lastError ?? "") })
        }
    }
}

struct BuddyRow: View {
    let address: String
    let summary: PresenceSummary

    var body: some View {
        HStack(spacing: 12) {
            PresenceDot(summary: summary)
            VStack(alignment: .leading) {
                Text(address)
                Text(summary.note.map { "\(summary.label) – \($0)" } ?? summary.label)
                    .font(.caption)
                    .foregroundStyle(.secondary)
            }
        }
        // One element for VoiceOver: "bob@example.com, Away, lunch".
        .accessibilityElement(children: .ignore)
        .accessibilityLabel(
            [address, summary.label, summary.note].compactMap { $0 }.joined(separator: ", "))
        .accessibilityHint("Opens the chat")
    }
}

/// A coloured symbol whose shape also differs by state (filled circle, moon, minus,
/// hollow circle), for people who do not tell the colours apart.
struct PresenceDot: View {
    let summary: PresenceSummary

    var body: some View {
        Image(systemName: summary.symbol)
            .foregroundStyle(color)
            .imageScale(.small)
            .accessibilityLabel(summary.label)
    }

    private var color: Color {
        switch summary.kind {
        case .available: .green
        case .away: .yellow
        case .busy: .red
        case .offline, .unknown: .gray
        }
    }
}

struct ConnectionFooter: View {
    let phase: ConnectionPhase

    var body: some View {
        switch phase {
        case .signedOut: Text("Signed out")
        case .connecting: Label("Connecting…", systemImage: "antenna.radiowaves.left.and.right")
        case .connected: Label("Online", systemImage: "checkmark.circle")
        case .reconnecting(let why): Label("Reconnecting (\(why))", systemImage: "arrow.triangle.2.circlepath")
        case .failed(let why): Label(why, systemImage: "exclamationmark.triangle")
        }
    }
}
