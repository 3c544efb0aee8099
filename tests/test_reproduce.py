"""The "Reproduce this page" box: its command gives the notebook back exactly its parameters, and its settings are
the profiles' own.

References are independent of ``vitscope.book.reproduce``: papermill's own command line (run in-process with
``--prepare-only``, which injects the parameters without starting a kernel) and the profiles' YAML read directly.
"""
from __future__ import annotations

import ast
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from vitscope.book import build
from vitscope.book.reproduce import NOTEBOOK_SECTIONS, papermill_command, reproduce_markdown

REPO = Path(__file__).resolve().parents[1]


def _toy_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 0")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _injected(nb_path: Path) -> dict:
    """The values papermill injected, read back with ``ast.literal_eval`` (papermill writes Python literals)."""
    nb = json.loads(nb_path.read_text())
    cell = next(c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        value = node.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "float":   # float('nan'), float('inf')
            out[node.targets[0].id] = float(ast.literal_eval(value.args[0]))
        else:
            out[node.targets[0].id] = ast.literal_eval(value)
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _shell_words(command: str) -> list[str]:
    """The words a POSIX shell passes for ``command``: backslash-newline continuations removed, then shlex."""
    return shlex.split(command.replace("\\\n", ""))


def _box_commands(markdown: str) -> list[list[str]]:
    """The commands in the box's bash blocks, as shell words."""
    return [_shell_words(block) for block in re.findall(r"```bash\n(.*?)\n```", markdown, re.DOTALL)]


ROUND_TRIP_CASES = [
    {"model": "zoo-dino", "profile": "demo"},
    {"models": ["zoo-mocov3", "zoo-dino", "zoo-mae"], "profile": "demo", "device": "cpu"},
    {"weights": None, "flag": True, "other": False, "n": 480, "lr": 1.5e-4, "neg": -3, "ratio": 0.1},
    {"as_text": "8", "sci": "1e3", "nan_text": "nan", "true_text": "True", "none_text": "None"},
    {"spaces": "a b 'c' \"d\" $HOME", "empty": "", "colon": "key: value", "dash": "-p"},
    {"nested": {"sites": ["block", "norm1"], "k": [10, 20]}, "empty_list": [], "mixed": [1, "2", None, 0.5]},
    {"inf": float("inf"), "nan": float("nan"), "minus_inf": float("-inf")},
]


@pytest.mark.parametrize("params", ROUND_TRIP_CASES, ids=range(len(ROUND_TRIP_CASES)))
def test_command_round_trips_through_papermills_own_cli(params, tmp_path, monkeypatch):
    """shlex.split of the command, handed to papermill's click CLI, injects exactly ``params`` (values and types)."""
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli

    (tmp_path / "notebooks").mkdir()
    _toy_notebook(tmp_path / "notebooks" / "toy.ipynb")
    words = _shell_words(papermill_command("toy", params, multiline=True))
    assert words == shlex.split(papermill_command("toy", params)), "one line and several lines: the same command"
    assert words[:3] == ["papermill", "notebooks/toy.ipynb", "out.ipynb"]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(papermill_cli, [*words[1:], "--prepare-only"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    injected = _injected(tmp_path / "out.ipynb")
    assert list(injected) == list(params)
    for name, value in params.items():
        assert _same(injected[name], value), (name, value, injected[name])


def test_lists_use_yaml_and_plain_values_use_p():
    cmd = papermill_command("om_2_1_cka", {"models": ["a", "b"], "profile": "demo"})
    assert cmd == "papermill notebooks/om_2_1_cka.ipynb out.ipynb -y '{models: [a, b]}' -p profile demo"


def test_bad_parameter_name_is_named():
    with pytest.raises(ValueError, match="not a Python identifier"):
        papermill_command("toy", {"not valid": 1})


def test_every_book_notebook_has_its_profile_sections():
    """Each notebook in notebooks/ and in the book's page list is in the table, and its sections exist in every
    profile (a missing section would make the box silently compare nothing)."""
    notebooks = {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
    pages = {p.notebook for p in build._flatten(build.PAGES)}
    assert notebooks | pages <= set(NOTEBOOK_SECTIONS), sorted((notebooks | pages) - set(NOTEBOOK_SECTIONS))
    for profile in (REPO / "profiles").glob("*.yml"):
        raw = yaml.safe_load(profile.read_text())
        for notebook, sections in NOTEBOOK_SECTIONS.items():
            assert all(s in raw for s in sections), (profile.name, notebook, sections)


def test_unknown_notebook_names_the_table():
    with pytest.raises(KeyError, match="NOTEBOOK_SECTIONS"):
        reproduce_markdown("no_such_notebook", {"profile": "demo"}, "demo")


def _table(markdown: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 3 and not set(cells[0]) <= set("-"):
            rows[cells[0].replace("\u200b", "")] = (cells[1], cells[2])   # the box lets dotted keys wrap
    return rows


def test_box_shows_the_profiles_own_settings():
    """Every CKA setting of both profiles appears with its YAML value; differences are bold, equal values not."""
    demo, paper = (yaml.safe_load((REPO / "profiles" / f"{n}.yml").read_text()) for n in ("demo", "paper"))
    box = reproduce_markdown("om_2_1_cka", {"profile": "demo"}, "demo")
    assert box == reproduce_markdown("om_2_1_cka", {"profile": "demo"}, "demo"), "must be a pure function"
    assert _box_commands(box) == [["papermill", "notebooks/om_2_1_cka.ipynb", "out.ipynb", "-p", "profile", "demo"],
                                  ["papermill", "notebooks/om_2_1_cka.ipynb", "out.ipynb", "-p", "profile", "paper"]]
    rows = _table(box)
    for key in set(demo["cka"]) | set(paper["cka"]):
        if key == "models":
            continue
        mine, theirs = demo["cka"].get(key), paper["cka"].get(key)
        as_text = [", ".join(map(str, v)) if isinstance(v, list) else str(v) for v in (mine, theirs)]
        assert rows[f"cka.{key}"] == tuple(as_text), key
        bold = f"| **{as_text[0]}** | **{as_text[1]}** |" in box
        assert bold == (mine != theirs), key
    assert rows["models"] == (", ".join(f"`{m}`" for m in demo["cka"]["models"]),
                              ", ".join(f"`{m}`" for m in paper["cka"]["models"]))
    n_classes = len(yaml.safe_load((REPO / "data_manifests" / "imagenet50.yml").read_text())["classes"])
    per_class = demo["datasets"]["imagenet50"]["per_class"], paper["datasets"]["imagenet50"]["per_class"]
    data = rows["data: imagenet50"]
    assert f"{n_classes} classes x {per_class[0]} = {n_classes * per_class[0]} images" in data[0]
    assert f"{n_classes} classes x {per_class[1]} = {n_classes * per_class[1]} images" in data[1]
    assert data[0].startswith("synthetic twin") and data[1].startswith("real images")


def test_box_architecture_is_the_networks_own():
    """The zoo runs at its real input and patch size, not its timm name's (vit_tiny_patch16_224); the parameter
    counts are those of the instantiated networks."""
    from vitscope.models import create_model, get_cfg

    box = reproduce_markdown("tm_4_3_attention_distance", {"model": "zoo-dino", "profile": "demo"}, "demo")
    assert _box_commands(box)[1][3:] == ["-p", "model", "dino", "-p", "profile", "paper"], \
        "the paper command swaps in the same family's model"
    mine, theirs = _table(box)["architecture of `zoo-dino`"]
    zoo = create_model("zoo-dino")
    assert f"{get_cfg('zoo-dino').preprocess.crop} px input, {zoo.patch_embed.patch_size[0]} px patches" in mine
    assert f"{sum(p.numel() for p in zoo.parameters()) / 1e6:.1f} M parameters" in mine
    assert "64 px input, 8 px patches, 6 blocks, width 192" in mine           # hand-checked against _DEMO_VIT
    assert "224 px input, 16 px patches, 12 blocks, width 768, 12 heads, 85.8 M parameters" in theirs   # ViT-B/16


def test_random_baseline_has_no_paper_command():
    box = reproduce_markdown("tm_4_3_attention_distance", {"model": "random-a", "profile": "demo"}, "demo")
    assert len(_box_commands(box)) == 1
    assert _table(box)["models"] == ("`random-a`", "no counterpart")


# ------------------------------------------------------------------------------------ the command re-creates a page

def _numbers(nb_path: Path) -> list[str]:
    """Every decimal number in the page's results (tables, notices, values: execute and display outputs). Stream
    output is left out: it holds progress bars and timings, which differ from run to run."""
    nb = json.loads(nb_path.read_text())
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out["output_type"] in ("execute_result", "display_data"):
                texts += ["".join(out["data"].get(key, "")) for key in ("text/plain", "text/markdown")]
                # tables are pandas Stylers: their numbers are in the HTML (minus its <style> and tags, whose ids
                # hold a random uuid)
                html = re.sub(r"<style.*?</style>", "", "".join(out["data"].get("text/html", "")), flags=re.DOTALL)
                texts.append(re.sub(r"<[^>]+>", " ", html))
    return re.findall(r"-?\d+\.\d+(?:e[-+]?\d+)?", "\n".join(texts))


@pytest.mark.slow
def test_reproduce_command_recreates_the_pages_numbers(tmp_path):
    """Run the box's command (split by shlex, papermill's CLI, from a project root) and, separately, the same
    notebook through ``pm.execute_notebook`` with the original parameters, each with its own cache: same numbers."""
    import papermill as pm

    params = {"model": "random-b", "profile": "demo"}
    root = tmp_path / "project"
    for name in ("notebooks", "profiles", "data_manifests"):
        shutil.copytree(REPO / name, root / name)
    env = {**os.environ, "VITSCOPE_HOME": str(root), "VITSCOPE_CACHE": str(tmp_path / "cache-cli")}
    (words,) = _box_commands(reproduce_markdown("tm_4_3_attention_distance", params, "demo"))   # no paper twin
    exe = Path(sys.executable).with_name("papermill")
    subprocess.run([str(exe), *words[1:], "--no-progress-bar"], cwd=root, env=env, check=True,
                   capture_output=True, timeout=600)

    old = {k: os.environ.get(k) for k in ("VITSCOPE_HOME", "VITSCOPE_CACHE")}
    os.environ["VITSCOPE_HOME"], os.environ["VITSCOPE_CACHE"] = str(root), str(tmp_path / "cache-api")
    try:
        (tmp_path / "api").mkdir()
        pm.execute_notebook(str(root / "notebooks" / "tm_4_3_attention_distance.ipynb"), str(tmp_path / "api.ipynb"),
                            parameters=params, kernel_name="python3", cwd=str(tmp_path / "api"), progress_bar=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    from_cli, from_api = _numbers(root / "out.ipynb"), _numbers(tmp_path / "api.ipynb")
    assert len(from_api) >= 20, "the page shows too few numbers to compare"
    assert from_cli == from_api
    assert _injected(root / "out.ipynb") == params
