// swift-tools-version: 6.1
// The benchmarks: a package of their own, so the harness never enters the main build.
//   cd Benchmarks && swift package --disable-sandbox benchmark     (or: make bench)
import PackageDescription

let package = Package(
    name: "ChamadeBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "chamade", path: ".."),
        // Without the MallocInterposer trait named, resolution asks for a package the mirror lacks.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ChamadeBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ChamadeCore", package: "chamade"),
                .product(name: "ChamadeDSP", package: "chamade"),
                .product(name: "ChamadeEngine", package: "chamade"),
            ],
            path: "Benchmarks/ChamadeBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
