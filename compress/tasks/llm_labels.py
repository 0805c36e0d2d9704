"""An LLM labels a task through a prompt and verbalisers: zero- and few-shot, calibrated, cached.

The teacher's output for a text is the log-probability of each label's verbaliser after the
prompt, teacher-forced: a verbaliser of several tokens sums its tokens' log-probs. Contextual
calibration ("calibrate before use", Zhao et al. 2021) divides the label probabilities by the
prior the prompt has on content-free inputs (``"N/A"``, ``""``, ``"[MASK]"``): in log space it
subtracts the log prior. Both figures stay available (:class:`LabelRows`).

Public API::

    Prompt(template, verbalisers, system=None, answer_prefix="", examples=(), chat=None)
    check_prompt(prompt, where) / check_data_labels(names, prompt, where)   # InputError, exit 2
    PromptLabeller(model, tokenizer, prompt, where="teacher.prompt")
        .render(text) -> str              # the prompt string the model sees
        .encode(texts) -> list[list[int]] # its token ids
        .score_ids(rows) -> np.ndarray    # [n, labels] verbaliser log-probs, one padded batch
        .cache_key(model_sha) -> str      # what the cached rows depend on
    score_verbalisers(model, input_ids, attention_mask, tokens, valid) -> Tensor [B, labels]
    verbaliser_table(ids) -> (tokens [L, K], valid [L, K])
    label_texts(labeller, texts, cache_dir=None, model_sha="", ...) -> LabelRows
    LabelRows: .raw, .calibrated, .prior, .predictions(calibrated), .probabilities(calibrated)

Batches are right-padded and every row is read at its own length, so padding never changes a
row's figures (causal attention never looks right). The cache keeps one file per chunk of
texts, written atomically, computed longest prompt first; a killed run resumes and loses at most
the chunk it was computing. Rows are keyed per text within a folder named by
:meth:`PromptLabeller.cache_key` (model weights, prompt, chat template, tokenizer, verbaliser
ids), so a changed prompt never serves stale rows. The raw rows do not depend on calibration,
which is applied on reading: switching it on or off re-labels nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress.common.files import atomic_write, sha256_json, write_json
from compress.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

TEXT = "{text}"
CONTENT_FREE = ("N/A", "", "[MASK]")
SCORER_VERSION = 1  # bump when the scoring changes what a cached row holds
_PROBE = "\x00probe text\x00"


@dataclass(frozen=True)
class Prompt:
    """How a text is put to the LLM.

    Attributes:
        template: the user's prompt; ``{text}`` marks where the text goes (required).
        verbalisers: label -> the text whose log-probability scores that label, e.g.
            ``{"negative": " negative", "positive": " positive"}``; the order is the label order.
        system: a system message (chat) or a first paragraph (plain).
        answer_prefix: what the answer starts with, before the verbaliser ("The sentiment is").
        examples: few-shot ``(text, label)`` pairs, answered with their label's verbaliser.
        chat: use the tokenizer's chat template; None: when it has one.
    """

    template: str
    verbalisers: dict[str, str]
    system: str | None = None
    answer_prefix: str = ""
    examples: tuple[tuple[str, str], ...] = ()
    chat: bool | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.verbalisers)


def check_prompt(prompt: Prompt, where: str = "teacher.prompt") -> None:
    """Refuse a template without ``{text}``, no labels, and few-shot labels no verbaliser names."""
    if TEXT not in prompt.template:
        raise InputError(f"{where}.template: must contain {{text}} where the text goes "
                         f"(got {prompt.template!r})")
    if len(prompt.verbalisers) < 2:
        raise InputError(f"{where}.verbalisers: needs at least two labels "
                         f"(got {list(prompt.verbalisers)})")
    for i, (_, label) in enumerate(prompt.examples):
        if label not in prompt.verbalisers:
            raise InputError(f"{where}.examples[{i}]: label {label!r} has no verbaliser "
                             f"(labels: {', '.join(prompt.verbalisers)})")


def check_data_labels(names: Sequence[str], prompt: Prompt, where: str = "data.labels",
                      prompt_where: str = "teacher.prompt") -> None:
    """Refuse label names in the data that no verbaliser names (the first one, listing all)."""
    unknown = [n for n in dict.fromkeys(names) if n not in prompt.verbalisers]
    if unknown:
        raise InputError(f"{where}: label {unknown[0]!r} has no verbaliser in "
                         f"{prompt_where}.verbalisers (named: {', '.join(prompt.verbalisers)})")


def verbaliser_table(ids: Sequence[Sequence[int]]):
    """``(tokens, valid)``: each label's verbaliser ids right-padded to the longest ([L, K]
    int64) and which of them are real ([L, K] bool)."""
    import torch

    k = max(len(v) for v in ids)
    tokens = torch.zeros(len(ids), k, dtype=torch.long)
    valid = torch.zeros(len(ids), k, dtype=torch.bool)
    for i, v in enumerate(ids):
        tokens[i, : len(v)] = torch.tensor(list(v), dtype=torch.long)
        valid[i, : len(v)] = True
    return tokens, valid


def score_verbalisers(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: each label's verbaliser log-probability after each right-padded prompt.

    Single-token verbalisers take one pass over the prompts. Longer ones take one pass over
    ``B * L`` rows: each prompt followed by a label's verbaliser (less its last token), so every
    verbaliser token is scored teacher-forced in that one pass. Only the positions read go
    through the output head (a 49k-word head on every prompt token would cost a fifth of the
    pass). Written with tensor ops only, so it traces to ONNX as it is.
    """
    import torch

    n_labels, k = tokens.shape
    lengths = attention_mask.sum(-1)
    ids, mask, lens = input_ids, attention_mask, lengths
    if k > 1:
        reps = input_ids.shape[0]
        pad = torch.zeros(reps * n_labels, k - 1, dtype=input_ids.dtype, device=input_ids.device)
        lens = lengths.repeat_interleave(n_labels)
        where = lens.unsqueeze(1) + torch.arange(k - 1, device=lens.device).unsqueeze(0)
        ids = torch.cat([input_ids.repeat_interleave(n_labels, 0), pad], 1)
        ids = ids.scatter(1, where, tokens[:, :-1].repeat(reps, 1))
        mask = torch.cat([attention_mask.repeat_interleave(n_labels, 0), pad.to(mask.dtype)], 1)
        mask = mask.scatter(1, where, valid[:, 1:].repeat(reps, 1).to(mask.dtype))
    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)[0]
    read = lens.unsqueeze(1) - 1 + torch.arange(k, device=lens.device).unsqueeze(0)  # [R, K]
    picked = hidden.gather(1, read.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logp = torch.log_softmax(model.get_output_embeddings()(picked).float(), dim=-1)
    if k == 1:
        return logp[:, 0, :].index_select(1, tokens[:, 0])
    reps = input_ids.shape[0]
    per_token = logp.gather(-1, tokens.repeat(reps, 1).unsqueeze(-1)).squeeze(-1)
    summed = (per_token * valid.repeat(reps, 1).to(per_token.dtype)).sum(-1)
    return summed.view(reps, n_labels)


class PromptLabeller:
    """A causal LM, its tokenizer and a :class:`Prompt`, checked once.

    Raises (at construction):
        InputError: a template without ``{text}``; a verbaliser that tokenises to nothing; two
            labels with the same verbaliser (or the same tokens); few-shot labels not named;
            ``chat: true`` for a tokenizer without a chat template.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, prompt: Prompt,
                 where: str = "teacher.prompt"):
        check_prompt(prompt, where)
        self.model, self.tokenizer, self.prompt, self.where = model, tokenizer, prompt, where
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if prompt.chat and not has_chat:
            raise InputError(f"{where}.chat: the tokenizer has no chat template")
        self.chat = has_chat if prompt.chat is None else prompt.chat
        self.verbaliser_ids = self._verbaliser_ids()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _verbaliser_ids(self) -> list[list[int]]:
        ids: list[list[int]] = []
        seen: dict[tuple[int, ...], str] = {}
        for label, text in self.prompt.verbalisers.items():
            v = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if not v:
                raise InputError(f"{self.where}.verbalisers.{label}: {text!r} tokenises to "
                                 "nothing (give it a word the tokenizer knows)")
            if tuple(v) in seen:
                raise InputError(f"{self.where}.verbalisers.{label}: {text!r} is the same "
                                 f"verbaliser as label {seen[tuple(v)]!r} (token ids {v})")
            seen[tuple(v)] = label
            ids.append(v)
        return ids

    def render(self, text: str) -> str:
        """The prompt string for ``text``: few-shot examples first, then the text."""
        p = self.prompt
        fill = p.template.replace
        if self.chat:
            messages = [{"role": "system", "content": p.system}] if p.system else []
            for ex_text, label in p.examples:
                messages += [{"role": "user", "content": fill(TEXT, ex_text)},
                             {"role": "assistant",
                              "content": p.answer_prefix + p.verbalisers[label]}]
            messages.append({"role": "user", "content": fill(TEXT, text)})
            head = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
            return head + p.answer_prefix
        parts = [p.system] if p.system else []
        parts += [fill(TEXT, t) + p.answer_prefix + p.verbalisers[y] for t, y in p.examples]
        parts.append(fill(TEXT, text) + p.answer_prefix)
        return "\n\n".join(parts)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text's prompt (a chat template writes its own special tokens)."""
        special = not self.chat
        return [list(self.tokenizer(self.render(t), add_special_tokens=special)["input_ids"])
                for t in texts]

    def score_ids(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """``[n, labels]`` float64 verbaliser log-probs of token-id rows, as one padded batch."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
            mask[i, : len(r)] = 1
        tokens, valid = verbaliser_table(self.verbaliser_ids)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = score_verbalisers(self.model, ids.to(device), mask.to(device),
                                    tokens.to(device), valid.to(device))
        return out.double().cpu().numpy()

    def cache_key(self, model_sha: str) -> str:
        """sha256 of what a cached row depends on: the model's weights, the prompt as rendered
        (template, system, few-shot, chat template) and tokenised, the verbaliser ids."""
        probe = self.render(_PROBE)
        return sha256_json({
            "version": SCORER_VERSION, "model": model_sha, "labels": list(self.prompt.labels),
            "verbaliser_ids": self.verbaliser_ids, "rendered": probe, "chat": self.chat,
            "probe_ids": self.encode([_PROBE])[0],
        })


@dataclass
class LabelRows:
    """The LLM's labels of some texts. ``raw`` holds the verbaliser log-probs ([N, L], not
    normalised over the labels); ``prior`` the label prior of the content-free inputs ([L],
    sums to 1), None when calibration is off."""

    labels: tuple[str, ...]
    raw: np.ndarray
    prior: np.ndarray | None = None
    content_free_raw: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def normalised(self) -> np.ndarray:
        """log p(label | text) with the label set as the whole world (log-softmax of raw)."""
        return _log_softmax(self.raw)

    @property
    def calibrated(self) -> np.ndarray:
        """Log-probs over the labels after dividing by the prior (= ``normalised`` when off)."""
        if self.prior is None:
            return self.normalised
        return _log_softmax(self.normalised - np.log(self.prior))

    def predictions(self, calibrated: bool = True) -> np.ndarray:
        return (self.calibrated if calibrated else self.raw).argmax(-1)

    def probabilities(self, calibrated: bool = True) -> np.ndarray:
        """Soft labels ([N, L], rows sum to 1): what a student distils from."""
        return np.exp(self.calibrated if calibrated else self.normalised)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def contextual_prior(content_free_raw: np.ndarray) -> np.ndarray:
    """The label prior: the mean over content-free inputs of their label probabilities."""
    return np.exp(_log_softmax(content_free_raw)).mean(0)


def label_texts(labeller: PromptLabeller, texts: Sequence[str],
                cache_dir: str | Path | None = None, model_sha: str = "",
                calibrate: bool = True, content_free: Sequence[str] = CONTENT_FREE,
                chunk_size: int = 64, batch_size: int = 8, progress: bool = True) -> LabelRows:
    """Label ``texts`` (and the content-free inputs, when ``calibrate``) with the LLM.

    With ``cache_dir``, rows live in ``cache_dir/<cache_key[:16]>/`` and only missing texts are
    computed, longest prompt first, ``chunk_size`` texts a file, in padded batches of
    ``batch_size``. A tqdm bar counts texts and shows the time left.
    """
    if calibrate and not content_free:
        raise InputError(f"{labeller.where}.content_free: calibration needs at least one "
                         "content-free input")
    wanted = (list(content_free) if calibrate else []) + list(texts)
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir) / labeller.cache_key(model_sha)[:16]
        write_json(folder / "key.json", {"model_sha256": model_sha,
                                         "labels": list(labeller.prompt.labels),
                                         "verbaliser_ids": labeller.verbaliser_ids,
                                         "rendered_example": labeller.render("{text}")})
    rows = _rows(labeller, wanted, folder, chunk_size, batch_size, progress)
    n_cf = len(content_free) if calibrate else 0
    table = np.stack([rows[_sha(t)] for t in wanted]) if wanted else np.zeros((0, 0))
    cf, raw = table[:n_cf], table[n_cf:]
    prior = contextual_prior(cf) if calibrate else None
    return LabelRows(labeller.prompt.labels, raw, prior, cf)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_chunks(folder: Path) -> dict[str, np.ndarray]:
    """text sha256 -> raw row, from every chunk file in ``folder``."""
    rows: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("rows-*.npz")):
        with np.load(path, allow_pickle=False) as z:
            rows.update(zip(z["text_sha256"].tolist(), z["raw"], strict=True))
    return rows


def _rows(labeller: PromptLabeller, texts: list[str], folder: Path | None, chunk_size: int,
          batch_size: int, progress: bool) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    rows = read_chunks(folder) if folder is not None and folder.is_dir() else {}
    todo = {_sha(t): t for t in texts if _sha(t) not in rows}
    shas = list(todo)
    ids = dict(zip(shas, labeller.encode([todo[s] for s in shas]), strict=True))
    shas.sort(key=lambda s: -len(ids[s]))  # longest first: memory peaks early, ETA errs long
    n_done = len({_sha(t) for t in texts}) - len(shas)
    bar = tqdm(total=n_done + len(shas), initial=n_done, unit="text", desc="LLM labels",
               disable=not progress)
    try:
        for start in range(0, len(shas), chunk_size):
            chunk = shas[start:start + chunk_size]
            raw = np.concatenate([labeller.score_ids([ids[s] for s in chunk[b:b + batch_size]])
                                  for b in range(0, len(chunk), batch_size)])
            rows.update(zip(chunk, raw, strict=True))
            if folder is not None:
                _write_chunk(folder, chunk, raw)
            bar.update(len(chunk))
    finally:
        bar.close()
    return rows


def _write_chunk(folder: Path, shas: list[str], raw: np.ndarray) -> None:
    name = hashlib.sha256("".join(shas).encode()).hexdigest()[:16]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, text_sha256=np.array(shas), raw=raw)

    atomic_write(folder / f"rows-{name}.npz", write)
