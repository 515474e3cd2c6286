from services.edge.capabilities import (
    SystemCapabilities,
    admission_problems,
    room_warnings,
)

CAPS = SystemCapabilities(stt=frozenset({"en"}), pairs=frozenset({("en", "es"), ("en", "ca")}),
                          tts=frozenset({"en", "es", "ca"}), missing_kinds=())


def test_supported_solo_pair_is_admitted():
    assert admission_problems(CAPS, "en", "es", None) == []


def test_same_language_needs_only_stt():
    assert admission_problems(CAPS, "en", "en", None) == []


def test_unsupported_pair_names_every_gap():
    problems = admission_problems(CAPS, "en", "ja", None)
    assert problems == ["no translation from 'en' to 'ja'", "no speech synthesis for 'ja'"]
    assert admission_problems(CAPS, "de", "es", None) == [
        "no speech recognition for 'de'", "no translation from 'de' to 'es'"]


def test_missing_worker_kind_refuses_everything():
    caps = SystemCapabilities(CAPS.stt, CAPS.pairs, CAPS.tts, missing_kinds=("tts",))
    assert admission_problems(caps, "en", "es", None) == ["no tts worker is running"]
    assert admission_problems(caps, "es", None, "room") == ["no tts worker is running"]


def test_room_listener_without_stt_is_admitted_with_warnings():
    assert admission_problems(CAPS, "es", None, "room") == []
    assert room_warnings(CAPS, "es", {"en"}) == ["no speech recognition for 'es': you can listen, not speak"]
    assert room_warnings(CAPS, "en", {"es"}) == ["speech in 'es' cannot be rendered into 'en'"]


def test_wildcard_pair_supports_any_direction():
    caps = SystemCapabilities(CAPS.stt, frozenset({("*", "*")}), frozenset({"ja"}), ())
    assert admission_problems(caps, "en", "ja", None) == []


def test_assistant_admission_needs_an_engine_a_recogniser_and_a_voice():
    from services.edge.capabilities import assistant_problems

    caps = SystemCapabilities(CAPS.stt, CAPS.pairs, CAPS.tts, (), engines=frozenset({"pipeline"}))
    assert assistant_problems(caps, "en") == []
    assert assistant_problems(caps, "ja") == ["no speech recognition for 'ja'", "no speech synthesis for 'ja'"]
    [problem] = assistant_problems(caps, "en", "realtime")
    assert "'realtime'" in problem and "OPENAI_API_KEY" in problem
    realtime = SystemCapabilities(frozenset(), frozenset(), frozenset(), (), engines=frozenset({"realtime"}))
    assert assistant_problems(realtime, "ja", "realtime") == []  # speech in and out is the model's
