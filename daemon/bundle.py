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
import math
import os
import zipfile
from dataclasses import dataclass, field, fields
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
_MODEL_KEYS = ("format_version", "n_a", "tx", "vocabulary", "encoding")

# Loading limits, far above any bundle that training writes: n_a is at most 1024
# and the vocabulary at most 10000 tokens, about 420 MB of weights in float64.
# model.json grows with the training history, a short line per epoch.
MAX_MODEL_JSON_BYTES = 64 * 1024 * 1024
MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024
# The zip structure and the .npy headers of the five arrays in weights.npz.
_NPZ_OVERHEAD_BYTES = 64 * 1024


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

    model.json is read and checked first, so that every array header can be
    checked against it before any array data is read. Raises BundleError
    naming the file, the key or array, and what was expected.
    """
    path = resolve_model_path(model)
    if not path.is_file():
        raise BundleError(f"model bundle {path} not found: pass an existing .sideman file to --model, or omit it for the built-in model")

    try:
        with zipfile.ZipFile(path) as archive:
            document = _read_model_json(archive, path)
            model_json = _check_model_json(document, path)
            arrays = _read_arrays(archive, path, model_json)
    except zipfile.BadZipFile as error:
        raise BundleError(f"model bundle {path} is damaged or not a bundle (not a valid zip: {error})") from error
    except (OSError, EOFError) as error:
        raise BundleError(f"model bundle {path} could not be read: {error}") from error

    metadata = {key: value for key, value in document.items() if key not in _MODEL_KEYS}
    weights = LstmWeights(**arrays)
    return Bundle(weights, model_json.vocabulary, model_json.encoding, model_json.tx, metadata, str(path))


@dataclass
class _ModelJson:
    """The checked keys of model.json that the arrays must match."""

    n_a: int
    tx: int
    vocabulary: Vocabulary
    encoding: EncodingSettings

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        size = len(self.vocabulary)
        return {
            "kernel": (size, 4 * self.n_a),
            "recurrent_kernel": (self.n_a, 4 * self.n_a),
            "bias": (4 * self.n_a,),
            "dense_kernel": (self.n_a, size),
            "dense_bias": (size,),
        }


def _read_member(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError as error:
        raise BundleError(f"model bundle {path} has no {name}") from error
    # file_size comes from the zip's directory; zipfile stops reading at that size, so the check bounds memory.
    if info.file_size > limit:
        raise BundleError(f"model bundle {path}: {name} unpacks to {info.file_size} bytes, more than the {limit} sideman reads")
    try:
        return archive.read(info)
    except (RuntimeError, NotImplementedError) as error:
        # zipfile raises these for an encrypted member and an unknown compression method.
        raise BundleError(f"model bundle {path}: {name} could not be unpacked ({error}); sideman writes bundles as plain zip files") from error


def _read_model_json(archive: zipfile.ZipFile, path: Path) -> dict:
    data = _read_member(archive, "model.json", MAX_MODEL_JSON_BYTES, path)
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        # ValueError covers invalid JSON and invalid UTF-8; RecursionError, arrays nested thousands deep.
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise BundleError(f"model bundle {path}: model.json is not valid JSON ({reason})") from error
    if not isinstance(document, dict):
        raise BundleError(f"model bundle {path}: model.json must contain a JSON object")
    return document


def _require(document: dict, key: str, kind: type | tuple, path: Path):
    if key not in document:
        raise BundleError(f"model bundle {path}: model.json lacks the key {key!r}")
    value = document[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BundleError(f"model bundle {path}: model.json key {key!r} is {value!r}, expected {getattr(kind, '__name__', kind)}")
    return value


def _check_model_json(document: dict, path: Path) -> _ModelJson:
    version = _require(document, "format_version", int, path)
    if version > FORMAT_VERSION:
        raise BundleError(f"model bundle {path} has format version {version}, newer than this sideman reads ({FORMAT_VERSION}); upgrade sideman")
    if version < 1:
        raise BundleError(f"model bundle {path} has invalid format version {version}, expected 1-{FORMAT_VERSION}")

    n_a = _require(document, "n_a", int, path)
    tx = _require(document, "tx", int, path)
    for key, value in (("n_a", n_a), ("tx", tx)):
        if value < 1:
            raise BundleError(f"model bundle {path}: model.json key {key!r} is {value}, expected a positive integer")

    vocabulary = _check_vocabulary(_require(document, "vocabulary", list, path), path)
    encoding = _check_encoding(_require(document, "encoding", dict, path), path)
    model_json = _ModelJson(n_a, tx, vocabulary, encoding)

    # float64 is the widest dtype accepted, so this bounds the memory the arrays can take.
    largest_bytes = 8 * sum(math.prod(shape) for shape in model_json.expected_shapes().values())
    if largest_bytes > MAX_WEIGHTS_BYTES:
        raise BundleError(
            f"model bundle {path}: n_a = {n_a} and a vocabulary of {len(vocabulary)} tokens "
            f"need up to {largest_bytes} bytes of weights, more than the {MAX_WEIGHTS_BYTES} sideman loads"
        )
    return model_json


def _check_vocabulary(rows: list, path: Path) -> Vocabulary:
    for index, row in enumerate(rows):
        valid_shape = isinstance(row, list) and len(row) == 2
        pitch, steps = row if valid_shape else (None, None)
        valid_pitch = pitch is None or isinstance(pitch, int) and not isinstance(pitch, bool) and 0 <= pitch <= 127
        valid_steps = isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1
        if not (valid_shape and valid_pitch and valid_steps):
            raise BundleError(
                f"model bundle {path}: vocabulary entry {index} is {row!r}, expected [pitch, steps] "
                "with a MIDI pitch 0-127 (null for a rest) and a whole number of grid steps of at least 1"
            )
    try:
        return Vocabulary.from_list(rows)
    except ValueError as error:
        raise BundleError(f"model bundle {path}: invalid vocabulary in model.json ({error})") from error


def _check_encoding(values: dict, path: Path) -> EncodingSettings:
    expected = "steps_per_beat (an integer of at least 1), rest_threshold (at least 0 beats) and max_beats (at least one grid step)"
    # A default would silently change how the model's tokens are timed, so every key is required.
    missing = [setting.name for setting in fields(EncodingSettings) if setting.name not in values]
    if missing:
        raise BundleError(f"model bundle {path}: the encoding in model.json lacks {', '.join(missing)}; expected {expected}")
    try:
        encoding = EncodingSettings.from_dict(values)
    except TypeError as error:
        raise BundleError(f"model bundle {path}: invalid encoding in model.json ({error}); expected {expected}") from error

    steps_per_beat, rest_threshold, max_beats = encoding.steps_per_beat, encoding.rest_threshold, encoding.max_beats
    numbers = (rest_threshold, max_beats)
    valid = (
        isinstance(steps_per_beat, int) and not isinstance(steps_per_beat, bool) and steps_per_beat >= 1
        and all(isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number) for number in numbers)
        and rest_threshold >= 0
        # A max_beats under one grid step would make max_steps 0, and splitting a rest into pieces of 0 steps never ends.
        and encoding.max_steps >= 1
    )
    if not valid:
        raise BundleError(f"model bundle {path}: invalid encoding {values!r} in model.json; expected {expected}")
    return encoding


def _read_arrays(archive: zipfile.ZipFile, path: Path, model_json: _ModelJson) -> dict[str, np.ndarray]:
    data = _read_member(archive, "weights.npz", MAX_WEIGHTS_BYTES + _NPZ_OVERHEAD_BYTES, path)
    try:
        _check_array_headers(data, path, model_json)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in _ARRAY_NAMES}
    except BundleError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as error:
        # numpy's own message may suggest allow_pickle, which a bundle from a stranger must never get.
        raise BundleError(f"model bundle {path}: weights.npz is not an archive of numeric arrays; sideman loads no pickled objects") from error

    for name, array in arrays.items():
        if not np.all(np.isfinite(array)):
            raise BundleError(f"model bundle {path}: array {name} contains NaN or infinite values")
    return arrays


def _check_array_headers(data: bytes, path: Path, model_json: _ModelJson) -> None:
    """Check every array's dtype and shape in its .npy header, before numpy allocates memory for its data."""
    with zipfile.ZipFile(io.BytesIO(data)) as npz:
        # np.savez names the members "kernel.npy" and so on; np.load also finds them without the suffix.
        members = {member.removesuffix(".npy"): member for member in npz.namelist()}
        missing = [name for name in _ARRAY_NAMES if name not in members]
        if missing:
            raise BundleError(f"model bundle {path}: weights.npz lacks the array(s) {', '.join(missing)}; expected {', '.join(_ARRAY_NAMES)}")

        for name, shape in model_json.expected_shapes().items():
            with npz.open(members[name]) as member:
                declared_shape, dtype = _read_npy_header(member, name, path)
            if not np.issubdtype(dtype, np.floating):
                raise BundleError(f"model bundle {path}: array {name} has dtype {dtype}, expected floating point; sideman loads no pickled objects")
            if declared_shape != shape:
                raise BundleError(
                    f"model bundle {path}: array {name} has shape {declared_shape}, expected {shape} "
                    f"for n_a = {model_json.n_a} and a vocabulary of {len(model_json.vocabulary)} tokens"
                )


def _read_npy_header(member, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise BundleError(f"model bundle {path}: array {name} is in .npy format version {version[0]}.{version[1]}, expected 1.0 or 2.0")
    return shape, dtype
