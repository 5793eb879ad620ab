import Foundation
import Testing
@testable import CheckpointImage

/// §5.3 handles (1.1 open-files), §10, §11: the object and fd tables are checked
/// before anything is built from them, every failure a structural (or
/// limit-exceeded) error, never a trap; a 1.0 table becomes one object per fd.
@Suite struct OpenFileTableTests {
    static let openFiles = FeatureFlags(incompatible: FeatureFlags.incompatibleOpenFiles)

    static func handle(_ id: UInt32, _ type: Ccimg_V1_HandleType = .regular, fd: Int32 = 0) -> Ccimg_V1_Handle {
        var h = Ccimg_V1_Handle()
        h.objectID = id
        h.type = type
        h.fd = fd
        h.path = "/object/\(id)"
        return h
    }

    static func entry(_ fd: Int32, _ id: UInt32, cloexec: Bool = false) -> Ccimg_V1_FdEntry {
        var e = Ccimg_V1_FdEntry()
        e.fd = fd
        e.objectID = id
        e.fdFlags = cloexec ? 1 : 0
        return e
    }

    /// Objects 1 (regular, fds 3 and 7) and 2 (eventfd, fds 4 and 9).
    static func sound() -> (Ccimg_V1_HandleTable, Ccimg_V1_SyncObjects) {
        var t = Ccimg_V1_HandleTable()
        t.handles = [handle(1), handle(2, .eventfd)]
        t.fds = [entry(7, 1), entry(3, 1), entry(4, 2, cloexec: true), entry(9, 2)]
        var s = Ccimg_V1_SyncObjects()
        var e = Ccimg_V1_EventFd()
        e.objectID = 2
        e.counter = 42
        s.eventfds = [e]
        return (t, s)
    }

    static func error(_ t: Ccimg_V1_HandleTable, _ s: Ccimg_V1_SyncObjects = .init(), features: FeatureFlags = openFiles) -> ImageError? {
        do { _ = try OpenFileTable.decode(handles: t, sync: s, features: features); return nil } catch { return error }
    }

    @Test func aSoundTableDecodesWithSharedDescriptors() throws {
        let (t, s) = Self.sound()
        let table = try OpenFileTable.decode(handles: t, sync: s, features: Self.openFiles)
        #expect(table.descriptors.map(\.fd) == [3, 4, 7, 9])
        #expect(table.descriptors(of: 1).map(\.fd) == [3, 7])
        #expect(table.descriptors(of: 2).map(\.fdFlags) == [1, 0])
        #expect(table.object(1)?.fd == 3 && table.object(2)?.fd == 4)   // the lowest descriptor, derived
        #expect(table.eventfds[2]?.counter == 42)
        // Written back, it decodes to the same table.
        var sync = Ccimg_V1_SyncObjects()
        table.syncEntries(into: &sync)
        #expect(try OpenFileTable.decode(handles: table.handleTable, sync: sync, features: Self.openFiles) == table)
    }

    @Test func brokenReferencesAreStructural() {
        let (t, s) = Self.sound()
        var missing = t; missing.fds[0].objectID = 77
        var duplicate = t; duplicate.fds[0].fd = 3
        var orphan = t; orphan.handles.append(Self.handle(3))
        var noID = t; noID.handles[0].objectID = 0
        var twice = t; twice.handles[1].objectID = 1
        var negative = t; negative.fds[0].fd = -1
        for (name, table) in [("missing object", missing), ("duplicate fd", duplicate), ("orphan object", orphan),
                              ("object without id", noID), ("duplicate object id", twice), ("negative fd", negative)] {
            let e = Self.error(table, s)
            #expect(e?.code == .structural, "\(name): \(String(describing: e))")
            #expect(e?.location == "section handles", "\(name)")
        }
    }

    @Test func syncEntriesMustNameAnObjectOfTheirType() {
        let (t, s) = Self.sound()
        var missing = s; missing.eventfds[0].objectID = 9
        var wrongType = s; wrongType.eventfds[0].objectID = 1
        var twice = s; twice.eventfds.append(s.eventfds[0])
        var timer = s; timer.timerfds = [Ccimg_V1_TimerFd()]      // object 0: none
        for (name, sync) in [("missing", missing), ("wrong type", wrongType), ("twice", twice), ("no object", timer)] {
            let e = Self.error(t, sync)
            #expect(e?.code == .structural && e?.location == "section sync-objects", "\(name): \(String(describing: e))")
        }
    }

    @Test func anFdTableNeedsTheFeatureBit() {
        let (t, s) = Self.sound()
        #expect(Self.error(t, s, features: FeatureFlags())?.code == .structural)
    }

    @Test func countsAreCheckedAgainstTheLimitsFirst() {
        var t = Ccimg_V1_HandleTable()
        t.fds = [Ccimg_V1_FdEntry](repeating: Self.entry(1, 1), count: ImageLimits.maxDescriptors + 1)
        #expect(Self.error(t)?.code == .limitExceeded)
        #expect(Self.error(t, features: FeatureFlags())?.code == .limitExceeded)
    }

    @Test func a10TableBecomesOneObjectPerDescriptor() throws {
        var t = Ccimg_V1_HandleTable()
        t.handles = [Self.handle(0, .tty, fd: 0), Self.handle(0, .eventfd, fd: 5), Self.handle(0, .timerfd, fd: 8)]
        t.handles[1].fdFlags = 1
        var s = Ccimg_V1_SyncObjects()
        var e = Ccimg_V1_EventFd(); e.fd = 5; e.counter = 3
        var orphan = Ccimg_V1_EventFd(); orphan.fd = 6        // names no handle: not attached
        var timer = Ccimg_V1_TimerFd(); timer.fd = 8; timer.intervalNs = 10
        s.eventfds = [e, orphan]
        s.timerfds = [timer]
        let table = try OpenFileTable.decode(handles: t, sync: s, features: FeatureFlags())
        #expect(table.objects.map(\.objectID) == [1, 2, 3])
        #expect(table.objects.map(\.fd) == [0, 5, 8])
        #expect(table.descriptors == [.init(fd: 0, fdFlags: 0, objectID: 1), .init(fd: 5, fdFlags: 1, objectID: 2),
                                      .init(fd: 8, fdFlags: 0, objectID: 3)])
        #expect(table.eventfds.count == 1 && table.eventfds[2]?.counter == 3)
        #expect(table.timerfds[3]?.intervalNs == 10)
        // No handles section at all: an empty table.
        #expect(try OpenFileTable.decode(handles: nil, sync: nil, features: FeatureFlags()) == OpenFileTable())
    }

    @Test func a10TableWithADuplicateDescriptorIsStructural() {
        var t = Ccimg_V1_HandleTable()
        t.handles = [Self.handle(0, fd: 4), Self.handle(0, fd: 4)]
        #expect(Self.error(t, features: FeatureFlags())?.code == .structural)
    }
}
