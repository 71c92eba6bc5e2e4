import os

import pytest

from sideman.errors import InvalidInputError
from sideman.outfiles import check_output_path, replacing


def test_new_file_written_with_umask_permissions(tmp_path):
    target = tmp_path / "take.mid"

    with replacing(target, "MIDI file") as file:
        file.write(b"data")

    assert target.read_bytes() == b"data"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [path.name for path in tmp_path.iterdir()] == ["take.mid"]


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "model.sideman"
    target.write_bytes(b"good")

    with pytest.raises(RuntimeError):
        with replacing(target, "model bundle") as file:
            file.write(b"half")
            raise RuntimeError("interrupted")

    assert target.read_bytes() == b"good"
    assert [path.name for path in tmp_path.iterdir()] == ["model.sideman"]


def test_device_never_replaced():
    with pytest.raises(InvalidInputError, match="not a regular file"):
        check_output_path("/dev/null", "MIDI file")


def test_folder_rejected(tmp_path):
    with pytest.raises(InvalidInputError, match="is a folder"):
        check_output_path(tmp_path, "recording")


def test_missing_folder_rejected(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        check_output_path(tmp_path / "absent" / "take.mid", "recording")


def test_empty_name_rejected():
    with pytest.raises(InvalidInputError, match="expected a file name"):
        check_output_path("", "MIDI file")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
