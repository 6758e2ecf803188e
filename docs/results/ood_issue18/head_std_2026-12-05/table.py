"""Print a benchmark JSON's rows as the docs' markdown table: AUROC / FPR@TPR80 per split,
the cells as the benchmark printed them (its ``table``, formatted from unrounded metrics: the
JSON's 4-decimal figures rounded again could differ in the third digit).
Use: python table.py RUN.json SPLIT [SPLIT ...]"""
import json
import re
import sys


def printed_cells(run: dict) -> tuple[list[str], dict[str, list[str]]]:
    """The printed table's column names and each scorer's cells, in order."""
    lines = run["table"].splitlines()
    header = re.split(r"\s{2,}", lines[1].strip())
    rows = {}
    for line in lines[2:]:
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == len(header):
            rows[parts[0]] = parts[1:]
    return header[1:], rows


if __name__ == "__main__":
    run = json.load(open(sys.argv[1]))
    columns, rows = printed_cells(run)
    names = [c.split(" (")[0] for c in columns]
    splits = sys.argv[2:]
    print("| scorer | " + " | ".join(columns[names.index(s)] for s in splits) + " |")
    print("|---" * (len(splits) + 1) + "|")
    for scorer, cells in rows.items():
        print(f"| {scorer} | " + " | ".join(cells[names.index(s)] for s in splits) + " |")
