"""Seconds for `ablate data check` and `ablate data stats` on a 1-million-token CoNLL file (floor: <= 5 s each).

The file: the official FT test gold (149,276 characters, 2,035 sentences) repeated until it holds >= 1,000,000
tokens, written once under bench/out/. Each command runs as a user runs it (a fresh `ablate` process, start-up
included), 3 times; medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / ".." / "shared" / "data" / "rocling" / "rocling23_truth_FT.txt"
ABLATE = Path(sys.executable).parent / "ablate"


def build(out: Path, tokens: int) -> tuple[Path, int]:
    text = DATA.read_text(encoding="utf-8").rstrip("\n") + "\n\n"
    per = sum(1 for line in text.splitlines() if line.strip())
    copies = -(-tokens // per)
    path = out / f"conll_{copies * per}.txt"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text * copies, encoding="utf-8")
    return path, copies * per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    args = ap.parse_args()
    path, n = build(args.out, args.tokens)
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(f"{path.name}: {n:,} tokens, {path.stat().st_size / 2**20:.1f} MiB")
    rows = []
    for cmd in ("check", "stats"):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = subprocess.run([str(ABLATE), "data", cmd, f"{path}:ft"], capture_output=True, text=True)
            times.append(time.perf_counter() - t)
            if r.returncode != 0:
                sys.exit(f"ablate data {cmd} failed: {r.stderr[-2000:]}")
        rows.append(f"| `ablate data {cmd}` | {statistics.median(times):.2f} s | {', '.join(f'{x:.2f}' for x in times)} | "
                    f"{'met' if statistics.median(times) <= 5 else 'NOT met'} |")
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print("\n| command | median | runs (s) | floor 5 s |\n|---|---:|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
