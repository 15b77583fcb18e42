import DataPlane
import Synchronization

// What the tunnel has done since the process started, for the HTTP API and Prometheus. Updated
// with relaxed atomic adds at the ends of things (a relay, a batch of datagrams, a handshake),
// never per chunk of bytes. In a build without the AdminAPI package trait nothing reads them, and
// every update compiles to nothing.

/// The counters of every service, and handshake failures by reason.
public final class Metrics: Sendable {
    #if AdminAPI
    private let services = Mutex<[String: ServiceCounters]>([:])
    /// Locked, not atomic: failures are rare next to the connection work each one costs.
    private let failures = Mutex<[HandshakeFailure: UInt64]>([:])
    #else
    private static let unused = ServiceCounters()
    #endif

    public init() {}

    /// The counters of service `name`, made on first use. A service that is changed or restarted
    /// keeps its counters; one that is removed loses them (`forget`).
    public func counters(for name: String) -> ServiceCounters {
        #if AdminAPI
        services.withLock { all in
            if let existing = all[name] { return existing }
            let new = ServiceCounters()
            all[name] = new
            return new
        }
        #else
        Self.unused
        #endif
    }

    /// A removed service's counters are dropped (its last connections still count into them).
    @inline(__always)
    func forget(_ name: String) {
        #if AdminAPI
        _ = services.withLock { $0.removeValue(forKey: name) }
        #endif
    }

    @inline(__always)
    func count(_ failure: HandshakeFailure) {
        #if AdminAPI
        failures.withLock { $0[failure, default: 0] += 1 }
        #endif
    }

    /// A handshake failed with `error`: counted under its reason, if it has one.
    @inline(__always)
    func countHandshakeFailure(_ error: ControlError) {
        #if AdminAPI
        if let reason = HandshakeFailure(error) { count(reason) }
        #endif
    }

    #if AdminAPI
    /// Handshake failures so far, by reason, every reason listed.
    public var handshakeFailures: [(reason: HandshakeFailure, count: UInt64)] {
        let counts = failures.withLock { $0 }
        return HandshakeFailure.allCases.map { ($0, counts[$0] ?? 0) }
    }
    #endif
}

/// Why a connection to the server's control port, or a client's control channel, did not become a
/// working channel. The raw value is the Prometheus label.
public enum HandshakeFailure: String, CaseIterable, Sendable {
    /// No complete handshake within the deadline.
    case timeout
    /// A control channel for a service the server does not have.
    case unknownService = "unknown_service"
    case wrongToken = "wrong_token"
    /// A data channel with a session key no control channel has.
    case unknownSession = "unknown_session"
    /// Bytes that are not rathole's protocol.
    case protocolViolation = "protocol"
    /// The TLS, Noise or websocket handshake failed (on a client, also: the server could not be
    /// reached).
    case transport
    /// The peer closed or reset the connection during the handshake.
    case closed
    /// Too many handshakes at once: the connection was closed unread.
    case overload

    /// The reason a handshake that failed with `error` counts under; nil when it is not the
    /// handshake that failed (cancellation, an established channel's end).
    init?(_ error: ControlError) {
        switch error {
        case .io(.timedOut): self = .timeout
        case .io(.cancelled): return nil
        case .io: self = .closed
        case .protocolViolation: self = .protocolViolation
        case .transport: self = .transport
        case .refused(.unknownService), .refused(.serverDoesNotKnowService): self = .unknownService
        case .refused(.wrongToken), .refused(.serverRefusedToken): self = .wrongToken
        case .refused(.dataChannelHelloFromServer): self = .protocolViolation
        case .refused(.unresolvedServer), .refused(.unreachableServer): self = .transport
        case .refused(.noHeartbeat), .refused(.closedByServer): return nil
        }
    }
}

/// One service's counters. "In" is toward the service (visitors to the local service), "out" the
/// replies back, on both ends of the tunnel.
public final class ServiceCounters: Sendable {
    #if AdminAPI
    private let connectionsTotal = Atomic<UInt64>(0)
    private let connectionsActive = Atomic<Int>(0)
    private let bytesIn = Atomic<UInt64>(0)
    private let bytesOut = Atomic<UInt64>(0)
    private let datagramsIn = Atomic<UInt64>(0)
    private let datagramsOut = Atomic<UInt64>(0)
    private let datagramsDropped = Atomic<UInt64>(0)
    /// Data channels open and waiting for the server's command (client side).
    private let idleChannels = Atomic<Int>(0)
    /// The server's address while the control channel is up (client side).
    private let controlPeer = Mutex<String?>(nil)
    #endif

    init() {}

    /// A TCP connection starts being relayed.
    @inline(__always)
    func connectionStarted() {
        #if AdminAPI
        connectionsTotal.wrappingAdd(1, ordering: .relaxed)
        connectionsActive.wrappingAdd(1, ordering: .relaxed)
        #endif
    }

    /// It ended; `inbound` is how many bytes went toward the service, `outbound` back.
    @inline(__always)
    func connectionEnded(inbound: UInt64, outbound: UInt64) {
        #if AdminAPI
        bytesIn.wrappingAdd(inbound, ordering: .relaxed)
        bytesOut.wrappingAdd(outbound, ordering: .relaxed)
        // Releasing: whoever reads the connection gone (acquiring) reads its bytes too.
        connectionsActive.wrappingSubtract(1, ordering: .releasing)
        #endif
    }

    /// What counts a relay's end, made once per service so that a relay allocates nothing for it
    /// (the relay's first stream is the side toward the service: the visitor on the server, the
    /// data channel on the client); nil without the trait.
    func makeRelayEnd() -> (@Sendable (RelayResult) -> Void)? {
        #if AdminAPI
        return { [self] result in connectionEnded(inbound: result.bytesAToB, outbound: result.bytesBToA) }
        #else
        return nil
        #endif
    }

    /// A batch of datagrams toward the service (`in`) or back (`out`), and those dropped.
    @inline(__always)
    func datagrams(inbound: Int = 0, outbound: Int = 0, bytesIn: Int = 0, bytesOut: Int = 0, dropped: Int = 0) {
        #if AdminAPI
        if inbound > 0 {
            datagramsIn.wrappingAdd(UInt64(inbound), ordering: .relaxed)
            self.bytesIn.wrappingAdd(UInt64(bytesIn), ordering: .relaxed)
        }
        if outbound > 0 {
            datagramsOut.wrappingAdd(UInt64(outbound), ordering: .relaxed)
            self.bytesOut.wrappingAdd(UInt64(bytesOut), ordering: .relaxed)
        }
        if dropped > 0 { datagramsDropped.wrappingAdd(UInt64(dropped), ordering: .relaxed) }
        #endif
    }

    /// A client's data channel is open and waits for the server's command (`idle`), or got it.
    @inline(__always)
    func dataChannel(idle: Bool) {
        #if AdminAPI
        if idle {
            idleChannels.wrappingAdd(1, ordering: .relaxed)
        } else {
            idleChannels.wrappingSubtract(1, ordering: .relaxed)
        }
        #endif
    }

    /// A client's control channel is up with `peer` (the server), or down (nil).
    @inline(__always)
    func controlChannel(peer: String?) {
        #if AdminAPI
        controlPeer.withLock { $0 = peer }
        #endif
    }

    #if AdminAPI
    /// The values now (each read on its own: they may be a moment apart).
    public var snapshot: Snapshot {
        let active = connectionsActive.load(ordering: .acquiring)
        return Snapshot(
            connectionsTotal: connectionsTotal.load(ordering: .relaxed),
            connectionsActive: max(0, active),
            bytesIn: bytesIn.load(ordering: .relaxed), bytesOut: bytesOut.load(ordering: .relaxed),
            datagramsIn: datagramsIn.load(ordering: .relaxed), datagramsOut: datagramsOut.load(ordering: .relaxed),
            datagramsDropped: datagramsDropped.load(ordering: .relaxed))
    }

    /// The client's idle data channels.
    var idleDataChannels: Int { max(0, idleChannels.load(ordering: .relaxed)) }

    /// The server, while the client's control channel is up.
    var controlChannelPeer: String? { controlPeer.withLock { $0 } }

    public struct Snapshot: Sendable, Equatable {
        public var connectionsTotal: UInt64
        public var connectionsActive: Int
        public var bytesIn: UInt64
        public var bytesOut: UInt64
        public var datagramsIn: UInt64
        public var datagramsOut: UInt64
        public var datagramsDropped: UInt64
    }
    #endif
}
