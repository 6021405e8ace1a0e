"""A small process that starts the measured processes and reports their rusage.

Why not start them from the bench itself: Linux carries a process's peak RSS
across exec, and a child forked (or vforked) by the bench starts with the
bench's own memory as its high-water mark. The bench holds moto clients, the
Key Vault double and trustme (about 70 MB), so every child would report at
least that. This launcher imports only the standard library and stays near
10 MB, so ru_maxrss from wait4 is the measured program's own peak.

Protocol, one JSON object a line:
  stdin:  {"id": ID, "argv": [...], "env": {...}, "log": PATH, "timeout": SECONDS}
  stdout: {"id": ID, "start": T0, "end": T1, "cpu": S, "rss_kb": KB, "rc": RC, "timed_out": BOOL}
T0 is taken just before fork and T1 when the child is reaped (time.monotonic,
the system-wide CLOCK_MONOTONIC). The child's stdin is /dev/null; its stdout
and stderr go to the log file.
"""

import json
import os
import signal
import sys
import threading
import time

lock = threading.Lock()
running = {}  # pid -> (id, start, timer)
have_children = threading.Condition(lock)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def kill(pid, state):
    state["timed_out"] = True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def spawn(cmd):
    fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    with lock:
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: redirect and exec, nothing else
            try:
                os.dup2(null, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.execve(cmd["argv"][0], cmd["argv"], cmd["env"])
            except OSError as e:
                os.write(2, f"cannot start {cmd['argv'][0]}: {e}\n".encode())
            finally:
                os._exit(127)
        state = {"timed_out": False}
        timer = threading.Timer(cmd.get("timeout", 600), kill, (pid, state))
        timer.daemon = True
        timer.start()
        running[pid] = (cmd["id"], start, timer, state)
        have_children.notify()
    os.close(fd)
    os.close(null)


def reaper():
    while True:
        with lock:
            while not running:
                have_children.wait()
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            continue
        end = time.monotonic()
        with lock:
            entry = running.pop(pid, None)
        if entry is None:
            continue
        ident, start, timer, state = entry
        timer.cancel()
        emit(
            {
                "id": ident,
                "start": start,
                "end": end,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss_kb": usage.ru_maxrss,
                "rc": os.waitstatus_to_exitcode(status),
                "timed_out": state["timed_out"],
            }
        )


def main():
    threading.Thread(target=reaper, daemon=True).start()
    emit({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        if line.strip():
            try:
                spawn(json.loads(line))
            except OSError as e:
                cmd = json.loads(line)
                emit({"id": cmd.get("id"), "error": str(e)})
    # stdin closed: wait for the children still running, then leave
    while True:
        with lock:
            if not running:
                return
        time.sleep(0.05)


if __name__ == "__main__":
    main()
