"""A causal LM as the run's teacher: it labels every text the student sees, and its prompt scoring
ships to ONNX so the benchmark times it beside the student.

``label_with_llm`` loads the LLM (``compress.models.causal_lm``), puts each text of the train,
transfer, val and test splits to it through the prompt (``compress.tasks.llm_labels``: chunked,
resumable, longest first), and writes into the teacher's folder:

- ``labels.npz``: per distinct text, its sha256, the raw verbaliser log-probs and the label
  log-probs as configured (calibrated or not), in the student's label order (the data's labels
  first, then any other verbaliser), plus the test prompts' token ids (ragged: ``test_ids`` and
  ``test_offsets``) and gold-free facts; written atomically;
- ``model.onnx``: the prompt scorer (token ids in, label log-probs out), parity checked against
  torch, with the sha256 of ``labels.npz`` in its metadata so its own hash follows the labels
  (every later step's resume key and the student's teacher cache key change with them);
- ``model-int8.onnx``: the LLM's own int8, the peer a user would otherwise ship.

Gold labels are never read here. ``check_llm_config`` is ``compress validate``'s torch-free look
at ``teacher.llm``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.common.files import atomic_write, sha256_file
from compress.errors import InputError
from compress.tasks.llm_label_file import LABELS_FILE, write_labels

if TYPE_CHECKING:
    from compress.config.llm_teacher import PromptConfig

INT8_FILE = "model-int8.onnx"
LABELS_SHA_KEY = "compress.llm_labels_sha256"
PARITY_PROMPTS = 4


@dataclass
class LLMLabels:
    """What ``label_with_llm`` wrote, for the stage's report and artifacts."""

    scorer: Path
    int8: Path
    labels: Path
    facts: dict[str, Any]  # the LLMTeacherReport's fields


def to_prompt(cfg: PromptConfig):
    """The config's prompt as ``compress.tasks.llm_labels.Prompt``."""
    from compress.tasks.llm_labels import Prompt

    return Prompt(cfg.template, dict(cfg.verbalisers), cfg.system, cfg.answer_prefix,
                  tuple((e.text, e.label) for e in cfg.examples), cfg.chat)


def label_order(data_names: list[str] | None, verbaliser_labels: tuple[str, ...]) -> list[str]:
    """The student's logits: the data's labels in its own class order (so gold class ids stay
    valid), then the verbalisers the data does not use. Raises InputError for a data label no
    verbaliser names."""
    from compress.tasks.llm_labels import Prompt, check_data_labels

    names = list(data_names or [])
    check_data_labels(names, Prompt("{text}", dict.fromkeys(verbaliser_labels, "")))
    return names + [v for v in verbaliser_labels if v not in names]


def split_texts(data) -> dict[str, list[str]]:
    """The texts of each split the LLM labels (a dataset without ``sentences`` is refused)."""
    out = {}
    for name in ("train", "transfer", "val", "test"):
        ds = getattr(data, name)
        if ds is None:
            continue
        texts = getattr(ds, "sentences", None)
        if texts is None:
            raise InputError(f"data: an llm teacher labels text, but the {name} split holds no "
                             "sentences (use data.source: text)")
        out[name] = list(texts)
    return out


def _device(choice: str, run_device) -> str:
    if choice == "auto":
        return getattr(run_device, "type", str(run_device))
    return choice


def label_with_llm(tcfg, data, out_dir: Path, cache_dir: Path | None, run_device="cpu",
                   progress: bool = True) -> LLMLabels:
    """Label the data's texts with ``tcfg.llm`` and write the teacher's files into ``out_dir``
    (see the module docstring). ``cache_dir``: where labelled rows are kept across runs."""
    from compress.models.causal_lm import load_causal_lm, resolve_causal_lm, source_sha256
    from compress.tasks.llm_labels import CONTENT_FREE, PromptLabeller, label_texts

    source = resolve_causal_lm(tcfg.llm, "teacher.llm")
    model, tokenizer = load_causal_lm(source, "teacher.llm", tcfg.trust_remote_code)
    labeller = PromptLabeller(model, tokenizer, to_prompt(tcfg.prompt), "teacher.prompt")
    order = label_order(data.info.class_names, labeller.prompt.labels)
    cols = [labeller.prompt.labels.index(name) for name in order]
    texts = split_texts(data)
    unique = list(dict.fromkeys(t for split in texts.values() for t in split))
    sha = source_sha256(source)
    device = _device(tcfg.device, run_device)
    model.to(device)
    t0 = time.perf_counter()
    rows = label_texts(labeller, unique, cache_dir, sha, tcfg.calibrate,
                       batch_size=tcfg.label_batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    model.to("cpu")
    test_ids = labeller.encode(texts["test"])
    labels = out_dir / LABELS_FILE
    cf_ids = labeller.encode(list(CONTENT_FREE)) if tcfg.calibrate else []
    write_labels(labels, unique, rows.raw[:, cols], rows.calibrated[:, cols], order, test_ids,
                 tcfg.calibrate, cf_ids, cols)
    scorer, parity = _export(model, labeller, test_ids, out_dir / "model.onnx", sha256_file(labels))
    int8 = _int8(scorer, out_dir / INT8_FILE, tcfg.int8)
    lengths = sorted(len(r) for r in test_ids)
    prior = rows.prior[cols].round(6).tolist() if rows.prior is not None else None
    facts = {"llm": tcfg.llm, "llm_sha256": sha, "params": sum(p.numel() for p in model.parameters()),
             "labels": order, "calibrate": tcfg.calibrate, "prior": prior, "texts": len(unique),
             "seconds_per_text": round(seconds / len(unique), 4) if unique else None,
             "parity_max_abs": parity, "prompt_median_tokens": lengths[len(lengths) // 2],
             "bytes": scorer.stat().st_size, "int8": tcfg.int8, "int8_bytes": int8.stat().st_size}
    return LLMLabels(scorer, int8, labels, facts)


def _export(model, labeller, test_ids: list[list[int]], path: Path, labels_sha: str) -> tuple[Path, float]:
    """The scorer's ONNX, parity checked on the first test prompts, with the labels' hash in its
    metadata (written atomically)."""
    import onnx

    from compress.export.llm_scorer import check_scorer_parity, export_prompt_scorer

    tmp = path.with_name(f".{path.name}.export")
    export_prompt_scorer(model, labeller.verbaliser_ids, tmp, test_ids[0])
    parity = check_scorer_parity(tmp, model, labeller.verbaliser_ids, test_ids[:PARITY_PROMPTS])
    proto = onnx.load(str(tmp))
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, LABELS_SHA_KEY: labels_sha,
                                        "compress.verbaliser_ids": json.dumps(labeller.verbaliser_ids)})
    atomic_write(path, lambda p: onnx.save_model(proto, str(p)))
    tmp.unlink()
    return path, float(parity)


def _int8(scorer: Path, dst: Path, mode: str) -> Path:
    from compress.export.llm_scorer import quantize_scorer_int8

    return quantize_scorer_int8(scorer, dst, mode)


# -- validate ------------------------------------------------------------------------------------


def check_llm_config(cfg, path: Path) -> None:
    """``compress validate``'s look at ``teacher.llm`` without torch: a built-in or a GGUF file is
    resolved as the run resolves it; a directory needs a config.json of a ...ForCausalLM model
    (the run checks the architecture against transformers' own table when it loads).

    Raises:
        ConfigError: one line, ``file:line teacher.llm: ...``.
    """
    from compress.config.yamlmap import line_of, load_yaml
    from compress.errors import ConfigError
    from compress.models.causal_lm import resolve_causal_lm  # stdlib until load

    if cfg.teacher.llm is None:
        return
    try:
        resolve_causal_lm(cfg.teacher.llm, "teacher.llm", by_table=False)
    except InputError as e:
        _, lines = load_yaml(path)
        raise ConfigError(f"{path}:{line_of(lines, ('teacher', 'llm'))} {e}") from None
