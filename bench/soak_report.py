"""What a soak run's client transcripts say (pure): expected utterances, what was lost or
delivered twice, recovery per fault, memory slopes, and the printed report. `bench/soak.py`
runs the sessions and the faults; this module only reads what they recorded."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from bench.report import percentile, table
from tests.chaos.support import REPLY_AUDIO_BYTES

if TYPE_CHECKING:  # the recorder of what is read here
    from bench.soak import Soaker

ONCE = ("transcript.final", "translation", "audio.done", "response.done")
NEEDED = {"translate": ("transcript.final", "translation", "audio.done"),
          "assistant": ("transcript.final", "response.done")}
DONE = {"translate": "audio.done", "assistant": "response.done"}


# -- what a session's transcript says (pure) ------------------------------------------------
def _turn(event: dict) -> str | None:
    """The utterance an event belongs to (a reply's `<utterance_id>-r` → its utterance)."""
    rid = event.get("response_id")
    if rid:
        return rid.removesuffix("-r")
    return event.get("utterance_id")


def account(mode: str, events: list[dict]) -> dict:
    """Expected utterances, what is missing of each, and everything delivered twice."""
    by_turn: dict[str, Counter] = {}
    first: dict[str, float] = {}
    done_at: dict[str, float] = {}
    for e in events:
        uid = _turn(e)
        if uid is None or "seq" not in e:
            continue
        first.setdefault(uid, e["t"])
        by_turn.setdefault(uid, Counter())[e["type"]] += 1
        if e["type"] == DONE[mode] and (mode == "translate" or e.get("response_id")):
            done_at.setdefault(uid, e["t"])
    expected = [u for u, kinds in by_turn.items()
                if kinds["speech.stopped"] or any(kinds[k] for k in NEEDED[mode])]
    missing = {u: [k for k in NEEDED[mode] if not by_turn[u][k]] for u in expected}
    missing = {u: m for u, m in missing.items() if m}
    return {"expected": expected, "missing": missing, "incomplete_ids": set(missing),
            "first": first, "done_at": done_at}


def duplicates(events: list[dict]) -> dict:
    durable = [e for e in events if "seq" in e]
    seqs = Counter(e["seq"] for e in durable)
    keys = Counter((e["type"], _turn(e), e.get("call_id"), e.get("index")) for e in durable
                   if e["type"] in (*ONCE, "tool.call", "response.text"))
    order = [e["seq"] for e in durable]
    return {
        "seq_twice": sorted(s for s, n in seqs.items() if n > 1),
        "events_twice": [{"type": k[0], "utterance": k[1], "call_id": k[2], "index": k[3], "times": n}
                         for k, n in keys.items() if n > 1],
        "out_of_order": sum(1 for a, b in zip(order, order[1:]) if b <= a),
    }


def speech_errors(mode: str, events: list[dict]) -> list[dict]:
    """Texts whose speech did not arrive exactly once (500 ms of PCM per text)."""
    audio: Counter = Counter()
    texts: dict[str, set] = {}
    for e in events:
        if "seq" not in e:
            continue
        if e["type"] == "audio.delta":
            audio[_turn(e)] += e["bytes"]
        elif e["type"] == "response.text":
            texts.setdefault(_turn(e), set()).add(e["index"])
        elif e["type"] == "translation":
            texts.setdefault(_turn(e), set()).add(0)
    return [{"utterance": u, "bytes": audio[u], "expected": REPLY_AUDIO_BYTES * len(idx)}
            for u, idx in texts.items() if audio[u] != REPLY_AUDIO_BYTES * len(idx)]


def recovery(turns: dict, links: list[dict], at_s: float, dropped_within_s: float = 3.0) -> float | None | str:
    """Seconds from `at_s` until the session's in-flight utterances are all complete and one
    completed after `at_s`; None: never; "unaffected": nothing in flight, connection kept."""
    done = turns["done_at"]
    in_flight = [u for u in turns["expected"] if turns["first"][u] < at_s and done.get(u, 1e18) > at_s]
    dropped = any(at_s <= link.get("closed_s", -1) <= at_s + dropped_within_s for link in links)
    if not in_flight and not dropped:
        return "unaffected"
    after = [t for t in done.values() if t > at_s]
    if not after or any(u not in done for u in in_flight):
        return None
    return round(max([min(after), *(done[u] for u in in_flight)]) - at_s, 3)


def spread(values: list) -> dict:
    got = [v for v in values if v is not None]
    return {"n": len(values), "never": len(values) - len(got), "p50": percentile(got, 50) if got else None,
            "max": max(got, default=None)}


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float | None:
    if len(samples) < 3:
        return None
    n = len(samples)
    mt, mr = sum(t for t, _ in samples) / n, sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return None if var == 0 else round(60 * sum((t - mt) * (r - mr) for t, r in samples) / var, 3)


# -- the report ------------------------------------------------------------------------------
def fault_near(faults: list[dict], at_s: float | None) -> dict | None:
    """The fault closest in time to `at_s` (what a lost or doubled event is blamed on; an
    utterance that began just before a fault is hit by it)."""
    if at_s is None or not faults:
        return None
    f = min(faults, key=lambda f: abs(f["at_s"] - at_s))
    return {"kind": f["kind"], "target": f["target"], "at_s": f["at_s"], "utterance_began_s": at_s}


def session_summary(s: Soaker, faults: list[dict]) -> dict:
    turns, dups = account(s.mode, s.events), duplicates(s.events)
    durable = [e for e in s.events if "seq" in e]
    seqs = Counter(e["seq"] for e in durable)
    published: dict[tuple, set] = {}
    for e in durable:
        if e["type"] in (*ONCE, "tool.call", "response.text"):
            published.setdefault((e["type"], _turn(e), e.get("call_id"), e.get("index")), set()).add(e["seq"])
    lost = [{"utterance": u, "missing": m, "first_event_s": turns["first"][u],
             "near_fault": fault_near(faults, turns["first"][u])} for u, m in turns["missing"].items()]
    for d in dups["events_twice"]:
        d["near_fault"] = fault_near(faults, turns["first"].get(d["utterance"]))
    statuses = Counter(e.get("status") for e in durable if e["type"] == "response.done")
    notes = Counter(f"{e['type']}:{e.get('code')}" for e in s.events if e["type"] in ("error", "warning"))
    return {
        "index": s.index, "mode": s.mode, "session_id": s.sid, "connections": len(s.links),
        "links": s.links, "spoken": s.spoken, "cut_by_lost_connection": s.cut,
        "expected": len(turns["expected"]), "complete": len(turns["expected"]) - len(turns["missing"]),
        "lost_events": sum(len(m) for m in turns["missing"].values()), "lost": lost,
        "redelivered_seq": sum(n - 1 for n in seqs.values()),
        "republished": sum(len(v) - 1 for v in published.values()),
        "events_twice": dups["events_twice"], "out_of_order": dups["out_of_order"],
        "speech_not_once": speech_errors(s.mode, s.events), "reply_status": dict(statuses),
        "errors_warnings": dict(notes), "fatal": s.fatal, "durable_events": len(durable),
    }


def recoveries(sessions: list[Soaker], faults: list[dict], control_before_s: float = 5.0) -> dict:
    """Per fault: each affected session's recovery; per kind: p50/max; `control`: the same
    measure 5 s before each fault (nothing wrong then)."""
    turns = [account(s.mode, s.events) for s in sessions]
    per_fault, by_kind, control = [], {}, []
    for f in faults:
        got = [recovery(t, s.links, f["at_s"]) for s, t in zip(sessions, turns)]
        got = [g for g in got if g != "unaffected"]
        per_fault.append({**f, "affected": len(got), "recovery_s": spread(got)})
        by_kind.setdefault(f["kind"], []).extend(got)
        calm = [recovery(t, s.links, f["at_s"] - control_before_s) for s, t in zip(sessions, turns)]
        control += [c for c in calm if c != "unaffected"]
    return {"per_fault": per_fault, "by_kind": {k: spread(v) for k, v in by_kind.items()},
            "control": spread(control)}


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def print_report(summaries: list[dict], rec: dict, memory: list[dict], totals: dict) -> None:
    print("\nper session (events by seq; 'cut': utterances whose audio a lost connection cut short)")
    rows = [[s["index"], s["mode"], s["connections"], s["spoken"], s["cut_by_lost_connection"], s["expected"],
             s["complete"], s["lost_events"], s["redelivered_seq"] + s["republished"], s["out_of_order"],
             len(s["speech_not_once"]), ",".join(f"{k}:{v}" for k, v in s["reply_status"].items() if k != "completed")
             or "-", s["fatal"] or "-"] for s in summaries]
    rows.append(["all", "", *(totals[k] for k in ("connections", "spoken", "cut", "expected", "complete", "lost",
                                                  "duplicated", "out_of_order", "speech_not_once")), "", ""])
    print(table(["#", "mode", "conns", "spoken", "cut", "expected", "complete", "lost", "dup", "order",
                 "speech≠", "replies ≠ completed", "fatal"], rows))
    print("\nrecovery per fault (s): fault → in-flight utterances complete and one completed after it")
    print(table(["at s", "fault", "target", "affected", "p50", "max", "never"],
                [[_s(f["at_s"]), f["kind"], f["target"], f["affected"], _s(f["recovery_s"]["p50"]),
                  _s(f["recovery_s"]["max"]), f["recovery_s"]["never"]] for f in rec["per_fault"]]))
    print()
    print(table(["fault kind", "affected", "p50 s", "max s", "never"],
                [[k, v["n"], _s(v["p50"]), _s(v["max"]), v["never"]]
                 for k, v in [*rec["by_kind"].items(), ("control (no fault)", rec["control"])]]))
    print("\nmemory (VmRSS MiB; slope after warm-up, MiB/min; #n: the n-th incarnation of a restarted process)")
    print(table(["process", "from s", "to s", "first", "last", "max", "slope/min"],
                [[f"{m['process']}#{m['incarnation']}", _s(m["from_s"]), _s(m["to_s"]), _s(m["first_mib"]),
                  _s(m["last_mib"]), _s(m["max_mib"]), _s(m["slope_mib_per_min"])] for m in memory]))


def totals_of(summaries: list[dict]) -> dict:
    return {
        "connections": sum(s["connections"] for s in summaries), "spoken": sum(s["spoken"] for s in summaries),
        "cut": sum(s["cut_by_lost_connection"] for s in summaries),
        "expected": sum(s["expected"] for s in summaries), "complete": sum(s["complete"] for s in summaries),
        "lost": sum(s["lost_events"] for s in summaries),
        "duplicated": sum(s["redelivered_seq"] + s["republished"] for s in summaries),
        "out_of_order": sum(s["out_of_order"] for s in summaries),
        "speech_not_once": sum(len(s["speech_not_once"]) for s in summaries),
        "replies_not_completed": sum(n for s in summaries for k, n in s["reply_status"].items() if k != "completed"),
        "sessions_lost": sum(1 for s in summaries if s["fatal"]),
        "durable_events": sum(s["durable_events"] for s in summaries),
    }
