"""An LLM labels texts through a prompt and verbalisers: scoring against a hand computation
(multi-token verbalisers, chat template, few-shot), contextual calibration, the resumable cache,
and each bad input word for word. The teacher is a tiny random Llama (tests/tiny_llm.py)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from tiny_llm import tiny_llama, tiny_tokenizer

from compress.errors import InputError
from compress.tasks.llm_labels import (
    LabelRows,
    Prompt,
    PromptLabeller,
    check_data_labels,
    label_texts,
    read_chunks,
)

TEXTS = ["the film was good", "bad", "the plot was not so great and the actors were awful",
         "a very very good movie", "awful", "great film", "not good , not bad", "it was a film",
         "so bad it is good", "the actors . the plot . the film", "very good", "movie"]
MULTI = {"negative": " not good", "positive": " very good .", "neutral": " so so"}


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def hand_scores(model, rows, verbaliser_ids) -> np.ndarray:
    """Each label's log-prob: the model run on prompt + verbaliser, token by token."""
    out = np.zeros((len(rows), len(verbaliser_ids)))
    for i, row in enumerate(rows):
        for j, v in enumerate(verbaliser_ids):
            with torch.inference_mode():
                logits = model(torch.tensor([list(row) + list(v)])).logits[0]
            logp = torch.log_softmax(logits.double(), -1)
            out[i, j] = sum(logp[len(row) - 1 + t, tok].item() for t, tok in enumerate(v))
    return out


def test_chat_prompt_with_few_shot_renders_and_scores_as_by_hand(model):
    prompt = Prompt("review : {text} sentiment ?", MULTI, system="answer",
                    answer_prefix=" it is", examples=(("great film", "positive"),))
    lab = PromptLabeller(model, tiny_tokenizer(), prompt)
    assert lab.chat and lab.verbaliser_ids == [[19, 14], [18, 14, 31], [25, 25]]
    assert lab.render("bad") == (
        "<|im_start|> system : answer <|im_end|> "
        "<|im_start|> user : review : great film sentiment ? <|im_end|> "
        "<|im_start|> assistant :  it is very good . <|im_end|> "
        "<|im_start|> user : review : bad sentiment ? <|im_end|> <|im_start|> assistant :  it is")
    rows = lab.encode(TEXTS[:5])
    assert rows[1][0] == 4 and 1 not in rows[1]  # the template's own tokens, no added <s>
    got = lab.score_ids(rows)  # one right-padded batch of prompts of different lengths
    assert np.abs(got - hand_scores(model, rows, lab.verbaliser_ids)).max() < 1e-5
    assert np.ptp(got[:, 0]) > 0.01  # the texts change the answer


def test_plain_prompt_single_token_verbalisers_as_by_hand(model):
    prompt = Prompt("review : {text} sentiment :", {"negative": " negative", "positive": " positive"},
                    examples=(("awful", "negative"),), chat=False)
    lab = PromptLabeller(model, tiny_tokenizer(), prompt)
    assert lab.render("good") == "review : awful sentiment : negative\n\nreview : good sentiment :"
    rows = lab.encode(TEXTS)
    assert rows[0][0] == 1  # <s>: the tokenizer's special tokens when there is no chat template
    got = lab.score_ids(rows)
    assert got.shape == (len(TEXTS), 2)
    assert np.abs(got - hand_scores(model, rows, lab.verbaliser_ids)).max() < 1e-5


def test_contextual_calibration_divides_by_the_content_free_prior(model):
    lab = PromptLabeller(model, tiny_tokenizer(), Prompt("review : {text} sentiment ?", MULTI))
    rows = label_texts(lab, TEXTS, progress=False)
    cf = lab.score_ids(lab.encode(["N/A", "", "[MASK]"]))
    probs = np.exp(cf) / np.exp(cf).sum(1, keepdims=True)
    prior = probs.mean(0)
    np.testing.assert_allclose(rows.prior, prior, atol=1e-6)
    np.testing.assert_allclose(rows.content_free_raw, cf, atol=1e-6)
    raw = lab.score_ids(lab.encode(TEXTS))
    np.testing.assert_allclose(rows.raw, raw, atol=1e-5)
    norm = raw - np.log(np.exp(raw).sum(1, keepdims=True))
    cal = np.exp(norm) / prior
    cal /= cal.sum(1, keepdims=True)
    np.testing.assert_allclose(rows.probabilities(calibrated=True), cal, atol=1e-5)
    np.testing.assert_allclose(rows.probabilities(calibrated=False), np.exp(norm), atol=1e-5)
    assert (rows.predictions(calibrated=False) == raw.argmax(1)).all()
    assert (rows.predictions() == cal.argmax(1)).all()
    off = label_texts(lab, TEXTS, calibrate=False, progress=False)
    assert off.prior is None and (off.predictions() == raw.argmax(1)).all()


class Kill(RuntimeError):
    pass


def test_cache_resumes_after_a_kill_mid_chunk_and_matches_one_by_one(model, tmp_path, monkeypatch,
                                                                     capsys):
    lab = PromptLabeller(model, tiny_tokenizer(), Prompt("review : {text} sentiment ?", MULTI))
    real, calls = lab.score_ids, []

    def dying(rows):
        calls.append(len(rows))
        if len(calls) == 6:  # the 2nd batch of the 3rd chunk
            raise Kill
        return real(rows)

    monkeypatch.setattr(lab, "score_ids", dying)
    with pytest.raises(Kill):
        label_texts(lab, TEXTS, tmp_path, model_sha="m1", chunk_size=4, batch_size=2,
                    progress=False)
    (folder,) = tmp_path.iterdir()
    assert len(list(folder.glob("rows-*.npz"))) == 2 and len(read_chunks(folder)) == 8
    # longest prompts first: the two chunks written hold the eight longest of the 15 prompts
    wanted = ["N/A", "", "[MASK]", *TEXTS]
    order = sorted(wanted, key=lambda t: -len(lab.encode([t])[0]))
    shas = {hashlib.sha256(t.encode()).hexdigest() for t in order[:8]}
    assert set(read_chunks(folder)) == shas

    calls.clear()
    monkeypatch.setattr(lab, "score_ids", lambda rows: (calls.append(len(rows)), real(rows))[1])
    rows = label_texts(lab, TEXTS, tmp_path, model_sha="m1", chunk_size=4, batch_size=2)
    assert sum(calls) == len(TEXTS) + 3 - 8  # only what the killed run had not written
    err = capsys.readouterr().err
    assert "LLM labels: 100%" in err and "15/15" in err
    one_by_one = np.concatenate([real([r]) for r in lab.encode(TEXTS)])
    assert np.abs(rows.raw - one_by_one).max() < 1e-5

    calls.clear()
    again = label_texts(lab, TEXTS, tmp_path, model_sha="m1", chunk_size=4, progress=False)
    assert calls == [] and np.array_equal(again.raw, rows.raw)


def test_a_changed_prompt_or_model_is_not_served_stale_rows(model, tmp_path):
    tok = tiny_tokenizer()
    first = PromptLabeller(model, tok, Prompt("review : {text} sentiment ?", MULTI))
    label_texts(first, TEXTS[:3], tmp_path, model_sha="m1", progress=False)
    other = PromptLabeller(model, tok, Prompt("review : {text} sentiment :", MULTI))
    rows = label_texts(other, TEXTS[:3], tmp_path, model_sha="m1", progress=False)
    assert len(list(tmp_path.iterdir())) == 2
    np.testing.assert_allclose(rows.raw, other.score_ids(other.encode(TEXTS[:3])), atol=1e-5)
    assert first.cache_key("m1") != first.cache_key("m2")
    assert first.cache_key("m1") != PromptLabeller(model, tiny_tokenizer(chat=False),
                                                   Prompt("review : {text} sentiment ?", MULTI)
                                                   ).cache_key("m1")


def test_label_rows_keep_raw_and_calibrated_figures():
    rows = LabelRows(("a", "b"), np.log(np.array([[0.6, 0.2], [0.3, 0.1]])), np.array([0.8, 0.2]))
    np.testing.assert_allclose(rows.probabilities(False), [[0.75, 0.25], [0.75, 0.25]])
    np.testing.assert_allclose(rows.probabilities(True), [[3 / 7, 4 / 7], [3 / 7, 4 / 7]])
    assert rows.predictions(False).tolist() == [0, 0] and rows.predictions().tolist() == [1, 1]


def _refused(model, prompt, tok=None, where="teacher.prompt") -> str:
    with pytest.raises(InputError) as e:
        PromptLabeller(model, tok or tiny_tokenizer(), prompt, where)
    return str(e.value)


def test_bad_prompts_word_for_word(model):
    verbs = {"negative": " negative", "positive": " positive"}
    assert _refused(model, Prompt("Review: {review}", verbs)) == (
        "teacher.prompt.template: must contain {text} where the text goes (got 'Review: {review}')")
    assert _refused(model, Prompt("{text}", {"negative": " negative", "positive": " "})) == (
        "teacher.prompt.verbalisers.positive: ' ' tokenises to nothing "
        "(give it a word the tokenizer knows)")
    assert _refused(model, Prompt("{text}", {"neg": " bad", "pos": " good", "meh": "bad"}),
                    where="llm") == (
        "llm.verbalisers.meh: 'bad' is the same verbaliser as label 'neg' (token ids [15])")
    assert _refused(model, Prompt("{text}", {"only": " good"})) == (
        "teacher.prompt.verbalisers: needs at least two labels (got ['only'])")
    assert _refused(model, Prompt("{text}", verbs, examples=(("great", "pos"),))) == (
        "teacher.prompt.examples[0]: label 'pos' has no verbaliser (labels: negative, positive)")
    assert _refused(model, Prompt("{text}", verbs, chat=True), tiny_tokenizer(chat=False)) == (
        "teacher.prompt.chat: the tokenizer has no chat template")
    lab = PromptLabeller(model, tiny_tokenizer(), Prompt("{text}", verbs))
    with pytest.raises(InputError) as e:
        label_texts(lab, ["good"], content_free=(), progress=False)
    assert str(e.value) == ("teacher.prompt.content_free: calibration needs at least one "
                            "content-free input")


def test_data_labels_the_verbalisers_do_not_name():
    prompt = Prompt("{text}", {"negative": " negative", "positive": " positive"})
    check_data_labels(["positive", "negative", "positive"], prompt)
    with pytest.raises(InputError) as e:
        check_data_labels(["positive", "neutral", "mixed"], prompt)
    assert str(e.value) == ("data.labels: label 'neutral' has no verbaliser in "
                            "teacher.prompt.verbalisers (named: negative, positive)")


@pytest.mark.slow
def test_builtin_smollm2_judges_clear_reviews_after_calibration():
    from compress.models.causal_lm import load_causal_lm

    model, tok = load_causal_lm("smollm2-135m-instruct")
    prompt = Prompt("Is the sentiment of this movie review positive or negative?\n\nReview: {text}",
                    {"negative": " negative", "positive": " positive"},
                    answer_prefix="The sentiment is")
    lab = PromptLabeller(model, tok, prompt)
    assert lab.verbaliser_ids == [[3524], [2731]]
    texts = ["A dull, lifeless mess that wastes its cast and my evening.",
             "A wonderful, moving film with superb performances."]
    rows = label_texts(lab, texts, progress=False)
    assert rows.predictions(calibrated=True).tolist() == [0, 1]
    assert rows.prior[1] > 0.5  # it leans positive on content-free input
