"""Downstream quality of an embedding model: a linear probe on its frozen embeddings.

A logistic regression (scikit-learn's defaults: L2, C=1, on the embeddings as the model gives
them) is fitted on the embeddings of the probe set's ``fit`` part and scored on its ``score``
part, once per model, with the same split and settings for every model; the student's
``probe_retention`` is its probe accuracy as a percentage of the teacher's (DistilBERT's "97% of
the quality", measured downstream). The probe set is labelled text that the
distillation never saw (``data.probe``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    import numpy as np


@dataclass
class ProbeSet:
    """Labelled sentences, tokenized (``TextDataset``-like: items ``(inputs, _)``), in two parts."""

    name: str
    fit: Any  # dataset of the sentences the probe is fitted on
    fit_labels: list[int]
    score: Any  # dataset of the sentences it is scored on
    score_labels: list[int]
    label_names: tuple[str, ...] = ()


def probe_accuracy(fit_x: np.ndarray, fit_y: Sequence[int], score_x: np.ndarray,
                   score_y: Sequence[int], c: float = 1.0, max_iter: int = 2000) -> float:
    """Accuracy on ``score_x`` of an L2-regularised logistic regression (inverse strength ``c``,
    lbfgs) fitted on ``fit_x``, on the features as given. The setting is fixed, the same for every
    model: on 1,050 / 450 movie-review snippets the teacher's probe scored 0.762 this way and 0.696
    with standardised features (which overfit 384 dimensions at C=1)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    fit_y, score_y = np.asarray(fit_y), np.asarray(score_y)
    if len(np.unique(fit_y)) < 2:
        raise InputError(f"linear probe: the fit part has one class only ({len(fit_y)} samples)")
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(np.asarray(fit_x, dtype=np.float64), fit_y)
    return float((clf.predict(np.asarray(score_x, dtype=np.float64)) == score_y).mean())


def retention(accuracy: float, reference: float) -> float:
    """``accuracy`` as a percentage of ``reference`` (the teacher's probe accuracy)."""
    if reference <= 0:
        return float("nan")
    return 100.0 * accuracy / reference


def embed_each(task: Any, sess: Any, ds: Any) -> np.ndarray:
    """The model's output for each item of ``ds``, one call per sentence at its own length (as an
    app calls it; a fixed-shape model gets its own length)."""
    import numpy as np
    from torch.utils.data import Subset

    from compress.tasks.base import ort_arrays

    names = [o.name for o in sess.get_outputs()][:1]
    rows = []
    for i in range(len(ds)):
        feeds = ort_arrays(task, Subset(ds, [i]), sess)[0]
        wanted = {k: v for k, v in feeds.items() if k in {x.name for x in sess.get_inputs()}}
        rows.append(sess.run(names, wanted)[0][0])
    return np.stack(rows)


def probe_models(task: Any, paths: Sequence[Path], probe: ProbeSet, opt_level: str,
                 reference: int | None = None) -> list[dict[str, float]]:
    """``probe_accuracy`` (and, with a ``reference`` model index, ``probe_retention``) of each
    ONNX model in ``paths``, its embeddings computed in ONNX Runtime."""
    from compress.common.ort import make_session

    accs = []
    for p in paths:
        sess = make_session(p, 1, opt_level)
        xs = [embed_each(task, sess, ds) for ds in (probe.fit, probe.score)]
        accs.append(probe_accuracy(xs[0], probe.fit_labels, xs[1], probe.score_labels))
    out = [{"probe_accuracy": a} for a in accs]
    if reference is not None:
        for q, a in zip(out, accs, strict=True):
            q["probe_retention"] = retention(a, accs[reference])
    return out
