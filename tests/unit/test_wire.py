"""Client protocol parsing (services/edge/wire.py): tables of frames, then properties."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.edge.wire import (
    Ack,
    AudioAppend,
    AudioCommit,
    Limits,
    Ping,
    ProtocolError,
    ResponseCancel,
    SessionEnd,
    SessionResume,
    SessionStart,
    ToolRegister,
    ToolResult,
    ToolUnregister,
    encode_command,
    encode_event,
    parse_binary,
    parse_text,
)

LIMITS = Limits()
TOOL = {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
WEATHER = ToolRegister("get_weather", "Weather in a city", TOOL["parameters"])
PCM = b"\x01\x00\xff\x7f"
B64 = base64.b64encode(PCM).decode()


def parse(message: dict | str, **kwargs):
    return parse_text(message if isinstance(message, str) else json.dumps(message), LIMITS,
                      **kwargs)


def error_of(message: dict | str, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse(message, **kwargs)
    return caught.value


GOOD = [
    ({"type": "session.start", "mode": "translate", "language": "en", "target_language": "es"},
     SessionStart("translate", "en", target_language="es")),
    ({"type": "session.start", "mode": "translate", "language": "EN", "room": "lobby-1"},
     SessionStart("translate", "en", room="lobby-1")),
    ({"type": "session.start", "mode": "translate", "language": "en-US",
      "target_language": "zh-Hant-TW", "input_sample_rate": 48000, "output_sample_rate": 8000,
      "voice": "alloy", "room": None, "future_field": [1, 2]},
     SessionStart("translate", "en", target_language="zh", input_sample_rate=48000,
                  output_sample_rate=8000, voice="alloy")),
    ({"type": "session.start", "mode": "assistant", "language": "pt_BR", "instructions": "Be brief",
      "tools": [TOOL, {**TOOL, "name": "t2", "timeout_ms": 30000}]},
     SessionStart("assistant", "pt", instructions="Be brief",
                  tools=(WEATHER, ToolRegister("t2", TOOL["description"], TOOL["parameters"],
                                               30000)))),
    ({"type": "session.start", "mode": "assistant", "language": "fil"},
     SessionStart("assistant", "fil")),
    ({"type": "session.resume", "session_id": "s_1-A", "resume_token": "t.k=n", "last_seq": 42},
     SessionResume("s_1-A", "t.k=n", 42)),
    ({"type": "session.resume", "session_id": "s1", "resume_token": "t"},
     SessionResume("s1", "t", 0)),
    ({"type": "input_audio.append", "audio": B64}, AudioAppend(PCM)),
    ({"type": "input_audio.commit"}, AudioCommit()),
    ({"type": "tool.register", **TOOL}, WEATHER),
    ({"type": "tool.register", **TOOL, "timeout_ms": 1}, ToolRegister(**TOOL, timeout_ms=1)),
    ({"type": "tool.unregister", "name": "get_weather"}, ToolUnregister("get_weather")),
    ({"type": "tool.result", "call_id": "c1", "output": {"temp_c": 21}},
     ToolResult("c1", output={"temp_c": 21})),
    ({"type": "tool.result", "call_id": "c1", "output": None}, ToolResult("c1", output=None)),
    ({"type": "tool.result", "call_id": "c1", "error": "no such city", "output": None},
     ToolResult("c1", error="no such city")),
    ({"type": "tool.result", "call_id": "c1", "error": None, "output": [1]},
     ToolResult("c1", output=[1])),
    ({"type": "response.cancel"}, ResponseCancel()),
    ({"type": "ack", "seq": 0}, Ack(0)),
    ({"type": "ack", "seq": 2**63 - 1}, Ack(2**63 - 1)),
    ({"type": "ping"}, Ping()),
    ({"type": "ping", "id": "p-7"}, Ping("p-7")),
    ({"type": "ping", "id": 7}, Ping(7)),
    ({"type": "session.end"}, SessionEnd()),
]


@pytest.mark.parametrize(("message", "expected"), GOOD)
def test_good_messages_parse(message, expected):
    assert parse(message) == expected


@pytest.mark.parametrize(("message", "expected"), GOOD)
def test_good_messages_parse_from_bytes(message, expected):
    assert parse_text(json.dumps(message).encode(), LIMITS) == expected


START = {"type": "session.start", "mode": "translate", "language": "en", "target_language": "es"}
BAD = [  # (frame, words the message must contain)
    ("not json", "JSON"),
    ("[1, 2]", "JSON object"),
    ('"session.start"', "JSON object"),
    ("{}", "'type'"),
    ({"type": 5}, "'type'"),
    ({"type": None}, "'type'"),
    ({"type": ["ack"]}, "'type'"),
    ({"type": "session.begin"}, "unknown message type 'session.begin'"),
    ('{"type": "ping", "id": NaN}', "NaN"),
    ('{"type": "ack", "seq": Infinity}', "Infinity"),
    ('{"type": "tool.result", "call_id": "c", "output": "\\ud800"}', "UTF-8"),
    ({**START, "mode": "dictate"}, "'mode'"),
    ({**START, "mode": None}, "'mode'"),
    ({"type": "session.start", "language": "en", "target_language": "es"}, "'mode'"),
    ({"type": "session.start", "mode": "translate", "language": "en"}, "'target_language'"),
    ({**START, "language": None}, "'language'"),
    ({**START, "language": "english"}, "'language'"),
    ({**START, "language": "e"}, "'language'"),
    ({**START, "language": "en-"}, "'language'"),
    ({**START, "language": 1}, "'language' must be a string, got an integer"),
    ({**START, "target_language": "12"}, "'target_language'"),
    ({**START, "room": "has space"}, "'room'"),
    ({**START, "room": "r" * 65}, "'room'"),
    ({**START, "room": ""}, "'room'"),
    ({**START, "room": "lobby\n"}, "'room'"),
    ({**START, "input_sample_rate": 7999}, "'input_sample_rate' must be between 8000 and 48000"),
    ({**START, "input_sample_rate": 48001}, "'input_sample_rate'"),
    ({**START, "input_sample_rate": True}, "'input_sample_rate' must be an integer, got a boolean"),
    ({**START, "input_sample_rate": 16000.0}, "'input_sample_rate' must be an integer"),
    ({**START, "input_sample_rate": "16000"}, "'input_sample_rate'"),
    ({**START, "output_sample_rate": 0}, "'output_sample_rate'"),
    ({**START, "voice": 3}, "'voice'"),
    ({**START, "voice": ""}, "'voice'"),
    ({**START, "instructions": ["x"]}, "'instructions' must be a string, got an array"),
    ({**START, "tools": {}}, "'tools' must be an array"),
    ({**START, "tools": [1]}, "'tools[0]' must be an object"),
    ({**START, "tools": [TOOL, {**TOOL, "name": "bad name"}]}, "'tools[1].name'"),
    ({**START, "tools": [TOOL, TOOL]}, "listed twice"),
    ({**START, "tools": [{**TOOL, "timeout_ms": 30001}]}, "'tools[0].timeout_ms'"),
    ({"type": "session.resume", "resume_token": "t", "last_seq": 1}, "'session_id'"),
    ({"type": "session.resume", "session_id": "a/b", "resume_token": "t"}, "'session_id'"),
    ({"type": "session.resume", "session_id": "s", "resume_token": ""}, "'resume_token'"),
    ({"type": "session.resume", "session_id": "s", "resume_token": 1}, "'resume_token'"),
    ({"type": "session.resume", "session_id": "s", "resume_token": "t", "last_seq": -1},
     "'last_seq'"),
    ({"type": "session.resume", "session_id": "s", "resume_token": "t", "last_seq": "3"},
     "'last_seq'"),
    ({"type": "input_audio.append"}, "'audio'"),
    ({"type": "input_audio.append", "audio": 12}, "'audio'"),
    ({"type": "tool.register", "description": "d", "parameters": {}}, "'name'"),
    ({"type": "tool.register", **TOOL, "name": "a.b"}, "'name'"),
    ({"type": "tool.register", **TOOL, "name": "n" * 65}, "'name'"),
    ({"type": "tool.register", **TOOL, "description": None}, "'description'"),
    ({"type": "tool.register", **TOOL, "parameters": None}, "'parameters'"),
    ({"type": "tool.register", **TOOL, "parameters": "{}"}, "'parameters' must be an object"),
    ({"type": "tool.register", **TOOL, "parameters": []}, "'parameters' must be an object"),
    ({"type": "tool.register", **TOOL, "timeout_ms": 0}, "'timeout_ms'"),
    ({"type": "tool.register", **TOOL, "timeout_ms": 30001}, "'timeout_ms'"),
    ({"type": "tool.register", **TOOL, "timeout_ms": 1.5}, "'timeout_ms'"),
    ({"type": "tool.unregister"}, "'name'"),
    ({"type": "tool.result", "output": 1}, "'call_id'"),
    ({"type": "tool.result", "call_id": "c"}, "'output' or 'error'"),
    ({"type": "tool.result", "call_id": "c", "error": 5}, "'error'"),
    ({"type": "tool.result", "call_id": "c", "error": "e", "output": 1}, "not both"),
    ({"type": "ack"}, "'seq'"),
    ({"type": "ack", "seq": -1}, "'seq'"),
    ({"type": "ack", "seq": False}, "'seq'"),
    ({"type": "ack", "seq": 2**63}, "'seq'"),
    ({"type": "ping", "id": {"a": 1}}, "'id'"),
    ({"type": "ping", "id": True}, "'id'"),
    ({"type": "ping", "id": "i" * 257}, "'id'"),
]


@pytest.mark.parametrize(("message", "words"), BAD)
def test_bad_messages_are_invalid_message(message, words):
    error = error_of(message)
    assert error.code == "invalid_message"
    assert words in error.message
    assert str(error) == error.message


AUDIO_BAD = [  # (base64 text, sample rate given to the parser, words)
    ("", None, "empty"),
    ("AAE", None, "base64"),  # missing padding
    ("AA E=", None, "base64"),
    ("AA!=", None, "base64"),
    ("AAé=", None, "base64"),
    (base64.b64encode(b"\x00").decode(), None, "odd"),
    (base64.b64encode(b"\x00" * 3).decode(), None, "odd"),
    (base64.b64encode(b"\x00" * 16002).decode(), 8000, "limit"),
]


@pytest.mark.parametrize(("audio", "rate", "words"), AUDIO_BAD)
def test_bad_appended_audio_is_invalid_audio(audio, rate, words):
    error = error_of({"type": "input_audio.append", "audio": audio}, sample_rate=rate)
    assert (error.code, words in error.message) == ("invalid_audio", True)


def test_appended_audio_limit_follows_the_session_rate():
    one_second_at_8k = base64.b64encode(b"\x00" * 16000).decode()
    message = {"type": "input_audio.append", "audio": one_second_at_8k}
    assert parse(message, sample_rate=8000) == AudioAppend(b"\x00" * 16000)
    assert parse(message) == AudioAppend(b"\x00" * 16000)  # rate unknown: 48 kHz bound


@pytest.mark.parametrize(("frame", "rate", "ok"), [
    (b"\x00\x00", 16000, True),
    (b"\x00" * 32000, 16000, True),  # exactly 1 s
    (b"\x00" * 32002, 16000, False),
    (b"\x00" * 16000, 8000, True),
    (b"\x00" * 16002, 8000, False),
    (b"\x00" * 96000, 48000, True),
    (b"\x00" * 88200, 44100, True),
    (b"\x00" * 88202, 44100, False),
    (b"\x00", 16000, False),
    (b"\x00" * 333, 16000, False),
    (b"", 16000, False),
])
def test_binary_frames(frame, rate, ok):
    if ok:
        assert parse_binary(frame, rate, LIMITS) == AudioAppend(frame)
    else:
        with pytest.raises(ProtocolError) as caught:
            parse_binary(frame, rate, LIMITS)
        assert caught.value.code == "invalid_audio"


def test_binary_frame_limit_is_configurable():
    limits = Limits(max_frame_audio_s=0.02)
    assert parse_binary(b"\x00" * 640, 16000, limits).pcm == b"\x00" * 640
    with pytest.raises(ProtocolError):
        parse_binary(b"\x00" * 642, 16000, limits)


def test_text_frame_size_limit_counts_utf8_bytes():
    limits = Limits(max_text_frame_bytes=100)
    pad = '{"type":"ping","id":"%s"}'
    ping_id = "x" * (100 - len(pad % ""))
    fits = pad % ping_id
    assert len(fits) == 100
    assert parse_text(fits, limits) == parse_text(fits.encode(), limits) == Ping(ping_id)
    for frame in (fits[:-2] + 'x"}', pad % ("é" * 40), (pad % ("é" * 40)).encode()):
        with pytest.raises(ProtocolError) as caught:
            parse_text(frame, limits)
        assert caught.value.code == "invalid_message"
        assert "limit of 100 bytes" in caught.value.message


def test_default_text_limit_is_64_kib():
    huge = json.dumps({"type": "ping", "id": "x" * 70000})
    assert "limit of 65536 bytes" in error_of(huge).message


def test_error_messages_never_echo_huge_input():
    for message in ({"type": "t" * 5000}, {**START, "room": "r" * 5000},
                    {**START, "language": "l" * 5000}, {**START, "mode": "m" * 5000}):
        assert len(error_of(message).message) < 200


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        Limits(max_text_frame_bytes=0)
    with pytest.raises(ValueError):
        Limits(max_frame_audio_s=-1)


def test_deep_nesting_is_an_error_not_a_crash():
    assert error_of('{"type": "ping", "x": ' + "[" * 50000 + "]" * 50000 + "}").code == (
        "invalid_message")


@pytest.mark.parametrize(("event", "text"), [
    ({"type": "pong", "id": "p"}, '{"type":"pong","id":"p"}'),
    ({"type": "audio.delta", "seq": 3, "utterance_id": "u1", "audio": b"\x01\x02"},
     '{"type":"audio.delta","seq":3,"utterance_id":"u1","audio":"AQI="}'),
    ({"type": "x", "nested": [{"a": bytearray(b"\x00")}]}, '{"type":"x","nested":[{"a":"AA=="}]}'),
    ({"type": "transcript.final", "text": "¿qué?"}, '{"type":"transcript.final","text":"¿qué?"}'),
])
def test_encode_event(event, text):
    assert encode_event(event) == text
    assert json.loads(encode_event(event))["type"] == event["type"]


@pytest.mark.parametrize("event", [{"cost_usd": float("nan")}, {"when": object()}])
def test_encode_event_refuses_what_is_not_json(event):
    with pytest.raises((ValueError, TypeError)):
        encode_event(event)


# ---------------------------------------------------------------- properties

json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
TYPES = ["session.start", "session.resume", "input_audio.append", "input_audio.commit",
         "tool.register", "tool.unregister", "tool.result", "response.cancel", "ack", "ping",
         "session.end", "other"]
FIELDS = ["mode", "language", "target_language", "room", "input_sample_rate",
          "output_sample_rate", "voice", "instructions", "tools", "session_id", "resume_token",
          "last_seq", "audio", "name", "description", "parameters", "timeout_ms", "call_id",
          "output", "error", "seq", "id"]
messages = st.builds(lambda kind, fields: {"type": kind, **fields},
                     st.sampled_from(TYPES) | json_values,
                     st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6))


def parses_or_protocol_error(frame, **kwargs):
    try:
        parse_text(frame, LIMITS, **kwargs)
    except ProtocolError as error:
        assert error.code in ("invalid_message", "invalid_audio")
        assert len(error.message) < 300


@settings(max_examples=400)
@given(messages)
def test_random_messages_only_raise_protocol_errors(message):
    parses_or_protocol_error(json.dumps(message))


@given(json_values)
def test_random_json_only_raises_protocol_errors(value):
    parses_or_protocol_error(json.dumps(value))


@given(st.text())
def test_random_text_only_raises_protocol_errors(text):
    parses_or_protocol_error(text)


@given(st.binary(), st.integers(8000, 48000))
def test_random_bytes_only_raise_protocol_errors(data, rate):
    parses_or_protocol_error(data, sample_rate=rate)
    try:
        assert parse_binary(data, rate, LIMITS).pcm == data
    except ProtocolError as error:
        assert error.code == "invalid_audio"


tokens = st.text("abcXYZ019_-", min_size=1, max_size=64)
languages = st.sampled_from(["en", "es", "de", "fil", "zh"])
rates = st.integers(8000, 48000)
short = st.text(min_size=1, max_size=50)
tool_registers = st.builds(ToolRegister, tokens, st.text(max_size=30),
                           st.dictionaries(st.text(max_size=5), json_values, max_size=3),
                           st.none() | st.integers(1, 30000))
commands = st.one_of(
    st.builds(SessionStart, st.just("translate"), languages, languages, st.none() | tokens,
              rates, rates, st.none() | short, st.none() | st.text(),
              st.lists(tool_registers, max_size=3, unique_by=lambda t: t.name).map(tuple)),
    st.builds(SessionStart, st.just("assistant"), languages, st.none(), st.none(), rates, rates,
              st.none() | short, st.none() | st.text()),
    st.builds(SessionResume, tokens, short, st.integers(0, 2**63 - 1)),
    st.builds(AudioAppend, st.binary(min_size=1, max_size=2000).filter(lambda b: len(b) % 2 == 0)),
    st.builds(AudioCommit), st.builds(ResponseCancel), st.builds(SessionEnd),
    tool_registers,
    st.builds(ToolUnregister, tokens),
    st.builds(ToolResult, short, json_values, st.none()),
    st.builds(ToolResult, short, st.none(), st.text()),
    st.builds(Ack, st.integers(0, 2**63 - 1)),
    st.builds(Ping, st.none() | short | st.integers(-1000, 1000)),
)


@settings(max_examples=400)
@given(commands)
def test_valid_commands_round_trip(command):
    assert parse_text(encode_command(command), LIMITS) == command
