"""A real Label Studio for the slow end-to-end test: started on 127.0.0.1 from its own environment
(``make label-studio`` builds ``.venv-label-studio`` from the lock's ``label-studio`` group; Label
Studio pins versions Prefect cannot run with), driven through its REST API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TOKEN = "a1c0re" + "0" * 34  # a legacy API token for the test's own user
USER, PASSWORD = "alcore@example.com", "alcore-test-pw"


def executable() -> Path | None:
    """``label-studio`` from $ALCORE_LABEL_STUDIO or ``.venv-label-studio/bin``, else None."""
    given = os.environ.get("ALCORE_LABEL_STUDIO")
    for p in (Path(given) if given else None, REPO / ".venv-label-studio" / "bin" / "label-studio"):
        if p is not None and p.is_file():
            return p
    found = shutil.which("label-studio")
    return Path(found) if found else None


class LabelStudio:
    def __init__(self, base: str, proc: subprocess.Popen) -> None:
        self.base, self.proc = base, proc

    def call(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as fh:
                out = fh.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"Label Studio {method} {path}: HTTP {e.code} {e.read()[:2000]!r}") from None
        return out if raw else (json.loads(out) if out else None)

    def create_project(self, title: str, label_config: str) -> int:
        return self.call("POST", "/api/projects", {"title": title, "label_config": label_config})["id"]

    def import_tasks(self, project: int, tasks: list[dict]) -> None:
        out = self.call("POST", f"/api/projects/{project}/import", tasks)
        assert out["task_count"] == len(tasks), out

    def tasks(self, project: int) -> list[dict]:
        out = self.call("GET", f"/api/tasks?project={project}&page_size=1000")
        return out["tasks"] if isinstance(out, dict) else out

    def annotate(self, task: int, label: str, from_name: str = "label", to_name: str = "image") -> int:
        result = [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]
        return self.call("POST", f"/api/tasks/{task}/annotations", {"result": result, "was_cancelled": False})["id"]

    def change(self, annotation: int, label: str, from_name: str = "label", to_name: str = "image") -> None:
        result = [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]
        self.call("PATCH", f"/api/annotations/{annotation}", {"result": result})

    def export(self, project: int, fmt: str) -> bytes:
        return self.call("GET", f"/api/projects/{project}/export?exportType={fmt}", raw=True)


@contextlib.contextmanager
def label_studio(exe: Path, data_dir: Path, *, document_root: Path, port: int) -> Iterator[LabelStudio]:
    """Label Studio on 127.0.0.1:``port`` with a fresh database in ``data_dir``, local file serving
    under ``document_root`` switched on (as `alcore label setup` prints it), no analytics."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "PYTHONPATH": "",
    }
    env.pop("VIRTUAL_ENV", None)
    log = open(data_dir / "label-studio.log", "w")  # noqa: SIM115 - closed below
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(port)]
    cmd += ["--data-dir", str(data_dir), "--username", USER, "--password", PASSWORD]
    cmd += ["--user-token", TOKEN, "--enable-legacy-api-token"]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"Label Studio did not start:\n{(data_dir / 'label-studio.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(1)
        yield LabelStudio(base, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and any worker it started
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
