"""TensorBoard's HPARAMS tab: the settings a user varies, with their types, and how each run ended.

The selection is HPARAMS, below: the config keys under these prefixes, flattened to `model.dropout` and so on.
Frosty writes the tab's summaries itself rather than through Lightning's log_hyperparams (torch's
summary.hparams), which stores booleans as 0.0/1.0 and marks every run STATUS_SUCCESS as soon as it starts.

How a run ended: TensorBoard keeps the first session end status a run directory records and ignores any later
one (its event readers keep the first metadata of a tag; checked with TensorBoard 2.21, both loaders), so a
status written at the start ("running") could never be corrected. A run records one status, when it ends
(HparamsStatus): finished -> STATUS_SUCCESS, failed -> STATUS_FAILURE. A run still training, stopped by Ctrl-C or
SIGTERM (or aborted by a second one), or killed records none, and TensorBoard shows STATUS_UNKNOWN: such a run
may still be resumed, and the resumed run then records how it ended. status.json tells these apart.
"""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from google.protobuf import struct_pb2
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo

from frosty_lm.errors import NonFiniteLoss, Stopped

# The keys shown in HPARAMS: a key is shown if it is one of these or under one of them (data.block_size is
# model.block_size; the rest of data, trainer and the callbacks is plumbing). Hydra's keys (_target_) never are.
HPARAMS = (
    "model", "optim", "scheduler", "seed",
    "data.name", "data.batch_size", "data.val_fraction",
    "trainer.max_steps", "trainer.precision", "trainer.accelerator", "trainer.devices", "trainer.val_check_interval",
    "trainer.accumulate_grad_batches", "trainer.gradient_clip_val", "trainer.max_time",
)


def flatten(config: dict, prefix: str = "") -> dict:
    """{'model': {'n_layer': 4}} -> {'model.n_layer': 4}."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def hparam_value(value) -> bool | int | float | str:
    """A value as TensorBoard shows it: booleans, numbers and strings as they are, None as 'null', anything else
    (a list: optim.betas) as a string."""
    if value is None:
        return "null"
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def select(config: dict) -> dict:
    """The run config's keys that HPARAMS lists, flattened, with TensorBoard's types (hparam_value)."""
    def shown(key: str) -> bool:
        return (any(key == p or key.startswith(f"{p}.") for p in HPARAMS)
                and not any(part.startswith("_") for part in key.split(".")))

    return {key: hparam_value(value) for key, value in flatten(config).items() if shown(key)}


# metric columns logged by callbacks rather than passed in (their last value shows): memorisation.CopiedShare's
LOGGED_METRICS = ("sample/copied",)


def log_hparams(loggers: list[Logger], config: dict, metrics: dict) -> None:
    """Logs the run's hyperparameters (select) once: TensorBoard's HPARAMS tab, with the metric columns of
    `metrics`, their values being the scalars of the same names; other loggers (csv) store them as they do."""
    params = select(config)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            write_hparams(logger, params, [*metrics, *LOGGED_METRICS])
        else:
            logger.log_hyperparams(params)


@rank_zero_only
def write_hparams(logger: TensorBoardLogger, params: dict, metrics: list[str]) -> None:
    """The HPARAMS tab's experiment (the columns) and session start (this run's values), without a session end:
    HparamsStatus writes that when the run ends. The same values go to the logger's hparams.yaml, which Lightning
    had written empty at the first logged metric."""
    writer = logger.experiment.file_writer
    writer.add_summary(plugin_summary(metadata.EXPERIMENT_TAG, experiment=experiment(params, metrics)))
    writer.add_summary(plugin_summary(metadata.SESSION_START_INFO_TAG, session_start_info=session_start(params)))
    logger.experiment.flush()
    logger.hparams.update(params)
    save_hparams_to_yaml(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE, logger.hparams)


def experiment(params: dict, metrics: list[str]) -> api_pb2.Experiment:
    """The columns: each hyperparameter with its type (booleans filter as true/false), then the metrics."""
    infos = []
    for name, value in params.items():
        if isinstance(value, bool):
            both = struct_pb2.ListValue(values=[struct_pb2.Value(bool_value=b) for b in (False, True)])
            infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_BOOL, domain_discrete=both))
        else:
            kind = api_pb2.DATA_TYPE_STRING if isinstance(value, str) else api_pb2.DATA_TYPE_FLOAT64
            infos.append(api_pb2.HParamInfo(name=name, type=kind))
    return api_pb2.Experiment(hparam_infos=infos,
                              metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics])


def session_start(params: dict) -> SessionStartInfo:
    """This run's values, each in its type's field of google.protobuf.Value (bool_value, number_value,
    string_value)."""
    start = SessionStartInfo(start_time_secs=time.time())
    for name, value in params.items():
        field = {bool: "bool_value", str: "string_value"}.get(type(value), "number_value")
        setattr(start.hparams[name], field, value)
    return start


def plugin_summary(tag: str, **data) -> Summary:
    """A summary of the hparams plugin, as TensorBoard's own writer makes it: the data (experiment,
    session_start_info or session_end_info) in the metadata, where the plugin reads it, and an empty tensor."""
    content = metadata.create_summary_metadata(HParamsPluginData(**data))
    return Summary(value=[Summary.Value(tag=tag, metadata=content, tensor=metadata.NULL_TENSOR)])


class HparamsStatus(L.Callback):
    """Records how the run ended in TensorBoard's HPARAMS tab (its session end status), once, from global rank 0,
    if the run logs to TensorBoard: STATUS_SUCCESS when fit ends normally (trainer.max_steps or trainer.max_time
    reached), after every on_train_end hook (so a checkpoint that then fails to save makes it a failure);
    STATUS_FAILURE when training raises an error. A run stopped by Ctrl-C or SIGTERM (callbacks.Stopped,
    Lightning's SIGTERMException), or aborted by a second Ctrl-C, records nothing: TensorBoard shows STATUS_UNKNOWN
    until a resume of the run records how it ended. See the module's docstring for why nothing is written at the
    start."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_status(trainer, "STATUS_SUCCESS")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # not a stop (Stopped, SIGTERMException: a SystemExit) nor a NaN stop (its error may say to resume it with a
        # lower lr): the run stays resumable, and its resume records how it ends
        if isinstance(exception, Exception) and not isinstance(exception, (NonFiniteLoss, Stopped)):
            write_status(trainer, "STATUS_FAILURE")


def write_status(trainer: L.Trainer, status: str) -> None:
    """Writes the run's session end status (an api_pb2.Status name) to its TensorBoard logger, if it has one, from
    global rank 0 only."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if logger is None or not trainer.is_global_zero:
        return
    end = SessionEndInfo(status=api_pb2.Status.Value(status), end_time_secs=time.time())
    logger.experiment.file_writer.add_summary(plugin_summary(metadata.SESSION_END_INFO_TAG,
                                                                    session_end_info=end))
    logger.experiment.flush()
