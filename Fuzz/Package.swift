// swift-tools-version: 6.1
// libFuzzer targets, one per parser we own (issue 13): a package of its own, so that its
// `-sanitize=fuzzer,address` build never enters the main one. Built and run by `make fuzz`
// (Fuzz/run.sh), which builds with `-enable-testing` so a target can reach a parser internal to its module.
import PackageDescription

let swiftSettings: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

func fuzzTarget(_ name: String, _ products: [String]) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["FuzzSupport"] + products.map { .product(name: $0, package: "chamade") },
        swiftSettings: swiftSettings)
}

let package = Package(
    name: "ChamadeFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "chamade", path: "..")],
    targets: [
        .target(name: "FuzzSupport", swiftSettings: swiftSettings),
        fuzzTarget("FuzzClientMessage", ["ChamadeWire"]),
        fuzzTarget("FuzzBase64Audio", ["ChamadeWire"]),
        fuzzTarget("FuzzHTTPHead", ["ChamadeWire"]),
        fuzzTarget("FuzzWebSocketFrames", ["ChamadeWire"]),
        fuzzTarget("FuzzPCMStream", ["ChamadeCore"]),
        fuzzTarget("FuzzRTP", ["ChamadeCore"]),
        fuzzTarget("FuzzJitterBuffer", ["ChamadeCore"]),
        fuzzTarget("FuzzTelephoneEvent", ["ChamadeCore"]),
        fuzzTarget("FuzzSDP", ["ChamadeSIP", "ChamadeMedia"]),
        fuzzTarget("FuzzMeetingURL", ["ChamadeSIP", "ChamadeMedia"]),
        fuzzTarget("FuzzWAV", ["ChamadeAudioFile"]),
    ]
)
