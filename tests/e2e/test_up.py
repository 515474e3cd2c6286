"""`parley up`: the whole system from one command, visible in NATS monitoring, stopped
cleanly by one signal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shared.audio import tone
from shared.natsd import free_port
from tests.support.client import ProtocolClient
from tests.support.system import REPO, ParleySystem


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def test_parley_up_serves_and_stops_every_child_on_sigint(tmp_path):
    port = free_port()
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen(
        [str(Path(sys.executable).parent / "parley"), "up", "--port", str(port), "--engines", "bench"],
        cwd=REPO, stdout=log, stderr=log, env={**os.environ, "NATS_URL": "", "PARLEY_PREFIX": "uptest"},
    )
    view = ParleySystem("", None, "bench", tmp_path, edge_ports={"edge": port})
    try:
        view.wait_ready()
        children = _children(up.pid)
        assert len(children) >= 6  # nats-server, edge, four workers
        client = await ProtocolClient.connect(view.ws_url())
        assert (await client.start(language="en", target_language="es"))["type"] == "session.started"
        await client.stream(tone(220, 1.0, 16000) + b"\x00\x00" * 16000, realtime=False)
        assert (await client.wait_type("translation"))["text"] == "[es] utterance 1"
        await client.close()
        monitoring = re.search(r"monitoring (http://[\d.]+:\d+)", (tmp_path / "up.log").read_text()).group(1)
        assert get_json(f"{monitoring}/varz")["jetstream"]["config"]["store_dir"]  # JetStream on
        streams = {s["name"] for a in get_json(f"{monitoring}/jsz?streams=true")["account_details"]
                   for s in a["stream_detail"]}
        assert {"UPTEST_OUT", "UPTEST_WORK"} <= streams, streams
        names = {c.get("name") for c in get_json(f"{monitoring}/connz")["connections"]}
        assert {"parley-edge", "parley-stt", "parley-translate", "parley-tts", "parley-tools"} <= names, names
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0, (tmp_path / "up.log").read_text()[-3000:]
        deadline = time.monotonic() + 5
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if _alive(c)], "children left running"
        output = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{port}/" in output and "embedded NATS" in output
    finally:
        if up.poll() is None:
            up.kill()
