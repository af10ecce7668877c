import subprocess
import sys
import types

import pytest

from graphrec_dist import cli
from graphrec_dist.errors import ConfigError


def test_user_error_gives_exit_code_2(monkeypatch, capsys):
    fake = types.ModuleType("fake_cmd")

    def main(argv):
        raise ConfigError("unknown config key 'train.lrr'")

    fake.main = main
    monkeypatch.setitem(sys.modules, "fake_cmd", fake)
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_cmd", "a fake command"))
    assert cli.main(["fake"]) == 2
    assert "unknown config key 'train.lrr'" in capsys.readouterr().err


def test_missing_command_module_says_not_implemented(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "later", ("graphrec_dist.no_such_module", "not written yet"))
    assert cli.main(["later"]) == 1
    assert "not implemented yet" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["frobnicate"])
    assert exit_info.value.code == 2


def test_python_dash_m_is_the_same_entry_point():
    proc = subprocess.run([sys.executable, "-m", "graphrec_dist", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "recommend" in proc.stdout


def test_importing_the_package_has_no_side_effects():
    code = "import logging, graphrec_dist.cli, graphrec_dist.config; print(logging.getLogger('graphrec_dist').handlers)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]"


def test_train_launcher_flag_may_sit_among_the_overrides() -> None:
    from graphrec_dist.train import parse_args

    args = parse_args(["configs/demo.yaml", "train.epochs=1", "--launcher", "ray", "dist.num_workers=2"])
    assert args.launcher == "ray" and args.overrides == ["train.epochs=1", "dist.num_workers=2"]
