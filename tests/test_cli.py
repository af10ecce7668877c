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


class Stop(Exception):
    """Raised by a stand-in for the first heavy call of a subcommand, carrying what it was given."""


def _stop(*args, **kwargs):
    raise Stop(args, kwargs)


def _overrides_reaching(monkeypatch, module, name: str, argv: list[str]) -> list[str]:
    """The overrides that ``module.main(argv)`` hands to ``module.name`` (replaced by a stand-in)."""
    monkeypatch.setattr(module, name, _stop)
    with pytest.raises(Stop) as stopped:
        module.main(argv)
    args, kwargs = stopped.value.args
    return list(kwargs.get("overrides", args[1]))


# An override before the options, one among them and one after the last, as a user might type them.
SPLIT = ["a.b=1", "--k", "5", "run.seed=2", "--index", "exact", "data.split.seed=3"]


def test_data_build_reads_overrides_after_the_options(monkeypatch) -> None:
    from graphrec_dist.data import cli as data_cli

    got = _overrides_reaching(monkeypatch, data_cli, "load_config", [
        "build", "configs/demo.yaml", "--source", "csv", "--csv-spec", "S", "data.min_rating=3",
        "--raw-dir", "D", "--out", "O", "data.split.seed=3"])
    assert got[:2] == ["data.min_rating=3", "data.split.seed=3"]
    assert "data.source=csv" in got and "data.bundle_dir=O" in got


def test_train_reads_overrides_after_the_options(monkeypatch) -> None:
    from graphrec_dist import train

    got = _overrides_reaching(monkeypatch, train, "load_config", [
        "--launcher", "local", "configs/demo.yaml", "train.epochs=1", "--launcher", "local", "run.seed=2"])
    assert got == ["train.epochs=1", "run.seed=2", "dist.launcher=local"]


def test_evaluate_reads_overrides_anywhere(monkeypatch) -> None:
    from graphrec_dist import evaluate

    got = _overrides_reaching(monkeypatch, evaluate, "load_run", [
        "eval.k=[5]", "--run", "R", "eval.protocol=sampled", "--split", "val", "run.seed=2"])
    assert got == ["eval.k=[5]", "eval.protocol=sampled", "run.seed=2"]


def test_export_reads_overrides_anywhere(monkeypatch) -> None:
    from graphrec_dist import export

    got = _overrides_reaching(monkeypatch, export, "load_run", ["--run", "R", "--out", "O", *SPLIT])
    assert got == ["a.b=1", "run.seed=2", "data.split.seed=3"]


def test_serve_reads_overrides_anywhere(monkeypatch) -> None:
    from graphrec_dist import serve

    monkeypatch.setattr(serve.Service, "load", classmethod(lambda cls, run, overrides, *a: _stop(run, overrides)))
    with pytest.raises(Stop) as stopped:
        serve.main(["a.b=1", "--run", "R", "run.seed=2", "--port", "0", "data.split.seed=3"])
    assert stopped.value.args[0][1] == ["a.b=1", "run.seed=2", "data.split.seed=3"]


def test_recommend_reads_overrides_anywhere(monkeypatch) -> None:
    from graphrec_dist import recommend

    got = _overrides_reaching(monkeypatch, recommend, "load_run", [
        "a.b=1", "--run", "R", "run.seed=2", "--index", "0", "data.split.seed=3"])
    assert got == ["a.b=1", "run.seed=2", "data.split.seed=3"]


def test_bench_reads_bare_overrides_anywhere_as_set(monkeypatch) -> None:
    from graphrec_dist.benchmarks import cli as bench_cli

    monkeypatch.setattr(bench_cli, "make_plan", lambda args: _stop(None, list(args.overrides)))
    with pytest.raises(Stop) as stopped:
        bench_cli.main(["train.num_workers=1", "--sections", "sampling", "--set", "train.lr=0.1",
                        "--report-only", "run.seed=2"])
    assert stopped.value.args[0][1] == ["train.lr=0.1", "train.num_workers=1", "run.seed=2"]


@pytest.mark.parametrize("argv", [
    ["data", "build", "configs/demo.yaml", "--out", "O", "stray"],
    ["data", "download", "--out", "O", "data.split.seed=3"],  # download takes no overrides
    ["evaluate", "--run", "R", "--split", "val", "--bogus"],
])
def test_what_is_not_an_override_is_still_a_usage_error(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
