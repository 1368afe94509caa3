"""TensorBoard's HPARAMS tab: the settings a user varies, written by the logger's log_hyperparams; and run
directories named by their dataset and model."""
import re
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from conftest import QUICK, TINY
from frosty_lm.lit_module import select


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
    assert values["model.bias"].string_value == "true"  # torch's hparams would store a boolean as 1.0
    assert columns["model.bias"] == columns["model.compile"] == api_pb2.DATA_TYPE_STRING
    assert values["model.dropout"].number_value == 0.0 and columns["model.dropout"] == api_pb2.DATA_TYPE_FLOAT64
    assert values["data.name"].string_value == "text" and values["optim.betas"].string_value == "[0.9, 0.99]"
    assert [m.name.tag for m in experiment.metric_infos] == ["best/val_loss", "best/val_bpc"]


def test_hparams_yaml_holds_the_same_settings(trained_run):
    import yaml

    stored = yaml.safe_load((trained_run / "hparams.yaml").read_text())
    values = metadata.parse_session_start_info_plugin_data(
        hparams_plugin(trained_run)[metadata.SESSION_START_INFO_TAG]).hparams
    assert set(stored) == set(values) and stored["model.dropout"] == 0.0 and stored["data.name"] == "text"
    assert stored["model.bias"] == "true" and stored["optim.betas"] == "[0.9, 0.99]"


def test_a_finished_run_ends_with_success(trained_run):
    assert end_status(trained_run) == "STATUS_SUCCESS"


def test_select_takes_the_listed_prefixes_without_hydra_keys():
    config = {"model": {"n_layer": 2, "bias": False, "_target_": "x"}, "optim": {"betas": [0.9, 0.99]},
              "data": {"name": "frost", "block_size": 64, "_target_": "y"}, "trainer": {"max_time": None,
              "log_every_n_steps": 10}, "callbacks": {"a": {"_target_": "z"}}, "seed": 3, "seedling": 1}
    assert select(config) == {"model.n_layer": 2, "model.bias": "false", "optim.betas": "[0.9, 0.99]",
                              "data.name": "frost", "trainer.max_time": "null", "seed": 3}


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
