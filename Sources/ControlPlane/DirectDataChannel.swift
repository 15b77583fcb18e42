import DataPlane
import Logging

/// A data channel over the plain TCP transport (no proxy), set up by ring callbacks instead of a
/// task: connect to the server, say Hello, wait for the command, connect to local_addr, splice. Each
/// step is one ring operation whose completion starts the next, all on one ring, so a visitor costs
/// the client no task, no task frames and no awaits. While a step is in flight the service's
/// ConnectionSet holds its handle: removing the service stops it, and the channel closes.
///
/// The steps and their log lines are those of `Client.runDataChannel`, which serves every other
/// transport; a local_addr given by name (resolved off the ring) and UDP continue there, in a task.
/// Touched only on its ring's thread.
final class DirectDataChannel {
    private let client: Client
    private let channels: DataChannelOpener
    private let transport: TCPTransport
    private let server: SocketAddress
    private let ring: RingExecutor
    private let id: Int
    private var attempt = 1
    /// The command read so far (it may arrive split).
    private var command: UInt32 = 0
    private var commandBytes = 0

    private var service: ClientService { channels.service }
    private var name: String { channels.service.config.name }

    /// Opens one data channel on `ring`; from any thread.
    static func open(
        _ channels: DataChannelOpener, transport: TCPTransport, server: SocketAddress, client: Client, on ring: RingExecutor
    ) {
        let start: @Sendable () -> Void = {
            DirectDataChannel(channels, transport: transport, server: server, client: client, ring: ring).connect()
        }
        if ring.isCurrent { start() } else { ring.execute(start) }
    }

    private init(_ channels: DataChannelOpener, transport: TCPTransport, server: SocketAddress, client: Client, ring: RingExecutor) {
        self.client = client
        self.channels = channels
        self.transport = transport
        self.server = server
        self.ring = ring
        id = channels.service.connections.reserve()
    }

    private func track(_ step: OperationHandle?) {
        if let step { service.connections.register(id, .onRing(step)) }
    }

    // MARK: Steps

    /// Connects to the server, retrying a refused or failed connection twice (the server may be
    /// busy accepting): a lost channel leaves a visitor waiting.
    private func connect() {
        track(
            Socket.connect(to: server, on: ring, timeout: TCPTransport.connectTimeout, speaksFirst: true) { result in
                switch result {
                case .success(let stream): self.sayHello(on: stream)
                case .failure(.cancelled): self.end()
                case .failure(let error): self.retry(after: .transport(.connect(error)))
                }
            })
    }

    private func sayHello(on stream: SocketStream) {
        do throws(IOError) {
            try transport.configure(stream)
            let hello = Hello.dataChannel(channels.sessionKey).encode()
            // A fresh socket's send buffer always has room for these few bytes.
            let sent = try hello.withUnsafeBytes { bytes in
                Result { () throws(IOError) in try stream.sendNow(bytes) }
            }.get()
            guard sent == hello.count else { throw IOError.system(.wouldBlock, operation: "send Hello") }
        } catch {
            stream.close()
            return retry(after: .transport(.connect(error)))
        }
        opened()
        service.counters.dataChannel(idle: true)
        waitForCommand(on: stream)
    }

    private func retry(after failure: ControlError) {
        guard attempt < DataChannelOpener.connectAttempts else {
            client.logger.warning("service \(name): data channel: cannot connect to server: \(failure)")
            opened()
            return end()
        }
        let delay = DataChannelOpener.retryDelay(after: attempt)
        attempt += 1
        track(
            ring.sleep(for: delay) { result in
                if case .failure = result { return self.end() }
                self.connect()
            })
    }

    /// Connecting ended (either way): the next channel asked for may start.
    private func opened() {
        if channels.finished() { client.openOne(channels) }
    }

    private func waitForCommand(on stream: SocketStream) {
        track(
            stream.whenReadable { result in
                switch result {
                case .success: self.readCommand(from: stream)
                case .failure(let error): self.idleEnded(stream, .io(error))
                }
            })
    }

    private func readCommand(from stream: SocketStream) {
        let received: Int?
        do throws(IOError) {
            received = try withUnsafeMutableBytes(of: &command) { whole throws(IOError) in
                try stream.receiveNow(into: UnsafeMutableRawBufferPointer(rebasing: whole[commandBytes...]))
            }
        } catch {
            return idleEnded(stream, .io(error))
        }
        guard let received else { return waitForCommand(on: stream) }
        if received == 0 { return idleEnded(stream, .io(.endOfStream)) }
        commandBytes += received
        if commandBytes < DataChannelCmd.size { return waitForCommand(on: stream) }
        service.counters.dataChannel(idle: false)
        let decoded: DataChannelCmd
        do throws(ProtocolError) {
            decoded = try withUnsafeBytes(of: command) { bytes throws(ProtocolError) in try DataChannelCmd(decoding: bytes) }
        } catch {
            client.logger.debug("service \(name): data channel: \(ControlError.protocolViolation(error))")
            stream.close()
            return end()
        }
        let config = service.config
        guard decoded == .startForwardTcp, let local = config.localAddr.literalAddress?.socketAddress else {
            // UDP, or a name to resolve: the task path takes the channel from here.
            end()
            return client.forward(decoded, over: stream, of: service, on: ring)
        }
        track(
            Socket.connect(to: local, on: ring, timeout: DataChannelOpener.localConnectTimeout) { result in
                switch result {
                case .success(let socket): self.relay(stream, socket)
                case .failure(let error):
                    if error != .cancelled {
                        self.client.logger.warning(
                            "service \(self.name): cannot connect to local_addr \(config.localAddr): \(error)")
                    }
                    stream.close()
                    self.end()
                }
            })
    }

    private func idleEnded(_ stream: SocketStream, _ error: ControlError) {
        service.counters.dataChannel(idle: false)
        switch error {
        case .io(.cancelled): break
        case .io(.endOfStream): client.logger.debug("service \(name): idle data channel closed by the server")
        default: client.logger.debug("service \(name): data channel: \(error)")
        }
        stream.close()
        end()
    }

    private func relay(_ channel: SocketStream, _ local: SocketStream) {
        end()
        if service.config.nodelay {
            do throws(IOError) {
                try local.setNoDelay(true)
            } catch {
                client.logger.warning("service \(name): cannot connect to local_addr \(service.config.localAddr): \(error)")
                channel.close()
                local.close()
                return
            }
        }
        service.counters.connectionStarted()
        startSplice(channel, local, on: ring, tracking: service.connections, onEnd: client.relayEnd(of: service))
    }

    /// The setup is over (the relay, if any, is tracked on its own).
    private func end() {
        service.connections.remove(id)
    }
}
