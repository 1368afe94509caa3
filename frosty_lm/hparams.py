"""TensorBoard's HPARAMS tab: the settings a user varies, in their types, and how each run ended.

Frosty writes the tab itself: Lightning's log_hyperparams (torch's summary.hparams) stores booleans as 0.0/1.0 and
marks a run STATUS_SUCCESS as it starts. TensorBoard keeps the first session end status of a run directory and
ignores later ones, so a run records one when it ends (HparamsStatus). A run still training, stopped or killed
records none and shows STATUS_UNKNOWN: it may be resumed, and its resume records how it ended.
"""
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

# The keys shown in HPARAMS, with those under them (data.block_size is model.block_size; the rest is plumbing)
HPARAMS = (
    "model", "optim", "scheduler", "seed",
    "data.name", "data.batch_size", "data.val_fraction",
    "trainer.max_steps", "trainer.precision", "trainer.accelerator", "trainer.devices", "trainer.val_check_interval",
    "trainer.accumulate_grad_batches", "trainer.gradient_clip_val", "trainer.max_time",
)
# metric columns logged by callbacks rather than passed in (their last value shows): memorisation.CopiedShare's
LOGGED_METRICS = ("sample/copied",)


def select(config: dict, prefix: str = "") -> dict:
    """The config's keys that HPARAMS lists, flattened (model.n_layer), less Hydra's (_target_), with the values
    TensorBoard shows: None as "null", a list (optim.betas) as a string."""
    params = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict):
            params.update(select(value, f"{name}."))
        elif any(name == p or name.startswith(f"{p}.") for p in HPARAMS):
            shown = value if isinstance(value, (bool, int, float, str)) else str(value)
            params[name] = "null" if value is None else shown
    return params


def log_hparams(loggers: list[Logger], config: dict, metrics: dict) -> None:
    """Logs the run's hyperparameters once: to TensorBoard's HPARAMS tab, with `metrics` as metric columns (their
    values: the scalars of those tags); to other loggers (csv) as they store them."""
    params = select(config)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            write_hparams(logger, params, [*metrics, *LOGGED_METRICS])
        else:
            logger.log_hyperparams(params)


@rank_zero_only
def write_hparams(logger: TensorBoardLogger, params: dict, metrics: list[str]) -> None:
    """The tab's columns (experiment) and this run's values (session start), also into the hparams.yaml that
    Lightning wrote empty; HparamsStatus writes the session end."""
    infos, start = [], SessionStartInfo(start_time_secs=time.time())
    for name, value in params.items():
        if isinstance(value, bool):  # filtered as true/false
            both = struct_pb2.ListValue(values=[struct_pb2.Value(bool_value=b) for b in (False, True)])
            infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_BOOL, domain_discrete=both))
            start.hparams[name].bool_value = value
        elif isinstance(value, str):
            infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_STRING))
            start.hparams[name].string_value = value
        else:
            infos.append(api_pb2.HParamInfo(name=name, type=api_pb2.DATA_TYPE_FLOAT64))
            start.hparams[name].number_value = value
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in metrics]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metric_infos)
    writer = logger.experiment.file_writer
    writer.add_summary(plugin_summary(metadata.EXPERIMENT_TAG, experiment=experiment))
    writer.add_summary(plugin_summary(metadata.SESSION_START_INFO_TAG, session_start_info=start))
    logger.experiment.flush()
    logger.hparams.update(params)
    save_hparams_to_yaml(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE, logger.hparams)


def plugin_summary(tag: str, **data) -> Summary:
    """A summary of the hparams plugin as TensorBoard's own writer makes it: the data in the metadata, where the
    plugin reads it, and an empty tensor."""
    content = metadata.create_summary_metadata(HParamsPluginData(**data))
    return Summary(value=[Summary.Value(tag=tag, metadata=content, tensor=metadata.NULL_TENSOR)])


class HparamsStatus(L.Callback):
    """Records how the run ended, from global rank 0, if it logs to TensorBoard: STATUS_SUCCESS after every
    on_train_end hook (a checkpoint that then fails to save makes it a failure), STATUS_FAILURE on an error."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_status(trainer, api_pb2.STATUS_SUCCESS)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # not a stop (Stopped, Lightning's SIGTERMException: a SystemExit) nor a NaN stop (its error may say to
        # resume with a lower lr): the run stays resumable, and its resume records how it ends
        if isinstance(exception, Exception) and not isinstance(exception, (NonFiniteLoss, Stopped)):
            write_status(trainer, api_pb2.STATUS_FAILURE)


def write_status(trainer: L.Trainer, status: int) -> None:
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if logger is not None and trainer.is_global_zero:
        end = SessionEndInfo(status=status, end_time_secs=time.time())
        logger.experiment.file_writer.add_summary(plugin_summary(metadata.SESSION_END_INFO_TAG, session_end_info=end))
        logger.experiment.flush()
