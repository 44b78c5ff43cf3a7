"""The HParams plugin's three summaries, as ``torch.utils.tensorboard.summary.hparams`` writes them: an
``Experiment`` (which hyperparameters and metrics exist), a ``SessionStartInfo`` (this run's values) and a
``SessionEndInfo`` (status success), each an empty ``Summary.Value`` whose metadata content is an
``HParamsPluginData`` (version 1 = 0, experiment 2, session_start_info 3, session_end_info 4).

One difference from torch 2.13: a ``bool`` hyperparameter is written as a ``bool_value`` of type
``DATA_TYPE_BOOL`` (torch tests ``isinstance(v, (int, float))`` first, so it writes ``True`` as the number 1.0).
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Mapping

from kiln.runtime.protobuf_wire import (
    bytes_field,
    double_field,
    int_field,
    message_field,
    repeated_bytes_field,
)
from kiln.runtime.tensorboard_proto import summary, summary_metadata, summary_value

PLUGIN_NAME = "hparams"
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"
SESSION_END_INFO_TAG = "_hparams_/session_end_info"
DATA_TYPE_STRING, DATA_TYPE_BOOL, DATA_TYPE_FLOAT64 = 1, 2, 3
STATUS_SUCCESS = 1


def hparams_summaries(
    hparam_dict: Mapping[str, Any],
    metric_dict: Mapping[str, Any],
    hparam_domain_discrete: Mapping[str, list] | None = None,
) -> tuple[bytes, bytes, bytes]:
    """``(experiment, session_start_info, session_end_info)`` ``Summary`` messages; ``None`` values are skipped."""
    _check_dicts(hparam_dict, metric_dict, hparam_domain_discrete)
    domains = hparam_domain_discrete or {}
    infos, values = [], []
    for name, value in hparam_dict.items():
        if value is None:
            continue
        value = _plain_value(name, value)
        domain = domains.get(name)
        infos.append(_hparam_info(name, _data_type(value), None if domain is None else _list_value(domain)))
        values.append(bytes_field(1, name) + message_field(2, _struct_value(value)))
    experiment = repeated_bytes_field(4, infos) + repeated_bytes_field(5, (_metric_info(tag) for tag in metric_dict))
    return (
        _plugin_summary(EXPERIMENT_TAG, 2, experiment),
        _plugin_summary(SESSION_START_INFO_TAG, 3, repeated_bytes_field(1, values)),
        _plugin_summary(SESSION_END_INFO_TAG, 4, int_field(1, STATUS_SUCCESS)),
    )


def _plugin_summary(tag: str, data_field: int, payload: bytes) -> bytes:
    content = message_field(data_field, payload)  # HParamsPluginData, version 0 (the default, so not written)
    return summary([summary_value(tag, metadata=summary_metadata(PLUGIN_NAME, content))])


def _hparam_info(name: str, data_type: int, domain_discrete: bytes | None) -> bytes:
    """``HParamInfo``: name 1, type 4 (``DataType``), domain_discrete 5 (``google.protobuf.ListValue``)."""
    return bytes_field(1, name) + int_field(4, data_type) + message_field(5, domain_discrete)


def _metric_info(tag: str) -> bytes:
    """``MetricInfo``: name 1 (``MetricName``: group 1, tag 2)."""
    return message_field(1, bytes_field(2, tag))


def _struct_value(value: bool | float | str) -> bytes:
    """``google.protobuf.Value``: one of number_value 2 (double), string_value 3, bool_value 4."""
    if isinstance(value, bool):
        return int_field(4, value, keep_default=True)
    if isinstance(value, str):
        return bytes_field(3, value, keep_default=True)
    return double_field(2, float(value), keep_default=True)


def _list_value(values: list) -> bytes:
    """``google.protobuf.ListValue``: values 1 (repeated ``Value``)."""
    return repeated_bytes_field(1, (_struct_value(value) for value in values))


def _data_type(value: bool | float | str) -> int:
    if isinstance(value, bool):
        return DATA_TYPE_BOOL
    return DATA_TYPE_STRING if isinstance(value, str) else DATA_TYPE_FLOAT64


def _plain_value(name: str, value: Any) -> bool | float | str:
    """A bool, number or string; a one-element tensor or array becomes its number."""
    if isinstance(value, (bool, str, Real)):
        return value
    if hasattr(value, "__array__") or hasattr(value, "numpy"):
        from kiln.runtime.tensorboard_summaries import as_array

        array = as_array(value, f"hparam_dict[{name!r}]").reshape(-1)
        if array.size == 1:
            return float(array[0])
    raise TypeError(
        f"add_hparams: hparam_dict[{name!r}] is {type(value).__name__} {value!r}; a hyperparameter must be a bool, "
        "int, float, str, None or a one-element tensor: log other values with add_text"
    )


def _check_dicts(hparam_dict: Any, metric_dict: Any, domains: Any) -> None:
    if not isinstance(hparam_dict, dict) or not isinstance(metric_dict, dict):
        raise TypeError(
            f"add_hparams(hparam_dict, metric_dict): both must be dicts, got {type(hparam_dict).__name__} and "
            f"{type(metric_dict).__name__}; nothing was logged"
        )
    if domains is not None and not isinstance(domains, dict):
        raise TypeError(f"add_hparams: hparam_domain_discrete must be a dict of lists, got {type(domains).__name__}")
    for name, values in (domains or {}).items():
        if name not in hparam_dict or not isinstance(values, list):
            raise TypeError(
                f"add_hparams: hparam_domain_discrete[{name!r}] must be a list and {name!r} a key of hparam_dict"
            )
        if not all(isinstance(value, type(hparam_dict[name])) for value in values):
            raise TypeError(
                f"add_hparams: hparam_domain_discrete[{name!r}] = {values!r} must hold values of the type of "
                f"hparam_dict[{name!r}] ({type(hparam_dict[name]).__name__})"
            )
