"""One rank of a 2-rank ``flowmatch train`` launched by test_distributed_faults.py.

Started directly (not by torchrun) with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set, so the
test can SIGSTOP one rank and watch the other. Ranks other than 0 are audited: any write,
creation, rename or deletion inside the run directory exits with status 3 and an ``AUDIT``
line, because only rank 0 may touch the file system.

Usage: python _ddp_cli_worker.py RUN_DIR -- <flowmatch arguments>
"""

import builtins
import os
import shutil
import sys
from pathlib import Path


def _audit(run_dir: Path) -> None:
    root = os.path.realpath(run_dir)

    def inside(path) -> bool:
        try:
            p = os.path.realpath(os.fspath(path))
        except TypeError:
            return False
        return p == root or p.startswith(root + os.sep)

    def refuse(what, path):
        sys.stderr.write(f"AUDIT: rank {os.environ['RANK']} {what} {path}\n")
        sys.stderr.flush()
        os._exit(3)

    real_open, real_os_open = builtins.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax+") and inside(file):
            refuse("opened for writing", file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        if flags & writes and inside(path):
            refuse("opened for writing", path)
        return real_os_open(path, flags, *args, **kwargs)

    def wrap(module, name):
        real = getattr(module, name)

        def guarded(path, *args, **kwargs):
            if inside(path):
                refuse(name, path)
            return real(path, *args, **kwargs)

        setattr(module, name, guarded)

    builtins.open = guarded_open
    os.open = guarded_os_open
    for name in ("mkdir", "makedirs", "replace", "rename", "unlink", "remove", "rmdir"):
        wrap(os, name)
    wrap(shutil, "rmtree")


def main() -> int:
    run_dir = Path(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    if os.environ["RANK"] != "0":
        _audit(run_dir)
    from flowmatch.cli.main import main as flowmatch

    return flowmatch(argv)


if __name__ == "__main__":
    sys.exit(main())
