"""The [cc] table: validation, scaling of knobs, button edges, channel filter and logging, with a fake clock."""

import logging
from typing import Any

import mido
import pytest

from sideman.ccmap import Button, CcMap, Knob, parse_cc_map
from sideman.commands import Panic, Respond, SetParam, SetTempo, Start, Stop
from sideman.engine import DEFAULT_REGISTRY, DEFAULT_SEEDERS
from sideman.errors import SettingsError
from sideman.params import Param, Plugin
from sideman.tempo import MAX_BPM, MIN_BPM

SOURCE = "studio.toml"


class FakeClock:
    """A clock that moves only when the test advances it, in seconds."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Drift(Plugin):
    """A sampler whose only numeric parameter declares a lower limit but no upper one."""

    kind = "sampler"
    name = "drift"
    params = (Param("amount", float, 1.0, "how far to drift", low=0.0),)


def parse(table: dict[str, Any], clock: FakeClock | None = None) -> CcMap:
    samplers = {**DEFAULT_REGISTRY, Drift.name: Drift}
    return parse_cc_map(table, samplers, DEFAULT_SEEDERS, SOURCE, clock=clock or FakeClock())


def cc(control: int, value: int, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", control=control, value=value, channel=channel)


def declared_range(plugin: str, name: str) -> tuple[float, float]:
    param = next(param for param in DEFAULT_REGISTRY[plugin].params if param.name == name)
    return param.low, param.high


def test_float_param_scales_over_declared_range():
    low, high = declared_range("temperature", "value")
    ccmap = parse({"temperature": 21})

    assert ccmap.translate(cc(21, 0)) == [SetParam("temperature", "value", low)]
    [middle] = ccmap.translate(cc(21, 64))
    assert middle.value == pytest.approx(low + (high - low) * 64 / 127)
    assert isinstance(middle.value, float)
    assert ccmap.translate(cc(21, 127)) == [SetParam("temperature", "value", high)]


def test_int_param_scales_and_rounds():
    low, high = declared_range("top_k", "k")
    ccmap = parse({"top_k.k": 23})

    assert ccmap.translate(cc(23, 0)) == [SetParam("top_k", "k", low)]
    [middle] = ccmap.translate(cc(23, 64))
    assert middle.value == round(low + (high - low) * 64 / 127)
    assert type(middle.value) is int
    assert ccmap.translate(cc(23, 127)) == [SetParam("top_k", "k", high)]


def test_tempo_scales_over_allowed_bpm():
    ccmap = parse({"tempo": 20})

    assert ccmap.translate(cc(20, 0)) == [SetTempo(MIN_BPM)]
    [middle] = ccmap.translate(cc(20, 64))
    assert middle.bpm == pytest.approx(MIN_BPM + (MAX_BPM - MIN_BPM) * 64 / 127)
    assert ccmap.translate(cc(20, 127)) == [SetTempo(MAX_BPM)]


def test_tempo_narrowed_range():
    ccmap = parse({"tempo": {"cc": 20, "low": 60, "high": 180}})

    assert ccmap.translate(cc(20, 0)) == [SetTempo(60.0)]
    [middle] = ccmap.translate(cc(20, 64))
    assert middle.bpm == pytest.approx(60 + 120 * 64 / 127)
    assert ccmap.translate(cc(20, 127)) == [SetTempo(180.0)]


def test_int_param_narrowed_range():
    ccmap = parse({"top_k.k": {"cc": 23, "low": 2, "high": 12}})

    assert ccmap.translate(cc(23, 0)) == [SetParam("top_k", "k", 2)]
    assert ccmap.translate(cc(23, 64)) == [SetParam("top_k", "k", 7)]  # 2 + 10 * 64 / 127 = 7.04
    assert ccmap.translate(cc(23, 127)) == [SetParam("top_k", "k", 12)]


def test_narrowed_range_keeps_declared_other_end():
    low, _ = declared_range("temperature", "value")
    ccmap = parse({"temperature": {"cc": 21, "high": 2.0}})

    assert ccmap.translate(cc(21, 0)) == [SetParam("temperature", "value", low)]
    assert ccmap.translate(cc(21, 127)) == [SetParam("temperature", "value", 2.0)]


def test_plugin_name_alone_takes_its_numeric_param():
    # top_p also has the bool parameter `rests`, which a knob cannot set.
    ccmap = parse({"top_p": 22})

    assert ccmap.translate(cc(22, 127)) == [SetParam("top_p", "p", 1.0)]


def test_seeder_param_mapped():
    ccmap = parse({"token.pitch": 30})

    assert ccmap.translate(cc(30, 127)) == [SetParam("token", "pitch", 127)]


def test_undeclared_limit_given_in_table():
    ccmap = parse({"drift": {"cc": 40, "high": 10}})

    assert ccmap.translate(cc(40, 0)) == [SetParam("drift", "amount", 0.0)]
    assert ccmap.translate(cc(40, 127)) == [SetParam("drift", "amount", 10.0)]


def test_every_cc_value_stays_in_declared_range():
    plugins = {**DEFAULT_REGISTRY, **DEFAULT_SEEDERS}
    numeric = [(name, param) for name, plugin in plugins.items() for param in plugin.params if param.type in (int, float)]

    for name, param in numeric:
        ccmap = parse({f"{name}.{param.name}": 1})
        values = []
        for value in range(128):
            for command in ccmap.translate(cc(1, value)):
                values.append(command.value)

        assert values[0] == param.low, name
        assert values[-1] == param.high, name
        assert all(param.low <= value <= param.high for value in values), name
        assert values == sorted(values), name
        assert all(isinstance(value, param.type) for value in values), name


def test_same_knob_value_sends_nothing():
    ccmap = parse({"temperature": 21})

    assert ccmap.translate(cc(21, 50)) != []
    assert ccmap.translate(cc(21, 50)) == []
    assert ccmap.translate(cc(21, 51)) != []


def test_knob_values_rounding_alike_send_once():
    ccmap = parse({"top_k.k": {"cc": 23, "low": 1, "high": 3}})

    assert ccmap.translate(cc(23, 0)) == [SetParam("top_k", "k", 1)]
    assert ccmap.translate(cc(23, 1)) == []  # 1 + 2 / 127 rounds to 1
    assert ccmap.translate(cc(23, 127)) == [SetParam("top_k", "k", 3)]


@pytest.mark.parametrize(
    ("key", "command"),
    [("start", Start()), ("stop", Stop()), ("panic", Panic()), ("respond", Respond())],
)
def test_button_sends_its_command(key, command):
    ccmap = parse({key: 64})

    assert ccmap.translate(cc(64, 127)) == [command]


def test_button_fires_on_rising_edge_only():
    ccmap = parse({"start": 64})

    assert ccmap.translate(cc(64, 127)) == [Start()]  # first message, already pressed
    assert ccmap.translate(cc(64, 127)) == []  # held
    assert ccmap.translate(cc(64, 100)) == []  # still at or above 64
    assert ccmap.translate(cc(64, 0)) == []  # release
    assert ccmap.translate(cc(64, 63)) == []
    assert ccmap.translate(cc(64, 64)) == [Start()]
    assert ccmap.translate(cc(64, 64)) == []


def test_button_first_message_below_threshold():
    ccmap = parse({"stop": 65})

    assert ccmap.translate(cc(65, 0)) == []
    assert ccmap.translate(cc(65, 64)) == [Stop()]


def test_buttons_keep_separate_edges():
    ccmap = parse({"start": 64, "stop": 65})

    assert ccmap.translate(cc(64, 127)) == [Start()]
    assert ccmap.translate(cc(65, 127)) == [Stop()]
    assert ccmap.translate(cc(64, 127)) == []


def test_unmapped_cc_and_other_messages_ignored():
    ccmap = parse({"temperature": 21, "start": 64})

    assert ccmap.translate(cc(22, 100)) == []
    assert ccmap.translate(mido.Message("note_on", note=21, velocity=100)) == []
    assert ccmap.translate(mido.Message("pitchwheel", pitch=1000)) == []
    assert ccmap.translate(mido.Message("clock")) == []


def test_channel_filter():
    ccmap = parse({"temperature": 21, "start": 64, "channel": 3})

    assert ccmap.channel == 3
    assert ccmap.translate(cc(21, 127, channel=0)) == []
    assert ccmap.translate(cc(64, 127, channel=15)) == []
    assert ccmap.translate(cc(21, 127, channel=2)) != []
    assert ccmap.translate(cc(64, 127, channel=2)) == [Start()]


@pytest.mark.parametrize("channel", [0, 5, 15])
def test_channel_zero_reads_every_channel(channel):
    ccmap = parse({"temperature": 21, "channel": 0})

    assert ccmap.channel is None
    assert ccmap.translate(cc(21, 127, channel=channel)) != []


def test_describe_lists_mappings_in_cc_order():
    ccmap = parse({"start": 64, "temperature": 21, "tempo": {"cc": 20, "low": 60, "high": 180}, "top_k.k": 23})

    assert ccmap.describe() == [
        "CC 20 -> tempo (60-180 BPM)",
        "CC 21 -> temperature.value (0.05-5)",
        "CC 23 -> top_k.k (1-10000)",
        "CC 64 -> start (button, fires at 64 or more)",
    ]


def test_empty_map():
    assert parse({}).empty
    assert not parse({})
    assert not parse({"channel": 2})
    assert parse({"start": 64})
    assert not parse({"start": 64}).empty


def test_knob_logs_info_after_stillness(caplog):
    clock = FakeClock()
    ccmap = parse({"temperature": 21}, clock)
    caplog.set_level(logging.DEBUG, logger="sideman.ccmap")

    def moves_at(level: int) -> list[str]:
        return [record.getMessage() for record in caplog.records if record.levelno == level and "moves" in record.getMessage()]

    ccmap.translate(cc(21, 20))
    clock.now += 0.5
    ccmap.translate(cc(21, 21))
    clock.now += 0.9
    ccmap.translate(cc(21, 22))
    clock.now += 1.5
    ccmap.translate(cc(21, 23))

    assert len(moves_at(logging.INFO)) == 2
    assert len(moves_at(logging.DEBUG)) == 2
    assert moves_at(logging.INFO)[0] == "CC 21 moves temperature.value: 0.83"  # 0.05 + 4.95 * 20 / 127


def test_tempo_log_names_bpm(caplog):
    ccmap = parse({"tempo": {"cc": 20, "low": 60, "high": 180}})
    caplog.set_level(logging.INFO, logger="sideman.ccmap")

    ccmap.translate(cc(20, 127))

    assert "CC 20 moves tempo: 180.00 BPM" in caplog.messages


def test_button_press_logged_each_time(caplog):
    ccmap = parse({"panic": 66})
    caplog.set_level(logging.INFO, logger="sideman.ccmap")

    for value in (127, 127, 0, 127):
        ccmap.translate(cc(66, value))

    presses = [record for record in caplog.records if record.levelno == logging.INFO and "presses panic" in record.getMessage()]
    assert len(presses) == 2


INVALID_TABLES = [
    # (table, key, value repr, expected phrase)
    ({"temprature": 21}, "temprature", "21", "did you mean 'temperature'?"),
    ({"xyzzy": 21}, "xyzzy", "21", "valid keys: tempo, start, stop, panic, respond, channel"),
    ({"top_k.kk": 21}, "top_k.kk", "21", "did you mean 'top_k.k'?"),
    ({"nothing.value": 21}, "nothing.value", "21", "no plugin or control named 'nothing'"),
    ({"scale.key": 21}, "scale.key", "21", "scale.key is a str parameter"),
    ({"top_k.rests": 21}, "top_k.rests", "21", "top_k.rests is a bool parameter"),
    ({"greedy": 21}, "greedy", "21", "sampler 'greedy' has no int or float parameter"),
    ({"zero": 21}, "zero", "21", "seeder 'zero' has no int or float parameter"),
    ({"repetition": 21}, "repetition", "21", '3 int or float parameters; name one as a quoted key: "repetition.max_repeats", "repetition.strength", "repetition.window"'),
    ({"token": 21}, "token", "21", '"token.pitch", "token.beats"'),
    ({"temperature": 120}, "temperature", "120", "expected a CC number from 0 to 119 (120-127 are channel mode messages)"),
    ({"temperature": -1}, "temperature", "-1", "expected a CC number from 0 to 119"),
    ({"start": 21.0}, "start", "21.0", "expected a CC number from 0 to 119"),
    ({"stop": "21"}, "stop", "'21'", "expected a CC number from 0 to 119"),
    ({"panic": True}, "panic", "True", "expected a CC number from 0 to 119"),
    ({"tempo": {"cc": 127}}, "tempo", "{'cc': 127}", "expected a CC number from 0 to 119"),
    ({"temperature": 21, "start": 21}, "start", "21", "CC 21 is already mapped by 'temperature'"),
    ({"tempo": {"cc": 20, "low": 10}}, "tempo", "{'cc': 20, 'low': 10}", "low 10 is outside the declared range 20 to 400 BPM"),
    ({"tempo": {"cc": 20, "high": 401}}, "tempo", "{'cc': 20, 'high': 401}", "high 401 is outside the declared range 20 to 400 BPM"),
    ({"temperature": {"cc": 21, "high": 6}}, "temperature", "{'cc': 21, 'high': 6}", "high 6 is outside the declared range 0.05 to 5"),
    ({"tempo": {"cc": 20, "low": 120, "high": 120}}, "tempo", "{'cc': 20, 'low': 120, 'high': 120}", "low 120 must be less than high 120"),
    ({"tempo": {"cc": 20, "low": 180, "high": 60}}, "tempo", "{'cc': 20, 'low': 180, 'high': 60}", "low 180 must be less than high 60"),
    ({"tempo": {"cc": 20, "low": "60"}}, "tempo", "{'cc': 20, 'low': '60'}", "low '60' is not a number; expected a finite number within 20 to 400 BPM"),
    ({"tempo": {"cc": 20, "low": float("nan")}}, "tempo", "{'cc': 20, 'low': nan}", "low nan is not a number"),
    ({"top_k.k": {"cc": 23, "low": 1.5}}, "top_k.k", "{'cc': 23, 'low': 1.5}", "low 1.5 is not a whole number"),
    ({"drift": 40}, "drift", "40", "the parameter declares no high limit"),
    ({"tempo": {"cc": 20, "hi": 180}}, "tempo", "{'cc': 20, 'hi': 180}", "unknown key 'hi' in the inline table; did you mean 'high'?"),
    ({"start": {"cc": 64, "low": 1}}, "start", "{'cc': 64, 'low': 1}", "unknown key 'low' in the inline table"),
    ({"tempo": {"low": 60}}, "tempo", "{'low': 60}", "the inline table has no cc key; expected keys: cc, low, high"),
    ({"channel": 17}, "channel", "17", "expected 0 (CCs from any MIDI channel) or a MIDI channel from 1 to 16"),
    ({"channel": -1}, "channel", "-1", "or a MIDI channel from 1 to 16"),
    ({"channel": True}, "channel", "True", "or a MIDI channel from 1 to 16"),
    ({"channel": "1"}, "channel", "'1'", "or a MIDI channel from 1 to 16"),
]


@pytest.mark.parametrize(("table", "key", "value", "expected"), INVALID_TABLES, ids=[case[1] + ":" + case[2] for case in INVALID_TABLES])
def test_invalid_entry_rejected(table, key, value, expected):
    with pytest.raises(SettingsError) as raised:
        parse(table)

    message = str(raised.value)
    assert message.startswith(f"{SOURCE}: invalid [cc] entry {key!r} = {value}: ")
    assert expected in message


def test_non_table_rejected():
    with pytest.raises(SettingsError, match=r"^studio.toml: \[cc\] must be a table of CC mappings, not 21$"):
        parse(21)


def test_ccmap_rejects_knob_and_button_on_one_cc():
    knob = Knob(21, "tempo", None, None, MIN_BPM, MAX_BPM, integer=False)
    button = Button(21, "start", Start())

    with pytest.raises(ValueError, match="CC 21"):
        CcMap([knob], [button])
