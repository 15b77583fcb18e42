// The client's cap on UDP visitors per data channel (4,096 local sockets), driven by a server
// written by hand that sends datagrams from thousands of visitors (their addresses are only bytes
// in the frames, so any number can be made up).
import ControlPlane
import Foundation
import Glibc
import TestKit
import XCTest

final class UDPVisitorCapTests: EndToEndCase {
    /// Reads the frames the client sends back on a UDP data channel: the visitor port of each reply.
    private final class ReplyReader: @unchecked Sendable {  // `ports` is locked; the thread owns the rest
        let ports = Locked<[UInt16]>([])
        init(_ channel: Conn) {
            spawnThread { [ports] in
                while let header = try? channel.readExact(13, timeout: 60) {
                    guard header[0] == 12, header[1..<5] == [0, 0, 0, 0] else { return }  // IPv4 frames only here
                    let port = UInt16(header[9]) | UInt16(header[10]) << 8
                    let length = Int(header[11]) | Int(header[12]) << 8
                    guard (try? channel.readExact(length, timeout: 10)) != nil else { return }
                    ports.withLock { $0.append(port) }
                }
            }
        }
    }

    /// 5,000 visitors on one channel: the first 4,096 get a local socket each and their replies,
    /// the rest are dropped (said once in the log), the client stays up, and a visitor within the
    /// cap is still served afterwards while one beyond it still is not.
    func testVisitorsPerChannelAreCapped() throws {
        let echo = keep(try UDPEcho())
        let fake = try Listener()
        let config = TunnelConfig(controlPort: fake.port, services: [ServiceSpec("flood", type: "udp", port: 1, localPort: echo.port)])
        let client = rathole("client", config: config.clientText)
        client.environment["RUST_LOG"] = "info"  // debug would log per visitor
        // A budget of 5,000 sockets for the whole process (a quarter of the limit): the per-channel
        // cap is the one reached.
        client.launcher = ["prlimit", "--nofile=20000:20000"]
        try client.start()
        let (control, key) = try RawServer.acceptControlChannel(on: fake, service: "flood", token: TunnelConfig.defaultToken, channels: 1)
        defer { control.close() }
        let channel = try RawServer.acceptDataChannel(on: fake, sessionKey: key, command: 1)
        defer { channel.close() }
        let replies = ReplyReader(channel)

        let cap = 4096
        let visitors = 5000
        var frames: [UInt8] = []
        for i in 0..<visitors { frames += RawClient.ipv4Frame(port: UInt16(10_000 + i), payload: Array("visitor \(i)".utf8)) }
        try channel.send(frames)

        XCTAssertTrue(client.waitForLog("too many UDP visitors", timeout: 30), "the cap is logged")
        let sockets = settled(timeout: 30) { client.udpSocketCount }
        XCTAssertEqual(sockets, cap, "client UDP sockets: one per visitor up to the cap")
        XCTAssertEqual(settled(timeout: 30) { echo.senders.count }, cap, "distinct senders the local service saw")
        let answered = Set(settled(timeout: 30) { replies.ports.get })
        XCTAssertEqual(answered.count, cap, "visitors that got replies")
        XCTAssertEqual(answered.filter { $0 >= 10_000 + cap }.sorted().prefix(10), [], "replies for visitors past the cap")
        XCTAssertEqual(client.occurrences(of: "too many UDP visitors"), 1, "said once, not per datagram")

        // Still so: a visitor past the cap is dropped, one within it served (its reply is the barrier).
        let before = replies.ports.get.count
        try channel.send(
            RawClient.ipv4Frame(port: UInt16(10_000 + visitors - 1), payload: Array("still too many".utf8))
                + RawClient.ipv4Frame(port: 10_005, payload: Array("still served".utf8)))
        XCTAssertTrue(waitUntil(timeout: 20) { replies.ports.get.dropFirst(before).contains(10_005) }, "a visitor within the cap is served")
        XCTAssertFalse(replies.ports.get.dropFirst(before).contains(UInt16(10_000 + visitors - 1)), "a visitor past the cap was served")
        XCTAssertEqual(client.udpSocketCount, cap)
        XCTAssertTrue(client.isRunning)
    }
}
