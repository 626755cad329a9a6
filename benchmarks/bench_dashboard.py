"""Dashboard benchmark in a real headless Chromium against the real cloud API and an embedded
PostgreSQL. Prints progress on stderr and one JSON object on the last line of stdout:

- push_latency_p50_ms / push_latency_p95_ms / push_latency_max_ms: a reading POSTed to
  /api/v1/ingest (clock read just before the request) until its value is on screen in the
  overview's temperature tile (the page's clock read in the animation frame after the DOM
  changed; same machine, same clock). Path: ingest → PostgreSQL commit → NOTIFY → the API's
  live hub → WebSocket → page. Target: p95 < 500 ms.
- fps: frames per second the 3D twin renders while the machine runs (capped at 30), measured
  over --fps-seconds with readings arriving at 4 Hz.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cloud.dashboard.browser import INGEST_KEY, Ingest, chromium, login, missing_prerequisites
from cloud.db.embedded import EmbeddedPostgres
from cloud.db.migrate import apply_migrations
from tests.support.accounts import add_user
from tests.support.processes import Service, free_port, http_ok, wait_until

MACHINE = "BENCH"
_OBSERVE = """() => {
    window.__shown = [];
    const node = document.querySelector('#tiles [data-sensor="temperature"] .tile-value');
    new MutationObserver(() => {
        const text = node.textContent;
        requestAnimationFrame(() => window.__shown.push([text, Date.now()]));
    }).observe(node, {childList: true, characterData: true, subtree: true});
}"""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def bench_push_latency(page: Any, ingest: Ingest, samples: int, interval: float) -> list[float]:
    page.evaluate(_OBSERVE)
    latencies: list[float] = []
    for i in range(samples):
        value = round(60.0 + (i % 2000) * 0.01, 2)
        text = f"{value:.2f}"
        sent_ms = time.time() * 1000
        ingest.post({"machine_id": MACHINE, "temperature": value, "rpm": 3000.0})
        shown = page.wait_for_function(
            """(t) => { const hit = window.__shown.find((s) => s[0] === t);
                        return hit ? hit[1] : null; }""",
            arg=text,
            timeout=10_000,
        ).json_value()
        latencies.append(float(shown) - sent_ms)
        page.evaluate("() => { window.__shown = []; }")
        time.sleep(interval)
    return latencies


def bench_fps(page: Any, server: str, seconds: float) -> float:
    stop = threading.Event()

    def feed() -> None:
        client = Ingest(server)
        try:
            while not stop.is_set():
                client.post({"machine_id": MACHINE, "rpm": 3200.0, "vibration": 3.0})
                stop.wait(0.25)
        finally:
            client.close()

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        page.wait_for_function("() => window.__twin && window.__twin.running", timeout=10_000)
        start = page.evaluate("() => [window.__twin.frames, performance.now()]")
        page.wait_for_timeout(seconds * 1000)
        end = page.evaluate("() => [window.__twin.frames, performance.now()]")
    finally:
        stop.set()
        thread.join(10)
    return (end[0] - start[0]) / ((end[1] - start[1]) / 1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100, help="readings timed end to end")
    parser.add_argument("--interval", type=float, default=0.1, help="pause between readings (s)")
    parser.add_argument("--fps-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)

    reason = missing_prerequisites()
    if reason:
        _say(f"cannot run: {reason}")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:
        work = Path(tmp)
        pg = EmbeddedPostgres(work / "pg")
        pg.start()
        api: Service | None = None
        try:
            url = pg.url
            apply_migrations(url)
            port = free_port()
            server = f"http://127.0.0.1:{port}"
            env = {"DATABASE_URL": url, "RIG_INGEST_API_KEY": INGEST_KEY}
            api = Service("api", ["cloud.cli", "serve", "--port", str(port)], work, env).start()
            wait_until(lambda: http_ok(f"{server}/readyz"), 60, "api up", services=[api])
            password = add_user(url, "bench", "operator")
            ingest = Ingest(server)
            ingest.post({"machine_id": MACHINE, "temperature": 72.0, "rpm": 3000.0})
            with chromium() as browser:
                page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
                login(page, server, "bench", password, path=f"/?machine={MACHINE}")
                page.wait_for_function(
                    "() => document.getElementById('conn').dataset.state === 'live'"
                )
                _say(f"push latency: {args.samples} readings …")
                latencies = bench_push_latency(page, ingest, args.samples, args.interval)
                _say(f"3D view frame rate over {args.fps_seconds} s …")
                fps = bench_fps(page, server, args.fps_seconds)
            ingest.close()
        finally:
            if api is not None:
                api.stop()
            pg.stop("fast")

    result = {
        "samples": len(latencies),
        "push_latency_p50_ms": round(statistics.median(latencies), 1),
        "push_latency_p95_ms": round(_percentile(latencies, 0.95), 1),
        "push_latency_max_ms": round(max(latencies), 1),
        "push_latency_target_p95_ms": 500,
        "fps": round(fps, 1),
        "fps_cap": 30,
    }
    print(
        f"push latency ingest → screen: p50 {result['push_latency_p50_ms']} ms, "
        f"p95 {result['push_latency_p95_ms']} ms, max {result['push_latency_max_ms']} ms "
        f"({len(latencies)} readings)"
    )
    print(f"3D twin: {result['fps']} fps (cap 30)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
