"""Ray launcher: a local 2-worker Ray run equals the torchrun 2-process run; a run survives a fault.

Ray is started here on loopback (no dashboard, no usage reporting) and shut down in ``finally``;
every wait is bounded. Both tests use ``configs/debug.yaml`` (2 epochs x 4 steps per rank).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bounded
import pytest

from graphrec_dist import checkpoint, run_dir
from graphrec_dist.config import load_config
from graphrec_dist.errors import ConfigError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "debug.yaml"
RUN_TIMEOUT_S = 300
# Loopback only: Ray otherwise advertises (and binds to) the host's network address; usage stats
# off; one intra-op thread per process in both launchers so the float arithmetic is the same.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
# torchrun and Ray shard the same seeded permutation by rank, seed the model and the samplers the
# same way and all-reduce over gloo in the same order, so the numbers are identical here; 1e-9
# only absorbs a last-bit libm difference, while a real divergence moves the loss by >1e-4.
REL_TOL = 1e-9
RAY_CLI = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """One tiny synthetic dataset for every run in this module (built by the first run's rank 0)."""
    root = tmp_path_factory.mktemp("ray_data")
    return [f"data.raw_dir={root / 'raw'}", f"data.bundle_dir={root / 'bundle'}"]


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU Ray on 127.0.0.1 for this module, shut down even when a test fails."""
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)
    import ray
    from ray._private import ray_constants

    # Ray reads the loopback switch when first imported; an earlier test may have imported it.
    enable_cluster, ray_constants.ENABLE_RAY_CLUSTER = ray_constants.ENABLE_RAY_CLUSTER, False
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="WARNING")
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        yield ray
    finally:
        ray.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = enable_cluster
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def torchrun_reference(tmp_path_factory, data_dirs):
    """The torchrun 2-process run of the debug config: (history rows, test metrics)."""
    out = tmp_path_factory.mktemp("torchrun") / "run"
    # --standalone: the rendezvous port is picked by the OS and held by torchrun, so it cannot collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
           "--nproc_per_node=2", "-m", "graphrec_dist.train", str(CONFIG), f"run.out_dir={out}", *data_dirs]
    proc = bounded.run(cmd, RUN_TIMEOUT_S, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return history, json.loads((out / "test_metrics.json").read_text())


def _ray_run(ray, tmp_path: Path, data_dirs: list[str], *overrides: str, meanwhile=None):
    """fit_on_ray with 2 workers in a daemon thread, so the wait is bounded; returns (cfg, Ray Result).
    ``meanwhile(deadline)``, if given, runs in the test's thread while the run goes on.

    Past the deadline Ray is shut down (its workers killed) and the test fails. A thread pool would
    not do: leaving its ``with`` block joins the thread, i.e. waits for the hung run after all.
    """
    from graphrec_dist import launch_ray
    from graphrec_dist.train import run_training

    cfg = load_config(CONFIG, [*data_dirs, f"run.out_dir={tmp_path / 'run'}", "dist.launcher=ray",
                               "dist.num_workers=2", "dist.cpus_per_worker=1", *overrides])
    box: dict = {}

    def fit() -> None:
        try:
            box["result"] = launch_ray.fit_on_ray(cfg, run_training)
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=fit, name="fit_on_ray", daemon=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    thread.start()
    if meanwhile is not None:
        meanwhile(deadline)
    thread.join(max(0.0, deadline - time.monotonic()))
    if thread.is_alive():
        ray.shutdown()
        pytest.fail(f"the Ray run did not finish in {RUN_TIMEOUT_S} s; Ray was shut down")
    if "error" in box:
        raise box["error"]
    return cfg, box["result"]


def _registered_steps(storage: Path) -> set:
    """Global steps of the checkpoints Ray Train's controller has registered under ``storage``."""
    steps = set()
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            results = json.loads(snapshot.read_text())["checkpoint_results"]
        except (ValueError, KeyError):  # being rewritten
            continue
        steps |= {r["metrics"].get("step") for r in results}
    return steps


def _assert_same_run(history: list[dict], test: dict, reference) -> None:
    ref_history, ref_test = reference
    assert [row["step"] for row in history] == [row["step"] for row in ref_history]
    for row, ref in zip(history, ref_history):
        assert row["seed_edges"] == ref["seed_edges"]
        for key in ("loss", "val_ndcg@10", "val_recall@20"):
            assert row[key] == pytest.approx(ref[key], rel=REL_TOL, abs=1e-12), (row["epoch"], key)
    for key in ("hit@10", "ndcg@10", "recall@20", "mrr", "num_users"):
        assert test[key] == pytest.approx(ref_test[key], rel=REL_TOL, abs=1e-12), key


def test_trainer_settings_come_from_the_dist_section(tmp_path, monkeypatch):
    from graphrec_dist import launch_ray
    from graphrec_dist.train import run_training

    monkeypatch.chdir(tmp_path)
    cfg = launch_ray.resolve_paths(load_config(CONFIG, ["run.out_dir=runs/x", "dist.num_workers=3",
                                                        "dist.cpus_per_worker=2", "dist.max_failures=2"]))
    assert cfg.run.out_dir == str(tmp_path / "runs" / "x")
    assert cfg.data.bundle_dir == str(tmp_path / "data" / "bundles" / "synth-300")
    assert cfg.dist.storage_path == str(tmp_path / "runs" / "x" / "ray")
    trainer = launch_ray.build_trainer(cfg, run_training)
    assert trainer.scaling_config.num_workers == 3
    assert trainer.scaling_config.resources_per_worker == {"CPU": 2}
    assert trainer.run_config.failure_config.max_failures == 2
    assert launch_ray.resolve_paths(load_config(CONFIG, ["dist.storage_path=s3://b/p"])).dist.storage_path == "s3://b/p"
    # dist.min_workers: Ray Train's elastic scaling, from min_workers up to num_workers.
    elastic = launch_ray.build_trainer(load_config(CONFIG, ["dist.num_workers=3", "dist.min_workers=1"]), run_training)
    assert elastic.scaling_config.num_workers == (1, 3)
    with pytest.raises(ConfigError, match="dist.min_workers"):
        load_config(CONFIG, ["dist.num_workers=2", "dist.min_workers=3"])


@pytest.mark.slow
@pytest.mark.multiproc
def test_ray_two_workers_match_torchrun(local_ray, torchrun_reference, data_dirs, tmp_path):
    from graphrec_dist import launch_ray

    cfg, result = _ray_run(local_ray, tmp_path, data_dirs)
    trained = launch_ray.to_train_result(cfg, result)
    _assert_same_run(trained.history, trained.test_metrics, torchrun_reference)
    assert result.metrics["resumed_at_step"] is None
    # Rank 0 wrote the usual run artifacts, and Ray kept the final checkpoint in its storage.
    saved = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert saved["ndcg@10"] == trained.test_metrics["ndcg@10"]
    assert Path(result.path).is_relative_to(tmp_path / "run" / "ray")


@pytest.mark.slow
@pytest.mark.multiproc
def test_ray_restarts_a_failed_worker_group_from_the_last_checkpoint(local_ray, torchrun_reference, data_dirs,
                                                                      tmp_path):
    from graphrec_dist import launch_ray

    # 4 steps per epoch and rank: step 6 is mid-way through epoch 1; the last reported checkpoint
    # is the end of epoch 0 (step 4), so steps 5-6 are redone once and nothing else.
    cfg, result = _ray_run(local_ray, tmp_path, data_dirs, "debug.fail_after_step=6", "dist.max_failures=1")
    assert result.metrics["resumed_at_step"] == 4
    trained = launch_ray.to_train_result(cfg, result)
    assert trained.global_step == 8
    # Resuming is exact, so the faulted run ends where the uninterrupted one does.
    _assert_same_run(trained.history, trained.test_metrics, torchrun_reference)
    # The final checkpoint loads: its state is the end of training, and its best model rebuilds.
    with result.checkpoint.as_directory() as folder:
        state = checkpoint.load_checkpoint(Path(folder) / run_dir.LAST)
        assert (state["trainer"]["epoch"], state["trainer"]["global_step"]) == (2, 8)
        _, model, _ = checkpoint.load_run(Path(folder) / run_dir.BEST)
        assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.slow
@pytest.mark.multiproc
def test_ray_survives_a_worker_killed_mid_epoch(local_ray, torchrun_reference, data_dirs, tmp_path):
    from graphrec_dist import launch_ray

    # Checkpoints (reported to Ray) after steps 2, 4 (end of epoch 0) and 6; rank 1 stops after
    # step 7, mid-epoch 1, and gets SIGKILL. Ray restarts the group from step 6: one step redone.
    # Ray's controller takes in reports when it polls the workers (every 2 s by default), so the
    # kill waits until it has registered step 6's checkpoint; a kill before that falls back one.
    pid_file = tmp_path / "run" / "hang_rank1.pid"
    killed: dict = {}

    def kill_worker(deadline: float) -> None:
        while not (pid_file.is_file() and 6 in _registered_steps(tmp_path / "run" / "ray")):
            assert time.monotonic() < deadline, "the Ray worker never reached step 7"
            time.sleep(0.1)
        pid = int(pid_file.read_text())
        assert pid in bounded.descendants(os.getpid())  # a worker of this test's Ray
        os.kill(pid, signal.SIGKILL)
        killed["at"] = time.monotonic()

    cfg, result = _ray_run(local_ray, tmp_path, data_dirs, "train.checkpoint_every=2", "debug.fail_after_step=7",
                           "debug.fail_mode=hang", "dist.max_failures=1", meanwhile=kill_worker)
    recovery_s = time.monotonic() - killed["at"]
    assert result.metrics["resumed_at_step"] == 6
    trained = launch_ray.to_train_result(cfg, result)
    assert trained.global_step == 8
    _assert_same_run(trained.history, trained.test_metrics, torchrun_reference)
    print(f"Ray worker killed after step 7; resumed at step 6; kill to job end {recovery_s:.1f} s")


def _free_port() -> int:
    """A loopback port that is free now (the OS picks it; Ray binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HEAD_LOGS = ("dashboard_agent.log", "dashboard.log", "dashboard_JobHead.log", "raylet.out")


def _head_logs(temp: Path, lines: int = 20) -> str:
    """The head's job-submission logs for a failure message: of each, its first ERROR and "Failed"
    lines (where a port that would not bind shows) and its last ``lines`` lines."""
    parts = []
    for name in HEAD_LOGS:
        for log in sorted(temp.glob(f"session_*/logs/{name}")):
            text = log.read_text(errors="replace").splitlines()
            errors = [line for line in text if "ERROR" in line or "Failed" in line][:8]
            parts.append(f"--- {log.relative_to(temp)}: first errors\n" + "\n".join(errors)
                         + f"\n--- {log.relative_to(temp)}: last {lines} lines\n" + "\n".join(text[-lines:]))
    return "\n".join(parts) or f"(no head logs under {temp})"


@contextlib.contextmanager
def _cluster(num_cpus: int = 2, loopback: bool = True):
    """A real one-node cluster: ``ray start --head --block`` on 127.0.0.1 with its own temp dir, a
    GCS port Ray picks and free ports for the dashboard, its agent and the client server; yields
    (address, environment with RAY_ADDRESS, temp dir, the head's ``ray start`` process). Afterwards
    its whole process tree is killed: ``ray stop`` would stop every Ray on the machine (this
    module's own, and anyone else's), so it is not used.

    The ports are not Ray's defaults because this module's ``local_ray`` (and any other Ray on the
    machine) already holds them: its dashboard agent listens on 52365, and a second agent that
    cannot bind it stays alive with its HTTP service disabled, so the head never takes a job
    (docs/RAY.md). The dashboard's metrics port (44227) is set by ``DASHBOARD_METRIC_PORT``.

    ``loopback=False``: the GCS and raylets use the host's address, which other nodes need (Ray
    refuses to join a second node to a loopback-only cluster); the dashboard stays on 127.0.0.1."""
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    # Token auth off: the cluster listens on loopback only, and the clients would otherwise need
    # a token file in the home directory.
    env = {**os.environ, **RAY_ENV, "RAY_AUTH_MODE": "disabled", "DASHBOARD_METRIC_PORT": str(_free_port()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    if not loopback:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "1"
    cmd = [RAY_CLI, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=0", f"--temp-dir={temp}",
           f"--num-cpus={num_cpus}", "--disable-usage-stats", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
           f"--ray-client-server-port={_free_port()}"]
    with open(temp / "head.log", "w") as log:
        head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (temp / "ray_current_cluster").is_file():
            assert head.poll() is None, (temp / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "ray start --head did not come up in 120 s"
            time.sleep(0.5)
        address = (temp / "ray_current_cluster").read_text().strip()
        assert address.startswith("127.0.0.1:") or not loopback
        yield address, {**env, "RAY_ADDRESS": address}, temp, head
    finally:
        bounded.kill_tree(head.pid)
        head.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def ray_cluster():
    """:func:`_cluster` with 2 CPUs: (address, environment, temp dir)."""
    with _cluster() as (address, env, temp, _):
        yield address, env, temp


def _outcome(out: Path) -> tuple[list[dict], dict]:
    return ([json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()],
            json.loads((out / "test_metrics.json").read_text()))


def _submit(job_id: str, args: list[str], env: dict, temp: Path, wait: bool = True) -> None:
    """``ray job submit`` of ``launch/ray_train.py ARGS`` with the repository as working dir (the
    job's driver runs on the cluster); with ``wait=False`` it returns once the job is accepted."""
    cmd = [RAY_CLI, "job", "submit", "--working-dir", ".", "--submission-id", job_id,
           *([] if wait else ["--no-wait"]), "--", "python", "launch/ray_train.py", *args]
    # The head accepts connections a few seconds before its dashboard agent takes jobs; Ray then
    # answers "No available agent to submit job, please try again later": retry that, and only
    # that. An agent that is not up after 90 s never will be (e.g. it could not bind its port):
    # that fails, with the head's logs.
    agent_deadline = time.monotonic() + 90
    while True:
        submit = bounded.run(cmd, RUN_TIMEOUT_S, cwd=ROOT, env=env)
        if submit.returncode == 0 or "No available agent" not in submit.stdout + submit.stderr:
            break
        if time.monotonic() > agent_deadline:
            pytest.fail("ray job submit: the head's job agent did not come up in 90 s ('No available agent to "
                        f"submit job')\n{_head_logs(temp)}")
        time.sleep(3)
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:] + "\n" + _head_logs(temp)


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_real_cluster_runs_a_submitted_job_and_a_driver_that_joins_it(ray_cluster, torchrun_reference,
                                                                        data_dirs, tmp_path):
    address, env, temp = ray_cluster
    args = [str(CONFIG), *data_dirs, "dist.num_workers=2", "dist.cpus_per_worker=1"]
    # 1. A driver started here joins the running cluster through RAY_ADDRESS (no local Ray).
    proc = subprocess.Popen([sys.executable, "launch/ray_train.py", *args, f"run.out_dir={tmp_path / 'joined'}"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = bounded.communicate_all([proc], RUN_TIMEOUT_S)[0]
    assert proc.returncode == 0, err[-3000:]
    assert list(temp.glob(f"session_*/logs/python-core-driver-*_{proc.pid}.log")), "the driver did not join"
    _assert_same_run(*_outcome(tmp_path / "joined"), torchrun_reference)
    # 2. ray job submit: the repository as working dir, the job's driver runs on the cluster.
    job_id = f"graphrec-test-{os.getpid()}"
    _submit(job_id, [*args, f"run.out_dir={tmp_path / 'job'}"], env, temp)
    status = bounded.run([RAY_CLI, "job", "status", job_id], 60, cwd=ROOT, env=env)
    assert f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr
    _assert_same_run(*_outcome(tmp_path / "job"), torchrun_reference)


def _join_node(address: str, env: dict, num_cpus: int = 1) -> subprocess.Popen:
    """A second Ray node on this machine (``ray start --address --block``), with free ports for
    what would collide with the head's; it runs until its process tree is killed."""
    cmd = [RAY_CLI, "start", f"--address={address}", "--block", "--node-ip-address=127.0.0.1",
           f"--num-cpus={num_cpus}", "--disable-usage-stats", f"--dashboard-agent-listen-port={_free_port()}",
           f"--dashboard-agent-grpc-port={_free_port()}", f"--metrics-export-port={_free_port()}",
           f"--runtime-env-agent-port={_free_port()}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_cpus(env: dict, cpus: int, deadline: float) -> None:
    while f"/{cpus}.0 CPU" not in bounded.run([RAY_CLI, "status"], 60, env=env).stdout:
        assert time.monotonic() < deadline, f"the cluster never had {cpus} CPUs"
        time.sleep(2)


def _job_status(job_id: str, env: dict, deadline: float) -> str:
    """The job's terminal status line, polling ``ray job status`` until it has one."""
    while True:
        status = bounded.run([RAY_CLI, "job", "status", job_id], 60, cwd=ROOT, env=env).stdout
        if any(word in status for word in ("succeeded", "failed", "stopped")):
            return status
        assert time.monotonic() < deadline, f"job {job_id} did not end in time: {status}"
        time.sleep(3)


@pytest.fixture(scope="module")
def sharded_reference(tmp_path_factory, data_dirs):
    """The uninterrupted torchrun run of the sharded debug config on 2 ranks: (history, test metrics)."""
    from test_sharding import _train_cmd

    out = tmp_path_factory.mktemp("sharded_torchrun") / "run"
    proc = bounded.run(_train_cmd(out, data_dirs, 2), RUN_TIMEOUT_S, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _outcome(out)


@pytest.mark.slow
@pytest.mark.multiproc
def test_a_sharded_job_goes_on_with_fewer_workers_when_a_node_is_lost(sharded_reference, data_dirs, tmp_path):
    from test_sharding import SHARDED

    # Two one-CPU nodes, one worker each. Rank 1 stops after step 7 (mid-epoch 1); once Ray has
    # registered step 6's checkpoint, the second node is killed whole (its raylet and its worker),
    # so its CPU is gone. Ray Train's elastic scaling (dist.min_workers=1) restarts the group on
    # the one worker the cluster has left, which re-cuts the users of step 6's 2-rank checkpoint.
    out = tmp_path / "job"
    with _cluster(num_cpus=1, loopback=False) as (address, env, temp, head):
        node = _join_node(address, env)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT_S
            _wait_for_cpus(env, 2, deadline)
            job_id = f"graphrec-elastic-{os.getpid()}"
            _submit(job_id, [str(CONFIG), *data_dirs, *SHARDED, f"run.out_dir={out}", "dist.num_workers=2",
                             "dist.min_workers=1", "dist.cpus_per_worker=1", "dist.max_failures=1",
                             "debug.fail_after_step=7", "debug.fail_mode=hang"], env, temp, wait=False)
            while not ((out / "hang_rank1.pid").is_file() and 6 in _registered_steps(out / "ray")):
                assert time.monotonic() < deadline, "the job never reached step 7:\n" + _head_logs(temp)
                time.sleep(0.5)
            bounded.kill_tree(node.pid)
            killed_at = time.monotonic()
            status = _job_status(job_id, env, killed_at + RUN_TIMEOUT_S)
            logs = bounded.run([RAY_CLI, "job", "logs", job_id], 60, cwd=ROOT, env=env).stdout
            assert "succeeded" in status, status + logs[-3000:]
        finally:
            bounded.kill_tree(node.pid)
            node.wait(30)
    assert "(users sharded over 2 ranks) on 1 ranks: the user rows" in logs, logs[-3000:]
    history, test = _outcome(out)
    ref_history, ref_test = sharded_reference
    assert [row["step"] for row in history] == [row["step"] for row in ref_history]
    for row, ref in zip(history, ref_history):
        assert row["loss"] == pytest.approx(ref["loss"], rel=1e-5, abs=1e-5), row["epoch"]
        assert row["val_ndcg@10"] == pytest.approx(ref["val_ndcg@10"], abs=1e-4), row["epoch"]
    for key in ("ndcg@10", "hit@10", "ndcg@20", "mrr"):
        assert test[key] == pytest.approx(ref_test[key], abs=1e-4), key
    print(f"node lost after step 7; the job resumed on 1 worker and ended {time.monotonic() - killed_at:.1f} s later")
