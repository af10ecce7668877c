import pytest

from graphrec_dist.io_utils import atomic_dir, atomic_path, write_json_atomic


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_dir_leaves_no_half_directory(tmp_path):
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.npy").write_text("x")
            raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a.npy").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b.npy").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.npy"]


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"b": 1, "a": 2})
    assert (tmp_path / "m.json").read_text().startswith('{\n  "a": 2')
