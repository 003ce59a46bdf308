"""Run a Jupyter notebook once per input record, in the sandbox, with plain Python and no kernel server.

This file is copied into every published notebook's package (next to ``notebook.ipynb``) and runs there
as its entrypoint: ``python3 mlrepo_notebook.py notebook.ipynb OUTPUT_VARIABLE``. So it may use the
standard library only (the sandbox's Python has neither nbformat nor IPython) and must not import mlrepo.

It speaks the invocation contract (architecture.md §4): ``{"id", "input"}`` lines on stdin, one reply per
record on stdout. For each record the code cells run in order in one fresh namespace (records never see
each other's state); the record's input, a JSON object, overrides the assignments of the cell tagged
``parameters`` (papermill's convention: its values are injected in a cell right after it); the reply's
``output`` is the value the notebook left in OUTPUT_VARIABLE. A cell that raises stops that record: its
reply is an ``error`` naming the cell's index (0-based, in the notebook's list of cells). Either way the
reply carries ``notebook``: the executed notebook (nbformat 4), its code cells holding their outputs.

Why the file descriptors are shuffled at start: stdout is the contract's channel, and a cell that prints
(or a library writing to fd 1 from C) would corrupt the replies. The replies get a private duplicate of
fd 1; fd 1 itself then points at stderr, and each cell's prints are captured as its stream outputs.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import sys
import traceback

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
MAX_TEXT = 10_000  # characters kept of one output's text
MAX_NOTEBOOK_BYTES = 512 << 10  # an executed notebook larger than this keeps only its error outputs


def _text(value):
    return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "\n... (truncated)"


def _source(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _tags(cell):
    return (cell.get("metadata") or {}).get("tags") or []


def _assigned_names(source):
    """The names the parameters cell assigns at its top level: the parameters a record may override."""
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


class _Cell:
    """The outputs of one executing code cell, in nbformat's shape."""

    def __init__(self):
        self.outputs = []

    def stream(self, name, text):
        if text:
            self.outputs.append({"output_type": "stream", "name": name, "text": _text(text)})

    def display(self, *values):
        for value in values:
            self.outputs.append(
                {"output_type": "display_data", "data": {"text/plain": _text(repr(value))}, "metadata": {}}
            )


def _run_cell(index, source, namespace, cell, count):
    """Execute one cell like a kernel would: its last expression, if any, becomes its result."""
    tree = ast.parse(source, filename=f"<cell {index}>")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        exec(compile(tree, f"<cell {index}>", "exec"), namespace)
        result = eval(compile(last, f"<cell {index}>", "eval"), namespace) if last is not None else None
    finally:
        sys.stdout, sys.stderr = saved
        cell.stream("stdout", out.getvalue())
        cell.stream("stderr", err.getvalue())
    if result is not None:
        cell.outputs.append(
            {
                "output_type": "execute_result",
                "execution_count": count,
                "data": {"text/plain": _text(repr(result))},
                "metadata": {},
            }
        )


def _error_output(exc):
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
        tb = tb.tb_next  # the runner's own frames are not the producer's business
    lines = traceback.format_exception(type(exc), exc, tb)
    return {
        "output_type": "error",
        "ename": type(exc).__name__,
        "evalue": _text(str(exc)),
        "traceback": [_text(line.rstrip("\n")) for line in lines][-50:],
    }


def _overrides(value, parameters):
    """The record's parameter values, or the reason they cannot be used."""
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        kind = type(value).__name__
        return None, f"a notebook's input must be a JSON object of parameter values, not {kind}"
    if parameters is None and value:
        return None, "the notebook has no cell tagged 'parameters', so it takes no input values"
    unknown = sorted(set(value) - (parameters or set()))
    if unknown:
        known = ", ".join(sorted(parameters or ())) or "none"
        return None, f"unknown parameter(s) {', '.join(unknown)}; the notebook's parameters are: {known}"
    return value, None


def _jsonable(value):
    """numpy arrays and scalars (and anything else with ``tolist``) become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def run_record(notebook, value, output_variable, parameters):
    """Execute the notebook for one record; returns the reply (without its id)."""
    overrides, problem = _overrides(value, parameters)
    if problem is not None:
        return {"error": problem}  # nothing ran, so there is no executed notebook to show
    executed = dict(notebook, cells=[])
    # ``display`` is a builtin, as in Jupyter: a notebook's own ``display`` shadows it.
    names = dict(vars(builtins))
    namespace = {"__name__": "__main__", "__builtins__": names}
    error, count = None, 0
    for index, cell in enumerate(notebook["cells"]):
        copy = dict(cell)
        executed["cells"].append(copy)
        if cell.get("cell_type") != "code":
            continue
        copy["outputs"], copy["execution_count"] = [], None
        if error is not None:
            continue
        count += 1
        outputs = _Cell()
        names["display"] = outputs.display
        try:
            _run_cell(index, _source(cell), namespace, outputs, count)
        except (Exception, SystemExit) as exc:
            outputs.outputs.append(_error_output(exc))
            error = f"cell {index}: {type(exc).__name__}: {exc}"
        copy["outputs"], copy["execution_count"] = outputs.outputs, count
        if PARAMETERS_TAG in _tags(cell) and overrides and error is None:
            namespace.update(overrides)
            count += 1
            lines = [f"{name} = {val!r}\n" for name, val in overrides.items()]
            executed["cells"].append(
                {
                    "cell_type": "code",
                    "metadata": {"tags": [INJECTED_TAG]},
                    "source": lines,
                    "outputs": [],
                    "execution_count": count,
                }
            )
    if error is not None:
        return {"error": error[:2000], "notebook": _bounded(executed)}
    if output_variable not in namespace:
        return {"error": f"the notebook did not set {output_variable!r}", "notebook": _bounded(executed)}
    try:
        output = json.loads(json.dumps(namespace[output_variable], default=_jsonable, allow_nan=False))
    except (TypeError, ValueError) as exc:
        reason = f"{output_variable!r} is not JSON: {exc}"
        return {"error": reason, "notebook": _bounded(executed)}
    return {"output": output, "notebook": _bounded(executed)}


def _bounded(executed):
    """Keep one reply small enough for the contract's line limit: past it, only error outputs stay, and
    a notebook still too large (its own markdown, say) is left out of the reply."""
    if len(json.dumps(executed, default=repr)) <= MAX_NOTEBOOK_BYTES:
        return executed
    for cell in executed["cells"]:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell["outputs"] if o["output_type"] == "error"]
    return executed if len(json.dumps(executed, default=repr)) <= MAX_NOTEBOOK_BYTES else None


def main(argv):
    path, output_variable = argv[1], argv[2]
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with open(path, encoding="utf-8") as f:
        notebook = json.load(f)
    parameters = None
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in _tags(cell):
            parameters = _assigned_names(_source(cell))
            break
    for line in sys.stdin:
        if not line.strip():
            continue
        record = json.loads(line)
        reply = run_record(notebook, record.get("input"), output_variable, parameters)
        replies.write(json.dumps({"id": record["id"], **reply}, default=repr) + "\n")
    replies.flush()


if __name__ == "__main__":
    main(sys.argv)
