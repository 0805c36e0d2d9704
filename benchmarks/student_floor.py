"""How fast a ResNet student of each shape can be beside the demo's teacher: untrained students
(latency depends on the graph, not the weights) timed interleaved with the teacher in one session.

    python benchmarks/student_floor.py [--runs 300] [--opt-level all] [--repeat 1]

Prints p50 and the speedup over the teacher for each (width, depth, stem stride); with ``--repeat N`` it
N interleaved sessions one after another and gives each speedup's range across them (how far a
ratio timed side by side moves from session to session). The teacher is the demo's
(width 32, depth [2, 2, 2]) at the demo's input (1x1x32x32), 1 thread, on the CPU clock. It tells
a search which speedups are on the table at all before anything is trained.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

# (width, depth, stem stride); the first is the teacher
SHAPES = [(32, (2, 2, 2), 1), (8, (1, 1, 1), 1), (6, (1, 1, 1), 1), (4, (1, 1, 1), 1),
          (3, (1, 1, 1), 1), (2, (1, 1, 1), 1), (8, (1, 1), 1), (4, (1, 1), 1), (4, (1,), 1),
          (16, (1, 1, 1), 2), (12, (1, 1, 1), 2), (8, (1, 1, 1), 2), (6, (1, 1, 1), 2),
          (4, (1, 1, 1), 2), (8, (1, 1), 2)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--opt-level", default="all")
    p.add_argument("--repeat", type=int, default=1, help="interleaved sessions, one after another")
    args = p.parse_args(argv)

    import torch

    from compress.bench.latency import measure_interleaved
    from compress.models.cnn import ResNet

    with tempfile.TemporaryDirectory() as tmp:
        paths, params = [], []
        for width, depth, stride in SHAPES:
            model = ResNet(1, 10, width, depth, stem_stride=stride).eval()
            path = Path(tmp) / f"w{width}-{'-'.join(map(str, depth))}-s{stride}.onnx"
            torch.onnx.export(model, torch.zeros(1, 1, 32, 32), str(path), opset_version=18,
                              dynamo=False, input_names=["input"], output_names=["logits"])
            paths.append(path)
            params.append(sum(t.numel() for t in model.parameters()))
        sessions = [measure_interleaved(paths, None, 1, args.opt_level, args.runs)
                    for _ in range(max(1, args.repeat))]
    print(f"1 thread, opt level {args.opt_level}, {args.runs}+ interleaved runs, clock "
          f"{sessions[0][0].clock}, {len(sessions)} session(s)")
    print("| width | depth | stem stride | params | p50 ms (first session) "
          "| speedup vs teacher (range over sessions) |")
    print("|---|---|---|---|---|---|")
    for i, ((width, depth, stride), n) in enumerate(zip(SHAPES, params, strict=True)):
        ups = [found[0].stats.p50 / found[i].stats.p50 for found in sessions]
        span = f"{min(ups):.1f}x" if len(ups) == 1 else f"{min(ups):.1f}-{max(ups):.1f}x"
        print(f"| {width} | {list(depth)} | {stride} | {n:,} | {sessions[0][i].stats.p50:.4f} | {span} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
