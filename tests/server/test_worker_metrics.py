"""``/metrics`` with several worker processes answers for the whole server: the merge rules
on real prometheus_client output, and a real ``modelport serve --workers 2``."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from modelport.server.worker_metrics import WorkerMetrics, merge
from tests.server.conftest import ServerLogs, infer_body
from tests.server.test_serve import serving
from tests.versions.conftest import make_version, wait_for, x_for


def worker_text(requests: int, latencies: list[float], *, db_up: bool, agreed: int,
                disagreed: int, queued: int) -> str:  # fmt: skip
    """One worker's exposition, as its registry renders it."""
    registry = CollectorRegistry()
    Counter("modelport_requests", "Requests.", ["model", "status"], registry=registry).labels(
        "tiny", "200"
    ).inc(requests)
    latency = Histogram("modelport_request_duration_seconds", "Latency.", ["model"],
                        buckets=(0.001, 0.01), registry=registry)  # fmt: skip
    for seconds in latencies:
        latency.labels("tiny").observe(seconds)
    Gauge("modelport_queue_depth", "Depth.", ["model"], registry=registry).labels("tiny").set(
        queued
    )

    class State:
        def collect(self):  # type: ignore[no-untyped-def]
            live = GaugeMetricFamily("modelport_live_version", "Live.", labels=["model", "version"])
            live.add_metric(["tiny", "2"], 1)
            yield live
            swaps = CounterMetricFamily("modelport_version_swaps", "Swaps.", labels=["model"])
            swaps.add_metric(["tiny"], 1)
            yield swaps
            yield GaugeMetricFamily("modelport_prediction_log_db_up", "Up.", value=float(db_up))
            shadow = CounterMetricFamily(
                "modelport_shadow_requests", "Shadow.", labels=["model", "version", "outcome"]
            )
            shadow.add_metric(["tiny", "3", "agreed"], agreed)
            shadow.add_metric(["tiny", "3", "disagreed"], disagreed)
            yield shadow
            ratio = GaugeMetricFamily(
                "modelport_shadow_agreement_ratio", "Agreement.", labels=["model", "version"]
            )
            ratio.add_metric(["tiny", "3"], agreed / (agreed + disagreed))
            yield ratio

    registry.register(State())
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_workers_figures_merge_by_what_each_family_means() -> None:
    a = worker_text(5, [0.0005, 0.005], db_up=True, agreed=3, disagreed=1, queued=2)
    b = worker_text(7, [0.05], db_up=False, agreed=1, disagreed=3, queued=4)
    merged = samples(merge({"101": a, "202": b}).decode())
    one, two = samples(a), samples(b)
    req = ("modelport_requests_total", (("model", "tiny"), ("status", "200")))
    assert merged[req] == 12.0  # counters: summed
    created = ("modelport_requests_created", req[1])
    assert merged[created] == min(one[created], two[created])  # created: the earliest
    bucket = ("modelport_request_duration_seconds_bucket", (("le", "0.01"), ("model", "tiny")))
    count = ("modelport_request_duration_seconds_count", (("model", "tiny"),))
    assert merged[bucket] == 2.0 and merged[count] == 3.0
    assert merged["modelport_queue_depth", (("model", "tiny"),)] == 6.0  # load: summed
    assert merged["modelport_live_version", (("model", "tiny"), ("version", "2"))] == 1.0
    assert merged["modelport_version_swaps_total", (("model", "tiny"),)] == 1.0  # one swap each
    assert merged["modelport_prediction_log_db_up", ()] == 0.0  # down if any is down
    ratio = ("modelport_shadow_agreement_ratio", (("model", "tiny"), ("version", "3")))
    assert merged[ratio] == 0.5  # 4 agreed of 8 compared, not 0.75 + 0.25 nor their mean
    assert merged["modelport_metrics_workers", ()] == 2.0
    assert merged["modelport_worker_requests", (("worker", "101"),)] == 5.0
    assert merged["modelport_worker_requests", (("worker", "202"),)] == 7.0


def test_one_workers_figures_come_through_unchanged() -> None:
    text = worker_text(5, [0.0005, 0.005], db_up=True, agreed=3, disagreed=1, queued=2)
    merged = samples(merge({"101": text}).decode())
    added = ("modelport_metrics_workers", "modelport_worker_requests")
    assert {k: v for k, v in merged.items() if k[0] not in added} == samples(text)


def test_a_worker_answering_cut_short_is_left_out_of_the_scrape(tmp_path: Path) -> None:
    """Over real Unix sockets: a worker whose answer stops early (even at a line's end) or
    that does not answer at all is left out, and the scrape says how many workers are in."""
    import asyncio
    import os

    good = worker_text(5, [0.0005], db_up=True, agreed=1, disagreed=1, queued=0).encode()
    cut = good[: good.index(b"\n", len(good) // 2) + 1]  # ends at a line: still parses

    async def scrape() -> str:
        async def cut_short(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(cut)
            await w.drain()
            w.close()

        other = await asyncio.start_unix_server(cut_short, path=str(tmp_path / "metrics-2.sock"))
        (tmp_path / "metrics-3.sock").touch()  # a worker gone, its socket file left behind
        me = WorkerMetrics(tmp_path, lambda: good)
        await me.start()
        try:
            return (await me.gather(good)).decode()
        finally:
            await me.stop()
            other.close()

    merged = samples(asyncio.run(scrape()))
    assert merged["modelport_metrics_workers", ()] == 1.0
    assert merged["modelport_requests_total", (("model", "tiny"), ("status", "200"))] == 5.0
    assert merged["modelport_worker_requests", (("worker", str(os.getpid())),)] == 5.0
    bad = good[: good.index(b"modelport_requests_total{") + 20]  # mid-line: does not parse
    assert samples(merge({"1": good.decode(), "2": bad.decode()}).decode())[
        "modelport_metrics_workers", ()
    ] == 1.0


def test_workers_under_a_long_tmpdir_still_share_their_figures(tmp_path: Path) -> None:
    """A temp folder whose sockets' paths are longer than a Unix socket address takes (about
    107 bytes): the workers reach them through a descriptor of the folder instead."""
    root = tmp_path / "repo"
    make_version(root / "tiny", 1, delay=0.0)
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with serving([str(root), "--workers", "2"], env={"TMPDIR": str(deep)}) as (proc, url):
        logs = ServerLogs(proc)
        wait_for(lambda: logs.count("Application startup complete.") == 2, "both workers up")
        (folder,) = deep.glob("modelport-workers-*")
        (sock, _) = folder.glob("metrics-*.sock")
        assert len(str(sock)) > 108  # too long to bind or connect to by its path
        with httpx.Client(base_url=url, timeout=30) as client:
            answer = client.post("/v2/models/tiny/infer", json=infer_body(x_for(0)))
            assert answer.status_code == 200, answer.text
            text = client.get("/metrics").text
        assert "modelport_metrics_workers 2.0" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert not logs.count(
        "metrics: this worker cannot share its figures with the others; /metrics answers for "
        "the worker that takes the scrape"
    )


def test_a_scrape_of_several_workers_shows_the_whole_server(tmp_path: Path) -> None:
    """Requests on fresh connections land on either worker; every scrape, whichever worker
    takes it, counts all of them, each worker's share, and the log's records of both."""
    root = tmp_path / "repo"
    make_version(root / "tiny", 1, delay=0.0)
    args = [str(root), "--workers", "2", "--log-db", f"sqlite:///{tmp_path / 'log.db'}"]
    n = 40
    with serving(args, env={"TMPDIR": str(tmp_path)}) as (proc, url):
        (folder,) = tmp_path.glob("modelport-workers-*")
        assert folder.stat().st_mode & 0o777 == 0o700  # this user's only
        for _ in range(600):  # ready once one worker is: wait for the other's socket too
            if len(list(folder.glob("metrics-*.sock"))) == 2:
                break
            threading_wait(0.05)
        assert len(list(folder.glob("metrics-*.sock"))) == 2
        for i in range(n):
            with httpx.Client(base_url=url, timeout=30) as client:  # a new connection each
                answer = client.post("/v2/models/tiny/infer", json=infer_body(x_for(i)))
                assert answer.status_code == 200, answer.text
        texts = []
        for _ in range(6):
            with httpx.Client(base_url=url, timeout=30) as client:
                texts.append(client.get("/metrics").text)
        # The log's writers report their counters every half second: wait for both.
        for _ in range(100):
            with httpx.Client(base_url=url, timeout=30) as client:
                last = client.get("/metrics").text
            if 'modelport_prediction_log_records_total{outcome="written"} 40.0' in last:
                break
            threading_wait(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    for text in texts:
        assert "modelport_metrics_workers 2.0" in text
        ok = re.findall(r'modelport_requests_total\{[^}]*status="200"[^}]*\} (\S+)', text)
        answered = sum(float(v) for v in ok)
        assert answered == n, text
        shares = re.findall(r'modelport_worker_requests\{worker="(\d+)"\} (\S+)', text)
        assert len(shares) == 2 and sum(float(v) for _, v in shares) == n
    assert 'modelport_prediction_log_records_total{outcome="written"} 40.0' in last
    assert not folder.exists()


def threading_wait(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)
