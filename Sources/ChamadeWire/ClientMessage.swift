import Foundation

/// What a client sends as JSON text (SPEC §4): every field any message type uses. A field of the
/// wrong type does not fail the whole message: it is named in `invalidField`, so it gets its own
/// error code.
struct ClientMessage: Decodable {
    var type: String
    var audio: String?
    var sampleRate: Int?
    var receive: Bool?
    var text: String?
    var name: String?
    var digits: String?
    /// The first field that had the wrong type, if any.
    var invalidField: String?

    enum CodingKeys: String, CodingKey {
        case type, audio, receive, text, name, digits
        case sampleRate = "sample_rate"
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        var invalid: String?
        func field<T: Decodable>(_ key: CodingKeys, _: T.Type) -> T? {
            do {
                return try c.decodeIfPresent(T.self, forKey: key)
            } catch {
                if invalid == nil { invalid = key.rawValue }
                return nil
            }
        }
        audio = field(.audio, String.self)
        sampleRate = field(.sampleRate, Int.self)
        receive = field(.receive, Bool.self)
        text = field(.text, String.self)
        name = field(.name, String.self)
        digits = field(.digits, String.self)
        invalidField = invalid
    }

    /// The `call_error` code for a field of the wrong type.
    static func code(forField field: String) -> String {
        switch field {
        case "sample_rate": "unsupported_sample_rate"
        case "audio": "invalid_audio"
        case "text": "invalid_text"
        case "digits": "invalid_dtmf"
        default: "invalid_message"
        }
    }
}
