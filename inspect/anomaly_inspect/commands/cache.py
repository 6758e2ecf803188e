"""``anomaly-inspect cache``: what the user cache holds; ``--clear`` empties its folders.

The user cache ($ANOMALY_INSPECT_CACHE, else ~/.cache/anomaly_inspect) holds the backbone's
ONNX exports (onnx), tune's stage maps and synthetic-anomaly sets (tune) and ood-benchmark's
features (ood); nothing prunes it. Without --clear: each folder's entries, size on disk and
last write (reading an entry does not change it), then the total. A folder moved
elsewhere and linked back is sized where it leads ("a link to X"; "which is missing" where
that disk is not mounted: it blocks no --clear of the others); any other item of the root is
named, not sized (a root set to a project folder by mistake is not walked); the home folder
and / are refused.

--clear NAME ... deletes those folders' contents (the folders, and tune's and ood's groups
maps and synthetic, stay). It refuses a root that holds anything but the folders onnx, tune
and ood (a root set to ~ or / by mistake: nothing is deleted), removes only what lies below
the root (a symbolic link as a link, never what it points to) and leaves the files and entries
being written. A folder that is a link is never emptied: naming it (or all) refuses the whole
request, nothing deleted; name the others, or empty its target yourself. A run reading the
cache meanwhile makes a removed entry again, except tune (and fit / evaluate --auto), which
reads its synthetic-anomaly images until it ends: clear tune while none runs. --quiet: --clear
prints its total line only (errors are still printed).
"""

from __future__ import annotations

import argparse
import sys
import time

from ..user_cache import (
    CACHE_FOLDERS,
    CacheRootError,
    cache_root,
    cache_usage,
    human_size,
    missing_link,
    summed,
)
from ..user_cache import clear as clear_folders
from .common import nonempty_path

#: the names --clear takes
NAMES = (*CACHE_FOLDERS, "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show the user cache's folders and sizes; --clear empties them",
                       description=__doc__)
    p.add_argument("--clear", nargs="+", choices=NAMES, metavar="NAME",
                   help=f"empty these folders ({', '.join(NAMES)}) and say what was freed")
    p.add_argument("--cache-dir", type=nonempty_path, metavar="DIR",
                   help="the cache root to act on (default: $ANOMALY_INSPECT_CACHE, else "
                        "~/.cache/anomaly_inspect)")
    p.add_argument("--quiet", action="store_true",
                   help="no info logs; --clear prints its total line only")
    p.set_defaults(func=run)


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def _row(u) -> tuple[str, str, str, str]:
    if not u.cache_folder:
        return (u.name, _entries(u.entries), "-",
                f"{missing_link(u.link_to)}, not sized" if u.link_to
                else "not a cache folder, not sized")
    last = ("never" if u.last_written is None
            else time.strftime("%Y-%m-%d %H:%M", time.localtime(u.last_written)))
    return (u.name, _entries(u.entries), human_size(u.size),
            f"last written {last}" + (f" (a link to {u.link_to})" if u.link_to else ""))


def run(args: argparse.Namespace) -> int:
    root = args.cache_dir if args.cache_dir is not None else cache_root()
    try:
        return clear(root, args.clear, args.quiet) if args.clear else show(root)
    except CacheRootError as exc:  # a root that is not a cache: a bad argument
        print(f"error: {exc}", file=sys.stderr)
        return 2


def show(root) -> int:
    usage = cache_usage(root)
    if not usage:
        print(f"cache: {root}: empty (no such folder)")
        return 0
    print(f"cache: {root}")
    by_name = {u.name: u for u in usage}
    rows = [_row(by_name[n]) if n in by_name else (n, "absent", "", "") for n in CACHE_FOLDERS]
    rows += [_row(u) for u in usage if u.name not in CACHE_FOLDERS]
    total = summed(usage)
    rows.append(("total", _entries(total.entries), human_size(total.size),
                 "" if all(u.cache_folder for u in usage) else "(the cache folders' size)"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for name, entries, size, last in rows:
        print(f"{name:<{widths[0]}}  {entries:>{widths[1]}}  {size:>{widths[2]}}  {last}".rstrip())
    return 0


def _left(n: int) -> str:
    return f" ({n} being written, left)" if n else ""


def clear(root, names: list[str], quiet: bool = False) -> int:
    done = clear_folders(root, names)
    if not done:
        print(f"cache: {root}: nothing to free (no such folder)")
        return 0
    for d in [] if quiet else done:
        if not d.present:
            print(f"{d.name}: nothing to free (absent)")
            continue
        print(f"{d.name}: freed {human_size(d.freed)} ({_entries(d.entries)}){_left(d.left)}")
    print(f"total: freed {human_size(sum(d.freed for d in done))} "
          f"({_entries(sum(d.entries for d in done))}){_left(sum(d.left for d in done))}")
    failed = [f for d in done for f in d.failed]
    if failed:
        (path, reason), more = failed[0], len(failed) - 1
        print(f"error: {path}: cannot delete it ({reason})"
              + (f"; {more} more could not be deleted" if more else ""), file=sys.stderr)
        return 1
    return 0
