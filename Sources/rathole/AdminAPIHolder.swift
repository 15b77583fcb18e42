import ControlPlane
import Logging
import Synchronization

#if AdminAPI
import AdminAPI
#endif

/// The HTTP API beside the instance, when this build has it (the `AdminAPI` package trait);
/// without it, a configured `[server.api]` or `[client.api]` is reported and ignored.
final class AdminAPIHolder: Sendable {
    #if AdminAPI
    private let server = Mutex<AdminServer?>(nil)
    #endif
    private let failure = Mutex<StartError?>(nil)

    /// Why `start` could not start the API (it cannot listen), if it could not.
    var startFailure: StartError? { failure.withLock { $0 } }

    /// Starts the API if the instance's config has one.
    func start(_ instance: Instance) async {
        #if AdminAPI
        let api = AdminServer(instance: instance)
        do {
            try await api.apply(AdminServer.config(of: instance))
        } catch {
            failure.withLock { $0 = error }
            return
        }
        server.withLock { $0 = api }
        #else
        let table = instance.mode == .server ? instance.config.server?.api : instance.config.client?.api
        if table != nil {
            instance.logger.warning(
                "[\(instance.mode).api] is ignored: this rathole was built without the HTTP API (the AdminAPI package trait)")
        }
        #endif
    }

    func instanceReloaded() {
        #if AdminAPI
        server.withLock { $0 }?.instanceReloaded()
        #endif
    }

    /// Stops the API and lets go of it: the API holds the instance, whose reload callback holds
    /// this holder, so keeping it would leave that cycle behind (LeakSanitizer reports it at exit).
    func stop() async {
        #if AdminAPI
        await server.withLock { $0.take() }?.stop()
        #endif
    }
}
