import json

from PIL import Image

from metagen.cli import main


def test_quick_demo_writes_samples_and_a_report_with_classification(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["eval"]["methods"]) == {"spatial", "unconditional", "copy"}
    table = report["eval"]["classification"]["table"]
    assert set(table) == {"pixel nearest neighbour", "spatial", "unconditional", "copy"}
    assert all(set(row) == {"5-way 1-shot", "20-way 1-shot"} for row in table.values())
    assert Image.open(out / "samples.png").size[0] > 0
    # a rerun resumes the finished runs instead of training again
    stamp = (out / "spatial" / "checkpoint.safetensors").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    assert (out / "spatial" / "checkpoint.safetensors").stat().st_mtime_ns == stamp
