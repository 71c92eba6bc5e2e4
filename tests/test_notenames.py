import pytest

from sideman.errors import InvalidInputError
from sideman.notenames import parse_pitch, pitch_name


@pytest.mark.parametrize("name, pitch", [("C4", 60), ("F#4", 66), ("Bb3", 58), ("c-1", 0), ("G9", 127), ("r", None), ("A4", 69)])
def test_parse_pitch(name, pitch):
    assert parse_pitch(name) == pitch


@pytest.mark.parametrize("name", ["H4", "C", "", "Ab9", "C-2", "4C"])
def test_parse_pitch_rejects(name):
    with pytest.raises(InvalidInputError):
        parse_pitch(name)


def test_pitch_name_round_trip():
    for pitch in range(128):
        assert parse_pitch(pitch_name(pitch)) == pitch
    assert pitch_name(60) == "C4"
    assert pitch_name(None) == "r"
