"""The exporter as a whole: HTTP /metrics, serve() lifecycle, and the real client over respx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import BridgeConfig
from exporter import Exporter, ExporterSettings, default_stale_after, parse_listen_address, serve
from exporter.main import metrics_app
from slurm_bridge.app import run_async
from slurm_bridge.cli import main as cli_main
from slurm_client import NO_RETRY, Diag, JobList, Node, NodeState, Partition, SlurmClient, StaticTokenAuth

URL = "http://slurmrestd.test"
TOKEN = jwt.encode(
    {"sun": "slurm", "iat": int(time.time()), "exp": int(time.time()) + 3600}, b"k" * 32, "HS256"
)
API = f"{URL}/slurm/v0.0.45"
FIXTURES = Path(__file__).parent / "slurm_fixtures"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


class TinySlurm:
    """Two idle nodes in one partition, no jobs."""

    def __init__(self) -> None:
        self.calls = 0

    async def list_jobs(self, *, update_time: Any = None) -> JobList:
        self.calls += 1
        from datetime import UTC, datetime

        return JobList(next_update_time=datetime.now(UTC))

    async def list_nodes(self) -> tuple[Node, ...]:
        return tuple(Node(name=f"n{i}", state=NodeState.IDLE, cpus_total=8) for i in range(2))

    async def list_partitions(self) -> tuple[Partition, ...]:
        return (Partition(name="p", nodes=("n0", "n1"), total_nodes=2, total_cpus=16),)

    async def diag(self) -> Diag:
        return Diag()


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


async def wait_for(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (polling state another task changes)
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        (":9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("localhost:0", ("localhost", 0)),
    ],
    ids=["ipv4", "any", "port-only", "ipv6", "port-zero"],
)
def test_parse_listen_address(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["9100", "host:", "host:http", "host:70000", ""], ids=str)
def test_parse_listen_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_listen_address(address)


@pytest.mark.parametrize(("interval", "bound"), [(1.0, 30.0), (2.0, 30.0), (5.0, 50.0)], ids=str)
def test_default_stale_after(interval: float, bound: float) -> None:
    assert default_stale_after(interval) == bound


async def test_metrics_over_http() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    async with Exporter(TinySlurm(), registry=registry, interval=0.05, listen="127.0.0.1:0") as exporter:
        address = exporter.address
        assert address is not None
        task = asyncio.create_task(exporter.run(stop))
        await wait_for(lambda: exporter.poller.status.last_ok is True)
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://127.0.0.1:{address[1]}/metrics")
        stop.set()
        await task
    assert reply.status_code == 200
    samples = scrape(reply.text)
    assert samples[("slurm_exporter_up", frozenset())] == 1
    assert samples[("slurm_partition_nodes_idle", frozenset({("partition", "p")}))] == 2
    assert samples[("slurm_partition_cpus", frozenset({("partition", "p")}))] == 16
    # closed: the server is gone and the collector unregistered
    assert list(registry.collect()) == []
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{address[1]}/metrics")


async def test_serve_into_a_shared_registry_without_a_server() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    slurm = TinySlurm()
    task = asyncio.create_task(serve(slurm, ExporterSettings(interval=0.02), registry=registry, stop=stop))
    await wait_for(lambda: registry.get_sample_value("slurm_exporter_up") == 1)
    await wait_for(lambda: slurm.calls >= 3)
    assert registry.get_sample_value("slurm_exporter_stale_after_seconds") == 30.0
    stop.set()
    await asyncio.wait_for(task, timeout=2.0)
    assert registry.get_sample_value("slurm_exporter_up") is None


async def test_serve_stops_when_the_stop_event_is_set_during_a_refresh() -> None:
    class SlowSlurm(TinySlurm):
        async def diag(self) -> Diag:
            await asyncio.sleep(0.2)
            return Diag()

    stop = asyncio.Event()
    task = asyncio.create_task(serve(SlowSlurm(), ExporterSettings(interval=1), stop=stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, timeout=2.0)


def jobs_reply(request: httpx.Request) -> httpx.Response:
    """Like slurmrestd: a poll with update_time and no change since is answered 304, empty."""
    if "update_time" in request.url.params:
        return httpx.Response(304)
    return httpx.Response(200, json=fixture("v0045_recorded_jobs.json"))


def recorded_routes(router: respx.MockRouter) -> None:
    router.get(f"{API}/jobs/").mock(side_effect=jobs_reply)
    router.get(f"{API}/nodes/").mock(
        return_value=httpx.Response(200, json=fixture("v0045_recorded_nodes.json"))
    )
    router.get(f"{API}/partitions/").mock(
        return_value=httpx.Response(200, json=fixture("v0045_recorded_partitions.json"))
    )
    router.get(f"{API}/diag/").mock(
        return_value=httpx.Response(200, json=fixture("v0045_recorded_diag.json"))
    )


def client() -> SlurmClient:
    return SlurmClient(URL, auth=StaticTokenAuth("slurm", TOKEN), api_version="v0.0.45", retry=NO_RETRY)


async def test_recorded_slurm_26_05_answers_through_the_real_client() -> None:
    registry = CollectorRegistry()
    with respx.mock(assert_all_called=False) as router:
        recorded_routes(router)
        async with client() as slurm:
            exporter = Exporter(slurm, registry=registry, interval=1)
            async with exporter:
                assert await exporter.poller.refresh() is True
                assert await exporter.poller.refresh() is True  # answered 304: jobs reused
                part = {"partition": "slurm-bridge"}
                assert registry.get_sample_value("slurm_exporter_up") == 1
                assert registry.get_sample_value("slurm_partition_nodes", part) == 4
                assert registry.get_sample_value("slurm_partition_nodes_idle", part) == 4
                assert registry.get_sample_value("slurm_partition_cpus", part) == 16
                assert registry.get_sample_value("slurm_partition_gpus", part) == 4
                assert (
                    registry.get_sample_value("slurm_partition_nodes_future", {"partition": "nodeset"}) == 8
                )
                assert (
                    registry.get_sample_value("slurm_node_memory_bytes", {"node": "slurm-bridge-0"})
                    == 8 << 30
                )
                assert registry.get_sample_value("slurm_jobs_cancelled") == 1
                polls = {
                    answer: registry.get_sample_value("slurm_exporter_job_polls_total", {"answer": answer})
                    for answer in ("full", "not_modified")
                }
                assert polls == {"full": 1, "not_modified": 1}


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (httpx.Response(200, text="<html>proxy error</html>"), "malformed"),
        (httpx.Response(200, json={"nodes": "not a list"}), "malformed"),
        (httpx.Response(401, json={"errors": [{"error_number": 1007, "error": "Invalid token"}]}), "auth"),
        (httpx.Response(503, text="unavailable"), "busy"),
        (httpx.ConnectError("refused"), "transport"),
    ],
    ids=["html", "wrong-shape", "auth", "unavailable", "refused"],
)
async def test_garbage_or_failure_from_slurmrestd(reply: httpx.Response | Exception, kind: str) -> None:
    registry = CollectorRegistry()
    with respx.mock(assert_all_called=False) as router:
        recorded_routes(router)
        async with client() as slurm:
            exporter = Exporter(slurm, registry=registry, interval=1)
            async with exporter:
                assert await exporter.poller.refresh() is True
                route = router.get(f"{API}/nodes/")
                if isinstance(reply, Exception):
                    route.mock(side_effect=reply)
                else:
                    route.mock(return_value=reply)
                assert await exporter.poller.refresh() is False
                errors = {"operation": "nodes", "kind": kind}
                assert registry.get_sample_value("slurm_exporter_up") == 0
                assert registry.get_sample_value("slurm_exporter_slurmrestd_errors_total", errors) == 1
                assert registry.get_sample_value("slurm_exporter_refreshes_total", {"result": "failure"}) == 1
                # the last good numbers stay until the staleness bound, never replaced by zeros
                assert registry.get_sample_value("slurm_partition_cpus", {"partition": "slurm-bridge"}) == 16


async def test_the_bridge_builds_the_exporters_client_from_the_config() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    config = BridgeConfig.model_validate(
        {"slurm": {"url": URL, "token": TOKEN, "api_version": "v0.0.45"}, "metrics_listen_address": ""}
    )
    with respx.mock(assert_all_called=False) as router:
        recorded_routes(router)
        task = asyncio.create_task(run_async(config, {"exporter"}, registry=registry, stop=stop))
        await wait_for(lambda: registry.get_sample_value("slurm_exporter_up") == 1)
        stop.set()
        await asyncio.wait_for(task, timeout=2.0)
        assert router.calls.last.request.headers["X-SLURM-USER-TOKEN"] == TOKEN


async def test_the_page_has_the_registrys_other_metrics_too() -> None:
    registry = CollectorRegistry()
    other = Counter("slurm_bridge_binds", "binds of the bridge itself", registry=registry)
    other.inc(3)
    stop = asyncio.Event()
    async with Exporter(TinySlurm(), registry=registry, interval=0.05, listen="127.0.0.1:0") as exporter:
        address = exporter.address
        assert address is not None
        task = asyncio.create_task(exporter.run(stop))
        await wait_for(lambda: exporter.poller.status.last_ok is True)
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://127.0.0.1:{address[1]}/metrics")
        stop.set()
        await task
    samples = scrape(reply.text)
    assert samples[("slurm_bridge_binds_total", frozenset())] == 3
    assert samples[("slurm_exporter_up", frozenset())] == 1
    assert reply.text.count("# TYPE slurm_exporter_up ") == 1
    assert reply.headers["content-type"].startswith("text/plain")


async def test_the_exporter_warms_the_page_after_each_refresh() -> None:
    registry = CollectorRegistry()
    stop = asyncio.Event()
    async with Exporter(TinySlurm(), registry=registry, interval=0.02, listen="127.0.0.1:0") as exporter:
        task = asyncio.create_task(exporter.run(stop))
        await wait_for(lambda: exporter.poller.status.refreshes.get("success", 0) >= 2)
        stop.set()
        await task
        rendered = exporter.collector._rendered  # built in the background, not by a scrape
        assert rendered is not None
        assert rendered[0] is exporter.poller.status.snapshot


@pytest.mark.parametrize(
    ("method", "path", "status", "has_body"),
    [
        ("GET", "/metrics", 200, True),
        ("GET", "/", 200, True),
        ("HEAD", "/metrics", 200, False),
        ("GET", "/other", 404, True),
        ("POST", "/metrics", 405, False),
    ],
    ids=["metrics", "root", "head", "unknown-path", "post"],
)
def test_metrics_app(method: str, path: str, status: int, has_body: bool) -> None:
    seen: list[str] = []

    def start_response(code: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
        seen.append(code)
        return lambda data: None

    body = b"".join(
        metrics_app(lambda: b"page\n")({"REQUEST_METHOD": method, "PATH_INFO": path}, start_response)
    )
    assert seen[0].startswith(str(status))
    assert bool(body) is has_body
    if status == 200 and has_body:
        assert body == b"page\n"


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["exporter"], {"SLURM_BRIDGE_METRICS_LISTEN_ADDRESS": "nowhere"}, "is not host:port"),
        (["exporter", "--config", "/nonexistent/bridge.yaml"], {}, "cannot read config file"),
    ],
    ids=["bad-listen", "missing-config"],
)
def test_cli_refuses_bad_arguments(
    argv: list[str],
    environ: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert cli_main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_exporter_alone_loads_neither_kubernetes_nor_the_controllers() -> None:
    probe = (
        "import sys, slurm_bridge.cli, slurm_bridge.app; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'controller', 'kube_client', 'kubernetes'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`slurm-bridge exporter` with an unreachable slurmrestd: /metrics answers (up 0), /healthz is ok,
    /readyz is not, and SIGTERM ends it even while a refresh is still retrying."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "SLURM_BRIDGE_SLURM__URL": "http://127.0.0.1:9",
        "SLURM_BRIDGE_METRICS_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "SLURM_BRIDGE_POLL_INTERVAL_SECONDS": "0.2",
    }
    env.pop("SLURM_BRIDGE_CONFIG", None)
    command = [sys.executable, "-m", "slurm_bridge.cli", "exporter"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        text = ""
        while "slurm_exporter_up" not in text:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "/metrics did not answer in time"
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            time.sleep(0.1)
        assert "slurm_exporter_up 0.0" in text
        assert "slurm_partition_" not in text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        assert ready.status_code == 503, ready.text
        assert "exporter:" in ready.text
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert "exporter stopped" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


async def test_a_taken_port_leaves_the_registry_clean() -> None:
    registry = CollectorRegistry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = Exporter(TinySlurm(), registry=registry, interval=1.0, listen=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match="in use"):
            async with exporter:
                pass
    assert list(registry.collect()) == []
