"""Starts the KFP harness's pods from one pre-imported Python, for tests.

A pod's command is ``python -m <entrypoint> <args>``. A fresh Python spends most of a small
task importing TensorFlow, TFX, Beam, TFMA and TFDV (about 10 s each time on 2 cores, 13 pods a
run). This process imports them once, runs nothing, and then forks a child per pod; the child
sets the pod's working directory and environment, sends its output to the pod's log, and runs
the pod's own module with the pod's own arguments as ``__main__`` (``runpy``), exactly what
``python -m`` does. Only commands of that shape are forked; ``ForkedPods.run`` runs anything else
as a fresh process.

Forking after imports (and before any TensorFlow op) is safe here: the only threads alive are
OpenBLAS's and jemalloc's, which both re-arm themselves across fork (pthread_atfork). Nothing
of TensorFlow's runtime exists until the child's executor creates it.

Protocol (JSON lines): the harness writes ``{"id", "argv", "cwd", "env", "log"}`` to stdin; this
process answers ``{"id", "pid"}`` when the child starts and ``{"id", "exit"}`` when it ends.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time

PRE_IMPORTED = (
    "tensorflow",
    "apache_beam",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tensorflow_data_validation",
    "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
    "tfx.components.statistics_gen.executor",
    "tfx.components.example_validator.executor",
    "tfx.components.schema_gen.import_schema_gen.executor",
    "tfx.components.transform.executor",
    "tfx.components.trainer.executor",
    "boto3",
    "pipeline.kfp_pod",
)


def _child(request: dict) -> None:
    """In the forked child: become the pod, run its module, exit with its status."""
    import runpy
    import traceback

    status = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)  # fd 0 is the forker's request pipe
        os.dup2(null, 0)
        os.close(null)
        module, args = request["argv"][2], request["argv"][3:]
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:
            traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def serve() -> None:
    """The pre-imported parent: fork a child per request, report starts and exits."""
    import importlib
    import warnings

    for module in PRE_IMPORTED:
        importlib.import_module(module)
    warnings.filterwarnings("ignore", message=".*use of fork\\(\\) may lead to deadlocks.*")
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of imported modules must not corrupt the answers
    print(json.dumps({"ready": True}), file=answers)
    children: dict[int, str] = {}
    buffer = b""
    stdin_open = True
    while stdin_open or children:
        if stdin_open and select.select([0], [], [], 0.1)[0]:
            chunk = os.read(0, 1 << 20)
            stdin_open = bool(chunk)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request)
                children[pid] = request["id"]
                print(json.dumps({"id": request["id"], "pid": pid}), file=answers)
        elif not stdin_open:
            time.sleep(0.1)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            print(json.dumps({"id": children.pop(pid), "exit": os.waitstatus_to_exitcode(status)}), file=answers)


def run_fresh(argv: list[str], env: dict[str, str], cwd: str, log: str, timeout: float) -> int | None:
    """A pod as a fresh process, as a container starts it: its exit status, or None on timeout."""
    with open(log, "w") as out:
        try:
            return subprocess.run(argv, env=env, cwd=cwd, stdout=out, stderr=out, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return None


class ForkedPods:
    """Runs pod commands through one pre-imported process (``python -m tests.pod_forker``)."""

    def __init__(self, python: str, env: dict[str, str], cwd: str):
        self._process = subprocess.Popen(
            [python, "-m", "tests.pod_forker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=cwd
        )
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}
        self._answers: dict[str, dict] = {}
        ready = json.loads(self._process.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise RuntimeError(f"the pod forker did not start (exit {self._process.wait()})")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._process.stdout:
            answer = json.loads(line)
            with self._lock:
                if answer["id"] not in self._events:  # a pod that timed out and was killed
                    continue
                self._answers.setdefault(answer["id"], {}).update(answer)
                if "exit" in answer:
                    self._events[answer["id"]].set()
        with self._lock:  # the forker died: nothing more will end
            for event in self._events.values():
                event.set()

    @staticmethod
    def forkable(argv: list[str]) -> bool:
        return len(argv) > 2 and argv[0] == "python" and argv[1] == "-m"

    def run(self, argv: list[str], env: dict[str, str], cwd: str, log: str, timeout: float) -> int | None:
        """The pod's exit status (None if it timed out and was killed); its output is in ``log``."""
        if not self.forkable(argv):
            return run_fresh(argv, env, cwd, log, timeout)
        request_id = f"{time.monotonic_ns()}-{threading.get_ident()}"
        with self._lock:
            self._events[request_id] = threading.Event()
            request = {"id": request_id, "argv": argv, "cwd": cwd, "env": env, "log": log}
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
        ended = self._events[request_id].wait(timeout)
        with self._lock:
            answer = self._answers.pop(request_id, {})
            del self._events[request_id]
        if not ended:
            if "pid" in answer:
                os.kill(answer["pid"], 9)
            return None
        if "exit" not in answer:
            raise RuntimeError("the pod forker died")
        return answer["exit"]

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait(timeout=60)


if __name__ == "__main__":
    serve()
