"""Conventions every notebook template keeps: one parameters cell that papermill can read in full,
hidden on the page; a title line; no algorithm hidden in a parameters cell."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_read_in_full_by_papermill(path):
    import papermill as pm

    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, f"{path.name}: one cell tagged 'parameters'"
    assert "remove-cell" in cells[0]["metadata"]["tags"], f"{path.name}: the parameters cell must be hidden"
    tree = ast.parse("".join(cells[0]["source"]))
    assigned = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
    assert all(isinstance(node, ast.Assign) for node in tree.body), f"{path.name}: only assignments"
    # papermill parses the cell line by line: a comment it cannot read drops the parameter silently
    assert list(pm.inspect_notebook(str(path))) == assigned, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_is_the_title(path):
    first = json.loads(path.read_text())["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# "), path.name
