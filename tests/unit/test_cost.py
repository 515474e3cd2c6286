"""Prices (shared/prices.toml, shared/cost.py), the memory ledger, and the cost model."""

import datetime

import pytest

from bench import cost_model
from shared.cost import DEFAULT_PRICES, CostLedger, PriceNotFound, PriceTable, Totals
from shared.usage import Usage

TABLE = """
[[price]]
provider = "acme"
model = "stt-1"
capability = "stt"
unit = "audio_hour"
usd = 0.36
checked = 2026-01-02
status = "verified"
source = "https://acme.example/pricing"

[[price]]
provider = "acme"
model = "llm"
capability = "translate"
unit = "input_tokens_1m"
usd = 1.0
checked = 2026-01-02
status = "verified"
source = "https://acme.example/pricing"

[[price]]
provider = "acme"
model = "llm"
capability = "translate"
unit = "output_tokens_1m"
usd = 4.0
checked = 2026-01-02
status = "unverified"
source = "https://acme.example/pricing"
note = "from a blog"

[[price]]
provider = "voices"
model = "*"
capability = "tts"
unit = "characters_1m"
usd = 10.0
checked = 2026-01-02
status = "verified"
source = "https://voices.example/pricing"

[[price]]
provider = "minutes"
model = "m"
capability = "stt"
unit = "audio_minute"
usd = 0.006
checked = 2026-01-02
status = "verified"
source = "https://minutes.example/pricing"
"""


@pytest.fixture
def table() -> PriceTable:
    return PriceTable.from_toml(TABLE)


@pytest.mark.parametrize("usage, usd", [
    (Usage("acme", "stt-1", "stt", audio_seconds=600), 0.06),
    (Usage("minutes", "m", "stt", audio_seconds=90), 0.009),
    (Usage("acme", "llm", "translate", input_tokens=2000, output_tokens=500), 0.004),
    (Usage("voices", "any-model", "tts", characters=1500), 0.015),
    (Usage("acme", "llm", "translate", characters=10**6), 0.0),  # an unpriced unit is free
    (Usage("acme", "stt-1", "stt"), 0.0),
])
def test_cost_per_unit(table, usage, usd):
    assert table.cost_usd(usage) == pytest.approx(usd)


def test_unknown_model_is_an_error(table):
    with pytest.raises(PriceNotFound, match="acme/other"):
        table.cost_usd(Usage("acme", "other", "stt", audio_seconds=1))


SPECIAL_VOICE = """
[[price]]
provider = "voices"
model = "special"
capability = "tts"
unit = "characters_1m"
usd = 1.0
checked = 2026-01-02
status = "verified"
source = "https://voices.example/pricing"
"""


def test_an_exact_model_wins_over_the_wildcard():
    table = PriceTable.from_toml(TABLE + SPECIAL_VOICE)
    assert table.cost_usd(Usage("voices", "special", "tts", characters=10**6)) == 1.0
    assert table.cost_usd(Usage("voices", "other", "tts", characters=10**6)) == 10.0


@pytest.mark.parametrize("change, error", [
    (('unit = "audio_hour"', 'unit = "audio_fortnight"'), "unknown unit"),
    (("usd = 0.36", "usd = -1"), "negative"),
    (('status = "verified"', 'status = "probably"'), "status"),
    (("checked = 2026-01-02", 'checked = "last week"'), "date"),
])
def test_entries_are_validated(change, error):
    with pytest.raises(ValueError, match=error):
        PriceTable.from_toml(TABLE.replace(*change, 1))


def test_two_prices_for_one_unit_are_refused():
    first = TABLE.split("[[price]]")[1]
    with pytest.raises(ValueError, match="two prices"):
        PriceTable.from_toml("[[price]]" + first + "[[price]]" + first)


def test_load_prefers_the_argument_then_the_environment(tmp_path, monkeypatch):
    custom = tmp_path / "prices.toml"
    custom.write_text(TABLE)
    monkeypatch.setenv("PARLEY_PRICES", str(custom))
    assert PriceTable.load().prices("acme", "stt-1")[0].usd == 0.36
    monkeypatch.delenv("PARLEY_PRICES")
    with pytest.raises(PriceNotFound):
        PriceTable.load().prices("acme", "stt-1")  # the packaged table has no acme
    assert PriceTable.load(custom).prices("voices", "x")[0].usd == 10.0


REQUIRED = [
    ("assemblyai", "universal-streaming-english", "audio_hour"),
    ("openai", "gpt-4.1-nano", "input_tokens_1m"),
    ("openai", "gpt-4.1-nano", "output_tokens_1m"),
    ("openai", "gpt-4.1-mini", "input_tokens_1m"),
    ("openai", "gpt-4.1-mini", "output_tokens_1m"),
    ("openai", "gpt-4o-mini-transcribe", "audio_minute"),
    ("openai", "whisper-1", "audio_minute"),
    ("openai", "gpt-4o-mini-tts", "characters_1m"),
    ("openai", "tts-1", "characters_1m"),
    ("unrealspeech", "stream", "characters_1m"),
]


@pytest.mark.parametrize("provider, model, unit", REQUIRED)
def test_the_packaged_table_prices_every_cloud_model_with_its_provenance(provider, model, unit):
    prices = {p.unit: p for p in PriceTable.load(DEFAULT_PRICES).prices(provider, model)}
    price = prices[unit]
    assert price.usd > 0 and price.source.startswith("https://")
    assert isinstance(price.checked, datetime.date)


def test_local_engines_cost_nothing():
    table = PriceTable.load()
    usage = Usage("local", "pocketsphinx", "stt", audio_seconds=3600, characters=10**6)
    assert table.cost_usd(usage) == 0.0


def test_session_billing_is_documented_for_assemblyai():
    [price] = PriceTable.load().prices("assemblyai", "universal-streaming-english")
    assert "SESSION-hour" in price.note


# --- the memory ledger (the Redis one: tests/integration/test_ledger.py) -----------------

async def test_memory_ledger_adds_per_session_and_per_principal(table):
    ledger = CostLedger(None, prices=table)
    assert ledger.degraded
    usd = await ledger.add("s1", "alice", Usage("acme", "stt-1", "stt", audio_seconds=600))
    assert usd == pytest.approx(0.06)
    await ledger.add_all("s2", "alice", [Usage("voices", "v", "tts", characters=1000)] * 2)
    assert await ledger.totals("s1") == Totals(usd=pytest.approx(0.06), audio_seconds=600)
    assert (await ledger.totals("s2")).characters == 2000
    alice = await ledger.principal_totals("alice")
    assert alice.usd == pytest.approx(0.08) and alice.audio_seconds == 600
    assert await ledger.totals("nobody") == Totals()


async def test_an_unpriced_model_counts_units_at_zero(table, caplog):
    ledger = CostLedger(None, prices=table)
    for _ in range(2):
        assert await ledger.add("s", "p", Usage("newco", "m", "tts", characters=5)) == 0.0
    assert (await ledger.totals("s")).characters == 10
    assert caplog.text.count("no price for newco/m") == 1


# --- the cost model ---------------------------------------------------------------------

def test_the_cost_model_is_priced_by_the_table():
    table, a = PriceTable.load(), cost_model.Assumptions()
    usages = cost_model.call_usage(cost_model.BUDGET, a)
    lines = cost_model.bill(table, usages)
    stt = lines[("stt", "assemblyai", "universal-streaming-english")]
    assert stt.audio_seconds == a.speakers * a.call_s  # the sockets are open all call long
    tts = lines[("tts", "unrealspeech", "stream")]
    assert tts.characters == a.speakers * a.utterances_per_speaker * 90
    total = sum(line.usd for line in lines.values())
    assert total == pytest.approx(sum(table.cost_usd(u) for u in usages))
    assert "budget" in cost_model.report(table, a)


def test_per_minute_stt_bills_only_the_audio_sent():
    a = cost_model.Assumptions()
    usages = cost_model.call_usage(cost_model.CHAINS[1], a)
    stt_s = sum(u.audio_seconds for u in usages if u.capability == "stt")
    per_utterance = a.speech_s_per_speaker / a.utterances_per_speaker + a.endpoint_pad_s
    assert stt_s == pytest.approx(a.speakers * a.utterances_per_speaker * per_utterance)
