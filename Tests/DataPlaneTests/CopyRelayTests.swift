import Glibc
import TestKit
import XCTest

// The CopyRelay (user-space buffers, for streams that cannot be spliced), end to end over loopback.
@testable import DataPlane

final class CopyRelayTests: XCTestCase {
    override func setUp() {
        signal(SIGPIPE, SIG_IGN)
    }

    func testEcho() async throws {
        try await RelayScenarios.echo(.copy)
    }

    /// 64 MiB each way at the same time, hashed on both sides.
    func testSixtyFourMiBIntact() async throws {
        try await RelayScenarios.bulk(.copy, aToB: 64 << 20, bToA: 64 << 20)
    }

    func testHalfCloseFromA() async throws {
        try await RelayScenarios.halfClose(.copy, first: .a)
    }

    func testHalfCloseFromB() async throws {
        try await RelayScenarios.halfClose(.copy, first: .b)
    }

    func testResetOnAClosesBoth() async throws {
        try await RelayScenarios.reset(.copy, side: .a)
    }

    func testResetOnBClosesBoth() async throws {
        try await RelayScenarios.reset(.copy, side: .b)
    }

    func testResetDuringTransferClosesBoth() async throws {
        try await RelayScenarios.resetDuringTransfer(.copy, side: .b)
    }

    func testCancellingMidTransfer() async throws {
        try await RelayScenarios.stopMidTransfer(.copy)
    }
}
