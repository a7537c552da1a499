"""The image, built and run (marked slow; skipped with the reason when podman is absent).

``scripts/build-image`` builds it (on first use it makes the base images from Debian's archive
with debootstrap; later builds reuse every layer). Then, with the real image on loopback:
shell-less, non-root, proxies, drains and exits 0 on SIGTERM; the example pod's application
admits through its sidecar's Gate API; in Consul mode it registers under the pod name and a
same-id restart ends the stale session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests._consul import free_ports

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def image_run() -> list[str]:
    """``podman [--runtime X] run [--ulimit …]`` for the freshly built image (scripts/build-image)."""
    from tests._image import build_image

    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman not installed (apt-get install podman debootstrap runc; see scripts/build-image)")
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("scripts/build-image needs root and debootstrap to make its base images")
    return build_image(podman, ROOT)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_runs_shell_less_proxies_and_drains(image_run: list[str], tmp_path: Path) -> None:
    from tests._image import check_shape_and_proxy

    check_shape_and_proxy(image_run, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_image_runs_the_example_pod_app_behind_its_sidecar(image_run: list[str], tmp_path: Path) -> None:
    from tests._image import check_app_behind_sidecar

    check_app_behind_sidecar(image_run, tmp_path)


def _kv_session(consul: str, key: str) -> str | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{consul}/v1/kv/{key}", timeout=5) as r:
            return json.loads(r.read())[0].get("Session")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _session_alive(consul: str, sid: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{consul}/v1/session/info/{sid}", timeout=5) as r:
        return bool(json.loads(r.read()))


@pytest.mark.slow
@pytest.mark.consul
@pytest.mark.timeout(900)
def test_image_in_consul_mode_registers_as_the_pod_and_a_restart_ends_the_stale_session(
        image_run: list[str], consul_agent, kv_prefix: str) -> None:
    """The pod's wiring, with the real image: EPOCHGATE_* from the environment (as the manifest sets
    them), participant id = pod name. A container killed without a chance to stop leaves its
    session behind; its replacement under the same id ends it at once -- the TTL (60 s here) is
    far off -- while a replacement under another id leaves it to the TTL."""
    from tests._image import remove, start, wait_ready

    pm = image_run[:image_run.index("run")]
    pod = "kv-5d8c7f9b6-x7k2p"
    key = f"{kv_prefix}sidecars/{pod}"
    names = [f"epochgate-consul-{os.getpid()}-{i}" for i in range(3)]

    def run(name: str, participant: str) -> None:
        listen, admin, control = free_ports(3)
        start(image_run, name, ["--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}",
                                "--control", f"127.0.0.1:{control}"],
              env={"EPOCHGATE_CONSUL": consul_agent.url, "EPOCHGATE_PREFIX": kv_prefix,
                   "EPOCHGATE_PARTICIPANT_ID": participant, "EPOCHGATE_SESSION_TTL": "60",
                   "EPOCHGATE_LEASE_SECONDS": "5"})
        wait_ready(image_run, name, admin)

    try:
        run(names[0], pod)
        first = _kv_session(consul_agent.url, key)
        assert first is not None and _session_alive(consul_agent.url, first)
        subprocess.run([*pm, "kill", "-s", "KILL", names[0]], check=True, capture_output=True, timeout=60)
        t_killed = time.monotonic()

        run(names[1], "someone-else")            # another id: the stale session stays (until its TTL)
        assert _session_alive(consul_agent.url, first)
        subprocess.run([*pm, "kill", "-s", "KILL", names[1]], check=True, capture_output=True, timeout=60)

        run(names[2], pod)                       # the same id: the stale session is ended
        second = _kv_session(consul_agent.url, key)
        assert second not in (None, first)
        assert not _session_alive(consul_agent.url, first)
        assert time.monotonic() - t_killed < 60, "inconclusive: the TTL could have expired the session"
    finally:
        remove(image_run, *names)

