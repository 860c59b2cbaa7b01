"""Helpers for scripts/mutation.sh around a cosmic-ray session database.

    python scripts/mutation_session.py skip-annotations SESSION MODULE_FILE
        Mark as skipped the mutants inside type annotations: every module here starts with
        ``from __future__ import annotations``, so an annotation is never evaluated and a
        mutant of it changes nothing (TypedDict bodies are kept: pydantic reads those).
    python scripts/mutation_session.py skip-redundant SESSION
        Keep, of cosmic-ray's replacements of one binary or comparison operator, only the
        nearest ones (listed in NEAREST below, much as mutmut chooses them); the other
        replacements at the same place are killed by the same tests and only cost time.
    python scripts/mutation_session.py retry-survivors SESSION MODULE_FILE NAME EQUIVALENT_LIST
        Forget the results of the survivors not listed as equivalent so that the next
        ``cosmic-ray exec`` runs them again (after adding tests, without re-running the mutants
        already killed).
    python scripts/mutation_session.py report SESSION MODULE_FILE NAME EQUIVALENT_LIST
        Print the score, every survivor that is not listed as equivalent, and every line of the
        equivalent list for NAME that matched no surviving mutant (stale: remove or correct it).

NAME is the module's path under ``eventforge-core/src/eventforge/`` (``wire/_codec.py``). The
equivalent list holds one mutant a line: ``NAME | where | operator | source line | why``
(``where`` the qualified name of the enclosing class or function, the operator without its
``core/`` prefix, the line stripped; the reason is required). A line matches every mutant of that
operator on that source text there.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import Any

from cosmic_ray.work_db import WorkDB, WorkResultStorage, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult


def _annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    tree = ast.parse(source)
    typed_dicts: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id == "TypedDict" for b in node.bases
        ):
            typed_dicts.update(ast.walk(node))
    spans = []
    for node in ast.walk(tree):
        annotations: list[ast.expr | None] = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            annotations.extend(a.annotation for a in every if a is not None)
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign) and node not in typed_dicts:
            annotations.append(node.annotation)
        for ann in annotations:
            if ann is not None and ann.end_lineno is not None and ann.end_col_offset is not None:
                spans.append(((ann.lineno, ann.col_offset), (ann.end_lineno, ann.end_col_offset)))
    return spans


def skip_annotations(session: str, module_file: str) -> int:
    spans = _annotation_spans(Path(module_file).read_text())
    skipped = 0
    with use_db(session, WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            for mutation in item.mutations:
                start = tuple(mutation.start_pos)
                end = tuple(mutation.end_pos)
                if any(lo <= start and end <= hi for lo, hi in spans):
                    db.set_result(
                        item.job_id,
                        WorkResult(
                            output="inside a type annotation (never evaluated)",
                            worker_outcome=WorkerOutcome.SKIPPED,
                        ),
                    )
                    skipped += 1
                    break
    print(f"skipped {skipped} mutants inside type annotations")
    return 0


# For each operator, the replacements kept: a boundary shift and a negation for comparisons,
# the inverse operation for arithmetic.
NEAREST = {
    "Add": {"Sub"},
    "Sub": {"Add"},
    "Mul": {"Div", "Add"},
    "Div": {"Mul"},
    "FloorDiv": {"Div"},
    "Mod": {"FloorDiv"},
    "Pow": {"Mul"},
    "LShift": {"RShift"},
    "RShift": {"LShift"},
    "BitOr": {"BitAnd"},
    "BitAnd": {"BitOr"},
    "BitXor": {"BitAnd"},
    "Lt": {"LtE", "GtE"},
    "LtE": {"Lt", "Gt"},
    "Gt": {"GtE", "LtE"},
    "GtE": {"Gt", "Lt"},
    "Eq": {"NotEq"},
    "NotEq": {"Eq"},
    "Is": {"IsNot"},
    "IsNot": {"Is"},
    "In": {"NotIn"},
    "NotIn": {"In"},
}


def skip_redundant(session: str) -> int:
    skipped = 0
    with use_db(session, WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            name = item.mutations[0].operator_name.removeprefix("core/")
            family, _, pair = name.partition("_")
            if family not in ("ReplaceBinaryOperator", "ReplaceComparisonOperator"):
                continue
            source, _, target = pair.partition("_")
            if target not in NEAREST.get(source, {target}):
                db.set_result(
                    item.job_id,
                    WorkResult(
                        output="a farther replacement of an operator whose nearest ones run",
                        worker_outcome=WorkerOutcome.SKIPPED,
                    ),
                )
                skipped += 1
    print(f"skipped {skipped} farther operator replacements")
    return 0


def retry_survivors(session: str, module_file: str, module: str, equivalent_list: str) -> int:
    source = Path(module_file).read_text()
    lines, qualnames = source.splitlines(), _qualnames(source)
    equivalents = _load_equivalents(equivalent_list, module)
    with use_db(session, WorkDB.Mode.open) as db:
        survivors = [
            item.job_id
            for item, result in db.completed_work_items
            if result.test_outcome == TestOutcome.SURVIVED
            and _key(module, item.mutations[0], lines, qualnames) not in equivalents
        ]
        # cosmic-ray has no public way to forget a result: delete the rows ourselves.
        with db._session_maker.begin() as session_:
            for job_id in survivors:
                session_.query(WorkResultStorage).filter_by(job_id=job_id).delete()
    print(f"{len(survivors)} survivors (not listed as equivalent) will run again")
    return 0


def _key(
    module: str, mutation: Any, lines: list[str], qualnames: dict[int, str]
) -> tuple[str, str, str, str]:
    line = mutation.start_pos[0]
    operator = mutation.operator_name.removeprefix("core/")
    return (module, qualnames.get(line, ""), operator, lines[line - 1].strip())


def _load_equivalents(path: str, module: str) -> list[tuple[str, str, str, str]]:
    entries = []
    if not Path(path).exists():
        return entries
    for raw in Path(path).read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        # The source line may hold " | " itself: it is everything between the operator and
        # the reason, which comes last.
        fields = [f.strip() for f in raw.split(" | ")]
        if len(fields) >= 5 and fields[0] == module:
            entries.append((fields[0], fields[1], fields[2], " | ".join(fields[3:-1])))
    return entries


def _qualnames(source: str) -> dict[int, str]:
    """Map each line to the qualified name of the innermost class or function holding it."""
    names: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                for line in range(first, (child.end_lineno or child.lineno) + 1):
                    names[line] = name
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return names


def report(session: str, module_file: str, module: str, equivalent_list: str) -> int:
    source = Path(module_file).read_text()
    lines = source.splitlines()
    qualnames = _qualnames(source)
    equivalents = _load_equivalents(equivalent_list, module)
    total = killed = skipped = redundant = equivalent = incompetent = 0
    survivors = []
    used: set[tuple[str, str, str, str]] = set()
    with use_db(session, WorkDB.Mode.open) as db:
        pending = db.num_work_items - db.num_results
        for item, result in db.completed_work_items:
            total += 1
            mutation = item.mutations[0]
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                if result.output and result.output.startswith("a farther"):
                    redundant += 1
                else:
                    skipped += 1
                continue
            if result.test_outcome == TestOutcome.KILLED:
                killed += 1
                continue
            if result.test_outcome == TestOutcome.INCOMPETENT:
                incompetent += 1
                continue
            key = _key(module, mutation, lines, qualnames)
            if key in equivalents:
                equivalent += 1
                used.add(key)
                continue
            survivors.append((mutation.start_pos[0], " | ".join(key)))
    judged = total - skipped - redundant - equivalent - incompetent
    score = 100.0 * killed / judged if judged else 100.0
    print(
        f"{module}: {killed}/{judged} killed = {score:.1f}% "
        f"(set aside: {skipped} in annotations, {redundant} farther operator replacements, "
        f"{equivalent} listed as equivalent, "
        f"{incompetent} incompetent; {pending} not run)"
    )
    for _, line in sorted(survivors):
        print(f"  survived: {line}")
    if not pending:
        for entry in equivalents:
            if entry not in used:
                print(f"  listed as equivalent but no such survivor: {' | '.join(entry)}")
    return 0


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "skip-annotations":
        return skip_annotations(*args)
    if command == "skip-redundant":
        return skip_redundant(*args)
    if command == "retry-survivors":
        return retry_survivors(*args)
    if command == "report":
        return report(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
