import SwiftProtobuf

extension FeatureFlags {
    /// §3.3 incompatible bit 1 `open-files` (format 1.1): the handles section is an
    /// object table of open file descriptions and an fd table naming them (§5.3 handles).
    public static let incompatibleOpenFiles: UInt64 = 1 << 1
}

extension ImageFormat {
    /// §3.1, §9 The minor version a header declaring `features` carries: 1 when it
    /// uses a feature format 1.1 added (open-files), else 0 — an image every 1.0
    /// reader reads in full is labelled 1.0, byte for byte what the 1.0 writer wrote.
    public static func minor(for features: FeatureFlags) -> UInt16 {
        features.incompatible & FeatureFlags.incompatibleOpenFiles != 0 ? 1 : 0
    }
}

extension ImageLimits {
    /// §10 Most open file descriptions (objects) in a handles section.
    public static let maxOpenFiles = 1 << 20
    /// §10 Most file descriptors in a handles section (its fd table, or 1.0 handles).
    public static let maxDescriptors = 1 << 20
}

/// §5.3 handles and sync-objects, as a restore takes them: the open file
/// descriptions of the process (objects) and its file descriptors, each naming
/// one object, so descriptors made by dup(2), dup2(2) or inheritance share one
/// description. Decoded from a 1.1 image with open-files (incompatible bit 1,
/// §3.3) as stored, or from a 1.0 image with one object per descriptor.
public struct OpenFileTable: Sendable, Equatable {
    /// §5.3 `FdEntry`: one file descriptor of the process.
    public struct Descriptor: Sendable, Equatable {
        /// The descriptor's number.
        public var fd: Int32
        /// FD_CLOEXEC (fcntl F_GETFD), which belongs to the descriptor, not to the description.
        public var fdFlags: UInt32
        /// The `object_id` of the open file description it names.
        public var objectID: UInt32

        /// An `FdEntry` (§5.3 handles): descriptor `fd` naming object `objectID`.
        public init(fd: Int32, fdFlags: UInt32, objectID: UInt32) {
            self.fd = fd
            self.fdFlags = fdFlags
            self.objectID = objectID
        }
    }

    /// The open file descriptions, in the order of their lowest descriptor; each
    /// has its `objectID` and, as `fd`, its lowest descriptor.
    public private(set) var objects: [Ccimg_V1_Handle] = []
    /// Every descriptor, in ascending number.
    public var descriptors: [Descriptor] { descriptorsSorted ? storedDescriptors : storedDescriptors.sorted { $0.fd < $1.fd } }
    /// §5.3 sync-objects `EventFd` entries (counter, semaphore mode), by object id.
    public private(set) var eventfds: [UInt32: Ccimg_V1_EventFd] = [:]
    /// §5.3 sync-objects `TimerFd` entries (timerfd_settime state, ticks), by object id.
    public private(set) var timerfds: [UInt32: Ccimg_V1_TimerFd] = [:]
    /// §5.3 sync-objects `SignalFd` entries (signalfd4 mask), by object id.
    public private(set) var signalfds: [UInt32: Ccimg_V1_SignalFd] = [:]
    private var objectIndex: [UInt32: Int] = [:]
    private var storedDescriptors: [Descriptor] = []
    private var descriptorsSorted = true
    private var descriptorsOf: [UInt32: [Descriptor]] = [:]

    /// An empty table (a process with no descriptors).
    public init() {}

    /// Object `id`, when the table holds it.
    public func object(_ id: UInt32) -> Ccimg_V1_Handle? { objectIndex[id].map { objects[$0] } }

    /// The descriptors naming object `id`, in ascending number.
    public func descriptors(of id: UInt32) -> [Descriptor] { descriptorsOf[id] ?? [] }

    /// Tables are equal when they hold the same objects, descriptors and sync entries.
    public static func == (a: OpenFileTable, b: OpenFileTable) -> Bool {
        a.objects == b.objects && a.descriptors == b.descriptors && a.eventfds == b.eventfds
            && a.timerfds == b.timerfds && a.signalfds == b.signalfds
    }

    /// Appends descriptors (each naming an object of the table), keeping the indexes.
    private mutating func append(_ new: [Descriptor]) {
        for d in new {
            if let last = storedDescriptors.last, last.fd > d.fd { descriptorsSorted = false }
            storedDescriptors.append(d)
            descriptorsOf[d.objectID, default: []].append(d)
        }
    }

    /// §5.3 The 1.1 handles section of this table (open-files layout).
    public var handleTable: Ccimg_V1_HandleTable {
        var t = Ccimg_V1_HandleTable()
        t.handles = objects
        t.fds = descriptors.map { d in
            var e = Ccimg_V1_FdEntry()
            e.fd = d.fd
            e.fdFlags = d.fdFlags
            e.objectID = d.objectID
            return e
        }
        return t
    }

    /// The id ``add(_:descriptors:)`` gives the next object.
    public var nextObjectID: UInt32 { UInt32(objects.count + 1) }

    /// Adds an object and the descriptors naming it (a writer's way in: capture).
    /// The object gets the next id and its lowest descriptor as `fd`.
    @discardableResult
    public mutating func add(_ object: Ccimg_V1_Handle, descriptors fds: [(fd: Int32, fdFlags: UInt32)]) -> UInt32 {
        precondition(!fds.isEmpty, "an open file description without a descriptor")
        let id = UInt32(objects.count + 1)
        var o = object
        o.objectID = id
        o.fd = fds.map(\.fd).min()!
        o.fdFlags = 0
        objectIndex[id] = objects.count
        objects.append(o)
        append(fds.sorted { $0.fd < $1.fd }.map { Descriptor(fd: $0.fd, fdFlags: $0.fdFlags, objectID: id) })
        return id
    }

    /// Records the §5.3 sync-objects entry of the eventfd object `e.objectID` (capture).
    public mutating func attach(_ e: Ccimg_V1_EventFd) { eventfds[e.objectID] = e }
    /// Records the §5.3 sync-objects entry of the timerfd object `t.objectID` (capture).
    public mutating func attach(_ t: Ccimg_V1_TimerFd) { timerfds[t.objectID] = t }
    /// Records the §5.3 sync-objects entry of the signalfd object `s.objectID` (capture).
    public mutating func attach(_ s: Ccimg_V1_SignalFd) { signalfds[s.objectID] = s }

    /// The eventfd, timerfd and signalfd lists of §5.3 sync-objects, in object order.
    public func syncEntries(into sync: inout Ccimg_V1_SyncObjects) {
        sync.eventfds = eventfds.values.sorted { $0.objectID < $1.objectID }
        sync.timerfds = timerfds.values.sorted { $0.objectID < $1.objectID }
        sync.signalfds = signalfds.values.sorted { $0.objectID < $1.objectID }
    }
}

// MARK: Decoding and validation

extension OpenFileTable {
    /// Decodes and checks the handles section (and the sync-objects entries that
    /// name its objects) of an image with `features` (§5.3 handles, §10, §11):
    /// with open-files, the object and fd tables as stored; without, one object
    /// per 1.0 handle. Every count is checked against §10 before anything is built
    /// from it; every broken reference is structural.
    public static func decode(handles: Ccimg_V1_HandleTable?, sync: Ccimg_V1_SyncObjects?,
                              features: FeatureFlags) throws(ImageError) -> OpenFileTable {
        let handles = handles ?? Ccimg_V1_HandleTable()
        let sync = sync ?? Ccimg_V1_SyncObjects()
        if features.incompatible & FeatureFlags.incompatibleOpenFiles != 0 {
            return try decodeObjects(handles, sync)
        }
        return try decodeVersion1(handles, sync)
    }

    static func fail(_ message: String, _ code: ImageError.Code = .structural) -> ImageError {
        ImageError(code, message, location: "section handles")
    }

    static func checkLimits(_ handles: Ccimg_V1_HandleTable, _ sync: Ccimg_V1_SyncObjects) throws(ImageError) {
        guard handles.handles.count <= ImageLimits.maxOpenFiles else {
            throw fail("\(handles.handles.count) handles, more than \(ImageLimits.maxOpenFiles)", .limitExceeded)
        }
        guard handles.fds.count <= ImageLimits.maxDescriptors else {
            throw fail("\(handles.fds.count) descriptors, more than \(ImageLimits.maxDescriptors)", .limitExceeded)
        }
        for (name, count) in [("eventfds", sync.eventfds.count), ("timerfds", sync.timerfds.count), ("signalfds", sync.signalfds.count)]
        where count > ImageLimits.maxOpenFiles {
            throw ImageError(.limitExceeded, "\(count) \(name), more than \(ImageLimits.maxOpenFiles)", location: "section sync-objects")
        }
    }

    /// 1.0: every handle is one descriptor and one object (id = position + 1);
    /// sync-objects entries find their object by `fd`.
    static func decodeVersion1(_ handles: Ccimg_V1_HandleTable, _ sync: Ccimg_V1_SyncObjects) throws(ImageError) -> OpenFileTable {
        try checkLimits(handles, sync)
        guard handles.fds.isEmpty else {
            throw fail("the handles section has an fd table, but incompatible feature bit 1 (open-files) is clear")
        }
        var table = OpenFileTable()
        var byFD: [Int32: UInt32] = [:]
        byFD.reserveCapacity(handles.handles.count)
        for h in handles.handles {
            guard h.fd >= 0 else { throw fail("handle of fd \(h.fd): a negative descriptor number") }
            guard byFD[h.fd] == nil else { throw fail("fd \(h.fd) appears twice in the handles section") }
            let flags = h.fdFlags
            var object = h
            object.objectID = 0
            byFD[h.fd] = table.add(object, descriptors: [(h.fd, flags)])
        }
        for var e in sync.eventfds { if let id = byFD[e.fd] { e.objectID = id; table.attach(e) } }
        for var t in sync.timerfds { if let id = byFD[t.fd] { t.objectID = id; table.attach(t) } }
        for var s in sync.signalfds { if let id = byFD[s.fd] { s.objectID = id; table.attach(s) } }
        return table
    }

    /// 1.1 open-files: objects with unique ids ≥ 1, descriptors with unique numbers
    /// ≥ 0 each naming an object, every object named by at least one descriptor,
    /// and each sync-objects entry naming one object of its type.
    static func decodeObjects(_ handles: Ccimg_V1_HandleTable, _ sync: Ccimg_V1_SyncObjects) throws(ImageError) -> OpenFileTable {
        try checkLimits(handles, sync)
        var table = OpenFileTable()
        table.objectIndex.reserveCapacity(handles.handles.count)
        for (i, h) in handles.handles.enumerated() {
            guard h.objectID != 0 else { throw fail("handle \(i) has no object id") }
            guard table.objectIndex[h.objectID] == nil else { throw fail("object \(h.objectID) appears twice in the handles section") }
            table.objectIndex[h.objectID] = i
        }
        table.objects = handles.handles
        var seen = Set<Int32>(minimumCapacity: handles.fds.count)
        var lowest: [UInt32: Int32] = [:]
        for e in handles.fds {
            guard e.fd >= 0 else { throw fail("fd \(e.fd): a negative descriptor number") }
            guard seen.insert(e.fd).inserted else { throw fail("fd \(e.fd) appears twice in the fd table") }
            guard table.objectIndex[e.objectID] != nil else {
                throw fail("fd \(e.fd) names object \(e.objectID), which the handles section does not hold")
            }
            lowest[e.objectID] = min(lowest[e.objectID] ?? e.fd, e.fd)
        }
        for (i, h) in table.objects.enumerated() {
            guard let fd = lowest[h.objectID] else { throw fail("object \(h.objectID) is named by no descriptor") }
            table.objects[i].fd = fd      // informational in the file; derived here
        }
        table.append(handles.fds.map { Descriptor(fd: $0.fd, fdFlags: $0.fdFlags, objectID: $0.objectID) }.sorted { $0.fd < $1.fd })
        func owner(_ id: UInt32, _ type: Ccimg_V1_HandleType, _ list: String, _ taken: Bool) throws(ImageError) {
            guard let i = table.objectIndex[id], table.objects[i].type == type else {
                throw ImageError(.structural, "an entry of \(list) names object \(id), which is not a \(list.dropLast()) of the handles section",
                                 location: "section sync-objects")
            }
            guard !taken else { throw ImageError(.structural, "two entries of \(list) name object \(id)", location: "section sync-objects") }
        }
        for e in sync.eventfds { try owner(e.objectID, .eventfd, "eventfds", table.eventfds[e.objectID] != nil); table.attach(e) }
        for t in sync.timerfds { try owner(t.objectID, .timerfd, "timerfds", table.timerfds[t.objectID] != nil); table.attach(t) }
        for s in sync.signalfds { try owner(s.objectID, .signalfd, "signalfds", table.signalfds[s.objectID] != nil); table.attach(s) }
        return table
    }

    /// Checks a decoded handles section on its own (§5.3 handles, §10): what
    /// ``ImageReader/section(_:as:)`` asks of every handles section it decodes.
    public static func check(_ handles: Ccimg_V1_HandleTable, features: FeatureFlags, path: String, offset: UInt64) throws(ImageError) {
        do { _ = try decode(handles: handles, sync: nil, features: features) } catch {
            var located = error.at(path: path)
            located.offset = offset
            throw located
        }
    }

    /// Checks section payloads as `ccimg verify` finds them (§11): payloads that do
    /// not decode are left to the section check that reports them.
    public static func verify(handles: [UInt8]?, sync: [UInt8]?, features: FeatureFlags) throws(ImageError) {
        let h = handles.flatMap { try? Ccimg_V1_HandleTable(serializedBytes: $0) }
        let s = sync.flatMap { try? Ccimg_V1_SyncObjects(serializedBytes: $0) }
        guard handles == nil || h != nil, sync == nil || s != nil else { return }
        _ = try decode(handles: h, sync: s, features: features)
    }
}

extension ImageReader {
    /// §5.3 handles and sync-objects of this image as one checked ``OpenFileTable``
    /// (1.0 images: one object per descriptor). Nothing in the image → an empty table.
    public func openFiles() throws(ImageError) -> OpenFileTable {
        let handles = try section(.handles, as: Ccimg_V1_HandleTable.self)
        let sync = try section(.syncObjects, as: Ccimg_V1_SyncObjects.self)
        do {
            return try OpenFileTable.decode(handles: handles, sync: sync, features: header.features)
        } catch {
            throw error.at(path: path)
        }
    }
}
