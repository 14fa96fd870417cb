/// Word accuracy of a transcript: 1 − (substitutions + deletions + insertions) / reference words,
/// from a word-level Levenshtein alignment, over lowercase words without punctuation.
public enum WordAccuracy {
    public static func words(_ text: String) -> [String] {
        text.lowercased().split { !$0.isLetter && !$0.isNumber && $0 != "'" }.map(String.init)
    }

    /// Edits between two word sequences.
    public static func edits(_ reference: [String], _ hypothesis: [String]) -> Int {
        var previous = Array(0...hypothesis.count)
        for (i, r) in reference.enumerated() {
            var current = [i + 1] + [Int](repeating: 0, count: hypothesis.count)
            for (j, h) in hypothesis.enumerated() {
                current[j + 1] = min(previous[j] + (r == h ? 0 : 1), previous[j + 1] + 1, current[j] + 1)
            }
            previous = current
        }
        return previous[hypothesis.count]
    }

    /// The accuracy of `hypothesis` against `reference` (both whole texts).
    public static func of(_ hypothesis: String, against reference: String) -> Double {
        let ref = words(reference)
        guard !ref.isEmpty else { return 0 }
        return 1 - Double(edits(ref, words(hypothesis))) / Double(ref.count)
    }
}
