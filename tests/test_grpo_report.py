"""The GRPO figures the README and notebook 20 quote are the ones make grpo-demo wrote."""
import json

from tests.helpers import ROOT

REPORT = json.loads((ROOT / "data" / "base" / "grpo_compare.json").read_text(encoding="utf-8"))
ROWS = {r["run"]: r["grader"] for r in REPORT["rows"]}
README = (ROOT / "README.md").read_text(encoding="utf-8")
NOTEBOOK = "".join("".join(c["source"]) for c in json.loads(
    (ROOT / "notebooks" / "20_grpo.ipynb").read_text(encoding="utf-8"))["cells"])


def test_the_report_has_every_run_and_its_command():
    assert set(ROWS) == {"sft (start)", "grpo", "grpo_loose", "dpo", "dpo_onpolicy"}
    assert REPORT["command"].startswith("WORKBOOK_IMPL=solutions") and "bench/grpo_compare.py" in REPORT["command"]
    assert REPORT["steps"] == 100 and all(g["poem_requests"] == 80 for g in ROWS.values())


def test_readme_and_notebook_quote_the_report():
    start, grpo, loose = ROWS["sft (start)"], ROWS["grpo"], ROWS["grpo_loose"]
    for text in (README, NOTEBOOK):
        assert f"{start['form']:.1%}" in text and f"{grpo['form']:.1%}" in text
        assert f"{start['rhyme']:.3f}" in text and f"{grpo['rhyme']:.3f}" in text
        assert f"{start['repeated_rhyme_char']:.1%}" in text and f"{loose['repeated_rhyme_char']:.1%}" in text
    assert f"{grpo['pass']:.1%}" in README and f"{ROWS['dpo']['form']:.1%}" in README
    # the measured claims: GRPO raised form, rhyme and tones, and the DPOs lowered form
    assert grpo["form"] > start["form"] and grpo["rhyme"] > start["rhyme"] and grpo["tones"] > start["tones"]
    assert ROWS["dpo"]["form"] < start["form"] and ROWS["dpo_onpolicy"]["form"] < start["form"]


def test_the_hole_is_counted_on_the_training_samples():
    """The claim that GRPO did not measurably use the loose rule's hole in 100 steps: the share of
    training samples in repeated_end moved by less than two standard errors (400 samples a side)."""
    import importlib.util
    import math

    holes = {r["run"]: r["samples_repeated_end"] for r in REPORT["rows"] if r["run"] in ("grpo", "grpo_loose")}
    assert set(holes) == {"grpo", "grpo_loose"}
    spec = importlib.util.spec_from_file_location("grpo_compare", ROOT / "bench" / "grpo_compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    curves = {r["run"]: r["curve"] for r in REPORT["rows"] if r["run"] in holes}
    for run, h in holes.items():
        assert h == bench.repeated_end_shares(curves[run], REPORT["steps"]), run  # recomputed from the curve
        assert h["steps"] == 25
        for text in (README, NOTEBOOK):
            assert f"{h['first']:.1%}" in text and f"{h['last']:.1%}" in text, run
        n = 16 * h["steps"]
        p = (h["first"] + h["last"]) / 2
        assert abs(h["last"] - h["first"]) < 2 * math.sqrt(2 * p * (1 - p) / n), (run, h)
