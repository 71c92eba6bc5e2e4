import io
import json
import zipfile

import numpy as np
import pytest

from sideman.bundle import FORMAT_VERSION, load_bundle, save_bundle
from sideman.errors import BundleError
from tests.factories import random_bundle


def rewrite(path, model_json=None, arrays=None):
    """Rewrite a bundle's members; None keeps a member as it is, "drop" leaves it out."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if model_json == "drop":
        del members["model.json"]
    elif model_json is not None:
        members["model.json"] = json.dumps(model_json).encode()
    if arrays is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        members["weights.npz"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def saved(tmp_path):
    bundle = random_bundle()
    path = tmp_path / "model.sideman"
    save_bundle(bundle, path)
    return bundle, path


def test_round_trip(tmp_path):
    bundle, path = saved(tmp_path)

    loaded = load_bundle(path)

    assert loaded.vocabulary.tokens == bundle.vocabulary.tokens
    assert loaded.metadata["name"] == "random test model"
    np.testing.assert_array_equal(loaded.weights.kernel, bundle.weights.kernel)


def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "absent.sideman")


def test_not_a_zip(tmp_path):
    path = tmp_path / "junk.sideman"
    path.write_bytes(b"not a zip at all")

    with pytest.raises(BundleError, match="not a valid zip"):
        load_bundle(path)


def test_truncated(tmp_path):
    _, path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(BundleError, match=str(path.name)):
        load_bundle(path)


def test_newer_format_version(tmp_path):
    bundle, path = saved(tmp_path)
    document = bundle.model_json()
    document["format_version"] = FORMAT_VERSION + 1
    rewrite(path, model_json=document)

    with pytest.raises(BundleError, match="newer"):
        load_bundle(path)


def test_missing_array(tmp_path):
    bundle, path = saved(tmp_path)
    arrays = {name: getattr(bundle.weights, name) for name in ("kernel", "recurrent_kernel", "bias", "dense_kernel")}
    rewrite(path, arrays=arrays)

    with pytest.raises(BundleError, match="dense_bias"):
        load_bundle(path)


def test_vocabulary_not_matching_weights(tmp_path):
    bundle, path = saved(tmp_path)
    document = bundle.model_json()
    document["vocabulary"] = document["vocabulary"][:-1]
    rewrite(path, model_json=document)

    with pytest.raises(BundleError, match="expected"):
        load_bundle(path)


def test_missing_model_json(tmp_path):
    _, path = saved(tmp_path)
    rewrite(path, model_json="drop")

    with pytest.raises(BundleError, match="model.json"):
        load_bundle(path)


def test_pickled_array_not_loaded(tmp_path):
    bundle, path = saved(tmp_path)
    arrays = {name: getattr(bundle.weights, name) for name in ("kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")}
    arrays["dense_bias"] = np.array([{"code": "run me"}], dtype=object)
    rewrite(path, arrays=arrays)

    with pytest.raises(BundleError, match="loads no pickled objects") as raised:
        load_bundle(path)

    assert "allow_pickle" not in str(raised.value)


def test_save_replaces_atomically(tmp_path):
    bundle, path = saved(tmp_path)

    save_bundle(bundle, path)

    assert [p.name for p in tmp_path.iterdir()] == ["model.sideman"]
