import DataPlane

extension Client {
    func forwardUDP(_ service: ClientServiceConfig, channel: ByteStream, ring: RingExecutor) async {
        logger.error("service \(service.name): UDP forwarding is not built yet")
        channel.close()
    }
}
