import pytest

from graphrec_dist.cli import main as cli_main
from graphrec_dist.config import Config, from_dict, load_config
from graphrec_dist.errors import ConfigError


def test_defaults_then_yaml_then_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("train:\n  lr: 0.01\n  epochs: 3\nmodel:\n  name: mf\n")
    cfg = load_config(preset, ["train.lr=1e-3", "model.num_layers=3", "train.num_neighbors=[4,2]"])
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.epochs == 3
    assert cfg.model.name == "mf"
    assert cfg.model.num_layers == 3
    assert cfg.train.num_neighbors == [4, 2]
    assert cfg.data.split.seed == 42  # untouched default


def test_nested_override_and_null():
    cfg = load_config(None, ["data.split.mode=last", "train.edges_per_epoch=null"])
    assert cfg.data.split.mode == "last"
    assert cfg.train.edges_per_epoch is None


def test_int_is_accepted_for_float():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'"),
        ("nosuch.key=1", "unknown config key 'nosuch'"),
        ("train.epochs=ten", "'train.epochs': expected an integer"),
        ("train.epochs=2.5", "'train.epochs': expected an integer"),
        ("train.amp=yes please", "'train.amp': expected true or false"),
        ("model.name=gcn", "'model.name': expected one of"),
        ("train.epochs=0", "'train.epochs': expected an integer >= 1"),
        ("model.dropout=1.5", "'model.dropout'"),
        ("train.num_neighbors=5", "'train.num_neighbors': expected a list"),
        ("train", "expected section.key=value"),
        ("train.lr.x=1", "'train.lr': expected a number"),
        ("train.lr=fast", "'train.lr': expected a number"),
        ("train.mask_seen=true", "'train.mask_seen': expected false unless train.loss=softmax"),  # default loss: bpr
        ("train.time_budget_s=0", "'train.time_budget_s'"),
    ],
)
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_section_must_be_mapping():
    with pytest.raises(ConfigError, match="'train': expected a mapping"):
        from_dict({"train": 3})


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["train.lr=0.5", "data.split.mode=last"])
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


@pytest.mark.parametrize("preset", ["configs/default.yaml", "configs/demo.yaml", "configs/debug.yaml"])
def test_shipped_presets_load(preset):
    assert isinstance(load_config(preset), Config)


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("data", "train", "evaluate", "recommend", "bench"):
        assert name in out


def test_exclude_relations_accepts_side_relations_and_names_a_wrong_one() -> None:
    assert load_config(None, ["model.exclude_relations=[tag,similar]"]).model.exclude_relations == ["tag", "similar"]
    with pytest.raises(ConfigError, match="model.exclude_relations.*tag, author, language, year_bin, similar"):
        load_config(None, ["model.exclude_relations=[rates]"])


def test_graphsage_needs_one_fanout_per_layer() -> None:
    with pytest.raises(ConfigError, match=r"train.num_neighbors.*model.num_layers=3.*got 2"):
        load_config(None, ["train.mode=sampled", "model.num_layers=3", "train.num_neighbors=[10,5]"])
    assert load_config(None, ["train.mode=sampled", "model.num_layers=3",
                              "train.num_neighbors=[10,5,5]"]).model.num_layers == 3
    # full-graph training samples nothing, so its fanout is not checked
    assert load_config(None, ["model.num_layers=3", "train.num_neighbors=[10,5]"]).train.mode == "full_graph"
    assert load_config(None, ["model.name=mf", "model.num_layers=3"]).model.name == "mf"  # no sampler: no check


def test_a_saved_config_with_a_retired_key_still_loads() -> None:
    saved = load_config(None, []).to_dict()
    saved["eval"]["infer_batch"] = 4096  # written by runs made before the key was retired
    assert from_dict(saved) == load_config(None, [])


def test_old_flat_spellings_map_to_the_nested_path_and_debug_sections() -> None:
    cfg = load_config("configs/demo.yaml", ["model.path_top_k=10", "train.fail_after_step=3",
                                            "train.fail_mode=hang", "train.amp_on_cpu=true", "model.path=[co_items]"])
    assert (cfg.model.path.top_k, cfg.model.path.relations) == (10, ["co_items"])
    assert cfg.model.path.init == 0.0  # the preset's nested values stay when a list replaces the relations
    assert (cfg.debug.fail_after_step, cfg.debug.fail_mode, cfg.debug.amp_on_cpu) == (3, "hang", True)
    assert cfg == load_config("configs/demo.yaml", ["model.path.top_k=10", "debug.fail_after_step=3",
                                                    "debug.fail_mode=hang", "debug.amp_on_cpu=true",
                                                    "model.path.relations=[co_items]"])
    saved = load_config(None, []).to_dict()  # a YAML file or saved config in the old layout
    saved["model"].update(path=["similar"], path_norm=0.0, path_edge_lr=0.5)
    saved["train"]["fail_after_step"] = 4
    del saved["debug"]
    cfg = from_dict(saved)
    assert (cfg.model.path.relations, cfg.model.path.norm, cfg.model.path.edge_lr) == (["similar"], 0.0, 0.5)
    assert cfg.debug.fail_after_step == 4 and "path_norm" in saved["model"]  # the mapping given is not changed


def test_both_spellings_with_different_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"'model.path_top_k=10' and 'model.path.top_k=20'.*model.path.top_k"):
        load_config(None, ["model.path_top_k=10", "model.path.top_k=20"])
    with pytest.raises(ConfigError, match=r"'train.fail_after_step' is the old spelling of 'debug.fail_after_step'"):
        from_dict({"train": {"fail_after_step": 3}, "debug": {"fail_after_step": 5}})
    assert from_dict({"train": {"fail_after_step": 3}, "debug": {"fail_after_step": 3}}).debug.fail_after_step == 3
    assert load_config(None, ["model.path.top_k=20", "model.path_top_k=20"]).model.path.top_k == 20
    assert load_config(None, ["model.path.top_k=20", "model.path.top_k=30"]).model.path.top_k == 30  # last wins


def test_a_tune_grid_may_name_an_old_spelling() -> None:
    from graphrec_dist.config import parse_grid

    assert parse_grid(["model.path_top_k=10,50", "model.path=[similar],[]"]) == {
        "model.path.top_k": [10, 50], "model.path.relations": [["similar"], []]}
    with pytest.raises(ConfigError, match="debug.fail_after_step"):
        parse_grid(["train.fail_after_step=1,2"])
