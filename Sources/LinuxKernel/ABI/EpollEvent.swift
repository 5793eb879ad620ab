/// struct epoll_event of epoll_ctl(2) and epoll_wait(2). On x86-64 it is packed:
/// a u32 `events` then a u64 `data`, 12 bytes, no padding.
package struct EpollEvent: Equatable, Sendable {
    /// EPOLLIN, EPOLLOUT, EPOLLET, ... (the bits of `events`).
    package var events: UInt32
    /// The user data the kernel hands back with the event (epoll_data_t).
    package var data: UInt64

    /// Bytes of the packed struct on x86-64.
    package static let size = 12

    /// An epoll_event for epoll_ctl(2) of `events` with user data `data`.
    package init(events: UInt32, data: UInt64) {
        self.events = events
        self.data = data
    }

    /// Parses the 12 little-endian bytes of one struct epoll_event; nil when fewer.
    package init?(bytes: some Collection<UInt8>) {
        let b = Array(bytes.prefix(EpollEvent.size))
        guard b.count == EpollEvent.size else { return nil }
        events = b.loadLE(UInt32.self, at: 0)
        data = b.loadLE(UInt64.self, at: 4)
    }

    /// The 12 bytes of this struct epoll_event, as epoll_ctl(EPOLL_CTL_ADD) takes it.
    package var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(EpollEvent.size)
        out.appendLE(events)
        out.appendLE(data)
        return out
    }
}
