"""Feature names live in one schema; both Kepler naming bugs from the seed write-up are caught."""

from __future__ import annotations

import pytest

from joulestream.schemas.errors import FeatureNameError
from joulestream.schemas.features import FEATURE_NAMES, validate_feature_names


def test_feature_names_come_from_the_counters_record() -> None:
    assert FEATURE_NAMES[0] == "cpu_time_ns"
    assert {"irq_net_tx", "irq_net_rx", "irq_block", "cache_misses"} <= set(FEATURE_NAMES)
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)


def test_valid_names_pass_in_order() -> None:
    assert validate_feature_names(["irq_block", "cpu_time_ns"]) == ["irq_block", "cpu_time_ns"]


def test_regression_irq_naming_mismatch() -> None:
    """kepler-model-server#116 / kepler#871: exporter said irq_net_tx, model said bpf_net_tx_irq."""
    with pytest.raises(FeatureNameError) as err:
        validate_feature_names(["cpu_time_ns", "bpf_net_tx_irq", "bpf_net_rx_irq", "irq_block"])
    assert err.value.unknown == ["bpf_net_rx_irq", "bpf_net_tx_irq"]
    assert "bpf_net_tx_irq" in str(err.value)


def test_regression_duplicate_header() -> None:
    """model-server#162: block_devices_used sent twice → '16 columns passed, data had 15'."""
    with pytest.raises(FeatureNameError) as err:
        validate_feature_names(["cpu_time_ns", "irq_block", "irq_block"])
    assert err.value.duplicates == ["irq_block"]
    assert err.value.unknown == []
    assert "duplicate feature names ['irq_block']" in str(err.value)


def test_both_faults_named_at_once() -> None:
    with pytest.raises(FeatureNameError, match=r"unknown .*block_devices_used.*duplicate"):
        validate_feature_names(["block_devices_used", "block_devices_used"])
