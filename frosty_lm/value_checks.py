"""The rule for a single setting's value, where both the code that takes the setting and config_checks (before torch
loads) check it; the one-line refusal that names the key. The standard library only: the model's code imports it."""
from __future__ import annotations

import math

from frosty_lm.errors import FrostyError


def check_data(batch_size, val_fraction, decode_errors) -> None:
    """data.* settings that need no corpus (CharDataModule checks them too, when other code builds one)."""
    must(is_int(batch_size) and batch_size > 0, "data.batch_size", batch_size, "a positive integer, e.g. "
         "data.batch_size=32")
    must(is_number(val_fraction) and 0 < val_fraction < 1, "data.val_fraction", val_fraction,
         "between 0 and 1, e.g. data.val_fraction=0.1")
    must(decode_errors in ("strict", "replace"), "data.decode_errors", decode_errors, "strict or replace")


def must(fine: bool, key: str, value, what: str) -> None:
    if not fine:
        raise FrostyError(f"{key}={'null' if value is None else repr(value)} must be {what}")  # as Hydra spells it


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
