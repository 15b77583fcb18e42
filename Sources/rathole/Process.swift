import ControlPlane
import DataPlane
import Glibc
import Logging

#if AdminAPI
import AdminAPI
#endif

/// The process around one Instance: signals in, exit code out.
enum Process {
    /// `RATHOLE_THREADS`: how many io_uring workers to run (default: one per core). A router or NAS
    /// may want fewer than it has cores.
    static func workerCount() throws(InvalidWorkerCount) -> Int? {
        guard let raw = getenv("RATHOLE_THREADS") else { return nil }
        let text = String(cString: raw)
        guard let n = Int(text), (1...1024).contains(n) else { throw InvalidWorkerCount(text: text) }
        return n
    }

    struct InvalidWorkerCount: Error, CustomStringConvertible {
        let text: String
        var description: String { "RATHOLE_THREADS=\(text): expected a number of worker threads from 1 to 1024" }
    }

    /// Returns the exit code: 0 after a graceful stop, 1 when the config or start-up fails.
    static func run(configPath: String, forced: Mode?) -> Int32 {
        // Signals are taken by sigwait below; block them before any thread exists so none inherits them.
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        Socket.raiseOpenFileLimit()

        let group: RingGroup
        do {
            group = try RingGroup(threads: try workerCount())
        } catch let error as InvalidWorkerCount {
            writeStderr("error: \(error)\n")
            return 1
        } catch {
            writeStderr("error: cannot start the io_uring workers: \(error)\n")
            return 1
        }
        let supervisor = Supervisor.fromEnvironment()
        let api = AdminAPIHolder()
        let instance: Instance
        do {
            instance = try Instance(path: configPath, forced: forced, group: group) { instance, event in
                switch event {
                case .started: supervisor.reloading()
                case .finished(let rejected):
                    api.instanceReloaded()
                    supervisor.reloaded(instance.config, mode: instance.mode, rejected: rejected)
                }
            }
        } catch {
            writeStderr("error: \(error)\n")
            return 1
        }
        waitFor { await instance.listening() }
        waitFor { await api.start(instance) }
        if let error = api.startFailure {
            writeStderr("error: \(error)\n")
            waitFor { await instance.shutdown() }
            group.shutdown()
            return 1
        }
        instance.watchConfigFile()
        supervisor.ready(instance.config, mode: instance.mode)
        let logger = instance.logger

        while true {
            var received: Int32 = 0
            sigwait(&signals, &received)
            if received == SIGHUP {
                logger.info("SIGHUP: reloading \(configPath)")
                waitFor { await instance.reload() }
                continue
            }
            logger.info("shutting down")
            supervisor.stopping()
            waitFor { await api.stop() }
            waitFor { await instance.shutdown() }
            group.shutdown()
            return 0
        }
    }
}

/// Runs async work from a plain thread and waits for it.
func waitFor(_ body: @escaping @Sendable () async -> Void) {
    let done = ThreadSignal()
    // Unstructured on purpose: the main thread is not a task; it waits here for this one.
    Task.detached {
        await body()
        done.signal()
    }
    done.wait()
}
