"""``python -m tests.peers.exec_binary BINARY ARGS...``: replaces itself with BINARY, so a
peer program that is not Python runs under ``tests.support.processes.Service`` (which starts
``python -m``) with the same log file, process group and stop handling."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.execv(sys.argv[1], sys.argv[1:])
