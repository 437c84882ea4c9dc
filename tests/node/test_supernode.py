"""`--node-config` as slm-node join writes it must read back, through Flower's own parser, as
the same paths: the ClientApp finds the model and data by them."""

from __future__ import annotations

import pytest
from flwr.common.config import parse_config_args

from node.supernode import node_config_arg
from slm.errors import SLMError


@pytest.mark.parametrize(
    "path",
    [
        "/home/ana/models/law",
        '/home/ana/my models/law "v2"',
        "/data/ünïcode\\corpus",
        "/data/ana's corpus",
        "/data/line\nbreak",
    ],
)
def test_node_config_round_trips_through_flowers_parser(path: str) -> None:
    values = {"model": path, "domain": "law", "data": path + "-data"}
    assert parse_config_args([node_config_arg(values)]) == values


def test_a_path_flower_cannot_carry_is_a_clear_error() -> None:
    with pytest.raises(SLMError, match="both ' and"):
        node_config_arg({"data": '/data/it\'s a "corpus"'})
