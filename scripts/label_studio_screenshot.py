"""Label Studio as an annotator sees alcore's default job: a task page in headless Chromium.

Starts a stock Label Studio on 127.0.0.1 (no local-files serving needed, no storage: the job's
images travel inside the tasks as data: URIs, ``labeling.image_url: "{data}"``), creates a project
from the job's ``label-config.xml``, imports the ``.labelstudio.json`` alcore exported for three
digits (with the proxy's guesses as pre-annotations), logs in as a person would and saves the
screenshot of the first task. Fails unless the page shows the images (loaded <img> elements with a
data: source) and not Label Studio's "There was an issue loading URL from $image value".

    make label-studio                                   # Label Studio in .venv-label-studio
    uv run python scripts/label_studio_screenshot.py --out docs/label-studio-default-job.png

Needs ``chromium`` (exit 3 without it) and Label Studio (exit 4 without it).
"""

from __future__ import annotations

import argparse
import base64
import http.cookiejar
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests._label_studio: the same Label Studio the slow test starts

from ui_screenshot import chromium  # noqa: E402 - scripts/ is on the path of a script run from it

from alcore.datasets import load_dataset  # noqa: E402
from alcore.labeling import Batch  # noqa: E402
from alcore.oracle import make_oracle  # noqa: E402
from flows._server import free_port  # noqa: E402
from tests._label_studio import PASSWORD, USER, executable, label_studio  # noqa: E402

PROBE = (
    "JSON.stringify({error: document.body.innerText.includes('There was an issue loading URL'), "
    "images: Array.from(document.querySelectorAll('img')).filter(i => i.src.startsWith('data:image/'))"
    ".map(i => i.complete && i.naturalWidth > 0)})"
)


def session_cookies(base: str) -> list[dict[str, str]]:
    """Log in through Label Studio's own form, as a person does: the session's cookies."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/user/login/", timeout=60).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf, "no login form"
    form = {"csrfmiddlewaretoken": csrf.group(1), "email": USER, "password": PASSWORD}
    req = urllib.request.Request(
        base + "/user/login/", data=urllib.parse.urlencode(form).encode(), headers={"Referer": base + "/user/login/"}
    )
    opener.open(req, timeout=60)
    return [{"name": c.name, "value": c.value or "", "domain": "127.0.0.1", "path": "/"} for c in jar]


def capture(browser: str, url: str, cookies: list[dict[str, str]], out: Path, wait_s: float) -> dict:
    """Open ``url`` with ``cookies`` in headless Chromium (DevTools protocol), save a screenshot."""
    from websockets.sync.client import connect

    port = free_port()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"]
        cmd += [
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(120):
                try:
                    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5).read())
                    break
                except OSError:
                    time.sleep(0.5)
            ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            with connect(ws_url, max_size=50_000_000) as ws:
                counter = iter(range(1, 1 << 30))

                def cdp(method: str, **params: object) -> dict:
                    n = next(counter)
                    ws.send(json.dumps({"id": n, "method": method, "params": params}))
                    while True:
                        msg = json.loads(ws.recv())
                        if msg.get("id") == n:
                            return msg.get("result", msg)

                cdp("Network.enable")
                for c in cookies:
                    cdp("Network.setCookie", **c)
                cdp("Page.navigate", url=url)
                time.sleep(wait_s)
                probe = json.loads(cdp("Runtime.evaluate", expression=PROBE, returnByValue=True)["result"]["value"])
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(base64.b64decode(cdp("Page.captureScreenshot", format="png")["data"]))
                return probe
        finally:
            proc.terminate()
            proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "label-studio-default-job.png")
    ap.add_argument("--wait", type=float, default=25.0, help="seconds the page gets to render")
    args = ap.parse_args(argv)
    browser, exe = chromium(), executable()
    if browser is None:
        print("no chromium: install Debian's package (make chromium does: apt-get install -y chromium)")
        return 3
    if exe is None:
        print("no Label Studio: make label-studio")
        return 4
    work = Path(tempfile.mkdtemp(prefix="alcore-ls-"))
    data = load_dataset("digits", max_pool=60, max_test=20)
    ids = data.pool.ids[:3]
    oracle = make_oracle("human", pool=data.pool, classes=list(data.classes), outbox=work / "outbox")
    oracle.export(Batch(2, ids, np.array([3, 1, 4]), np.array([0.9, 0.8, 0.7])))  # guesses as pre-annotations
    with label_studio(exe, work / "label-studio", document_root=work, port=free_port()) as ls:
        project = ls.create_project("alcore default job", (work / "outbox" / "label-config.xml").read_text())
        ls.import_tasks(project, json.loads((work / "outbox" / "batch-0002.labelstudio.json").read_text()))
        task = ls.tasks(project)[0]["id"]
        probe = capture(
            browser, f"{ls.base}/projects/{project}/data?task={task}", session_cookies(ls.base), args.out, args.wait
        )
    print(f"page: {probe}; screenshot: {args.out}")
    if probe["error"] or not probe["images"] or not all(probe["images"]):
        print("Label Studio did not show the images")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
