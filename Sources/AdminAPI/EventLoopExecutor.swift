// Built with the AdminAPI package trait only (the default).
#if AdminAPI

import NIOCore

/// Runs Swift tasks on one NIO event loop's thread, so that the API's request handling stays on
/// that thread too: off the io_uring workers and off Swift's global pool.
final class EventLoopExecutor: TaskExecutor {
    let loop: any EventLoop

    init(_ loop: any EventLoop) { self.loop = loop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

#endif
