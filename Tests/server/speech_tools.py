"""The speech fixtures (fixtures/speech: espeak-ng sentences at 16 kHz and at 8 kHz, and their
reference text) and word accuracy, the score the STT tests hold the server's transcripts to."""
import os
import re
import wave

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "fixtures", "speech")


def load_wav(path):
    """A 16-bit mono WAV file: (its samples as an np.int16 array, its sample rate)."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, f"{path}: {8 * w.getsampwidth()}-bit, not 16-bit"
        assert w.getnchannels() == 1, f"{path}: {w.getnchannels()} channels, not mono"
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.int16), rate


def sentences():
    """The 12 reference sentences (line N of sentences.txt is the text of clean16k_NN / phone8k_NN)."""
    with open(os.path.join(FIXTURES, "sentences.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def fixture_path(kind, n):
    """The WAV of sentence `n` (1-based): `kind` is "clean16k" or "phone8k"."""
    return os.path.join(FIXTURES, f"{kind}_{n:02d}.wav")


def normalize(text):
    """The words of `text`: lowercase, punctuation dropped (an apostrophe inside a word is kept)."""
    return [w.strip("'") for w in re.findall(r"[a-z0-9']+", text.lower()) if w.strip("'")]


def word_errors(ref, hyp):
    """Substitutions + deletions + insertions turning word list `ref` into `hyp` (word-level
    Levenshtein distance)."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1,              # deletion of r
                               current[j - 1] + 1,           # insertion of h
                               previous[j - 1] + (r != h)))  # substitution (or match)
        previous = current
    return previous[-1]


def word_accuracy(refs, hyps):
    """1 − (S + D + I) / N over the pairs (refs[k], hyps[k]) of texts, N the number of reference
    words; negative when the hypotheses hold more errors than the references have words. To score
    transcripts whose utterances may be split differently from the references, pass one pair: the
    joined references and the joined hypotheses."""
    assert len(refs) == len(hyps), (len(refs), len(hyps))
    errors = n = 0
    for ref, hyp in zip(refs, hyps):
        r = normalize(ref)
        errors += word_errors(r, normalize(hyp))
        n += len(r)
    if n == 0:
        return 1.0 if errors == 0 else 0.0
    return 1.0 - errors / n
