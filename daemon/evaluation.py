"""The core of `sideman evaluate`: bits per token of the LSTM and of n-gram baselines on a test corpus.

Every model scores the same test tokens, rests included: each piece is
tokenized with the bundle's encoding, and each token maps to its index in
the bundle's vocabulary (tokens outside it map to the nearest token, as at
run time). The LSTM reads each piece from the zero state with the zero
input first, as the notebook generates. The n-gram baselines (interpolated
modified Kneser-Ney, see `ngram.py`) fit on the baseline pieces under the
same encoding and vocabulary, augmented by every transposition that
training used.
"""

import logging
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from .bundle import Bundle
from .encoding import EncodingSettings, Token, tokenize_notes
from .errors import BundleError, CorpusError, InvalidInputError
from .music import Piece
from .ngram import KneserNeyModel
from .stepper import Stepper
from .vocabulary import Vocabulary

logger = logging.getLogger(__name__)

# The transposition range training uses when model.json names none, in semitones, both ends included.
DEFAULT_TRANSPOSE = (-5, 6)
BASELINE_ORDERS = {"unigram": 1, "bigram": 2, "trigram": 3}
LSTM_NAME = "LSTM"


@dataclass(frozen=True)
class ModelScore:
    """One model's negative log-likelihood on the test tokens."""

    model: str
    bits_per_token: float
    tokens: int


@dataclass(frozen=True)
class EvaluationReport:
    """The scores of every model, and what they were computed on."""

    scores: list[ModelScore]
    test_pieces: int
    test_tokens: int
    # Test tokens not in the vocabulary before they were mapped to the nearest token.
    out_of_vocabulary_tokens: int
    baseline_pieces: int
    # Baseline tokens after transposition: baseline pieces' tokens times the number of transpositions.
    baseline_tokens: int
    transpose: tuple[int, int]

    @property
    def out_of_vocabulary_share(self) -> float:
        return self.out_of_vocabulary_tokens / self.test_tokens if self.test_tokens else 0.0

    def to_dict(self) -> dict:
        """Return the report as plain JSON data, for model.json."""
        values = asdict(self)
        values["transpose"] = list(self.transpose)
        values["bits_per_token"] = {score.model: round(score.bits_per_token, 4) for score in self.scores}
        values["out_of_vocabulary_share"] = self.out_of_vocabulary_share
        del values["scores"]
        return values


def evaluate(bundle: Bundle, test_pieces: Sequence[Piece], baseline_pieces: Sequence[Piece]) -> EvaluationReport:
    """Score the bundle's LSTM and the unigram, bigram and trigram baselines on `test_pieces`.

    Raises InvalidInputError when the test or baseline pieces contain no notes.
    """
    test_lines = tokenize_pieces(test_pieces, bundle.encoding)
    test_tokens = sum(len(line) for line in test_lines)
    if test_tokens == 0:
        raise InvalidInputError(f"the test corpus ({len(test_pieces)} pieces) contains no notes to evaluate on: pass a corpus with notes")
    out_of_vocabulary = sum(token not in bundle.vocabulary for line in test_lines for token in line)
    test_sequences = [bundle.vocabulary.indices(line) for line in test_lines]
    logger.info("evaluating on %d test pieces: %d tokens, %d of them outside the vocabulary", len(test_pieces), test_tokens, out_of_vocabulary)

    low, high = transposition_range(bundle)
    baseline_lines = tokenize_pieces(baseline_pieces, bundle.encoding)
    baseline_sequences = augmented_sequences(baseline_lines, bundle.vocabulary, range(low, high + 1))
    baseline_tokens = sum(len(sequence) for sequence in baseline_sequences)
    if baseline_tokens == 0:
        raise InvalidInputError(f"the baseline corpus ({len(baseline_pieces)} pieces) contains no notes to fit the n-gram baselines on: pass --baseline-corpus with notes")
    logger.info("fitting n-gram baselines on %d pieces transposed by %+d to %+d semitones: %d tokens", len(baseline_pieces), low, high, baseline_tokens)

    scores = [ModelScore(LSTM_NAME, float(np.mean(lstm_bits(bundle, test_sequences))), test_tokens)]
    for name, order in BASELINE_ORDERS.items():
        model = KneserNeyModel(order, len(bundle.vocabulary)).fit(baseline_sequences)
        logger.debug("%s discounts (D1, D2, D3+) per order: %s", name, model.discounts)
        scores.append(ModelScore(name, float(np.mean(model.corpus_bits(test_sequences))), test_tokens))

    for score in scores:
        logger.info("%s: %.4f bits per token", score.model, score.bits_per_token)
    return EvaluationReport(scores, len(test_pieces), test_tokens, out_of_vocabulary, len(baseline_pieces), baseline_tokens, (low, high))


def lstm_bits(bundle: Bundle, sequences: Iterable[Sequence[int]]) -> list[float]:
    """Return -log2 p of every token of every sequence under the LSTM, concatenated in order.

    Each sequence starts from the zero state with the zero input
    (x0 = a0 = c0 = 0): p(t0) follows step(None), p(t1) follows step(t0),
    and so on.

    NOTE: training unrolls the LSTM over windows of Tx tokens, but this
    reads whole pieces, so tokens past the first Tx are scored from states
    longer than any the model was trained on.
    """
    # The stepper's own softmax can underflow to 0 for very unlikely tokens,
    # so the log-probabilities come from a log-softmax of the same logits.
    dense_kernel = bundle.weights.dense_kernel.astype(np.float64)
    dense_bias = bundle.weights.dense_bias.astype(np.float64)
    stepper = Stepper(bundle.weights)

    bits: list[float] = []
    for sequence in sequences:
        stepper.reset()
        previous: int | None = None
        for token in sequence:
            stepper.advance(previous)
            logits = stepper.a @ dense_kernel + dense_bias
            largest = logits.max()
            log_normalizer = largest + np.log(np.exp(logits - largest).sum())
            bits.append(float((log_normalizer - logits[token]) / np.log(2)))
            previous = token
    return bits


def tokenize_pieces(pieces: Iterable[Piece], encoding: EncodingSettings) -> list[list[Token]]:
    """Tokenize each piece's notes under `encoding`, one token list per piece."""
    return [tokenize_notes(piece.notes, encoding) for piece in pieces]


def augmented_sequences(lines: Sequence[Sequence[Token]], vocabulary: Vocabulary, semitones: Iterable[int]) -> list[np.ndarray]:
    """Return every line transposed by every shift in `semitones`, as arrays of vocabulary indices.

    Transposed tokens outside the vocabulary map to the nearest token, as
    training does. The result is ordered shift by shift.
    """
    # A corpus has far fewer distinct tokens than tokens: map each distinct
    # token once per shift, then index whole lines at once.
    distinct: dict[Token, int] = {}
    lines_as_ids = [np.array([distinct.setdefault(token, len(distinct)) for token in line], dtype=np.int64) for line in lines]

    sequences = []
    for shift in semitones:
        index_per_id = np.array([vocabulary.index_of(token.transposed(shift)) for token in distinct], dtype=np.int64)
        sequences.extend(index_per_id[ids] for ids in lines_as_ids)
    return sequences


def transposition_range(bundle: Bundle) -> tuple[int, int]:
    """Return the training transposition range (low, high) in semitones, both included, from model.json."""
    training = bundle.metadata.get("training") or {}
    value = training.get("transpose", DEFAULT_TRANSPOSE) if isinstance(training, dict) else DEFAULT_TRANSPOSE
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(end, int) and not isinstance(end, bool) for end in value) and value[0] <= value[1]):
        raise BundleError(f"model bundle {bundle.path}: training.transpose in model.json is {value!r}, expected [low, high] semitones with low <= high")
    return value[0], value[1]


def select_pieces(pieces: Sequence[Piece], names: Iterable[str]) -> list[Piece]:
    """Return the pieces whose name is in `names`, in corpus order, and log the names not found at WARNING."""
    wanted = set(names)
    selected = [piece for piece in pieces if piece.name in wanted]
    missing = sorted(wanted - {piece.name for piece in selected})
    if missing:
        logger.warning("%d of %d named pieces not found in the corpus, for example %s", len(missing), len(wanted), ", ".join(repr(name) for name in missing[:3]))
    return selected


def validation_pieces(bundle: Bundle, pieces: Sequence[Piece]) -> list[Piece]:
    """Return the pieces that model.json names as validation pieces, for `--validation`.

    Raises CorpusError when the corpus contains none of them.
    """
    names = _piece_names(bundle, "validation_pieces")
    if not names:
        raise CorpusError(f"model bundle {_bundle_name(bundle)} names no validation pieces in model.json (corpus.validation_pieces): evaluate without --validation")
    selected = select_pieces(pieces, names)
    if not selected:
        raise CorpusError(
            f"the test corpus ({len(pieces)} pieces) contains none of the {len(names)} validation pieces named in {_bundle_name(bundle)}: "
            "pass the corpus the model was trained on, or omit --validation"
        )
    logger.info("evaluating on %d of the %d validation pieces", len(selected), len(names))
    return selected


def default_baseline_pieces(bundle: Bundle, pieces: Sequence[Piece]) -> list[Piece]:
    """Return the model's training pieces found in `pieces`, the baseline corpus when --baseline-corpus is absent.

    Raises CorpusError when none are found.
    """
    names = _piece_names(bundle, "training_pieces")
    if not names:
        raise CorpusError(f"model bundle {_bundle_name(bundle)} names no training pieces in model.json (corpus.training_pieces): pass --baseline-corpus with the pieces the n-gram baselines should fit on")
    selected = select_pieces(pieces, names)
    if not selected:
        raise CorpusError(
            f"the corpus ({len(pieces)} pieces) contains none of the {len(names)} training pieces named in {_bundle_name(bundle)}: "
            "pass --baseline-corpus with the pieces the n-gram baselines should fit on"
        )
    logger.info("fitting the n-gram baselines on %d of the %d training pieces", len(selected), len(names))
    return selected


def _piece_names(bundle: Bundle, key: str) -> list[str]:
    """Return the piece names in model.json's corpus.<key>, or an empty list when the bundle has none."""
    corpus = bundle.metadata.get("corpus") or {}
    names = corpus.get(key, []) if isinstance(corpus, dict) else []
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise BundleError(f"model bundle {bundle.path}: corpus.{key} in model.json must be a list of piece names")
    return names


def _bundle_name(bundle: Bundle) -> str:
    return bundle.path or "(built in memory)"


def format_report(report: EvaluationReport) -> str:
    """Return the report as a plain-text table for the terminal."""
    width = max(len("model"), *(len(score.model) for score in report.scores))
    lines = [f"{'model':<{width}}  {'bits/token':>10}  {'tokens':>8}"]
    for score in report.scores:
        lines.append(f"{score.model:<{width}}  {score.bits_per_token:>10.4f}  {score.tokens:>8}")
    lines.append("")
    lines.append(_out_of_vocabulary_line(report))
    lines.append(_corpus_line(report))
    return "\n".join(lines)


def format_markdown(report: EvaluationReport) -> str:
    """Return the report as a Markdown table, for docs/model.md."""
    lines = ["| model | bits/token | tokens |", "|---|---:|---:|"]
    for score in report.scores:
        lines.append(f"| {score.model} | {score.bits_per_token:.4f} | {score.tokens} |")
    lines.append("")
    lines.append(_out_of_vocabulary_line(report))
    lines.append(_corpus_line(report))
    return "\n".join(lines)


def _out_of_vocabulary_line(report: EvaluationReport) -> str:
    return (
        f"Out of vocabulary: {report.out_of_vocabulary_share:.2%} of test tokens "
        f"({report.out_of_vocabulary_tokens} of {report.test_tokens}), each scored as its nearest vocabulary token."
    )


def _corpus_line(report: EvaluationReport) -> str:
    low, high = report.transpose
    return (
        f"Test: {report.test_pieces} pieces, {report.test_tokens} tokens. "
        f"Baselines fitted on {report.baseline_pieces} pieces transposed by {low:+d} to {high:+d} semitones, {report.baseline_tokens} tokens."
    )
