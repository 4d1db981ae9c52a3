// One conversation: the lines exchanged with a buddy, each outgoing line with its
// receipt (sending, delivered, stored for later, failed), and a field to send.

import SwiftUI
import Tern

struct ChatView: View {
    let buddy: String
    @Environment(TernModel.self) private var model
    @State private var draft = ""

    var body: some View {
        VStack(spacing: 0) {
            ScrollViewReader { proxy in
                List(model.chats[buddy] ?? []) { line in
                    ChatBubble(line: line).id(line.id).listRowSeparator(.hidden)
                }
                .listStyle(.plain)
                .onChange(of: model.chats[buddy]?.last?.id) { _, last in
                    if let last { withAnimation { proxy.scrollTo(last, anchor: .bottom) } }
                }
            }
            HStack {
                TextField("Message", text: $draft, axis: .vertical)
                    .textFieldStyle(.roundedBorder)
                    .lineLimit(1...4)
                Button {
                    let text = draft
                    draft = ""
                    Task { await model.send(text, to: buddy) }
                } label: {
                    Image(systemName: "paperplane.fill")
                }
                .accessibilityLabel("Send")
                .disabled(draft.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
            }
            .padding()
        }
        .navigationTitle(buddy)
        .navigationBarTitleDisplayMode(.inline)
        .toolbar {
            ToolbarItem(placement: .principal) {
                let summary = PresenceSummary(model.presence[buddy])
                HStack {
                    PresenceDot(summary: summary)
                    Text(buddy).font(.headline)
                }
                .accessibilityElement(children: .ignore)
                .accessibilityLabel("\(buddy), \(summary.label)")
            }
        }
    }
}

struct ChatBubble: View {
    let line: ChatLine

    var body: some View {
        HStack {
            if line.outgoing { Spacer(minLength: 40) }
            VStack(alignment: line.outgoing ? .trailing : .leading, spacing: 2) {
                Text(line.text)
                    .padding(10)
                    .background(line.outgoing ? Color.accentColor.opacity(0.2) : Color.secondary.opacity(0.15))
                    .clipShape(RoundedRectangle(cornerRadius: 12))
                if line.outgoing {
                    Text(statusText).font(.caption2).foregroundStyle(.secondary)
                }
            }
            if !line.outgoing { Spacer(minLength: 40) }
        }
        .accessibilityElement(children: .combine)
    }

    private var statusText: String {
        switch line.status {
        case .sending: "Sending…"
        case .delivered: "Delivered"
        case .stored: "Will be delivered when they come online"
        case .relayed: "Sent to their server (XMPP)"
        case .failed(let why): "Not sent: \(why)"
        case .received: ""
        }
    }
}
