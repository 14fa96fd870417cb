#!/usr/bin/env python3
"""Swift benchmark medians against the C baselines run in the same sitting, as ratios Swift / C.

    scripts/compare-baselines.py BENCH.md BASELINES.tsv

BENCH.md: `swift package benchmark --format markdown` output (make bench).
BASELINES.tsv: `../shared/baselines/run.sh all` output (make baselines).
"""
import re
import sys


def swift_medians(path):
    """{benchmark name: (p50 wall, unit)} from package-benchmark's markdown."""
    out, name = {}, None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^### (.+)", line)
        if m:
            name = m.group(1).strip()
            continue
        m = re.match(r"^\| Time \(wall clock\) \((\S+)\) \*\s*\|(.*)", line)
        if m and name:
            cells = [c.strip() for c in m.group(2).split("|") if c.strip()]
            unit = m.group(1)
            scale = {"ns": 1, "μs": 1000, "us": 1000, "ms": 1_000_000}[unit]
            out[name] = float(cells[2].replace(",", "")) * scale
    return out


def c_rows(path):
    rs, mx, rb = {}, {}, []
    for line in open(path, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        if f[0] == "RS":
            rs[(f[2], int(f[3]), int(f[4]))] = float(f[5])
        elif f[0] == "MX" and f[1] == "clangO2" and f[3] == "warm":
            mx[(f[2], int(f[4]))] = float(f[5])
        elif f[0] == "RB" and f[2] == "1thread":
            rb.append(float(f[5]))
    return rs, mx, rb


def main():
    swift = swift_medians(sys.argv[1])
    rs, mx, rb = c_rows(sys.argv[2])
    print(f"{'stage':42} {'Swift ns':>10} {'C ns':>10} {'Swift/C':>8}")
    names = {"fastest": "src_sinc_fastest", "medium": "src_sinc_medium", "best": "src_sinc_best", "linear": "src_linear"}
    ratios = {}
    for (conv, a, b), c in sorted(rs.items()):
        q = [k for k, v in names.items() if v == conv][0]
        label = f"convert {'sinc-' + q if q != 'linear' else 'linear'} {a // 1000}k→{b // 1000}k"
        if label in swift:
            r = swift[label] / c
            ratios.setdefault(q, []).append(r)
            print(f"{label:42} {swift[label]:10.0f} {c:10.0f} {r:8.2f}")
    for q, rr in ratios.items():
        g = 1.0
        for r in rr:
            g *= r
        print(f"{'  geomean ' + q:42} {'':10} {'':10} {g ** (1 / len(rr)):8.2f}")
    for n in (10, 100, 1000):
        label = f"mix-minus N={n} 48k"
        if label in swift:
            best = min(mx.get(("on", n), 1e18), mx.get(("on_x4", n), 1e18))
            print(f"{label:42} {swift[label]:10.0f} {best:10.0f} {swift[label] / best:8.2f}")
    label = "ring push random, pop 960"
    if label in swift and rb:
        c = sorted(rb)[len(rb) // 2]
        print(f"{label:42} {swift[label]:10.0f} {c:10.0f} {swift[label] / c:8.2f}")
    label = "aligner 48k random chunks"
    if label in swift:
        print(f"{label:42} {swift[label]:10.0f} {'-':>10} {'-':>8}")


main()
