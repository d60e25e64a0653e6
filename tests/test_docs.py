"""The Python examples in the docs run, top to bottom, as a user would paste them."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(path: Path) -> str:
    return "\n\n".join(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))


@pytest.mark.parametrize("page", ["api.md"])
def test_doc_page_runs(page, tmp_path, monkeypatch, capsys):
    code = python_blocks(DOCS / page)
    assert code.count("llv.") >= 5  # the page is about the API
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    exec(compile(code, str(DOCS / page), "exec"), namespace)  # noqa: S102
    # what the page promises
    assert (tmp_path / "surface.h5").is_file() and (tmp_path / "directions.h5").is_file()
    assert (tmp_path / "contour.png").stat().st_size > 10_000
    line = namespace["line"]
    assert line.x[10] == pytest.approx(0.0) and line.x[30] == pytest.approx(1.0)
    assert namespace["top"].num_hvp > 0
    plane = namespace["plane"]
    assert plane["train_loss"][2, 2] < plane["train_loss"].max()
