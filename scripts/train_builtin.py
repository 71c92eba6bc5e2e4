"""Train the built-in model on the Weimar Jazz Database and write it into the package.

Usage: python scripts/train_builtin.py WJAZZD_FOLDER [--out daemon/data/builtin.sideman]

WJAZZD_FOLDER contains score_csv.zip and df_solos.csv from the Jazzomat
project's raw_data repository (wjazzd_v_1_2/score/score_csv.zip and
wjazzd_v_1_2/pandas_dataframes_csv/df_solos.csv). The settings and the seed
are fixed, so anyone with the data rebuilds the same model; on a 2-core
machine the run takes well under an hour. After training, the script scores
the model and the n-gram baselines on the validation pieces and stores the
table in model.json.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from sideman.bundle import load_bundle, save_bundle
from sideman.corpus import read_corpus
from sideman.evaluation import evaluate, format_markdown, select_pieces
from sideman.training import TrainingSettings, train

# Chosen by validation loss within the live step budget of 50 us per note:
# docs/model.md compares n_a = 64 with n_a = 128.
BUILTIN_SETTINGS = TrainingSettings(
    n_a=64,
    tx=30,
    max_vocab=768,
    transpose_low=-5,
    transpose_high=6,
    validation_share=0.1,
    batch_size=64,
    learning_rate=0.01,
    lr_patience=2,
    patience=6,
    max_epochs=200,
    seed=7,
)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "daemon" / "data" / "builtin.sideman"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wjazzd", help="folder holding score_csv.zip and df_solos.csv")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="bundle to write (default: the package's built-in model)")
    parser.add_argument("--evaluate-only", action="store_true", help="skip training: score the existing bundle and store the figures in it")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    pieces = read_corpus([arguments.wjazzd])
    training_seconds = None
    if not arguments.evaluate_only:
        started = time.perf_counter()
        train(
            pieces,
            BUILTIN_SETTINGS,
            arguments.out,
            sources=["Weimar Jazz Database 1.2: score_csv.zip, df_solos.csv"],
            name="sideman built-in jazz model",
            description="Trained on 270 jazz solos of the Weimar Jazz Database by scripts/train_builtin.py.",
        )
        training_seconds = round(time.perf_counter() - started, 1)

    bundle = load_bundle(arguments.out)
    if training_seconds is None:
        training_seconds = bundle.metadata.get("metrics", {}).get("training_seconds")
    corpus = bundle.metadata["corpus"]
    report = evaluate(bundle, select_pieces(pieces, corpus["validation_pieces"]), select_pieces(pieces, corpus["training_pieces"]))
    bundle.metadata["metrics"] = {"validation": report.to_dict()}
    if training_seconds is not None:
        bundle.metadata["metrics"]["training_seconds"] = training_seconds
    save_bundle(bundle, arguments.out)

    print(format_markdown(report))
    if training_seconds is not None:
        print(f"training took {training_seconds / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
