"""Writes BENCHMARKS.md from the committed benchmark scripts, all in one run (`make bench`).

Every section is one command; its markdown output (each script prints its own tables, ours beside
the baseline measured in the same run) goes into the file under the command that made it, with
the machine's load average before and after, the date and the commit. Notes written by people
(where the time goes, what a target needs) live in `benches/notes/<section>.md` and are copied in
after the figures, so nothing in BENCHMARKS.md comes from anywhere but a committed file.

    python3 benches/write_benchmarks.py                 # every section (about an hour)
    python3 benches/write_benchmarks.py --only local    # re-run some sections, keep the others
    python3 benches/write_benchmarks.py --notes         # only copy benches/notes/ in again
    python3 benches/write_benchmarks.py --list

Measure on a quiet machine: nothing else building or testing (the load average is printed with
every section so a reader can tell).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "BENCHMARKS.md"
NOTES = ROOT / "benches" / "notes"
PY = os.environ.get("PY", ".venv/bin/python")
REDIS_PY = "tests/with-redis.sh bash -c 'HORNBEAM_URL=$HORNBEAM_TEST_REDIS_URL {py} {script}'"

#: (slug, title, shell command). The commands are run from the repository's root, in this order.
SECTIONS: list[tuple[str, str, str]] = [
    ("criterion", "Store, bus and C ABI (criterion, beside RwLock<HashMap>, dashmap, crossbeam, Rust)",
     "rm -rf target/criterion && cargo bench -p hornbeam-benches --benches -- --noplot "
     "> target/criterion-run.log 2>&1 "
     "&& python3 benches/report.py"),
    ("python-per-call", "Python per call (embedded) beside a locked dict + msgpack and redis-py",
     f"{PY} benches/python/bench_state.py"),
    ("python-redis-per-call", "Python per call on the Redis backend beside redis-py",
     REDIS_PY.format(py=PY, script="benches/python/bench_state.py")),
    ("python-fanout", "Python fan-out in asyncio: per-task mailboxes beside asyncio.Queue",
     f"{PY} benches/python/bench_fanout.py --rounds 3"),
    ("redis-fanout", "Fan-out across processes through Redis beside redis.asyncio",
     f"{PY} benches/python/bench_fanout_redis.py"),
    ("local", "Many workers: local:// beside the embedded engine and the Redis backend",
     f"{PY} benches/python/bench_local.py --rounds 3"),
    ("watch", "Watching state: what a watcher costs a write, on every backend",
     f"{PY} benches/python/bench_watch.py --rounds 3 --before 56449c8"),
    ("chat", "WebSocket chat (seed 000) beside the Zenith way (a dict of sockets, a loop of sends)",
     f"{PY} benches/ws/chat_bench.py --rounds 3"),
    ("channels", "Channels (seed 002): broadcast fan-out and presence",
     f"{PY} benches/ws/channels_bench.py"),
    ("hooks", "Hooks, execute across processes, hornbeam_ml",
     f"{PY} benches/python/bench_hooks.py"),
]

HEADER = """# Benchmarks

Written by `make bench` (`python3 benches/write_benchmarks.py`) from the committed scripts named
under each heading: every figure comes from that script's run, with ours and its baseline measured
side by side in the same run, and the ratio beside them. This project's machine has 2 cores; the
load average before and after each section says how quiet it was. Single runs on this machine
move by up to 2x between runs: the scripts that can alternate contenders report medians of
several rounds. Rerun a section with `python3 benches/write_benchmarks.py --only SLUG`.

"""


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_section(slug: str, title: str, cmd: str) -> str:
    before = load()
    t = time.monotonic()
    print(f"== {slug}: {cmd}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, shell=True, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                          executable="/bin/bash")
    minutes = (time.monotonic() - t) / 60
    body = proc.stdout.strip()
    if proc.returncode != 0:
        body += f"\n\n**The command failed (exit {proc.returncode}); figures above are partial.**"
    notes = NOTES / f"{slug}.md"
    text = [f"<!-- bench:{slug} -->", f"## {title}", "",
            f"Command: `{cmd}`", "",
            f"Load average before: {before}; after: {load()}; {minutes:.1f} min; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit `{commit()}`.", "", body, ""]
    text += [notes_block(slug), f"<!-- /bench:{slug} -->"]
    return "\n".join(text)


def notes_block(slug: str) -> str:
    """The section's notes from `benches/notes/<slug>.md`, between markers so they can be refreshed
    (`--notes`) without measuring again."""
    notes = NOTES / f"{slug}.md"
    body = notes.read_text().strip() + "\n" if notes.exists() else ""
    return f"<!-- notes:{slug} -->\n{body}<!-- /notes:{slug} -->\n"


def refresh_notes(section: str, slug: str) -> str:
    """A kept section with its notes replaced by the current notes file."""
    pat = re.compile(rf"<!-- notes:{slug} -->.*?<!-- /notes:{slug} -->\n?", re.S)
    if pat.search(section):
        return pat.sub(lambda _: notes_block(slug), section)
    return section.replace(f"<!-- /bench:{slug} -->", notes_block(slug) + f"<!-- /bench:{slug} -->")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", metavar="SLUG", help="re-run these sections only")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--notes", action="store_true",
                    help="measure nothing: copy benches/notes/ into the kept sections")
    args = ap.parse_args()
    if args.list:
        for slug, title, cmd in SECTIONS:
            print(f"{slug:24} {cmd}")
        return 0
    slugs = [s for s, _, _ in SECTIONS]
    for s in args.only or []:
        if s not in slugs:
            raise SystemExit(f"unknown section {s!r}: one of {', '.join(slugs)}")
    old = OUT.read_text() if OUT.exists() else ""
    kept = {m.group(1): m.group(0) for m in
            re.finditer(r"<!-- bench:([\w-]+) -->.*?<!-- /bench:\1 -->", old, re.S)}
    head = re.match(r"(?s).*?Commit `[^`]*`\.\n", old) if args.notes else None
    parts = [head.group(0) if head else HEADER + f"Commit `{commit()}`.\n"]
    failed = False
    for slug, title, cmd in SECTIONS:
        if args.notes or (args.only and slug not in args.only):
            if slug in kept:
                parts.append(refresh_notes(kept[slug], slug))
                continue
            parts.append(kept.get(slug, f"<!-- bench:{slug} -->\n## {title}\n\nNot measured yet: "
                                        f"`python3 benches/write_benchmarks.py --only {slug}`.\n"
                                        f"<!-- /bench:{slug} -->"))
            continue
        section = run_section(slug, title, cmd)
        failed |= "**The command failed" in section
        parts.append(section)
        OUT.write_text("\n\n".join(parts) + "\n")  # keep what is done if a later section hangs
    OUT.write_text("\n\n".join(parts) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
