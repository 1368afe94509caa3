"""TensorBoard's HPARAMS tab: the settings a user varies, in their types, how each run ended; and run directories
named by their dataset and model."""
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from conftest import QUICK, TINY
from frosty_lm.config import Stopped
from frosty_lm.lit_module import HparamsStatus, select, write_hparams


def hparams_plugin(log_dir: Path) -> dict:
    """The hparams plugin's data in a run's event files: {tag: content}, as TensorBoard reads it (the first
    summary of each tag)."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events.PluginTagToContent(metadata.PLUGIN_NAME)


def end_status(log_dir: Path) -> str:
    """The session end status TensorBoard shows for a run: STATUS_UNKNOWN if none was written."""
    content = hparams_plugin(log_dir).get(metadata.SESSION_END_INFO_TAG)
    status = metadata.parse_session_end_info_plugin_data(content).status if content else api_pb2.STATUS_UNKNOWN
    return api_pb2.Status.Name(status)


def test_hparams_are_the_settings_a_user_varies_in_their_types(trained_run):
    plugin = hparams_plugin(trained_run)
    values = metadata.parse_session_start_info_plugin_data(plugin[metadata.SESSION_START_INFO_TAG]).hparams
    experiment = metadata.parse_experiment_plugin_data(plugin[metadata.EXPERIMENT_TAG])
    columns = {info.name: info.type for info in experiment.hparam_infos}
    assert set(columns) == set(values) and len(values) <= 40  # a selection of the config's keys
    assert {"model.dropout", "model.n_layer", "data.name", "seed", "optim.lr", "trainer.max_steps"} <= set(values)
    assert not any("_target_" in key or key.startswith(("callbacks.", "logger.", "paths.")) for key in values)
    assert "data.block_size" not in values and "data.data_dir" not in values  # redundant, plumbing
    assert values["model.bias"].WhichOneof("kind") == "bool_value" and values["model.bias"].bool_value is True
    assert columns["model.bias"] == columns["model.compile"] == api_pb2.DATA_TYPE_BOOL
    assert values["model.dropout"].number_value == 0.0 and columns["model.dropout"] == api_pb2.DATA_TYPE_FLOAT64
    assert values["data.name"].string_value == "text" and values["optim.betas"].string_value == "[0.9, 0.99]"
    assert [m.name.tag for m in experiment.metric_infos] == ["best/val_loss", "best/val_bpc", "sample/copied"]


def test_hparams_yaml_holds_the_same_settings(trained_run):
    """Lightning writes it empty ({}): Frosty logs its hyperparameters itself, not through log_hyperparams."""
    import yaml

    stored = yaml.safe_load((trained_run / "hparams.yaml").read_text())
    values = metadata.parse_session_start_info_plugin_data(
        hparams_plugin(trained_run)[metadata.SESSION_START_INFO_TAG]).hparams
    assert set(stored) == set(values) and stored["model.dropout"] == 0.0 and stored["data.name"] == "text"
    assert stored["model.bias"] is True and stored["optim.betas"] == "[0.9, 0.99]"


def test_a_finished_run_ends_with_success(trained_run):
    assert end_status(trained_run) == "STATUS_SUCCESS"


def test_select_takes_the_listed_prefixes_without_hydra_keys():
    config = {"model": {"n_layer": 2, "bias": False, "_target_": "x"}, "optim": {"betas": [0.9, 0.99]},
              "data": {"name": "frost", "block_size": 64, "_target_": "y"}, "trainer": {"max_time": None,
              "log_every_n_steps": 10}, "callbacks": {"a": {"_target_": "z"}}, "seed": 3, "seedling": 1}
    assert select(config) == {"model.n_layer": 2, "model.bias": False, "optim.betas": "[0.9, 0.99]",
                              "data.name": "frost", "trainer.max_time": "null", "seed": 3}


def fake_trainer(log_dir: Path, global_zero: bool = True, logger=None) -> SimpleNamespace:
    """What HparamsStatus reads of a trainer: its loggers and rank."""
    logger = logger or TensorBoardLogger(save_dir=str(log_dir), name="", version="")
    write_hparams(logger, {"model.bias": True}, ["best/val_loss"])
    return SimpleNamespace(loggers=[logger], callbacks=[], is_global_zero=global_zero)


@pytest.mark.parametrize(("exception", "expected"), [
    (None, "STATUS_SUCCESS"),  # fit ended
    (Stopped(signal.SIGINT), "STATUS_UNKNOWN"),  # Ctrl-C: resumable, no verdict yet
    (SIGTERMException(), "STATUS_UNKNOWN"),
    (RuntimeError("boom"), "STATUS_FAILURE"),
    (KeyboardInterrupt(), "STATUS_UNKNOWN"),  # before training started
])
def test_how_a_run_ended_is_its_end_status(tmp_path, exception, expected):
    trainer = fake_trainer(tmp_path)
    status = HparamsStatus()
    if exception is None:
        status.on_fit_end(trainer, None)
    else:
        status.on_exception(trainer, None, exception)
    trainer.loggers[0].experiment.flush()
    assert metadata.SESSION_START_INFO_TAG in hparams_plugin(tmp_path)
    assert end_status(tmp_path) == expected


def test_the_end_status_is_written_once_by_rank_zero_and_only_to_tensorboard(tmp_path):
    other_rank = fake_trainer(tmp_path / "rank1", global_zero=False)
    HparamsStatus().on_fit_end(other_rank, None)
    assert end_status(tmp_path / "rank1") == "STATUS_UNKNOWN"
    csv = SimpleNamespace(loggers=[CSVLogger(str(tmp_path / "csv"))], callbacks=[], is_global_zero=True)
    HparamsStatus().on_fit_end(csv, None)  # no TensorBoard logger: nothing to do, no error
    assert not list(tmp_path.joinpath("csv").rglob("events.out.tfevents.*"))


def test_a_new_run_is_named_by_its_dataset_and_model_and_resumes(invoke, text_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("train.py", *TINY, "trainer.max_steps=1", "dataset=text", f"data.path={text_file}")
    assert code == 0, err
    (run_dir,) = (tmp_path / "outputs" / "runs").glob("*/*")
    assert re.fullmatch(r"\d\d-\d\d-\d\d-\d{6}_text_tiny", run_dir.name)
    code, _, err = invoke("train.py", "resume=latest", *QUICK, "trainer.max_steps=2")
    assert code == 0, err
    assert list((tmp_path / "outputs" / "runs").glob("*/*")) == [run_dir]  # continued in its own directory
    assert end_status(run_dir) == "STATUS_SUCCESS"
