"""docs/preprocessing.md: the text-side example runs and prints exactly the output the page shows."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "preprocessing.md"


def test_preprocessing_example_prints_what_the_page_says(tmp_path, monkeypatch, capsys):
    text = DOC.read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    shown = re.search(r"Output:\n\n```text\n(.*?)```", text, flags=re.DOTALL)
    assert len(code) == 1 and shown, "the page should hold one Python example followed by its output"
    monkeypatch.chdir(tmp_path)
    exec(compile(code[0], str(DOC), "exec"), {"__name__": "preprocessing_doc"})
    assert capsys.readouterr().out == shown.group(1)


def test_the_page_answers_the_question_on_both_sides():
    text = DOC.read_text(encoding="utf-8")
    for term in ("<unk>", "<eos>", "vocabulary", "streams", "blocks", "normalisation", "resize", "augmentation",
                 "Normalize"):
        assert term in text, term
