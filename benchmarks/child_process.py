"""Run one benchmark case in a child process, so that its wall time and peak RSS are its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def run_case(script: str, case: dict) -> dict:
    """``python script --case JSON`` in a child; its last stdout line (JSON) merged into ``case``, with peak RSS."""
    command = [sys.executable, script, "--case", json.dumps(case)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        return {**case, "error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {status}"}
    return {**case, **json.loads(stdout.strip().splitlines()[-1]), "peak_rss_mib": usage.ru_maxrss / 1024}
