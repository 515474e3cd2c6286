"""Circuit breaker (shared/breaker.py): pure, time passed in, driven by tables."""

import pytest

from shared.breaker import BreakerConfig, BreakerState, CircuitBreaker

C, H, O = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
CONFIG = BreakerConfig(failure_threshold=3, reset_timeout_s=30, max_reset_timeout_s=100)


def run(steps, config=CONFIG):
    """Steps: (op, now[, expected allow()]) then the state expected after it."""
    breaker = CircuitBreaker(config)
    for step, expected_state in steps:
        op, now, *want = step
        if op == "allow":
            assert breaker.allow(now) is want[0], step
        elif op == "ok":
            breaker.record_success(now)
        else:
            breaker.record_failure(now, fatal=op == "fatal")
        assert breaker.state is expected_state, step
    return breaker


CASES = {
    "below the threshold stays closed": [
        (("fail", 0), C), (("fail", 1), C), (("allow", 2, True), C)],
    "a success resets the count": [
        (("fail", 0), C), (("fail", 1), C), (("ok", 2), C), (("fail", 3), C), (("fail", 4), C)],
    "three in a row open it": [
        (("fail", 0), C), (("fail", 1), C), (("fail", 2), O), (("allow", 3, False), O),
        (("allow", 31.9, False), O)],
    "a fatal failure opens at once": [
        (("fatal", 5), O), (("allow", 34.9, False), O)],
    "after the open period one probe goes through": [
        (("fatal", 0), O), (("allow", 30, True), H), (("allow", 31, False), H),
        (("allow", 59, False), H)],
    "a successful probe closes": [
        (("fatal", 0), O), (("allow", 30, True), H), (("ok", 31), C), (("allow", 32, True), C)],
    "a failed probe re-opens for twice as long": [
        (("fatal", 0), O), (("allow", 30, True), H), (("fail", 31), O),
        (("allow", 90, False), O), (("allow", 91, True), H)],
    "the back-off is capped": [
        (("fatal", 0), O), (("allow", 30, True), H), (("fail", 30), O),   # next: 60
        (("allow", 90, True), H), (("fail", 90), O),                      # next: 120 → 100
        (("allow", 189, False), O), (("allow", 190, True), H)],
    "closing resets the back-off": [
        (("fatal", 0), O), (("allow", 30, True), H), (("fail", 30), O),
        (("allow", 90, True), H), (("ok", 90), C),
        (("fail", 91), C), (("fail", 92), C), (("fail", 93), O), (("allow", 123, True), H)],
    "a lost probe is replaced after reset_timeout_s": [
        (("fatal", 0), O), (("allow", 30, True), H), (("allow", 59, False), H),
        (("allow", 60, True), H), (("ok", 61), C)],
    "a late success while open changes nothing": [
        (("fatal", 0), O), (("ok", 1), O), (("allow", 29, False), O)],
    "a late failure while open does not extend it": [
        (("fatal", 0), O), (("fail", 20), O), (("allow", 30, True), H)],
    "a fatal probe failure re-opens too": [
        (("fatal", 0), O), (("allow", 30, True), H), (("fatal", 30), O), (("allow", 89, False), O)],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_breaker_table(steps):
    run(steps)


def test_threshold_of_one():
    run([(("fail", 0), O)], BreakerConfig(failure_threshold=1))


def test_transitions_are_queued_once_in_order():
    breaker = run([(("fail", 0), C), (("fail", 1), C), (("fail", 2), O), (("allow", 32, True), H),
                   (("fail", 33), O), (("allow", 93, True), H), (("ok", 94), C)])
    moves = [(t.old, t.new, t.reason, t.at) for t in breaker.take_transitions()]
    assert moves == [(C, O, "failures", 2), (O, H, "probe", 32), (H, O, "probe_failed", 33),
                     (O, H, "probe", 93), (H, C, "probe_ok", 94)]
    assert breaker.take_transitions() == []


def test_no_transition_without_a_change():
    breaker = CircuitBreaker(CONFIG)
    breaker.record_success(0)
    breaker.record_failure(1)
    assert breaker.allow(2)
    assert breaker.take_transitions() == []


@pytest.mark.parametrize("now, due", [(29.9, False), (30, True)])
def test_probe_due_says_what_allow_would(now, due):
    breaker = run([(("fatal", 0), O)])
    assert breaker.probe_due(now) is due
    assert breaker.state is O  # asking does not move it


def test_open_period_reports_the_back_off():
    breaker = run([(("fatal", 0), O)])
    assert breaker.open_period_s == 30
    breaker.allow(30)
    breaker.record_failure(30)
    assert breaker.open_period_s == 60


@pytest.mark.parametrize("state, value", [(C, 0), (H, 1), (O, 2)])
def test_gauge_values(state, value):
    assert state.gauge_value == value


@pytest.mark.parametrize("kwargs", [
    {"failure_threshold": 0},
    {"reset_timeout_s": 0},
    {"reset_timeout_s": 10, "max_reset_timeout_s": 5},
    {"backoff_factor": 0.5},
])
def test_config_is_validated(kwargs):
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)
