import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.messages import (
    AudioChunk,
    Capabilities,
    ClientEvent,
    DecodeError,
    Listener,
    Route,
    RouteUpdate,
    SessionEnd,
    SttClaim,
    SttClaimed,
    SttLease,
    TranslateWork,
    TtsWork,
    decode,
    encode,
)

ROUTE = Route(captions_to=("a", "b"), listeners=(Listener("b", "es", 24000, "f1"),))

SAMPLES = [
    AudioChunk("s1", "s1-1-1", 0, 16000, b"\x01\x02" * 10, last=True),
    SttClaim("s1", "en", 16000, ROUTE),
    SttClaimed("s1", "stt-1", 3.0),
    SttLease("s1", "stt-1"),
    RouteUpdate("s1", ROUTE),
    SessionEnd("s1", "client_ended"),
    TranslateWork("s1", "u1", "hello", "en", "es", ROUTE.listeners),
    TtsWork("u1", "hola", "es", 16000, None, ("b",)),
    ClientEvent({"type": "audio.delta", "utterance_id": "u1", "audio": b"\x00\x01"}),
    Capabilities("translate", (), (("en", "es"), ("en", "ca"))),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.TAG)
def test_round_trip(message):
    assert decode(encode(message)) == message


def test_audio_travels_as_bin_not_base64():
    raw = msgpack.unpackb(encode(SAMPLES[0]), raw=True)
    assert raw[b"pcm"] == b"\x01\x02" * 10


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"t": "nope", "v": 1}),
    msgpack.packb({"t": "stt.lease", "v": 99, "sid": "s", "worker_id": "w"}),
    msgpack.packb({"t": "stt.lease", "v": 1, "sid": "s"}),
    msgpack.packb({"t": "stt.claim", "v": 1, "sid": "s", "language": "en", "sample_rate": 1, "route": {}}),
])
def test_bad_payloads_raise_decode_error(payload):
    with pytest.raises(DecodeError):
        decode(payload)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data):
    try:
        decode(data)
    except DecodeError:
        pass
