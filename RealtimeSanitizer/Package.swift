// swift-tools-version: 6.1
// The tick under clang's RealtimeSanitizer (issue 13): a package of its own, because its tests link
// the rtsan runtime, which intercepts malloc, locks and blocking calls for the whole process.
//   make test-rtsan   (links /opt/swift/usr/lib/clang/*/lib/linux/libclang_rt.rtsan-x86_64.a)
import PackageDescription

let package = Package(
    name: "ChamadeRealtimeSanitizer",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "chamade", path: "..")],
    targets: [
        // The runtime's entry points, declared for Swift (strong: this package always links it).
        .target(name: "CRealtimeSanitizer"),
        .testTarget(
            name: "RealtimeSanitizerTests",
            dependencies: ["CRealtimeSanitizer", .product(name: "ChamadeEngine", package: "chamade"),
                .product(name: "ChamadeCore", package: "chamade")]),
    ]
)
