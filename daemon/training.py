"""Train the notebook's model on a corpus and write a model bundle.

The model is the exercise's one shared `LSTM_cell` (n_a units) and one
shared `densor` (softmax over the vocabulary), trained with teacher forcing
on windows of Tx tokens. Training runs the same weights as one
`LSTM(return_sequences=True)` layer followed by the Dense layer, because that
is faster than the unrolled `djmodel`. A test proves that both give the same
outputs with the same weights.

Windows: every window starts from the zero state with the zero input
(the notebook's a0 = c0 = 0, x0 = 0), which is exactly how the daemon starts
to play, and predicts Tx tokens: inputs [0, t1 .. t(Tx-1)], targets
[t1 .. tTx]. Each epoch cuts every training piece into consecutive windows
with a random offset, and transposes each window by a random number of
semitones in the transposition range, so the model plays in every key.
Validation uses the validation pieces untransposed, in consecutive windows
with no offset. Validation is split by piece, never by window.

This module imports TensorFlow; the daemon never imports it.
"""

import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .bundle import Bundle, save_bundle
from .encoding import EncodingSettings, Token, tokenize_notes
from .errors import CorpusError
from .music import Piece
from .stepper import LstmWeights
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

WJAZZD_NOTICE = "Contains information from the Weimar Jazz Database, made available under the Open Database License (ODbL) v1.0."


@dataclass
class TrainingSettings:
    """Everything that decides a training run; stored in model.json."""

    n_a: int = 64
    tx: int = 30
    max_vocab: int = 768
    transpose_low: int = -5
    transpose_high: int = 6
    validation_share: float = 0.1
    batch_size: int = 64
    learning_rate: float = 0.01
    # The learning rate halves after this many epochs without a better validation loss.
    lr_patience: int = 2
    # Early stopping: stop after this many epochs without a better validation loss.
    patience: int = 6
    # A safety limit only; early stopping ends a normal run.
    max_epochs: int = 200
    seed: int = 0
    encoding: EncodingSettings = field(default_factory=EncodingSettings)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["encoding"] = self.encoding.to_dict()
        return values


@dataclass
class PreparedCorpus:
    """Token sequences of the training and validation pieces, before transposition."""

    vocabulary: Vocabulary
    training: dict[str, list[Token]]
    validation: dict[str, list[Token]]
    out_of_vocabulary_share: float


def split_pieces(pieces: Sequence[Piece], share: float, seed: int) -> tuple[list[Piece], list[Piece]]:
    """Split by piece: a seeded shuffle, then `share` of the pieces (at least one) for validation."""
    if len(pieces) < 2 or share <= 0:
        return list(pieces), []
    order = np.random.default_rng(seed).permutation(len(pieces))
    count = min(len(pieces) - 1, max(1, round(share * len(pieces))))
    validation = sorted(order[:count].tolist())
    chosen = set(validation)
    return [piece for index, piece in enumerate(pieces) if index not in chosen], [pieces[index] for index in validation]


def unique_names(pieces: Sequence[Piece]) -> list[Piece]:
    """Make piece names unique (validation pieces are named in model.json)."""
    seen: Counter = Counter()
    for piece in pieces:
        seen[piece.name] += 1
        if seen[piece.name] > 1:
            piece.name = f"{piece.name}#{seen[piece.name]}"
    return list(pieces)


def usable_pieces(pieces: Sequence[Piece]) -> list[Piece]:
    """Return the pieces with at least two notes, the least a training target needs; warn about each other one."""
    usable = []
    for piece in pieces:
        if len(piece.notes) >= 2:
            usable.append(piece)
        else:
            log.warning("skipped piece %s: it has %d note(s), training needs at least two", piece.source or piece.name, len(piece.notes))

    if not usable:
        raise CorpusError(f"none of the corpus's {len(pieces)} pieces has at least two notes, so there is nothing to train on")
    if len(usable) < len(pieces):
        log.info("training on %d of %d pieces, skipped %d with fewer than two notes", len(usable), len(pieces), len(pieces) - len(usable))
    return usable


def prepare_corpus(pieces: Sequence[Piece], settings: TrainingSettings) -> PreparedCorpus:
    """Tokenize the pieces, split them and build the vocabulary from the transposed training pieces."""
    pieces = unique_names(usable_pieces(pieces))
    training_pieces, validation_pieces = split_pieces(pieces, settings.validation_share, settings.seed)

    training = {piece.name: tokenize_notes(piece.notes, settings.encoding) for piece in training_pieces}
    validation = {piece.name: tokenize_notes(piece.notes, settings.encoding) for piece in validation_pieces}

    counts: Counter = Counter()
    for tokens in training.values():
        for semitones in range(settings.transpose_low, settings.transpose_high + 1):
            counts.update(token.transposed(semitones) for token in tokens)
    vocabulary = Vocabulary.from_counts(counts, settings.max_vocab)

    kept = sum(count for token, count in counts.items() if token in vocabulary)
    share = 1.0 - kept / max(1, sum(counts.values()))
    log.info(
        "%d training and %d validation pieces, %d training tokens, vocabulary of %d tokens (%.1f%% of transposed training tokens outside it)",
        len(training), len(validation), sum(map(len, training.values())), len(vocabulary), 100 * share,
    )
    return PreparedCorpus(vocabulary, training, validation, share)


def make_windows(sequences: Sequence[np.ndarray], tx: int, rng: np.random.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """Cut index sequences into windows: inputs (n, tx) with -1 as the zero input, targets (n, tx).

    With `rng`, each sequence starts at a random offset below tx; the last,
    shorter window of a sequence is padded with target -1, which the loss ignores.
    """
    inputs, targets = [], []
    for sequence in sequences:
        offset = int(rng.integers(tx)) if rng is not None and len(sequence) > tx else 0
        for start in range(offset, len(sequence), tx):
            chunk = sequence[start:start + tx]
            if len(chunk) < 2 and start > 0:
                continue
            window_targets = np.full(tx, -1, dtype=np.int32)
            window_targets[:len(chunk)] = chunk
            window_inputs = np.full(tx, -1, dtype=np.int32)
            window_inputs[1:len(chunk)] = chunk[:-1]
            inputs.append(window_inputs)
            targets.append(window_targets)
    return np.array(inputs, dtype=np.int32).reshape(-1, tx), np.array(targets, dtype=np.int32).reshape(-1, tx)


def transposed_indices(tokens: Sequence[Token], semitones: int, vocabulary: Vocabulary) -> np.ndarray:
    return np.array([vocabulary.index_of(token.transposed(semitones)) for token in tokens], dtype=np.int32)


class TranspositionTable:
    """Index sequences of every training piece under every transposition, computed once."""

    def __init__(self, corpus: PreparedCorpus, settings: TrainingSettings):
        self.shifts = list(range(settings.transpose_low, settings.transpose_high + 1))
        self.sequences = {
            name: [transposed_indices(tokens, shift, corpus.vocabulary) for shift in self.shifts]
            for name, tokens in corpus.training.items()
        }

    def epoch_windows(self, tx: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Cut one epoch's windows: consecutive windows from a random offset, one random transposition each."""
        all_inputs, all_targets = [], []
        for variants in self.sequences.values():
            length = len(variants[0])
            offset = int(rng.integers(tx)) if length > tx else 0
            for start in range(offset, length, tx):
                variant = variants[int(rng.integers(len(variants)))]
                inputs, targets = make_windows([variant[start:start + tx]], tx, None)
                all_inputs.append(inputs)
                all_targets.append(targets)
        order = rng.permutation(sum(len(inputs) for inputs in all_inputs))
        return np.concatenate(all_inputs)[order], np.concatenate(all_targets)[order]


def import_tensorflow():
    """Import TensorFlow quietly, or raise a clear error telling how to install it."""
    # Level 3 keeps TensorFlow's C++ start-up chatter (CUDA probing, graph notices) off the terminal.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError as error:
        raise CorpusError("training needs TensorFlow: install it with pip install 'sideman[train]'") from error
    return tf


def build_sequence_model(n_a: int, vocabulary_size: int, tx: int):
    """Build the training model: the shared cell as LSTM(return_sequences=True), then the shared densor.

    It takes token indices (batch, tx), with -1 for the zero input, and returns softmax outputs (batch, tx, vocabulary).
    """
    tf = import_tensorflow()
    keras = tf.keras

    indices = keras.Input(shape=(tx,), dtype="int32", name="tokens")
    one_hot = OneHot(vocabulary_size, name="one_hot")(indices)
    sequence = keras.layers.LSTM(n_a, return_sequences=True, name="LSTM_cell")(one_hot)
    probabilities = keras.layers.Dense(vocabulary_size, activation="softmax", name="densor")(sequence)
    return keras.Model(indices, probabilities, name="sideman_training")


def _one_hot_layer_class():
    tf = import_tensorflow()
    keras = tf.keras

    class OneHotLayer(keras.layers.Layer):
        """One-hot encode token indices; index -1 gives the all-zero input (x0 = 0)."""

        def __init__(self, depth: int, **kwargs):
            super().__init__(**kwargs)
            self.depth = depth

        def call(self, indices):
            return keras.ops.one_hot(indices, self.depth)

        def get_config(self):
            return {**super().get_config(), "depth": self.depth}

    return OneHotLayer


def OneHot(depth: int, **kwargs):
    return _one_hot_layer_class()(depth, **kwargs)


def masked_loss(tf):
    """Sparse cross-entropy averaged over real targets; target -1 (padding) counts for nothing."""

    def loss(targets, probabilities):
        targets = tf.cast(targets, tf.int32)
        mask = tf.cast(targets >= 0, probabilities.dtype)
        safe_targets = tf.maximum(targets, 0)
        losses = tf.keras.losses.sparse_categorical_crossentropy(safe_targets, probabilities)
        return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)

    return loss


def extract_weights(model) -> LstmWeights:
    kernel, recurrent_kernel, bias = model.get_layer("LSTM_cell").get_weights()
    dense_kernel, dense_bias = model.get_layer("densor").get_weights()
    return LstmWeights(kernel, recurrent_kernel, bias, dense_kernel, dense_bias)


def _progress_verbosity() -> int:
    # Keras's per-epoch progress bar on a terminal, one line per epoch in logs and CI.
    return 1 if sys.stderr.isatty() else 2


def train(
    pieces: Sequence[Piece],
    settings: TrainingSettings,
    out_path: str | os.PathLike,
    sources: Sequence[str] = (),
    name: str = "",
    description: str = "",
) -> Bundle:
    """Train a model on `pieces` and write it to `out_path` as a bundle; return the bundle."""
    tf = import_tensorflow()
    keras = tf.keras
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()

    corpus = prepare_corpus(pieces, settings)
    table = TranspositionTable(corpus, settings)
    validation_sequences = [np.array(corpus.vocabulary.indices(tokens), dtype=np.int32) for tokens in corpus.validation.values()]
    validation_data = make_windows(validation_sequences, settings.tx, None) if validation_sequences else None

    model = build_sequence_model(settings.n_a, len(corpus.vocabulary), settings.tx)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=masked_loss(tf))
    monitor = "val_loss" if validation_data is not None else "loss"
    if validation_data is None:
        log.warning("only one piece: no validation split, early stopping watches the training loss")

    rng = np.random.default_rng(settings.seed)
    history = _fit(model, table, settings, rng, validation_data, monitor)

    weights = extract_weights(model)
    bundle = Bundle(
        weights=weights,
        vocabulary=corpus.vocabulary,
        encoding=settings.encoding,
        tx=settings.tx,
        metadata=_metadata(corpus, settings, history, pieces, sources, name, description),
    )
    save_bundle(bundle, out_path)
    log.info("wrote %s (n_a = %d, %d tokens, best %s %.4f at epoch %d)", out_path, settings.n_a, len(corpus.vocabulary), monitor, history["best_loss"], history["best_epoch"])
    return bundle


def _fit(model, table: TranspositionTable, settings: TrainingSettings, rng, validation_data, monitor: str) -> dict:
    """Run epochs until the monitored loss stops improving; keep the best weights."""
    best_loss = float("inf")
    best_epoch = 0
    best_weights = model.get_weights()
    learning_rate = settings.learning_rate
    epochs = []
    tokens_per_second = []

    for epoch in range(1, settings.max_epochs + 1):
        inputs, targets = table.epoch_windows(settings.tx, rng)
        started = time.perf_counter()
        result = model.fit(
            inputs, targets,
            batch_size=settings.batch_size,
            epochs=epoch, initial_epoch=epoch - 1,
            validation_data=validation_data,
            shuffle=False,
            verbose=_progress_verbosity(),
        )
        elapsed = time.perf_counter() - started
        tokens_per_second.append(int((targets >= 0).sum() / elapsed))

        losses = {key: float(values[-1]) for key, values in result.history.items()}
        losses["learning_rate"] = learning_rate
        epochs.append(losses)
        if losses[monitor] < best_loss - 1e-4:
            best_loss, best_epoch = losses[monitor], epoch
            best_weights = model.get_weights()
        elif epoch - best_epoch >= settings.patience:
            log.info("early stopping after epoch %d: %s has not improved for %d epochs", epoch, monitor, settings.patience)
            break
        elif (epoch - best_epoch) % settings.lr_patience == 0:
            learning_rate /= 2
            model.optimizer.learning_rate.assign(learning_rate)
            log.info("%s has not improved for %d epochs: learning rate halved to %g", monitor, epoch - best_epoch, learning_rate)
    else:
        log.warning("stopped at the safety limit of %d epochs before early stopping", settings.max_epochs)

    model.set_weights(best_weights)
    return {"epochs": epochs, "best_epoch": best_epoch, "best_loss": best_loss, "monitor": monitor, "tokens_per_second": tokens_per_second}


def _metadata(corpus: PreparedCorpus, settings: TrainingSettings, history: dict, pieces, sources, name, description) -> dict:
    uses_wjazzd = any(":" in piece.source and "score_csv.zip" in piece.source for piece in pieces)
    return {
        "name": name or "sideman model",
        "description": description,
        "license": WJAZZD_NOTICE if uses_wjazzd else "",
        "corpus": {
            "sources": list(sources),
            "pieces": len(corpus.training) + len(corpus.validation),
            "training_pieces": sorted(corpus.training),
            "validation_pieces": sorted(corpus.validation),
            "training_tokens": sum(map(len, corpus.training.values())),
            "out_of_vocabulary_share": corpus.out_of_vocabulary_share,
        },
        "training": {
            **settings.to_dict(),
            "transpose": [settings.transpose_low, settings.transpose_high],
            "windows": "consecutive windows of tx tokens from a random offset per epoch, one random transposition per window; every window starts from the zero state and zero input",
            "epochs_run": len(history["epochs"]),
            "best_epoch": history["best_epoch"],
            "monitor": history["monitor"],
            "best_loss": history["best_loss"],
            "history": history["epochs"],
            "tokens_per_second": history["tokens_per_second"],
        },
        "metrics": {},
    }
