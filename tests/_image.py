"""Build the epochgate image with podman and prove it serves: used by ``tests/test_deploy.py``.

``scripts/build-image`` makes the Dockerfile's two base images from Debian's archive
(debootstrap) on first use and builds the image; later builds reuse every layer. The image then
runs the sidecar on its embedded store in front of a real upstream on loopback (host network),
proxies a request, refuses to start a shell (there is none), runs as uid 65532, and exits 0
after draining on SIGTERM.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests._consul import free_ports

TAG = "localhost/epochgate:test"
RUN_BASE = "localhost/epochgate-base-run:bookworm"


def podman_flags(podman: str) -> tuple[list[str], list[str]]:
    """(global flags, run flags) that let a container start on this host (see scripts/build-image)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 4096 if nproc == resource.RLIM_INFINITY or nproc > 4096 else nproc
    ulimits = ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", f"nproc={nproc}:{nproc}"]
    probe = subprocess.run([podman, "run", "--rm", *ulimits, RUN_BASE, "python3", "-c", "pass"],
                           capture_output=True, timeout=120)
    if probe.returncode != 0 and shutil.which("runc"):
        return ["--runtime", "runc"], ulimits
    return [], ulimits


class _Upstream(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        _Upstream.seen.append(dict(self.headers))
        body = b"hello from upstream\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def build_image(podman: str, root: Path) -> list[str]:
    """Build ``TAG`` with scripts/build-image; returns the podman command prefix to run it with."""
    build = subprocess.run([str(root / "scripts" / "build-image"), TAG], capture_output=True, text=True,
                           timeout=840, cwd=root)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    glob, ulimits = podman_flags(podman)
    return [podman, *glob, "run", *ulimits]


def _podman(run: list[str]) -> list[str]:
    """``podman [--runtime X]`` from a run prefix."""
    return run[:run.index("run")]


def start(run: list[str], name: str, args: list[str], env: dict[str, str] | None = None,
          mounts: list[str] | None = None) -> None:
    cmd = [*run, "-d", "--name", name, "--network", "host", "--read-only"]
    for k, v in (env or {}).items():
        cmd += ["-e", f"{k}={v}"]
    for m in mounts or []:
        cmd += ["-v", m]
    subprocess.run([*cmd, TAG, *args], check=True, capture_output=True, timeout=120)


def wait_ready(run: list[str], name: str, admin: int, deadline_s: float = 60.0) -> None:
    pm = _podman(run)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if _get(f"http://127.0.0.1:{admin}/readyz", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        state = subprocess.run([*pm, "inspect", "-f", "{{.State.Running}}", name], capture_output=True,
                               text=True).stdout.strip()
        assert state == "true" and time.monotonic() < deadline, logs(run, name)
        time.sleep(0.2)


def logs(run: list[str], name: str) -> str:
    res = subprocess.run([*_podman(run), "logs", name], capture_output=True, text=True)
    return (res.stdout + res.stderr)[-3000:]


def remove(run: list[str], *names: str) -> None:
    subprocess.run([*_podman(run), "rm", "-f", *names], capture_output=True, timeout=60)


def check_shape_and_proxy(run: list[str], tmp_path: Path) -> None:
    """Non-root, no shell, proxies a request on the embedded store, drains and exits 0 on SIGTERM."""
    pm = _podman(run)
    inspect = json.loads(subprocess.run([*pm, "image", "inspect", TAG], capture_output=True, text=True,
                                        check=True).stdout)[0]
    assert inspect["Config"]["User"] == "65532:65532"
    assert inspect["Config"]["Entrypoint"][-2:] == ["-m", "sidecar"]
    shell = subprocess.run([*run, "--rm", "--entrypoint", "/bin/sh", TAG, "-c", "true"],
                           capture_output=True, text=True, timeout=120)
    assert shell.returncode != 0 and "/bin/sh" in shell.stderr, "the run-time image must have no shell"

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    listen, admin, control = free_ports(3)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "placement.toml").write_text(
        f'[nodes]\na = "http://127.0.0.1:{server.server_address[1]}"\n\n[partitions]\ntenant-1 = "a"\n')
    conf.chmod(0o755)
    (conf / "placement.toml").chmod(0o644)
    name = f"epochgate-test-{os.getpid()}"
    try:
        start(run, name, ["--placement", "/etc/epochgate/placement.toml", "--listen", f"127.0.0.1:{listen}",
                          "--admin", f"127.0.0.1:{admin}", "--control", f"127.0.0.1:{control}",
                          "--drain-seconds", "5"], mounts=[f"{conf}:/etc/epochgate:ro"])
        wait_ready(run, name, admin)
        status, body = _get(f"http://127.0.0.1:{listen}/kv/greeting", {"X-Partition-Key": "tenant-1"})
        assert (status, body) == (200, b"hello from upstream\n")
        seen = _Upstream.seen[-1]
        assert seen["X-Partition"] == "tenant-1" and int(seen["X-Placement-Epoch"]) >= 1
        status, _ = _get(f"http://127.0.0.1:{listen}/kv/greeting", {"X-Partition-Key": "nobody"})
        assert status == 404
        subprocess.run([*pm, "stop", "-t", "20", name], check=True, capture_output=True, timeout=60)
        code = subprocess.run([*pm, "inspect", "-f", "{{.State.ExitCode}}", name], capture_output=True,
                              text=True, check=True).stdout.strip()
        out = logs(run, name)
        assert code == "0" and "drained" in out, out
    finally:
        remove(run, name)
        server.shutdown()
        server.server_close()


def _put(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_app_behind_sidecar(run: list[str], tmp_path: Path) -> None:
    """The example Deployment's two containers from the one image, as the manifest runs them:
    the sidecar with a control token, the application (``python3 -m examples.kv``) admitting
    every write at its commit point through the sidecar's Gate API with the same token. Both
    root filesystems read-only with no tmpfs, as ``readOnlyRootFilesystem`` gives them."""
    listen, admin, control, app = free_ports(4)
    conf, data = tmp_path / "conf", tmp_path / "data"
    conf.mkdir()
    data.mkdir()
    (conf / "placement.toml").write_text(f'[nodes]\na = "http://127.0.0.1:{app}"\n\n[partitions]\ntenant-1 = "a"\n')
    conf.chmod(0o755)
    (conf / "placement.toml").chmod(0o644)
    os.chown(data, 65532, 65532)
    sidecar, kv = f"epochgate-sc-{os.getpid()}", f"epochgate-app-{os.getpid()}"
    ro = ["--read-only-tmpfs=false"]
    try:
        start([*run, *ro], sidecar, ["--placement", "/etc/epochgate/placement.toml", "--listen", f"127.0.0.1:{listen}",
                                     "--admin", f"127.0.0.1:{admin}", "--control", f"127.0.0.1:{control}"],
              env={"EPOCHGATE_TOKEN": "t0ken"}, mounts=[f"{conf}:/etc/epochgate:ro"])
        wait_ready(run, sidecar, admin)
        start([*run, *ro, "--entrypoint", "/usr/bin/python3"], kv,
              ["-m", "examples.kv", "--node", "a", "--listen", f"127.0.0.1:{app}", "--data", "/data",
               "--gate", f"127.0.0.1:{control}"], env={"EPOCHGATE_TOKEN": "t0ken"}, mounts=[f"{data}:/data"])
        key = {"X-Partition-Key": "tenant-1"}
        deadline = time.monotonic() + 60
        while True:
            status, body = _put(f"http://127.0.0.1:{listen}/kv/greeting", b"hello", key)
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)   # 502 until the application listens
        assert status == 200 and json.loads(body)["node"] == "a", (status, body, logs(run, kv))
        assert _get(f"http://127.0.0.1:{listen}/kv/greeting", key) == (200, b"hello")
        commits = [json.loads(line) for line in (data / "commits.jsonl").read_text().splitlines()]
        assert [(c["key"], c["node"]) for c in commits] == [("greeting", "a")]
    finally:
        remove(run, sidecar, kv)
