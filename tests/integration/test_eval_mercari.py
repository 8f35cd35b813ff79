"""`ipl eval`'s Mercari figures: their prepare (real Ray Data) runs in a background thread beside
the rest of the evaluation; the waiter prints its report once, gives the same figures as the
prepare's summary, and raises the prepare's own error when it failed."""
import threading
from pathlib import Path

import pytest
import yaml

from ipl.config import load_config
from ipl.eval.config import EvalConfig

pytestmark = pytest.mark.integration
COLUMNS = ["train_id", "name", "item_condition_id", "category_name", "brand_name", "price", "shipping",
           "item_description"]
BRANDS = ["Nike", "Apple", "Coach", "Sony", "Lego"]
THINGS = ["running shoes", "phone case", "leather handbag", "wireless headphones", "building set"]


def write_listings(path, rows=40, columns=COLUMNS):
    lines = ["\t".join(columns)]
    for i in range(rows):
        b = i % len(BRANDS)
        row = {"train_id": str(i), "name": f"{BRANDS[b]} {THINGS[b]} {i}", "item_condition_id": str(1 + i % 5),
               "category_name": f"Cat{b}/Sub/Leaf", "brand_name": BRANDS[b] if i % 3 else "", "price": str(10 + i),
               "shipping": "1", "item_description": f"Gently used {BRANDS[b]} {THINGS[b]}, number {i}, works and looks "
                                                    f"great, no marks, from a smoke free home, ships fast."}
        lines.append("\t".join(row[c] for c in columns))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def eval_config(tmp_path, listings):
    spec = yaml.safe_load(Path("jobs/configs/prepare_mercari.yaml").read_text())
    spec["run"] = {"name": "mercari", "root": str(tmp_path / "runs")}
    spec["input"]["path"] = str(listings)
    spec["library"]["sources"][0]["min_count"] = 1
    (tmp_path / "prepare.yaml").write_text(yaml.safe_dump(spec))
    return load_config(EvalConfig, "jobs/configs/eval_local.yaml", [f"run.root={tmp_path / 'runs'}",
                                                                   f"realdata.mercari_config={tmp_path / 'prepare.yaml'}"])


def test_the_cleaning_runs_in_the_background_and_the_waiter_reports_it_once(ray_local, tmp_path, capsys):
    from ipl.eval.realdata import start_mercari

    write_listings(tmp_path / "listings.tsv")
    cfg = eval_config(tmp_path, tmp_path / "listings.tsv")
    wait = start_mercari(cfg)
    assert any(t.name == "mercari-prepare" for t in threading.enumerate()) or \
        (tmp_path / "runs" / "mercari" / "clean" / "summary.json").is_file()
    out = wait()
    assert out["rows_in"] == 40 and 0 < out["kept"] <= 40 and "Brand" in out["extraction"], out
    printed = capsys.readouterr().out
    assert printed.count("clean: 40 rows in") == 1, printed  # the prepare's report, in one piece
    again = start_mercari(cfg)()  # the summary is there: nothing runs, nothing is printed
    assert again == out and "clean:" not in capsys.readouterr().out


def test_a_failed_cleaning_is_raised_by_the_waiter(ray_local, tmp_path):
    from ipl.eval.realdata import start_mercari

    write_listings(tmp_path / "listings.tsv", columns=[c for c in COLUMNS if c != "name"])  # no title column
    wait = start_mercari(eval_config(tmp_path, tmp_path / "listings.tsv"))
    with pytest.raises(Exception, match="name"):
        wait()
    assert not (tmp_path / "runs" / "mercari" / "clean" / "summary.json").exists()
