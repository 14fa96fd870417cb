import ChamadeCore
import ChamadeSIP
import ChamadeWire
import Hummingbird

/// `/api/account`, `/api/voice-configs` and the plain-HTTP side of `/api/events` (SPEC §3).
struct AccountController {
    let core: ServerCore

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/api/account", use: account)
        router.get("/api/voice-configs", use: voiceConfigs)
        router.get("/api/events", use: eventsWithoutUpgrade)
    }

    @Sendable func account(_ request: Request, context: APIRequestContext) async throws -> AccountResponse {
        let sipReady = core.store.sip?.isRunning == true
        var platforms: [String: AccountResponse.PlatformInfo] = [:]
        for p in Platform.allCases {
            let available = p != .sip || sipReady
            platforms[p.rawValue] = .init(
                status: available ? "available" : "unavailable", nativeSampleRate: p.nativeRate.hertz,
                capabilities: p.capabilities)
        }
        let c = core.configuration
        return AccountResponse(
            plan: "self-hosted",
            features: [
                "audio_in": "ready", "audio_out": "ready", "text_chat": "ready",
                "hosted_stt": core.speech.transcriber == nil ? "unavailable" : "ready",
                "hosted_tts": core.speech.synthesizer == nil ? "unavailable" : "ready", "sip": sipReady ? "ready" : "unavailable",
            ],
            platforms: platforms, concurrentCalls: core.store.liveCallCount(apiKey: context.apiKey),
            sip: core.store.sip.map { sip in
                .init(
                    status: sipReady ? "ready" : "unavailable",
                    registrations: sip.registrations.map { .init(uri: $0.uri, state: $0.state.rawValue, lastStatus: $0.lastStatus) })
            },
            limits: .init(
                maxCallsPerKey: c.maxCallsPerKey, maxStreamsPerCall: c.maxStreamsPerCall,
                endedRetentionSeconds: c.endedRetentionSeconds, maxBodyBytes: ServerConfiguration.maxBodyBytes,
                maxHeaderBytes: ServerConfiguration.maxHeaderBytes, maxAudioFrameBytes: WireLimits.audioBytes))
    }

    @Sendable func voiceConfigs(_ request: Request, context: APIRequestContext) async throws -> VoiceConfigList {
        VoiceConfigList(
            tts: [VoiceConfigs.tts.enabled(core.speech.synthesizer != nil)],
            stt: [VoiceConfigs.stt.enabled(core.speech.transcriber != nil)])
    }

    @Sendable func eventsWithoutUpgrade(_ request: Request, context: APIRequestContext) async throws -> Response {
        throw APIError.badRequest("websocket_required", "open this URL as a WebSocket")
    }
}

/// The built-in speech presets (SPEC §7): enabled when the engine is on (`--tts`, `--stt`).
enum VoiceConfigs {
    static let tts = VoiceConfig(id: "espeak-en", provider: "espeak-ng", language: "en-US", enabled: false)
    static let stt = VoiceConfig(id: "pocketsphinx-en-us", provider: "pocketsphinx", language: "en-US", enabled: false)
    static let all = [tts, stt]
}

extension VoiceConfig {
    func enabled(_ on: Bool) -> VoiceConfig {
        var c = self
        c.enabled = on
        return c
    }
}
