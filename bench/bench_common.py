"""Helpers shared by the benchmark scripts: running and timing commands."""
import os
import re
import signal
import socket
import subprocess
import sys
import time


def sh(cmd, **kw):
    """Runs cmd, echoing it to stderr; exits on failure."""
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kw)


def measured(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS in MiB, stdout). Exits when cmd fails."""
    elapsed, rss, out, failure = measured_or_failure(cmd, env)
    if failure:
        sys.exit(f"command failed ({failure}): {cmd}\n{out}")
    return elapsed, rss, out


def measured_or_failure(cmd, env=None):
    """Runs cmd; returns (seconds, peak RSS in MiB, stdout, failure), where failure says how
    cmd failed ("exit status 1", "killed by signal 9 (SIGKILL: out of memory?)") or is None."""
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    failure = None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        failure = f"killed by signal {sig} ({name}{': out of memory?' if sig == 9 else ''})"
    elif os.WEXITSTATUS(status) != 0:
        failure = f"exit status {os.WEXITSTATUS(status)}"
    return elapsed, usage.ru_maxrss / 1024.0, out.decode(errors="replace"), failure


def free_port():
    """A TCP port free on the loopback interface now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAFKA_SH = os.path.join(ROOT, "scripts", "kafka.sh")


def start_broker(directory):
    """Starts a local Kafka broker (scripts/kafka.sh) keeping its files in `directory`;
    returns its bootstrap address."""
    return subprocess.run(["bash", KAFKA_SH, "start", str(directory)], check=True,
                          capture_output=True, text=True).stdout.strip()


def stop_broker(directory):
    """Stops the broker `start_broker` started in `directory` (nothing if it is not running)."""
    subprocess.run(["bash", KAFKA_SH, "stop", str(directory)], check=False)


def config_text(path):
    """The text of the config at `path` with its SQL files by absolute path, so a copy of it
    can be written anywhere."""
    path = os.path.abspath(path)
    base = os.path.dirname(path)
    with open(path) as f:
        text = f.read()
    return re.sub(r"file: (\S+)", lambda m: f"file: {os.path.normpath(os.path.join(base, m.group(1)))}", text)
