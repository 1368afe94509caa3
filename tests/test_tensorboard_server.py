"""TensorBoard checked through its own server: a finished 2-run sweep, served by `tensorboard` on a free loopback
port, read back through its HTTP API: both runs, the swept key and real metric values in HPARAMS, the samples
in TEXT, the attention maps in IMAGES."""
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import TINY, job_dir, poem, run

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory):
    """A finished sweep over model.dropout (0.0, 0.2), and a TensorBoard server over it; stopped by its pid."""
    work = tmp_path_factory.mktemp("tb")
    corpus = work / "corpus.txt"
    corpus.write_text(poem(), encoding="utf-8")
    sweep = work / "sweep"
    run("train.py", "-m", *TINY, "trainer.max_steps=20", "trainer.val_check_interval=10", "dataset=text",
        f"data.path={corpus}", "model.dropout=0.0,0.2", f"hydra.sweep.dir={sweep}", cwd=work)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--host",
                               "127.0.0.1", "--port", str(port), "--load_fast=false"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def api(path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    try:
        deadline = time.time() + 120
        while True:
            try:
                if len(api("/data/runs")) == 2:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, "tensorboard did not list the runs"
            time.sleep(0.5)
        yield sweep, api
    finally:
        server.terminate()
        server.wait(timeout=30)
    with pytest.raises(ProcessLookupError):  # the server is gone
        os.kill(server.pid, 0)


def test_both_runs_are_listed(served_sweep):
    sweep, api = served_sweep
    runs = sorted(api("/data/runs"))
    assert runs == [job_dir(sweep, f"model.dropout={d}").name for d in ("0.0", "0.2")]


def test_hparams_hold_the_swept_key_and_real_metric_values(served_sweep):
    sweep, api = served_sweep
    experiment = api("/data/plugin/hparams/experiment", {"experimentName": ""})
    assert "model.dropout" in {h["name"] for h in experiment["hparamInfos"]}
    assert {"best/val_loss", "best/val_bpc"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}
    groups = api("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 10,
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})["sessionGroups"]
    names = {job_dir(sweep, f"model.dropout={d}").name: float(d) for d in ("0.0", "0.2")}
    assert sorted(g["name"] for g in groups) == sorted(names)
    for group in groups:
        assert group["hparams"]["model.dropout"] == names[group["name"]]
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        status = json.loads((sweep / group["name"] / "status.json").read_text())
        assert math.isclose(metrics["best/val_loss"], status["best_val_loss"], rel_tol=1e-6)  # real, not -1
        assert [s["status"] for s in group["sessions"]] == ["STATUS_SUCCESS"]


def test_text_holds_the_samples_and_images_the_attention_maps(served_sweep):
    sweep, api = served_sweep
    for name in (job_dir(sweep, f"model.dropout={d}").name for d in ("0.0", "0.2")):
        query = urllib.parse.urlencode({"run": name, "tag": "sample/text_summary"})
        texts = api(f"/data/plugin/text/text?{query}")
        # validations at steps 10 and 20: the samples and maps at every 4th (by default) and at the last
        assert [t["step"] for t in texts] == [20] and all(len(t["text"]) > 50 for t in texts)
        query = urllib.parse.urlencode({"run": name, "tag": "attention", "sample": 0})
        images = api(f"/data/plugin/images/images?{query}")
        assert [i["step"] for i in images] == [20]
