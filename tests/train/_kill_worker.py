"""One attempt of a crash-and-resume run: ``flowmatch train`` that may SIGKILL itself.

Usage: python _kill_worker.py RUN_DIR FAULT -- <flowmatch train arguments>

``FAULT`` is ``none``, ``wait`` (print ``ready`` when training starts and let the harness kill
this process at a random moment), or ``POINT:N``: kill this process (SIGKILL, no cleanup) in
the middle of the N-th occurrence of ``POINT``:

- ``ckpt_file``: half-way through writing a checkpoint file (before its fsync);
- ``ckpt_rename``: with a complete temporary checkpoint, before it is renamed into place;
- ``latest``: after the rename, half-way through replacing ``checkpoints/latest``;
- ``rotation``: rotating out an old checkpoint, after its rename and one file deleted;
- ``metrics``: half-way through appending a line to ``metrics.jsonl`` (a torn line);
- ``config``: half-way through writing ``config.json`` (in its temporary sibling).

The worker resumes (``--resume``) when the run directory already has a ``config.json``.
"""

import os
import signal
import sys
from pathlib import Path


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _counter(n: int):
    seen = {"n": 0}

    def hit() -> bool:
        seen["n"] += 1
        return seen["n"] == n

    return hit


def install(point: str, n: int) -> None:
    """Monkeypatch the library so that the ``n``-th ``point`` kills the process."""
    from flowmatch.api import train as api_train
    from flowmatch.train import checkpoint as ckpt
    from flowmatch.train import loop

    hit = _counter(n)
    if point == "ckpt_file":
        real = ckpt.write_bytes_durable

        def write(path, data, **kw):
            if hit():
                with open(path, "wb") as f:
                    f.write(data[: len(data) // 2])
                _die()
            real(path, data, **kw)

        ckpt.write_bytes_durable = write
    elif point == "ckpt_rename":
        real_replace = ckpt._replace_dir

        def replace(src, dst):
            if hit():
                _die()
            real_replace(src, dst)

        ckpt._replace_dir = replace
    elif point in ("latest", "config"):
        module = ckpt if point == "latest" else api_train
        real_atomic = module.atomic_write_text
        wanted = "latest" if point == "latest" else "config.json"

        def atomic(path, text):
            if Path(path).name == wanted and hit():
                tmp = Path(path).with_name(f".tmp-{Path(path).name}-killed")
                tmp.write_text(text[: len(text) // 2])
                _die()
            real_atomic(path, text)

        module.atomic_write_text = atomic
    elif point == "rotation":
        real_rmtree = ckpt.shutil.rmtree

        def rmtree(path, *args, **kw):
            if Path(path).name.startswith(".tmp-old-") and hit():
                files = sorted(Path(path).iterdir())
                if files:
                    files[0].unlink()
                _die()
            real_rmtree(path, *args, **kw)

        ckpt.shutil.rmtree = rmtree
    elif point == "metrics":
        real_record = loop.Trainer._write_record

        def record(self, rec):
            if self._metrics is not None and hit():
                import json

                line = json.dumps(rec) + "\n"
                self._metrics.write(line[: len(line) // 2])
                self._metrics.flush()
                _die()
            real_record(self, rec)

        loop.Trainer._write_record = record
    else:
        raise SystemExit(f"unknown fault point {point!r}")


def main() -> int:
    run_dir, fault = Path(sys.argv[1]), sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1 :]
    if fault == "wait":
        from flowmatch.train import loop

        real_emit = loop.Trainer._emit

        def emit(self, method, *a):
            if method == "on_train_start":
                print("ready", flush=True)
            real_emit(self, method, *a)

        loop.Trainer._emit = emit
    elif fault != "none":
        point, n = fault.split(":")
        install(point, int(n))
    from flowmatch.cli.main import main as flowmatch

    if (run_dir / "config.json").exists():
        steps = args[args.index("--steps") + 1]
        return flowmatch(["train", "--resume", str(run_dir), "--steps", steps, "--quiet"])
    return flowmatch(["train", "--out", str(run_dir), "--quiet", *args])


if __name__ == "__main__":
    sys.exit(main())
