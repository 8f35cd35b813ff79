"""The `ipl` command line: help, unknown stages, stages not built yet, --print-config."""
import subprocess
import sys

import pytest

from ipl.cli import main


def test_help_lists_every_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in ("synth", "prepare", "train", "index", "eval", "serve", "demo"):
        assert stage in out


def test_unknown_stage(capsys):
    assert main(["bake"]) == 2
    assert "unknown stage 'bake'" in capsys.readouterr().err


def test_print_config_validates_without_running(capsys):
    assert main(["synth", "--print-config", "rows=7"]) == 0
    assert "rows: 7" in capsys.readouterr().out


def test_bad_override_exit_code_and_message(capsys):
    assert main(["synth", "rows=-1"]) == 2
    assert "rows" in capsys.readouterr().err


def test_console_script_entrypoint():
    out = subprocess.run([sys.executable, "-m", "ipl.cli", "synth", "--print-config", "language=zh"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "language: zh" in out.stdout


def test_stages_not_built_say_which_issue(capsys, monkeypatch):
    from ipl import cli

    monkeypatch.setitem(cli.STAGES, "later", cli.Stage("later", "a stage planned for later", None, None, 99))
    assert main(["later"]) == 3
    err = capsys.readouterr().err
    assert "not built yet" in err and "#99" in err
    main(["--help"])
    assert "[not built yet: issue #99]" in capsys.readouterr().out


def test_eval_without_a_run_exits_2_naming_the_command(tmp_path, capsys):
    assert main(["eval", f"run.root={tmp_path}", "realdata.enabled=false"]) == 2
    assert "run `ipl prepare`" in capsys.readouterr().err


@pytest.mark.parametrize("job,config,expected", [
    ("build_index.py", "index_cluster.yaml", ["type: IVF-PQ", "shards: 16"]),
    ("evaluate.py", "eval_cluster.yaml", ["num_gpus: 1", "paraphrase-multilingual"]),
    ("prepare_data.py", "prepare_cluster.yaml", ["backend: vllm", "concurrency: 8"]),
])
def test_job_entrypoint_validates_production_config(job, config, expected):
    """`ray job submit ... python jobs/<job> --config jobs/configs/<config>` parses."""
    out = subprocess.run([sys.executable, f"jobs/{job}", "--config", f"jobs/configs/{config}", "--print-config"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert all(e in out.stdout for e in expected), out.stdout


def test_index_without_listings_exits_2_naming_the_command(tmp_path, capsys):
    assert main(["index", f"run.root={tmp_path}", "action=verify"]) == 2
    assert "run `ipl index`" in capsys.readouterr().err
