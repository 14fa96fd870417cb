// swift-tools-version: 6.1
import PackageDescription

// Swift 6 language mode everywhere; the upcoming features STYLE.md asks for.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "chamade",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chamade", targets: ["chamade"]),
        .library(name: "ChamadeEngine", targets: ["ChamadeEngine"]),
        .library(name: "ChamadeCore", targets: ["ChamadeCore"]),
        .library(name: "ChamadeDSP", targets: ["ChamadeDSP"]),
        .library(name: "ChamadeAudioFile", targets: ["ChamadeAudioFile"]),
        .library(name: "ChamadeTools", targets: ["ChamadeTools"]),
        .library(name: "ChamadeMedia", targets: ["ChamadeMedia"]),
        .library(name: "ChamadeServer", targets: ["ChamadeServer"]),
        .library(name: "ChamadeSIP", targets: ["ChamadeSIP"]),
        .library(name: "ChamadeWire", targets: ["ChamadeWire"]),
        .library(name: "ChamadeCluster", targets: ["ChamadeCluster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // Hummingbird's default traits pull swift-configuration; none of them are needed here.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", from: "0.12.1"),
        // The cluster (SPEC §10): SHA-256 for key tags, and HTTP between nodes (both already built
        // for the MCP SDK's EventSource).
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // C libraries, found through pkg-config (Debian: libsamplerate0-dev, libopus-dev, libsndfile1-dev).
        .systemLibrary(
            name: "CSampleRate", path: "CShims/CSampleRate", pkgConfig: "samplerate",
            providers: [.apt(["libsamplerate0-dev"])]),
        .systemLibrary(
            name: "CSndFile", path: "CShims/CSndFile", pkgConfig: "sndfile",
            providers: [.apt(["libsndfile1-dev"])]),
        .systemLibrary(
            name: "COpus", path: "CShims/COpus", pkgConfig: "opus",
            providers: [.apt(["libopus-dev"])]),
        // libre (Debian libre-dev 1.1.0): SIP signalling and SDP only; the shim header defines the
        // feature macros libre's headers need and wraps its variadic functions (one line each).
        .systemLibrary(
            name: "CLibre", path: "CShims/CLibre", pkgConfig: "libre",
            providers: [.apt(["libre-dev"])]),
        // espeak-ng (Debian libespeak-ng-dev 1.51): the built-in TTS; no variadic functions.
        .systemLibrary(
            name: "CEspeakNG", path: "CShims/CEspeakNG", pkgConfig: "espeak-ng",
            providers: [.apt(["libespeak-ng-dev"])]),
        // PocketSphinx (Debian libpocketsphinx-dev 5prealpha, model pocketsphinx-en-us): the built-in
        // STT; its one variadic function (cmd_ln_init) is avoided, not wrapped.
        .systemLibrary(
            name: "CPocketSphinx", path: "CShims/CPocketSphinx", pkgConfig: "pocketsphinx",
            providers: [.apt(["libpocketsphinx-dev", "libsphinxbase-dev", "pocketsphinx-en-us"])]),
        // hiredis (Debian libhiredis-dev 0.14): the cluster's Redis client, behind ChamadeCluster.
        .systemLibrary(
            name: "CHiredis", path: "CShims/CHiredis", pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"])]),
        // Our own C: one-line typed wrappers for what Swift cannot call (variadic opus_*_ctl).
        .target(name: "CChamadeShims", dependencies: ["COpus"], path: "CShims/CChamadeShims"),
        // Counting malloc wrappers, linked only into `chamade` and the tests: proves the tick allocates nothing.
        .target(name: "CChamadeMallocCounter", path: "CShims/CChamadeMallocCounter"),

        .target(name: "ChamadeCore", swiftSettings: swiftSettings),
        .target(
            name: "ChamadeDSP",
            dependencies: ["ChamadeCore", "CSampleRate", "COpus", "CChamadeShims"],
            swiftSettings: swiftSettings),
        .target(name: "ChamadeAudioFile", dependencies: ["CSndFile"], swiftSettings: swiftSettings),
        .target(
            name: "ChamadeEngine", dependencies: ["ChamadeCore", "ChamadeDSP", "CChamadeShims"],
            swiftSettings: swiftSettings),
        // Platform legs' media plane: RTP/RTCP sockets, jitter buffer to codec to room, media threads.
        .target(
            name: "ChamadeMedia", dependencies: ["ChamadeEngine", "ChamadeCore", "ChamadeDSP", "CChamadeShims"],
            swiftSettings: swiftSettings),
        // What WebSocket clients send (SPEC §4), decoded and checked apart from the server, so it can be fuzzed.
        .target(name: "ChamadeWire", dependencies: ["ChamadeCore"], swiftSettings: swiftSettings),
        // SIP signalling on libre: one owner (SIPStack) running libre's loop on its own thread.
        .target(name: "ChamadeSIP", dependencies: ["CLibre", "ChamadeMedia"], swiftSettings: swiftSettings),
        // Speech built in (SPEC §7): espeak-ng's one owner, off every real-time thread.
        .target(
            name: "ChamadeSpeech",
            dependencies: ["ChamadeCore", "ChamadeDSP", "ChamadeEngine", "CEspeakNG", "CPocketSphinx", "CChamadeShims"],
            swiftSettings: swiftSettings),
        .target(
            name: "ChamadeTools",
            dependencies: [
                "ChamadeEngine", "ChamadeAudioFile", "ChamadeCore", "ChamadeMedia", "ChamadeDSP", "ChamadeSpeech",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swiftSettings),
        // Several nodes on one Redis (SPEC §10): leases, room claims, the call index, events across nodes.
        .target(
            name: "ChamadeCluster",
            dependencies: [
                "CHiredis", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "ChamadeServer",
            dependencies: [
                "ChamadeEngine", "ChamadeCore", "ChamadeMedia", "ChamadeSIP", "ChamadeSpeech", "ChamadeWire", "ChamadeCluster",
                "CChamadeShims", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // The OpenAPI document is the source of truth for the API and is served as it is.
            resources: [.copy("Resources/openapi.json")],
            swiftSettings: swiftSettings),
        .target(
            name: "ChamadeLoadTest",
            dependencies: [
                "ChamadeCore",
                "ChamadeMedia",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
        // `chamade mcp` (SPEC §8): MCP over stdio (the official Swift SDK), a client of `serve`.
        .target(
            name: "ChamadeMCP",
            dependencies: [
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "ChamadeTesting",
            dependencies: ["ChamadeCore", "ChamadeAudioFile"],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "chamade",
            dependencies: [
                "ChamadeTools", "ChamadeServer", "ChamadeEngine", "ChamadeMedia", "ChamadeLoadTest", "ChamadeMCP", "ChamadeCluster",
                "CChamadeMallocCounter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(
            name: "ChamadeCoreTests", dependencies: ["ChamadeCore", "ChamadeTesting"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeDSPTests", dependencies: ["ChamadeDSP", "ChamadeTesting"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeEngineTests",
            dependencies: ["ChamadeEngine", "ChamadeTesting", "CChamadeMallocCounter", "CChamadeShims"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeMediaTests",
            dependencies: ["ChamadeMedia", "ChamadeEngine", "ChamadeTesting", "CChamadeMallocCounter", "CChamadeShims"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeServerTests",
            dependencies: [
                "ChamadeServer", "ChamadeEngine",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeClusterTests",
            dependencies: ["ChamadeCluster", .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            swiftSettings: swiftSettings),
        .testTarget(name: "ChamadeWireTests", dependencies: ["ChamadeWire", "ChamadeCore"], swiftSettings: swiftSettings),
        .testTarget(name: "ChamadeSIPTests", dependencies: ["ChamadeSIP", "ChamadeMedia"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeSpeechTests",
            dependencies: ["ChamadeSpeech", "ChamadeCore", "ChamadeEngine", "ChamadeAudioFile", "ChamadeTesting", "CChamadeMallocCounter"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeAudioFileTests", dependencies: ["ChamadeAudioFile", "ChamadeTesting"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ChamadeToolsTests",
            dependencies: ["ChamadeTools", "ChamadeAudioFile", "ChamadeTesting", "chamade"],
            swiftSettings: swiftSettings),
    ]
)
