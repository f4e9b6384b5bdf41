"""Mutation score from mutmut 2's cache: killed / (tested - documented equivalent).

A mutant killed by a timeout (the tests hung) counts as killed; untested and
skipped ones are reported, not scored.  Equivalent mutants are listed in
``equivalent.txt`` as ``FILE | SOURCE LINE | MUTANT INDEX | why``, keyed by
the line's text rather than its number so the list survives edits above it
(docs/testing.md explains each).  Survivors are printed with their diff.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys

KILLED = {"ok_killed", "ok_suspicious", "bad_timeout"}


def load_equivalent(path):
    keys = set()
    if path and os.path.exists(path):
        for raw in open(path, encoding="utf-8"):
            if raw.strip() and not raw.startswith("#"):
                # the source line may hold " | " itself (str | None): it ends at the first " | INDEX | "
                f, rest = raw.split(" | ", 1)
                m = re.match(r"(.*?) \| (\d+) \| ", rest)
                if m is None:
                    raise SystemExit(f"{path}: not FILE | SOURCE LINE | INDEX | why: {raw.rstrip()!r}")
                keys.add((f.strip(), m.group(1).strip(), int(m.group(2))))
    return keys


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", required=True)
    ap.add_argument("--equivalent")
    ap.add_argument("--no-diffs", action="store_true")
    ap.add_argument("--source-root", default=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    help="the unmutated tree the diffs are made from (default: this repository)")
    ap.add_argument("--survivor-ids", metavar="FILE",
                    help="print the ids of FILE's surviving mutants and stop (mutation.sh reruns them)")
    ap.add_argument("paths", nargs="*", help="only files under these paths")
    args = ap.parse_args(argv)
    eq = load_equivalent(args.equivalent)
    db = sqlite3.connect(args.cache)
    if args.survivor_ids:  # documented equivalents are left out: no test can kill them
        ids = db.execute("SELECT m.id, l.line, m.'index' FROM mutant m JOIN line l ON m.line = l.id JOIN "
                         "sourcefile s ON l.sourcefile = s.id WHERE s.filename = ? AND m.status = 'bad_survived'",
                         (args.survivor_ids,)).fetchall()
        print(" ".join(str(i) for i, line, idx in ids if (args.survivor_ids, line.strip(), idx) not in eq))
        return 0
    rows = db.execute(
        "SELECT m.id, s.filename, l.line, l.line_number, m.'index', m.status FROM mutant m "
        "JOIN line l ON m.line = l.id JOIN sourcefile s ON l.sourcefile = s.id").fetchall()
    paths = [p.rstrip("/") for p in args.paths]
    per_file, survivors, n_eq = {}, [], 0
    for mid, fname, line, lineno, idx, status in rows:
        if paths and not any(fname == p or fname.startswith(p + "/") for p in paths):
            continue
        c = per_file.setdefault(fname, {"killed": 0, "survived": 0, "equivalent": 0, "untested": 0})
        if (fname, line.strip(), idx) in eq and status not in KILLED:
            c["equivalent"] += 1
        elif status in KILLED:
            c["killed"] += 1
        elif status == "bad_survived":
            c["survived"] += 1
            survivors.append((mid, fname, lineno, line.strip(), idx))
        else:
            c["untested"] += 1
    tot = {"killed": 0, "survived": 0, "equivalent": 0, "untested": 0}
    print(f"{'file':48s} {'killed':>7s} {'survived':>8s} {'equiv':>6s} {'untested':>8s} {'score':>7s}")
    for fname in sorted(per_file):
        c = per_file[fname]
        for k in tot:
            tot[k] += c[k]
        scored = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / scored:6.1f}%" if scored else "    -"
        print(f"{fname:48s} {c['killed']:7d} {c['survived']:8d} {c['equivalent']:6d} {c['untested']:8d} {score:>7s}")
    scored = tot["killed"] + tot["survived"]
    score = 100 * tot["killed"] / scored if scored else 0.0
    print(f"{'TOTAL':48s} {tot['killed']:7d} {tot['survived']:8d} {tot['equivalent']:6d} {tot['untested']:8d} "
          f"{score:6.1f}%")
    print(f"mutation score: {score:.1f}% = killed {tot['killed']} / (tested {scored + tot['equivalent']}"
          f" - equivalent {tot['equivalent']})")
    if survivors and not args.no_diffs:
        print("\nsurvivors (FILE | LINE | INDEX for equivalent.txt, then the diff):")
        for mid, fname, lineno, line, idx in survivors:
            print(f"--- #{mid} {fname}:{lineno}  key: {fname} | {line} | {idx}")
            print(_diff(os.path.join(args.source_root, fname), lineno, idx, line))
    return 0


def _diff(path, lineno, idx, text):
    """The mutated line, made here from the unmutated source: ``mutmut show``
    would re-read the cache's copy of the file, which a running mutmut may
    hold mutated, and rewrite the cache's line table from it."""
    from mutmut import Context, RelativeMutationID, mutate
    with open(path, encoding="utf-8") as f:
        source = f.read()
    lines = source.split("\n")
    if lineno >= len(lines) or lines[lineno].strip() != text.strip():
        # lines moved since the run: find the mutant's line by its text (mutmut
        # keys mutants by text too), when that text is on one line only
        where = [i for i, ln in enumerate(lines) if ln.strip() == text.strip()]
        if len(where) != 1:
            return "  (the source changed since the run: rerun scripts/mutation.sh)"
        lineno = where[0]
    mid = RelativeMutationID(line=lines[lineno], index=idx, line_number=lineno)
    mutated, n = mutate(Context(source=source, filename=path, mutation_id=mid))
    if not n:
        return "  (the source changed since the run: rerun scripts/mutation.sh)"
    new = mutated.split("\n")
    return "\n".join(f"-{a}\n+{b}" for a, b in zip(lines, new) if a != b)


if __name__ == "__main__":
    sys.exit(main())
