"""The lexicon fuzz pass (tests/unit/test_lexicon_fuzz.py) with many more examples than CI runs,
optionally against an AddressSanitizer + UndefinedBehaviorSanitizer build of the extension.

    python bench/fuzz_lexicon.py [--examples 5000]
    python bench/fuzz_lexicon.py --examples 2000 --sanitize [--workdir /tmp/prealign_asan]

``--sanitize`` copies the checkout to a scratch folder (nothing here is touched), builds
``megatron_prealign._C`` there with ``-fsanitize=address,undefined``, and runs the same tests with
libasan and libubsan preloaded into Python. Sanitizer reports go to files in that folder (pytest
captures the process's stderr) and are printed at the end; any report makes the exit status 1.
Needs g++ with its sanitizer runtimes (``gcc -print-file-name=libasan.so``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/unit/test_lexicon_fuzz.py"
SANITIZE = "-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g"


def runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.isabs(path):
        sys.exit(f"gcc has no {name}: install the compiler's sanitizer runtimes")
    return path


def sanitized_checkout(workdir: Path) -> Path:
    """A copy of the checkout with the extension rebuilt under the sanitizers."""
    root = workdir / "src"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".git", "build", "*.so", ".hypothesis", "__pycache__"))
    env = {**os.environ, "CFLAGS": SANITIZE, "CXXFLAGS": SANITIZE, "LDFLAGS": "-fsanitize=address,undefined"}
    log = workdir / "build.log"
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=root, env=env, stdout=f,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"sanitizer build failed; see {log}")
    return root


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=5000, help="hypothesis examples per property")
    p.add_argument("--sanitize", action="store_true", help="run against an ASan + UBSan build of the extension")
    p.add_argument("--workdir", help="scratch folder for --sanitize (default: a new temporary one)")
    args = p.parse_args()

    env = {**os.environ, "PREALIGN_FUZZ_EXAMPLES": str(args.examples), "PYTHONWARNINGS": "ignore"}
    cwd = REPO
    reports = None
    if args.sanitize:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="prealign_asan_"))
        workdir.mkdir(parents=True, exist_ok=True)
        cwd = sanitized_checkout(workdir)
        reports = workdir / "reports"
        if reports.exists():
            shutil.rmtree(reports)
        reports.mkdir()
        env.update(
            LD_PRELOAD=f"{runtime('libasan.so')}:{runtime('libubsan.so')}",
            # CPython's own allocations are not leaks worth reading here.
            ASAN_OPTIONS=f"detect_leaks=0:log_path={reports}/asan",
            UBSAN_OPTIONS=f"print_stacktrace=1:halt_on_error=1:log_path={reports}/ubsan",
        )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics", TEST]
    status = subprocess.run(cmd, cwd=cwd, env=env).returncode
    if reports is not None:
        found = sorted(reports.iterdir())
        for report in found:
            print(f"==== {report}\n{report.read_text(errors='replace')}")
        print(f"sanitizer reports: {len(found)} (build and reports in {reports.parent})")
        status = status or (1 if found else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
