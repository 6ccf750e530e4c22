"""`make lab` serves the course: start JupyterLab exactly as scripts/lab.py does, fetch the lab and lesson 00."""
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from lab import lab_command  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_when_ready(url, proc, seconds=60):
    deadline = time.time() + seconds
    while True:
        try:
            return urllib.request.urlopen(url, timeout=30)
        except urllib.error.URLError:
            if time.time() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.5)


def test_make_lab_runs_scripts_lab():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab: .*\n\t\$\(BIN\)/python scripts/lab.py", makefile, re.M)


def test_lab_serves_the_course():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "lab.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines, found = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=\w+", line):
                found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert found.wait(90), "JupyterLab did not print its URL:\n" + "".join(lines)
        url = next(m.group(0) for line in lines
                   if (m := re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=\w+", line)))
        token = url.split("token=")[1]
        page = fetch_when_ready(url, proc)
        assert page.status == 200 and b"JupyterLab" in page.read()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/contents/00_welcome.ipynb?content=1",
                                         headers={"Authorization": f"token {token}"})
        model = json.load(urllib.request.urlopen(request, timeout=30))
        assert model["type"] == "notebook" and model["content"]["cells"]
        assert any("tl.setup(seed=0)" in "".join(c["source"]) for c in model["content"]["cells"])
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
