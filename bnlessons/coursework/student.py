"""Student notebooks: a lesson with its solutions replaced by stubs.

Solution code becomes stubs with the same names and signatures (``# YOUR CODE
HERE`` and ``raise NotImplementedError("<label>: ...")``), a top-level answer
becomes ``name = ...``, written answers become ``YOUR ANSWER HERE``; the
hidden tests, every stored output and the model answers go; a check cell keeps
the check and drops its ``assert``, so "Run All" runs to the end and every
check prints its verdict (``[TODO]`` until the stub is replaced).
"""
from __future__ import annotations

import ast
import copy
import re

import nbformat
from nbformat import NotebookNode

from bnlessons.coursework.lesson import cell_roles, exercises

ANSWER_STUB = "YOUR ANSWER HERE"
CODE_STUB = "# YOUR CODE HERE"
#: Cell metadata written into the coursework notebooks: which exercise a cell belongs to.
KEY = "coursework"


def _lines(source: str, start: int, end: int) -> list[str]:
    """Lines ``start..end`` (1-based, inclusive) of ``source``."""
    return source.splitlines()[start - 1:end]


def _header_end(node: ast.AST) -> int:
    """The last line of a def/class header, including its docstring if it has one."""
    body = node.body  # type: ignore[attr-defined]
    first = body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return first.end_lineno  # type: ignore[return-value]
    return first.lineno - 1


def _indent_of(source: str, node: ast.AST) -> str:
    line = source.splitlines()[node.body[0].lineno - 1]  # type: ignore[attr-defined]
    return line[:len(line) - len(line.lstrip())]


def _stub_def(source: str, node: ast.AST, label: str, qualname: str) -> list[str]:
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])  # type: ignore[attr-defined]
    header = _lines(source, start, _header_end(node))
    indent = _indent_of(source, node)
    return header + [f"{indent}{CODE_STUB}",
                     f'{indent}raise NotImplementedError("{label}: write {qualname}")']


def stub_source(source: str, label: str) -> str:
    """The stub of one solution cell: same imports, names and signatures, no solution.

    Functions keep their signature and docstring, classes their header and
    every method's signature, imports stay. In a cell that defines neither, the
    answer is a value: ``x = <answer>`` becomes ``x = ...``. Every other
    top-level statement (code that tries the answer out) is dropped.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"the solution of {label} is not valid Python: {err}") from err
    # A cell that defines no function or class answers with values (``x = ...``); in a
    # cell that does, the other statements use the answer and go with the solution.
    value_answer = not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                           for n in tree.body)
    blocks: list[tuple[bool, list[str]]] = []  # (is an import, lines)
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            blocks.append((True, _lines(source, node.lineno, node.end_lineno)))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            blocks.append((False, _stub_def(source, node, label, node.name)))
        elif isinstance(node, ast.ClassDef):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines = _lines(source, start, _header_end(node))
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef,
                                                              ast.AsyncFunctionDef))]
            for k, method in enumerate(methods):
                if k:
                    lines.append("")
                lines.extend(_stub_def(source, method, label, f"{node.name}.{method.name}"))
            if not methods:
                lines.append(f"{_indent_of(source, node)}pass  {CODE_STUB}")
            blocks.append((False, lines))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and value_answer:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names:
                blocks.append((False, [" = ".join(names) + f" = ...  {CODE_STUB}"]))
    out: list[str] = []
    for k, (is_import, lines) in enumerate(blocks):
        if k:
            out.extend([] if is_import and blocks[k - 1][0] else ["", ""])
        out.extend(lines)
    return "\n".join(out)


def check_source(source: str) -> str:
    """A check cell for students: the check prints its verdict; no ``assert`` stops the run."""
    kept = [line for line in source.splitlines()
            if not re.match(r"^\s*assert\s+verdict\.passed\s*$", line)]
    return "\n".join(kept).rstrip()


def _clean(cell: NotebookNode) -> NotebookNode:
    cell = copy.deepcopy(cell)
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    for key in ("execution", "collapsed", "scrolled"):
        cell.metadata.pop(key, None)
    return cell


def _tagged(cell: NotebookNode, label: str, role: str) -> NotebookNode:
    """Mark ``cell`` as ``role`` of exercise ``label`` (the ``solution`` tag goes: no solution)."""
    cell.metadata[KEY] = {"label": label, "role": role}
    kept = [t for t in cell.metadata.get("tags", []) if t != "solution"]
    if kept:
        cell.metadata["tags"] = kept
    else:
        cell.metadata.pop("tags", None)
    return cell


def notebook_metadata(nb: NotebookNode, lesson: str) -> dict:
    """The notebook-level metadata the coursework notebooks keep: kernel, language, lesson."""
    meta = {k: copy.deepcopy(nb.metadata[k]) for k in ("kernelspec", "language_info")
            if k in nb.metadata}
    meta[KEY] = {"lesson": lesson}
    return meta


def student_notebook(nb: NotebookNode, lesson: str) -> NotebookNode:
    """The student version of lesson ``nb`` (``lesson`` is ``<chapter>/<name>``)."""
    found = exercises(nb, lesson)
    by_cell = cell_roles(found)
    cells = []
    for i, cell in enumerate(nb.cells):
        role, ex = by_cell.get(i, ("lesson", None))
        if role == "lesson":
            cells.append(_clean(cell))
        elif role == "solution":
            stub = _clean(cell)
            stub.source = stub_source(cell.source, ex.label)
            cells.append(_tagged(stub, ex.label, "answer"))
        elif role == "check":
            check = _clean(cell)
            check.source = check_source(cell.source)
            cells.append(_tagged(check, ex.label, "check"))
        elif role == "gate" and i == ex.gate_start and ex.written:
            answer = nbformat.v4.new_markdown_cell(f"**Your answer.** {ANSWER_STUB}")
            answer.id = f"answer-{ex.label}"[:64]
            cells.append(_tagged(answer, ex.label, "written"))
        # the rest of the gate and the hidden tests are left out
    out = nbformat.v4.new_notebook(cells=cells, metadata=notebook_metadata(nb, lesson))
    out.nbformat_minor = max(nb.get("nbformat_minor", 5), 5)
    return out
