"""A running node (in-process, real TCP listener) and helpers to drive it with dcmtk tools."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node.demo.fallback_atlas import with_default_atlas
from node.demo.ports import free_port
from node.service import Node, start_node
from node.settings import Settings, load_settings
from tests.support.dcmtk import PEER_AES


@pytest.fixture
def node_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Write a settings file for a node in tmp_path; keyword arguments are extra TOML lines per section."""

    def make(port: int | None = None, **sections: str) -> Settings:
        node_extra = sections.pop("node", "")
        storage_extra = sections.pop("storage", "")
        text = (
            f'[node]\nport = {port or free_port()}\nallowed_calling_ae_titles = {PEER_AES!r}\n'
            f'acse_timeout_s = 5\nnetwork_timeout_s = 10\n{node_extra}\n'
            f'[storage]\nroot = "store"\ndatabase_url = "sqlite:///myonode.db"\n{storage_extra}\n'
        ).replace("'", '"')
        sections.setdefault("web", "")
        sections["web"] = f"port = {free_port()}\n" + sections["web"]
        for section, body in sections.items():
            text += f"[{section}]\n{body}\n"
        path = tmp_path / "settings.toml"
        path.write_text(text)
        return with_default_atlas(load_settings(path, environ={}))

    return make


@pytest.fixture
def running_node(node_settings: Callable[..., Settings]) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(port: int | None = None, **sections: str) -> Node:
        node = start_node(node_settings(port, **sections))
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def node(running_node: Callable[..., Node]) -> Node:
    """A node with the default policy, listening on a free loopback port."""
    return running_node()
