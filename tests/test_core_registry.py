"""Plugin discovery: a dropped-in file appears; a broken one is reported by file and line; duplicates."""

from __future__ import annotations

import textwrap

import pytest

from fsar_bench.errors import UnknownNameError, UsageError
from fsar_bench.model.registry import discover_methods
from tests.conftest import PROJECT_ROOT

PLUGIN = textwrap.dedent('''
    """A temporal-mean-pool control for tests."""
    import torch
    from fsar_bench.api import FewShotHead, MethodCard

    class MeanPoolHead(FewShotHead):
        def encode(self, features):                # [V, T, d] -> [V, d]
            return features.mean(dim=1)

        def logits(self, support, query):          # [E, N, K, d], [E, Q, d] -> [E, Q, N]
            prototypes = support.mean(dim=2)
            return -torch.cdist(query, prototypes)

    CARDS = (MethodCard(name="{name}", head=MeanPoolHead, summary="test plugin"),)
''')


def test_shipped_methods_are_listed_with_their_origin():
    registry = discover_methods(PROJECT_ROOT / "methods", entry_points=False)
    assert {"otam", "tsn", "trx", "hyrsm", "molo", "hyrsmpp", "strm", "team"} <= set(registry.names())
    assert registry.get("otam").origin.endswith("methods/otam.py")
    assert not registry.failures


def test_dropped_in_file_is_discovered(tmp_path):
    (tmp_path / "mymethod.py").write_text(PLUGIN.format(name="mymethod"))
    registry = discover_methods(tmp_path, entry_points=False)
    assert registry.names() == ["mymethod"]
    assert registry.get("mymethod").origin == str(tmp_path / "mymethod.py")


def test_syntax_error_is_reported_by_file_and_line_and_others_still_work(tmp_path):
    (tmp_path / "good.py").write_text(PLUGIN.format(name="good"))
    (tmp_path / "broken.py").write_text("import torch\n\ndef oops(:\n    pass\n")
    registry = discover_methods(tmp_path, entry_points=False)
    assert registry.names() == ["good"]
    [failure] = registry.failures
    assert failure.origin == f"{tmp_path / 'broken.py'}:3"
    assert "SyntaxError" in failure.message


def test_import_error_is_reported_with_its_line(tmp_path):
    (tmp_path / "needs.py").write_text("x = 1\nimport not_a_real_package_xyz\n")
    [failure] = discover_methods(tmp_path, entry_points=False).failures
    assert failure.origin.endswith("needs.py:2") and "not_a_real_package_xyz" in failure.message


def test_file_without_cards_is_reported(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    [failure] = discover_methods(tmp_path, entry_points=False).failures
    assert "defines no CARDS" in failure.message


def test_duplicate_names_name_both_origins(tmp_path):
    (tmp_path / "a.py").write_text(PLUGIN.format(name="same"))
    (tmp_path / "b.py").write_text(PLUGIN.format(name="same"))
    registry = discover_methods(tmp_path, entry_points=False)
    with pytest.raises(UsageError, match=r"defined twice: .*a\.py and .*b\.py"):
        registry.get("same")


def test_unknown_name_suggests_close_matches():
    registry = discover_methods(PROJECT_ROOT / "methods", entry_points=False)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'otam'"):
        registry.get("otma")


def test_entry_point_plugins_register(monkeypatch, tmp_path):
    import importlib.metadata
    import sys

    (tmp_path / "ep_plugin_mod.py").write_text(PLUGIN.format(name="from-entry-point"))
    monkeypatch.syspath_prepend(str(tmp_path))
    point = importlib.metadata.EntryPoint(name="x", value="ep_plugin_mod", group="fsar_bench.methods")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [point] if group == "fsar_bench.methods" else [])
    registry = discover_methods(None)
    assert registry.names() == ["from-entry-point"]
    assert registry.get("from-entry-point").origin.startswith("entry point x")
    sys.modules.pop("ep_plugin_mod", None)


def test_readme_plugin_example_is_listed_and_scores_episodes(tmp_path):
    import re

    import torch

    from fsar_bench.api import HeadConfig

    readme = (PROJECT_ROOT / "README.md").read_text()
    code = re.search(r"`methods/(\w+\.py)`:\n\n```python\n(.*?)```", readme, re.S)
    assert code, "README's 'Add a method' section has no plugin example"
    (tmp_path / code.group(1)).write_text(code.group(2))
    registry = discover_methods(tmp_path, entry_points=False)
    assert not registry.failures
    [name] = registry.names()
    head = registry.get(name).card.head(HeadConfig(dim=16, frames=8, num_base_classes=10))
    support = head.encode(torch.randn(2 * 5 * 3, 8, 16)).reshape(2, 5, 3, -1)
    query = head.encode(torch.randn(2 * 5, 8, 16)).reshape(2, 5, -1)
    assert head.logits(support, query).shape == (2, 5, 5)
