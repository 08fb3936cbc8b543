"""Signal-language models (ecgfm.language, ecgfm.train.language).

Known answers: the CLIP loss against its closed forms and a numpy reference, BLEU and ROUGE-L
against hand-computed values (Papineni et al. 2002 and Lin 2004 give two of the cases), clinical
label scores against counts done by hand, recall@k on a constructed similarity matrix. Decoding is
checked with scripted next-token distributions (what greedy and beam search must return, and when
they must stop). One tiny end-to-end multi-task run on 48 real PTB-XL records (with their German
and English reports) exports a model that ``ecgfm report`` and ``ecgfm zero-shot`` load, and that
scores a condition added to a copy of the catalogue without retraining.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ReadError, ValidationError

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("lightning")

from ecgfm.language.caption_loss import CaptionLoss  # noqa: E402
from ecgfm.language.clip_loss import ClipLoss  # noqa: E402
from ecgfm.language.decoder import DecoderConfig, ReportDecoder  # noqa: E402
from ecgfm.language.metrics import clinical_label_scores, corpus_bleu, lcs_length, rouge_l  # noqa: E402
from ecgfm.language.retrieval import nearest_neighbour_reports, retrieval_recall, text_groups  # noqa: E402
from ecgfm.language.text import BOS, CLS, EOS, PAD, ReportTokenizer  # noqa: E402
from ecgfm.language.zero_shot import ZeroShotClassifier, condition_prompts  # noqa: E402

N_RECORDS = 48
TINY_ENCODER = ["model.encoder=resnet1d18",
                "model.encoder_args={widths: [8, 8, 16, 16], stem_width: 8, layers: [1, 1, 1, 1]}"]
TINY_TEXT = ["language.text_encoder={width: 32, depth: 1, heads: 2}",
             "language.decoder={width: 32, depth: 1, heads: 2}", "language.vocab_size=200",
             "language.embed_dim=16", "language.max_text_tokens=48"]
GERMAN = ["Sinusrhythmus. Überdrehter Linkstyp, Verdacht auf Linkshypertrophie; Größe normal.",
          "Vorhofflimmern mit schneller Überleitung. Kein Hinweis auf Infarkt (ST-Hebung?)",
          "sinus rhythm. normal ecg.", "sinusrhythmus lagetyp normal normales ekg 4.46    unbestätigter bericht",
          "Sinusbradykardie, sonst normales EKG. Ödem? Straße"]


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# the CLIP loss
# ---------------------------------------------------------------------------------------------
def _reference_clip(e: np.ndarray, t: np.ndarray, scale: float, target: np.ndarray | None = None) -> float:
    """CLIP's loss written out in numpy: mean (soft) cross-entropy of the rows and of the columns."""
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = scale * e @ t.T
    y = np.eye(len(e)) if target is None else target

    def ce(z: np.ndarray) -> float:
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-np.mean((y * logp).sum(axis=1)))

    return (ce(logits) + ce(logits.T)) / 2


def test_clip_loss_known_values_symmetry_and_permutation() -> None:
    loss = ClipLoss()
    b = 6
    same = torch.ones(b, 4)  # every embedding identical: all logits equal -> log(B) each way
    assert float(loss(same, same, 14.0)["loss"]) == pytest.approx(math.log(b), rel=1e-6)
    eye = torch.eye(b)  # aligned orthonormal pairs: -log(e^s / (e^s + (B - 1)))
    for s in (1.0, 5.0, 10.0):
        assert float(loss(eye, eye, s)["loss"]) == pytest.approx(math.log(1 + (b - 1) * math.exp(-s)), rel=1e-3)
    g = torch.Generator().manual_seed(0)
    e, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    for s in (1.0, 14.3, 100.0):  # the temperature enters as the scale of the logits
        assert float(loss(e, t, s)["loss"]) == pytest.approx(_reference_clip(e.numpy(), t.numpy(), s), rel=1e-5)
    a = float(loss(e, t, 10.0)["loss"])
    assert float(loss(t, e, 10.0)["loss"]) == pytest.approx(a, rel=1e-6)  # symmetric in the two sides
    perm = torch.randperm(8, generator=g)
    assert float(loss(e[perm], t[perm], 10.0)["loss"]) == pytest.approx(a, rel=1e-6)  # order of pairs is irrelevant
    assert float(loss(e, t[perm], 10.0)["loss"]) != pytest.approx(a, rel=1e-3)  # but the pairing is not
    # gradient reaches both sides and the scale
    e.requires_grad_(True)
    t.requires_grad_(True)
    scale = torch.tensor(10.0, requires_grad=True)
    loss(e, t, scale)["loss"].backward()
    assert e.grad.abs().sum() > 0 and t.grad.abs().sum() > 0 and scale.grad is not None
    with pytest.raises(ValidationError, match=r"must both be \[B, E\]"):
        loss(torch.ones(3, 4), torch.ones(3, 5), 1.0)


def test_clip_loss_with_identical_reports_soft_masked_and_one_hot() -> None:
    groups = torch.tensor([7, 7, 3])  # items 0 and 1 have the same report
    s = 10.0
    g = torch.Generator().manual_seed(3)
    e = torch.randn(3, 4, generator=g)
    t = torch.randn(3, 4, generator=g)
    t[1] = t[0]  # identical text -> identical embedding (deterministic text encoder)
    soft_y = np.array([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    soft = ClipLoss("soft")(e, t, s, groups)["loss"]
    assert float(soft) == pytest.approx(_reference_clip(e.numpy(), t.numpy(), s, soft_y), rel=1e-5)
    # with identical embeddings one-hot targets give the same loss, the same gradient on every ECG
    # embedding and the same gradient reaching the text encoder (summed over the copies of a text)
    grads = []
    for mode in ("soft", "none"):
        ee, tt = e.clone().requires_grad_(True), t.clone().requires_grad_(True)
        out = ClipLoss(mode)(ee, tt, s, groups)["loss"]
        out.backward()
        grads.append((float(out.detach()), ee.grad.clone(), tt.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1])
    per_text = [torch.stack([gt[0] + gt[1], gt[2]]) for _, _, gt in grads]
    torch.testing.assert_close(per_text[0], per_text[1])
    # once the copies differ (text-encoder dropout), one-hot targets separate them; soft ones do not
    t_noisy = t.clone()
    t_noisy[1] += 0.3 * torch.randn(4, generator=g)
    assert float(ClipLoss("soft")(e, t_noisy, s, groups)["loss"]) == pytest.approx(
        _reference_clip(e.numpy(), t_noisy.numpy(), s, soft_y), rel=1e-5)
    assert float(ClipLoss("none")(e, t_noisy, s, groups)["loss"]) == pytest.approx(
        _reference_clip(e.numpy(), t_noisy.numpy(), s), rel=1e-5)
    # mask: the duplicate leaves the softmax, by hand on unit vectors: rows 0, 1 see (s, 0)
    s = 3.0
    unit = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    by_hand = (2 * math.log(1 + math.exp(-s)) + math.log(1 + 2 * math.exp(-s))) / 3
    assert float(ClipLoss("mask")(unit, unit, s, groups)["loss"]) == pytest.approx(by_hand, rel=1e-5)
    # soft: rows 0, 1 see (s, s, 0) with targets (1/2, 1/2, 0): -log(e^s / (2 e^s + 1))
    assert float(ClipLoss("soft")(unit, unit, s, groups)["loss"]) == pytest.approx(
        (2 * math.log(2 + math.exp(-s)) + math.log(1 + 2 * math.exp(-s))) / 3, rel=1e-5)
    # a record without a report is neither a row nor a candidate column
    e, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    valid = torch.tensor([True, False, True, True, False])
    got = float(ClipLoss()(e, t, 3.0, valid=valid)["loss"])
    assert got == pytest.approx(float(ClipLoss()(e[valid], t[valid], 3.0)["loss"]), rel=1e-6)
    assert float(ClipLoss()(e, t, 3.0, valid=torch.zeros(5, dtype=torch.bool))["loss"]) == 0.0
    with pytest.raises(ValidationError, match="duplicates must be one of soft, mask, none"):
        ClipLoss("ignore")


def test_caption_loss_is_token_cross_entropy_without_padding() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 9, generator=g)
    targets = torch.tensor([[5, 6, EOS, PAD], [7, EOS, PAD, PAD]])
    out = CaptionLoss()(logits, targets)
    real = targets != PAD
    ref = torch.nn.functional.cross_entropy(logits[real], targets[real])
    assert float(out["loss"]) == pytest.approx(float(ref), rel=1e-6) and int(out["tokens"]) == 5
    smoothed = CaptionLoss(0.1)(logits, targets)["loss"]
    ref = torch.nn.functional.cross_entropy(logits[real], targets[real], label_smoothing=0.1)
    assert float(smoothed) == pytest.approx(float(ref), rel=1e-6)
    with pytest.raises(ValidationError, match="label_smoothing"):
        CaptionLoss(1.5)


# ---------------------------------------------------------------------------------------------
# the tokenizer
# ---------------------------------------------------------------------------------------------
def test_tokenizer_round_trip_keeps_german_text(tmp_path: Path) -> None:
    tok = ReportTokenizer.train(GERMAN * 5, vocab_size=150)
    assert tok.normalize("Größe  ÜBER\tStraße") == "größe über straße"  # NFC, umlauts and ß kept
    for text in GERMAN + ["Völlig neue Wörter: Ärger, Öl, Übel, Fuß; 12.5 mV?"]:
        ids = tok.encode(text)[0]
        assert PAD not in ids and all(i >= 5 for i in ids)  # every character has a token
        assert tok.decode(ids) == tok.normalize(text)
    assert "unbestätigter" not in tok.normalize(GERMAN[3]) and "4.46" not in tok.normalize(GERMAN[3])
    cased = ReportTokenizer.train(GERMAN, vocab_size=150, lowercase=False, strip_patterns=())
    assert cased.decode(cased.encode("Überdrehter Linkstyp")[0]) == "Überdrehter Linkstyp"
    ids, lengths = tok.batch(["sinus rhythm.", None], 6, start=CLS)
    assert ids[0, 0] == CLS and ids[0, lengths[0] - 1] == EOS and lengths[1] == 2 and ids[1, 1] == EOS
    assert (ids[0, lengths[0]:] == PAD).all()
    long_ids, long_len = tok.batch([GERMAN[0]], 5, start=BOS)
    assert long_len[0] == 5 and long_ids[0, -1] == EOS  # cut to fit, still ends with <eos>
    path = tok.save(tmp_path)
    again = ReportTokenizer.load(path)
    assert again.encode(GERMAN) == tok.encode(GERMAN) and again.strip_patterns == tok.strip_patterns
    with pytest.raises(ReadError, match="tokenizer file not found"):
        ReportTokenizer.load(tmp_path / "nope.json")
    (tmp_path / "other.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(ReadError, match="other.json.*not a report tokenizer"):
        ReportTokenizer.load(tmp_path / "other.json")
    with pytest.raises(ValidationError, match="no report text"):
        ReportTokenizer.train(["", None], vocab_size=150)
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        ReportTokenizer.train(GERMAN, vocab_size=150, strip_patterns=["(unclosed"])


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------
class Scripted(ReportDecoder):
    """A decoder whose next-token log-probabilities are a table keyed by the tokens so far."""

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], vocab: int = 12) -> None:
        super().__init__(DecoderConfig(vocab_size=vocab, memory_dim=4, width=8, depth=0, heads=2, max_length=10))
        self.table, self.calls = table, 0

    def forward(self, tokens, memory):  # type: ignore[override]
        self.calls += 1
        out = torch.full((*tokens.shape, self.config.vocab_size), -50.0)
        for b, row in enumerate(tokens.tolist()):
            probs = self.table.get(tuple(row[1:]), {9: 1.0})  # unscripted prefixes say token 9
            for tok, p in probs.items():
                out[b, -1, tok] = math.log(p)
        return out


def test_greedy_and_beam_search_stop_at_eos_and_agree_with_beam_one() -> None:
    features = torch.zeros(2, 4, 3)
    table = {(): {5: 0.6, EOS: 0.4}, (5,): {6: 0.7, EOS: 0.3}, (5, 6): {EOS: 0.9, 7: 0.1}}
    dec = Scripted(table)
    assert dec.generate(features) == [[5, 6], [5, 6]]
    assert dec.calls == 3  # it stopped at <eos>, not at max_length
    dec.calls = 0
    assert dec.generate(features, beam=1) == [[5, 6], [5, 6]] and dec.calls == 3
    never = Scripted({})  # no <eos> ever: stops at max_length (<bos> + 6 tokens)
    assert never.generate(features, max_length=7) == [[9] * 6] * 2
    assert never.generate(features, beam=3, max_length=7) == [[9] * 6] * 2
    # length penalty, by hand: [] has log p = log .4 = -0.92; [5] log(.6 * .45) = -1.31;
    # [5, 6] log(.6 * .55 * .9) = -1.21. Penalty 0 ranks the sums: [] wins. Penalty 1 ranks per
    # token: -0.92 / 1, -1.31 / 2 = -0.65, -1.21 / 3 = -0.40: [5, 6] wins (as greedy finds too).
    table = {(): {5: 0.6, EOS: 0.4}, (5,): {6: 0.55, EOS: 0.45}, (5, 6): {EOS: 0.9, 7: 0.1}}
    dec = Scripted(table)
    assert dec.generate(features[:1], beam=3, length_penalty=0.0) == [[]]
    assert dec.generate(features[:1], beam=3, length_penalty=1.0) == [[5, 6]]
    assert dec.generate(features[:1], beam=1) == dec.generate(features[:1]) == [[5, 6]]
    with pytest.raises(ValidationError, match="beam must be an integer >= 1"):
        dec.generate(features, beam=0)
    with pytest.raises(ValidationError, match="max_length must be in 2..10"):
        dec.generate(features, max_length=11)


def test_generation_of_a_real_decoder_is_deterministic() -> None:
    torch.manual_seed(0)
    dec = ReportDecoder(DecoderConfig(vocab_size=30, memory_dim=6, width=16, depth=2, heads=2, max_length=12))
    dec.train()  # generate() must switch dropout off itself
    features = torch.randn(3, 6, 5)
    greedy = dec.generate(features)
    assert greedy == dec.generate(features) == dec.generate(features, beam=1)
    beam = dec.generate(features, beam=4)
    assert beam == dec.generate(features, beam=4) and len(beam) == 3 and dec.training
    assert all(EOS not in row and BOS not in row and len(row) <= 11 for row in greedy + beam)


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def test_bleu_known_answers() -> None:
    # Papineni et al. 2002, section 2.1: modified unigram precision 2/7 (two references)
    out = corpus_bleu([["the cat is on the mat", "there is a cat on the mat"]], ["the the the the the the the"], max_n=1)
    assert out["precisions"][0] == pytest.approx(2 / 7) and out["bleu"] == pytest.approx(2 / 7)
    # by hand: p1 = 5/6 (the x2, cat, on, mat), p2 = 3/5 (the cat, on the, the mat), p3 = 1/4
    # (on the mat), p4 = no match -> smoothed 0.1/3; same length -> BP = 1
    out = corpus_bleu(["the cat is on the mat"], ["the cat sat on the mat"])
    assert out["precisions"] == pytest.approx([5 / 6, 3 / 5, 1 / 4, 0.1 / 3])
    assert out["bleu"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4 * 0.1 / 3) ** 0.25)
    assert corpus_bleu(["the cat is on the mat"], ["the cat sat on the mat"], smoothing="none")["bleu"] == 0.0
    # corpus level with the brevity penalty: all n-grams match, c = 8 words, r = 13 -> exp(1 - 13/8)
    refs = ["sinus rhythm. normal ecg.", "sinus rhythm. left axis deviation."]
    hyps = ["Sinus rhythm. Normal ECG.", "sinus rhythm"]
    out = corpus_bleu(refs, hyps)
    assert out["precisions"] == pytest.approx([1, 1, 1, 1]) and out["bleu"] == pytest.approx(math.exp(1 - 13 / 8))
    assert corpus_bleu(refs, refs)["bleu"] == pytest.approx(1.0)
    with pytest.raises(ValidationError, match="2 hypotheses but 1 references"):
        corpus_bleu(refs[:1], hyps)


def test_rouge_l_known_answers() -> None:
    # Lin 2004, section 3.1: S1 = reference; S2 scores 3/4, S3 2/4
    assert lcs_length("police killed the gunman".split(), "the gunman kill police".split()) == 2
    out = rouge_l(["police killed the gunman"] * 2, ["police kill the gunman", "the gunman kill police"])
    assert out["per_report"] == pytest.approx([0.75, 0.5]) and out["rouge_l"] == pytest.approx(0.625)
    # R = 2/4, P = 2/2: F1 = 2/3; beta 2 weighs recall: 5 * .5 * 1 / (.5 + 4 * 1) = 5/9
    assert rouge_l(["a b c d"], ["a b"])["rouge_l"] == pytest.approx(2 / 3)
    assert rouge_l(["a b c d"], ["a b"], beta=2.0)["rouge_l"] == pytest.approx(5 / 9)
    assert rouge_l([""], [""])["rouge_l"] == 1.0 and rouge_l(["a"], [""])["rouge_l"] == 0.0


def test_clinical_label_scores_by_hand() -> None:
    refs = ["sinusrhythmus normales ekg", "atrial fibrillation", "sinus rhythm. inferior myocardial infarction"]
    hyps = ["sinus rhythm. normal ecg.", "no atrial fibrillation", "sinus rhythm. normal ecg."]
    # labels: {SR, NORM}, {AFIB}, {SR, IMI} vs {SR, NORM}, {} (negated), {SR, NORM}
    # TP: SR x2, NORM x1; FP: NORM (3rd); FN: AFIB, IMI -> P = 3/4, R = 3/5
    out = clinical_label_scores(refs, hyps)
    assert out["micro_precision"] == pytest.approx(3 / 4) and out["micro_recall"] == pytest.approx(3 / 5)
    assert out["micro_f1"] == pytest.approx(2 / 3)
    assert out["per_label"]["NORM"]["f1"] == pytest.approx(2 / 3) and out["per_label"]["SR"]["f1"] == 1.0
    assert out["macro_f1"] == pytest.approx((1 + 2 / 3 + 0 + 0) / 4) and out["n_labels"] == 4
    assert out["example_f1"] == pytest.approx((1 + 0 + 0.5) / 3)
    only_sr = clinical_label_scores(refs, hyps, ids=["SR"])
    assert only_sr["micro_f1"] == 1.0


def test_retrieval_recall_on_a_constructed_case() -> None:
    ecg = np.eye(4)
    # report j is most similar to ECG j for j = 0, 3; reports 1 and 2 sit on each other's ECG
    text = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    out = retrieval_recall(ecg, text, ks=(1, 3))
    # ECG 1: report 2 scores 1, reports 0, 1, 3 tie at 0 (kept in order) -> its report comes third
    assert out["ecg_to_report@1"] == 0.5 and out["ecg_to_report@3"] == 1.0
    assert out["report_to_ecg@1"] == 0.5 and out["report_to_ecg@3"] == 1.0
    same = retrieval_recall(ecg, text, ks=(1,), groups=text_groups(["a", "b", "b", "c"]))
    assert same["ecg_to_report@1"] == 1.0 and same["report_to_ecg@1"] == 1.0  # identical texts are hits
    assert list(text_groups(["x", None, "x", "y", None])) == [0, 1, 0, 2, 3]
    reports = nearest_neighbour_reports(np.array([[0.1, 1.0], [1.0, 0.0]]), np.array([[1.0, 0.1], [0.0, 2.0]]),
                                        ["first", "second"])
    assert reports == ["second", "first"]
    with pytest.raises(ValidationError, match="differ in shape"):
        retrieval_recall(ecg, text[:3])


# ---------------------------------------------------------------------------------------------
# zero-shot with a text side whose embeddings are known
# ---------------------------------------------------------------------------------------------
def _keyword_embedder(texts: list[str]) -> np.ndarray:
    """Axis 0: fibrillation, 1: normal, 2: infarction, 3: 'zzz', 4: a constant (so no prompt is zero)."""
    rows = []
    for t in texts:
        t = t.lower()
        rows.append([float("fibrill" in t or "vorhofflimmern" in t), float(re.search(r"\bnormal", t) is not None),
                     float("infarct" in t or "infarkt" in t), float("zzz" in t), 0.1])
    return np.array(rows)


def _catalogue_with(tmp_path: Path, rows: str):
    from ecgfm.labels import Catalogue, load_catalogue

    path = tmp_path / "mine.csv"
    path.write_text("id,name,category,parent,synonyms_en,synonyms_de\n" + rows, encoding="utf-8")
    return Catalogue.from_csv(path, extends=load_catalogue())


def test_zero_shot_scores_a_condition_added_to_the_catalogue(tmp_path: Path) -> None:
    from ecgfm.labels import load_catalogue

    prompts = condition_prompts(load_catalogue()["AFIB"])
    assert "atrial fibrillation" in prompts and "ekg mit Vorhofflimmern" in prompts  # English and German
    cat = _catalogue_with(tmp_path, "XPARENT,qqq parent,rhythm,,,\nXCHILD,zzz child,rhythm,XPARENT,,zzz kind\n")
    ecg = np.array([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0], [0, 0, 0, 1.0, 0]])  # AF-like, normal, 'zzz'
    clf = ZeroShotClassifier(_keyword_embedder, cat, scale=10.0, method="similarity", expand="none",
                             templates={"en": ("{}",), "de": ("{}",)})
    child = clf.ensemble(["zzz child", "zzz kind"])  # one English, one German prompt
    ref = _keyword_embedder(["zzz child"])[0]
    np.testing.assert_allclose(child, ref / np.linalg.norm(ref))
    np.testing.assert_allclose(clf.scores(ecg, ["XCHILD"])[:, 0], ecg @ child)
    # the parent's own name says nothing ...
    assert clf.scores(ecg, ["XPARENT"])[2, 0] == pytest.approx(0.0)
    # ... but scored through its descendants it finds the 'zzz' ECG
    down = ZeroShotClassifier(_keyword_embedder, cat, scale=10.0, method="similarity", templates={"en": ("{}",)})
    assert down.members("XPARENT") == ["XPARENT", "XCHILD"]
    assert down.scores(ecg, ["XPARENT"])[2, 0] == pytest.approx(ecg[2] @ child)
    # softmax against the normal-ECG prompts: sigmoid(s (cos(e, c) - cos(e, normal)))
    normal = ZeroShotClassifier(_keyword_embedder, cat, scale=10.0, method="normal", expand="none")
    p = normal.scores(ecg, ["AFIB", "NORM", "XCHILD"])
    assert p[0, 0] > 0.5 > p[1, 0] and p[1, 1] > 0.5 and p[1, 1] > p[0, 1] and p[2, 2] > 0.5 > p[1, 2]
    n = normal.ensemble(normal.prompts("NORM"))
    c = normal.ensemble(normal.prompts("XCHILD"))
    np.testing.assert_allclose(p[:, 2], 1 / (1 + np.exp(-10.0 * (ecg @ c - ecg @ n))))
    negation = ZeroShotClassifier(_keyword_embedder, cat, scale=10.0, method="negation", expand="none")
    p = negation.scores(ecg, ["AFIB"])
    assert "no atrial fibrillation." in negation._cache and "kein Vorhofflimmern" in negation._cache
    assert p[0, 0] > p[1, 0]
    with pytest.raises(ValidationError, match="'XCHILD' is not a catalogue id"):
        ZeroShotClassifier(_keyword_embedder).scores(ecg, ["XCHILD"])  # the packaged catalogue lacks it
    with pytest.raises(ValidationError, match="method must be one of"):
        ZeroShotClassifier(_keyword_embedder, method="vote")


# ---------------------------------------------------------------------------------------------
# end to end: a tiny multi-task run on real PTB-XL records with their reports
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ptbxl_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """48 PTB-XL records (100 Hz, 5 s) with their reports: 32 train, 8 val, 8 test."""
    import pandas as pd

    import ecgfm
    from ecgfm.labels import map_ptbxl_scp
    from ecgfm.preprocess import Pipeline
    from ecgfm.store import format as F

    root = data_path("ptb-xl")
    table = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    table = table[table["filename_lr"].notna()].head(N_RECORDS)
    pipeline = Pipeline.standard(fs=100, seconds=5, notch=None)
    store = tmp_path_factory.mktemp("language") / "store"
    files = [root / f"{name}.hea" for name in table["filename_lr"]]
    writer = None
    for i, ((ecg_id, row), path) in enumerate(zip(table.iterrows(), files)):
        x = pipeline(ecgfm.read(path))
        writer = writer or F.ShardWriter(store, "part-000", x.leads)
        split = "train" if i < 32 else "val" if i < 40 else "test"
        writer.add({"record_id": f"{ecg_id:05d}_lr", "patient_id": str(row["patient_id"]),
                    "labels": map_ptbxl_scp(row["scp_codes"]).ids, "report": row["report"], "split": split},
                   x.signal)
    writer.commit(keys=["all"])
    F.write_json_atomic(store / "store.json", F.store_info(x.leads, 100.0, pipeline))
    F.write_manifest(store, F.read_parts(store))
    return store, files


def _overrides(store: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.store={store}", f"out_dir={out}", "data.window=5", "data.batch_size=8", "data.num_workers=0",
            "trainer.progress=none", "trainer.loggers=[csv]", "trainer.num_sanity_val_steps=0",
            "trainer.max_steps=3", "trainer.max_epochs=-1", "trainer.deterministic=true",
            *TINY_ENCODER, *TINY_TEXT, *extra]


@pytest.fixture(scope="module")
def multitask(ptbxl_store, tmp_path_factory) -> dict:
    from ecgfm.train.language import pretrain_language

    store, _ = ptbxl_store
    out = tmp_path_factory.mktemp("multitask") / "run"
    return pretrain_language("multitask", None, _overrides(store, out, "data.test_split=test", "language.cpc_weight=0.5",
                                                           "language.cpc_args={patch_seconds: 1.0, steps: 2}"))


def test_multitask_pretraining_exports_a_model_the_commands_load(multitask, ptbxl_store, tmp_path) -> None:
    from typer.testing import CliRunner

    import ecgfm
    from ecgfm.language import load_language_model
    from ecgfm.language.cli import app

    _, files = ptbxl_store
    out = Path(multitask["out_dir"])
    assert multitask["global_step"] == 3 and multitask["objective"] == "multitask"
    for key in ("loss", "clip", "caption", "abnormal", "cpc", "e2t_r1", "t2e_r10", "recall_mean", "auroc"):
        assert key in multitask["val"], key
    recalls = [multitask["val"][f"{d}_r{k}"] for d in ("e2t", "t2e") for k in (1, 5, 10)]
    assert multitask["val"]["recall_mean"] == pytest.approx(sum(recalls) / 6)
    assert (out / "tokenizer.json").is_file() and (out / "language.yaml").is_file()
    model_dir = Path(multitask["model_dir"])
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "card.md", "config.json", "language.json", "language.safetensors", "model.safetensors", "tokenizer.json"]
    ecg_model = ecgfm.load_model(model_dir)  # the ECG side is an ordinary portable model (normal/abnormal head)
    assert ecg_model.labels == ("NORM",) and ecg_model.predict(files[40:42]).shape == (2, 1)

    lm = load_language_model(model_dir)
    reports = lm.generate(files[40:43], beam=2)
    assert len(reports) == 3 and all(isinstance(r, str) for r in reports)
    assert lm.generate(files[40:43], beam=1) == lm.generate(files[40:43], beam=1)
    emb = lm.embed_ecg(files[40:42])
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)

    runner = CliRunner()
    csv_path = tmp_path / "drafts.csv"
    result = runner.invoke(app, ["report", *map(str, files[40:43]), "--model", str(model_dir), "--beam", "2",
                                 "--out", str(csv_path)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    drafts = pd.read_csv(csv_path, keep_default_na=False)
    assert list(drafts.columns) == ["record_id", "source", "draft_report"] and len(drafts) == 3
    assert drafts["draft_report"].tolist() == reports
    bad = tmp_path / "bad.hea"
    bad.write_text("not a header\n")
    result = runner.invoke(app, ["report", str(files[40]), str(bad), "--model", str(model_dir)])
    assert result.exit_code == 1 and "bad.hea" in result.output and "1 of 2 files failed" in result.output
    result = runner.invoke(app, ["zero-shot", *map(str, files[40:42]), "--model", str(model_dir),
                                 "--conditions", "NORM,AFIB"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines[0] == "record_id,source,NORM,AFIB" and len(lines) == 3
    result = runner.invoke(app, ["zero-shot", str(files[40]), "--model", str(model_dir), "--conditions", "NOPE"])
    assert result.exit_code == 1 and "'NOPE' is not a catalogue id" in result.output
    result = runner.invoke(app, ["report", str(files[40]), "--model", str(out)])  # the run folder, not the model
    assert result.exit_code == 1 and "not a signal-language model folder" in result.output


def test_trained_model_scores_a_new_catalogue_condition_without_retraining(multitask, ptbxl_store, tmp_path) -> None:
    from ecgfm.language import load_language_model

    _, files = ptbxl_store
    lm = load_language_model(multitask["model_dir"])
    cat = _catalogue_with(tmp_path, "XBRUG,brugada pattern,morphology,,brugada type 1,Brugada-Muster\n")
    scores = lm.zero_shot(files[40:44], ["XBRUG", "NORM"], catalogue=cat)
    assert scores.shape == (4, 2) and ((scores > 0) & (scores < 1)).all()
    # what it computed: the ensemble of the new row's English and German prompts against NORM's
    clf = lm.zero_shot_classifier(cat)
    c = clf.ensemble(clf.prompts("XBRUG"))
    n = clf.ensemble(clf.prompts("NORM"))
    assert "ekg mit Brugada-Muster" in clf.prompts("XBRUG")
    e = lm.embed_ecg(files[40:44]).astype(np.float64)
    np.testing.assert_allclose(scores[:, 0], 1 / (1 + np.exp(-lm.scale * (e @ c - e @ n))), rtol=1e-5)
    with pytest.raises(ValidationError, match="'XBRUG' is not a catalogue id"):
        lm.zero_shot(files[40:41], ["XBRUG"])


def test_clip_run_and_the_errors_of_pretraining(ptbxl_store, tmp_path) -> None:
    from typer.testing import CliRunner

    from ecgfm.language.cli import app
    from ecgfm.train.language import load_language_config, pretrain_language

    store, files = ptbxl_store
    result = pretrain_language("clip", None, _overrides(store, tmp_path / "clip", "trainer.max_steps=2",
                                                        "trainer.log_every_n_steps=1", "language.ecg_contrast_weight=0.5"))
    assert result["val"]["clip"] > 0 and "caption" not in result["val"]
    import pandas as pd

    logged = pd.read_csv(next(Path(result["out_dir"]).glob("logs/csv/version_*/metrics.csv")))
    assert {"train/clip", "train/ecg_contrast", "train/scale"} <= set(logged.columns)
    # resume: the same run continues (its tokenizer reused), a new one in the same folder is refused
    tokenizer = (tmp_path / "clip" / "tokenizer.json").read_bytes()
    with pytest.warns(UserWarning, match=r"differs from the saved one in trainer.log_every_n_steps, trainer.max_steps"):
        again = pretrain_language("clip", None, _overrides(store, tmp_path / "clip", "trainer.max_steps=3",
                                                           "resume=auto", "language.ecg_contrast_weight=0.5"))
    assert again["global_step"] == 3 and (tmp_path / "clip" / "tokenizer.json").read_bytes() == tokenizer
    with pytest.raises(ValidationError, match="already holds a run"):
        pretrain_language("clip", None, _overrides(store, tmp_path / "clip"))
    runner = CliRunner()
    out = runner.invoke(app, ["report", str(files[40]), "--model", result["model_dir"]])
    assert out.exit_code == 1 and "has no report decoder" in out.output
    with pytest.raises(ValidationError, match=r"language: unknown key\(s\) colour \(valid: objective"):
        load_language_config(None, ["data.store=x", "language.colour=red"])
    with pytest.raises(ValidationError, match="language.objective: expected one of clip, caption, multitask"):
        load_language_config(None, ["language.objective=vqa"])
    with pytest.raises(ValidationError, match="no 'summary' column of report text"):
        pretrain_language("clip", None, _overrides(store, tmp_path / "x", "language.report_column=summary"))
    with pytest.raises(ValidationError, match="objective 'cpc':.*horizon"):
        pretrain_language("multitask", None, _overrides(store, tmp_path / "y", "language.cpc_weight=1",
                                                        "language.cpc_args={horizon: 3}"))
    out = runner.invoke(app, ["pretrain-language", "--objective", "simclr"])
    assert out.exit_code == 1 and "signal-language objectives are clip, caption, multitask" in out.output


def test_caption_over_a_locked_pretrained_encoder(ptbxl_store, tmp_path) -> None:
    """ptbxl_caption_supervised.yaml's recipe: the decoder learns, the bundled encoder (weights and
    batch-norm statistics) stays exactly as shipped."""
    from safetensors.numpy import load_file

    from ecgfm.language import load_language_model
    from ecgfm.models import default_model_path
    from ecgfm.train.language import pretrain_language

    store, files = ptbxl_store
    default = default_model_path()
    overrides = [o for o in _overrides(store, tmp_path / "cap") if not o.startswith("model.encoder")]
    result = pretrain_language("caption", None, [*overrides, "trainer.max_steps=2", "model.encoder=resnet1d18",
                                                 f"model.init={default}", "model.freeze=encoder"])
    shipped = load_file(default / "model.safetensors")
    exported = load_file(Path(result["model_dir"]) / "model.safetensors")
    encoder = [k for k in exported if k in shipped]
    assert len(encoder) == len(exported) > 100
    for key in encoder:
        np.testing.assert_array_equal(exported[key], shipped[key], err_msg=key)
    lm = load_language_model(result["model_dir"])
    assert lm.net.text_encoder is None and len(lm.generate(files[40:42], beam=2)) == 2


def test_hugging_face_text_encoder_from_a_local_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from ecgfm.language.text_encoder import HFTextEncoder

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sinus", "rhythm", "normal", "ecg", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(tmp_path)
    enc = HFTextEncoder(tmp_path, pooling="mean")
    ids, mask = enc.tokenize(["sinus rhythm. normal ecg.", None], 12)
    assert ids.shape == (2, 12) and mask[0].sum() > mask[1].sum()
    assert enc(torch.as_tensor(ids), torch.as_tensor(mask)).shape == (2, 16)
    with pytest.raises(ValidationError, match="not a local Hugging Face model folder"):
        HFTextEncoder(tmp_path / "missing")
