"""Compare tune JSONs number by number, ignoring timing keys: prints the differing paths.
usage: python compare_json.py reference.json other.json..."""
import json
import sys

TIMING = ("seconds",)  # per-candidate and total wall seconds


def flatten(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from flatten(v, f"{path}[{i}]")
    else:
        yield path, obj


ref = dict(flatten(json.load(open(sys.argv[1]))))
for other in sys.argv[2:]:
    got = dict(flatten(json.load(open(other))))
    timing = [p for p in ref if p.rsplit("/", 1)[-1] in TIMING]
    diff = [p for p in set(ref) | set(got) if p not in timing and ref.get(p, "<missing>") != got.get(p, "<missing>")]
    numbers = sum(isinstance(v, (int, float)) for p, v in ref.items() if p not in timing)
    print(f"{other} vs {sys.argv[1]}: {numbers} numbers and {len(ref) - len(timing)} values compared "
          f"(timing keys skipped: {timing}); differing: {sorted(diff) or 'none'}")
