import ControlPlane
import DataPlane
import Glibc
import Logging

/// One running server or client, from its config file until a signal ends it.
enum Instance {
    /// Returns the process exit code: 0 after a graceful stop, 1 when the config or start-up fails.
    static func run(configPath: String, forced: Mode?) -> Int32 {
        let config: Config
        let mode: Mode
        do {
            config = try Config.load(path: configPath)
            mode = try config.mode(forced: forced)
        } catch {
            writeStderr("error: \(error)\n")
            return 1
        }
        // Signals are taken by sigwait below; block them before any thread exists so none inherits them.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        Socket.raiseOpenFileLimit()

        let logger = Logger(label: "rathole::\(mode)")
        let group: RingGroup
        do {
            group = try RingGroup()
        } catch {
            writeStderr("error: cannot start the io_uring workers: \(error)\n")
            return 1
        }
        let stop: () -> Void
        do {
            switch mode {
            case .server:
                let server = try Server(config: config.server!, group: group, logger: logger)
                try server.start()
                stop = { waitFor { await server.shutdown() } }
            case .client:
                let client = try Client(config: config.client!, group: group, logger: logger)
                client.start()
                stop = { client.shutdown() }
            }
        } catch {
            writeStderr("error: \(error)\n")
            return 1
        }

        while true {
            var received: Int32 = 0
            sigwait(&signals, &received)
            if received == SIGHUP {
                logger.info("SIGHUP received")
                continue
            }
            logger.info("shutting down")
            stop()
            group.shutdown()
            return 0
        }
    }
}

/// Runs async work from a plain thread and waits for it.
func waitFor(_ body: @escaping @Sendable () async -> Void) {
    final class Done: @unchecked Sendable {
        var mutex = pthread_mutex_t()
        var cond = pthread_cond_t()
        var done = false
    }
    let state = Done()
    pthread_mutex_init(&state.mutex, nil)
    pthread_cond_init(&state.cond, nil)
    Task.detached {
        await body()
        pthread_mutex_lock(&state.mutex)
        state.done = true
        pthread_cond_signal(&state.cond)
        pthread_mutex_unlock(&state.mutex)
    }
    pthread_mutex_lock(&state.mutex)
    while !state.done { pthread_cond_wait(&state.cond, &state.mutex) }
    pthread_mutex_unlock(&state.mutex)
}
