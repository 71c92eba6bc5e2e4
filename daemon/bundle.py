"""Model bundles: one zip holding model.json and weights.npz, data only.

model.json contains the format version, n_a, Tx, the vocabulary (pitch and
duration of every token), the encoding settings, the training corpus and
settings, the validation pieces, metrics and the data licence notice.
weights.npz contains the LSTM kernel, recurrent kernel and bias in Keras's gate
order (i, f, c, o) and the Dense kernel and bias. Loading never unpickles
and runs no code, so a bundle from a stranger is safe to open.
"""

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .encoding import EncodingSettings
from .errors import BundleError
from .outfiles import replacing
from .stepper import LstmWeights
from .vocabulary import Vocabulary

FORMAT_VERSION = 1
BUILTIN_MODEL = "builtin"
_ARRAY_NAMES = ("kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")


@dataclass
class Bundle:
    """A trained model: weights, vocabulary, encoding and the metadata of its training."""

    weights: LstmWeights
    vocabulary: Vocabulary
    encoding: EncodingSettings
    tx: int
    metadata: dict = field(default_factory=dict)
    path: str = ""

    @property
    def n_a(self) -> int:
        return self.weights.n_a

    def model_json(self) -> dict:
        document = dict(self.metadata)
        document.update(
            format_version=FORMAT_VERSION,
            n_a=self.n_a,
            tx=self.tx,
            vocabulary=self.vocabulary.to_list(),
            encoding=self.encoding.to_dict(),
        )
        return document


def builtin_bundle_path() -> Path:
    """Return the path of the built-in model shipped as package data."""
    return Path(str(resources.files("sideman") / "data" / "builtin.sideman"))


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    if model is None or str(model) == BUILTIN_MODEL:
        return builtin_bundle_path()
    return Path(model)


def save_bundle(bundle: Bundle, path: str | os.PathLike) -> None:
    """Write the bundle beside `path` and rename it into place, so a good file is never half-written."""
    target = Path(path)
    arrays = io.BytesIO()
    np.savez(arrays, **{name: getattr(bundle.weights, name) for name in _ARRAY_NAMES})
    document = json.dumps(bundle.model_json(), indent=1, sort_keys=True)

    with replacing(target, "model bundle") as file, zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.json", document)
        archive.writestr("weights.npz", arrays.getvalue())


def load_bundle(model: str | os.PathLike | None = None) -> Bundle:
    """Load and check a bundle; `None` or "builtin" loads the built-in model.

    Raises BundleError naming the file, the key or array, and what was expected.
    """
    path = resolve_model_path(model)
    if not path.is_file():
        raise BundleError(f"model bundle {path} not found: pass an existing .sideman file to --model, or omit it for the built-in model")

    try:
        with zipfile.ZipFile(path) as archive:
            document = _read_model_json(archive, path)
            arrays = _read_arrays(archive, path)
    except zipfile.BadZipFile as error:
        raise BundleError(f"model bundle {path} is damaged or not a bundle (not a valid zip: {error})") from error
    except (OSError, EOFError) as error:
        raise BundleError(f"model bundle {path} could not be read: {error}") from error

    return _build_bundle(document, arrays, path)


def _read_model_json(archive: zipfile.ZipFile, path: Path) -> dict:
    try:
        document = json.loads(archive.read("model.json"))
    except KeyError as error:
        raise BundleError(f"model bundle {path} has no model.json") from error
    except (ValueError, zipfile.BadZipFile) as error:
        raise BundleError(f"model bundle {path}: model.json is not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise BundleError(f"model bundle {path}: model.json must hold an object")
    return document


def _read_arrays(archive: zipfile.ZipFile, path: Path) -> dict[str, np.ndarray]:
    try:
        data = archive.read("weights.npz")
    except KeyError as error:
        raise BundleError(f"model bundle {path} has no weights.npz") from error

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [name for name in _ARRAY_NAMES if name not in npz.files]
            if missing:
                raise BundleError(f"model bundle {path}: weights.npz lacks the array(s) {', '.join(missing)}; expected {', '.join(_ARRAY_NAMES)}")
            return {name: npz[name] for name in _ARRAY_NAMES}
    except BundleError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        # numpy's own message may suggest allow_pickle, which a bundle from a stranger must never get.
        raise BundleError(f"model bundle {path}: weights.npz is not an archive of numeric arrays; sideman loads no pickled objects") from error


def _require(document: dict, key: str, kind: type | tuple, path: Path):
    if key not in document:
        raise BundleError(f"model bundle {path}: model.json lacks the key {key!r}")
    value = document[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BundleError(f"model bundle {path}: model.json key {key!r} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _build_bundle(document: dict, arrays: dict[str, np.ndarray], path: Path) -> Bundle:
    version = _require(document, "format_version", int, path)
    if version > FORMAT_VERSION:
        raise BundleError(f"model bundle {path} has format version {version}, newer than this sideman reads ({FORMAT_VERSION}); upgrade sideman")
    if version < 1:
        raise BundleError(f"model bundle {path} has invalid format version {version}, expected 1-{FORMAT_VERSION}")

    n_a = _require(document, "n_a", int, path)
    tx = _require(document, "tx", int, path)
    rows = _require(document, "vocabulary", list, path)
    try:
        vocabulary = Vocabulary.from_list(rows)
        encoding = EncodingSettings.from_dict(_require(document, "encoding", dict, path))
    except (TypeError, ValueError) as error:
        raise BundleError(f"model bundle {path}: invalid vocabulary or encoding in model.json ({error})") from error

    size = len(vocabulary)
    expected_shapes = {
        "kernel": (size, 4 * n_a),
        "recurrent_kernel": (n_a, 4 * n_a),
        "bias": (4 * n_a,),
        "dense_kernel": (n_a, size),
        "dense_bias": (size,),
    }
    for name, shape in expected_shapes.items():
        array = arrays[name]
        if array.shape != shape:
            raise BundleError(f"model bundle {path}: array {name} has shape {array.shape}, expected {shape} for n_a = {n_a} and a vocabulary of {size} tokens")
        if not np.issubdtype(array.dtype, np.floating):
            raise BundleError(f"model bundle {path}: array {name} has dtype {array.dtype}, expected floating point")
        if not np.all(np.isfinite(array)):
            raise BundleError(f"model bundle {path}: array {name} contains NaN or infinite values")

    metadata = {key: value for key, value in document.items() if key not in ("format_version", "n_a", "tx", "vocabulary", "encoding")}
    weights = LstmWeights(**{name: arrays[name] for name in _ARRAY_NAMES})
    return Bundle(weights, vocabulary, encoding, tx, metadata, str(path))
