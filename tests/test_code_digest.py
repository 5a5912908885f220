"""Code digests cover every module a head's code comes from: a head shared by two plugins from a package module
(HyRSM and HyRSM++ from ``fsar_bench.model.hyrsm_family``) is hashed with each, so that editing the shared code
never reuses either method's checkpoints, runs or cached encodings; other methods' digests are not touched.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from fsar_bench.code_digest import SCORING_MODULES, TRAINING_MODULES, changed_modules, code_digest, head_modules
from fsar_bench.evaluation.cache import code_sha256
from fsar_bench.model.registry import discover_methods
from tests.conftest import PROJECT_ROOT

SHARED = "fsar_bench.model.hyrsm_family"
REGISTRY = discover_methods(PROJECT_ROOT / "methods", entry_points=False)
HEADS = {name: REGISTRY.get(name).card.head for name in REGISTRY.names()}


def digests(head_class: type) -> dict[str, object]:
    """Every key the harness derives from a head's code: checkpoints, runs and cached encodings."""
    return {"training": code_digest(head_class, TRAINING_MODULES), "scoring": code_digest(head_class, SCORING_MODULES),
            "encoding": code_sha256(head_class)}


def edited_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module_name: str) -> None:
    """Make the digests read ``module_name`` from a copy with one more line, as if its file had been edited."""
    real = inspect.getsourcefile
    edited = tmp_path / "edited.py"

    def source_file(obj: object) -> str | None:
        path = real(obj)
        if getattr(obj, "__name__", None) == module_name:
            edited.write_text(Path(path).read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
            return str(edited)
        return path

    monkeypatch.setattr(inspect, "getsourcefile", source_file)


@pytest.mark.parametrize("method", ["hyrsm", "hyrsmpp"])
def test_the_shared_hyrsm_head_is_in_both_digests(method: str) -> None:
    head = HEADS[method]
    assert head.__module__ == f"fsar_bench_plugins.{method}"
    assert head_modules(head)[:2] == [head.__module__, SHARED]
    for module_names in (TRAINING_MODULES, SCORING_MODULES):
        assert SHARED in code_digest(head, module_names)


@pytest.mark.parametrize("method", ["hyrsm", "hyrsmpp"])
def test_editing_the_shared_hyrsm_head_changes_the_method_digests(method: str, monkeypatch, tmp_path) -> None:
    before = digests(HEADS[method])
    edited_copy(monkeypatch, tmp_path, SHARED)
    after = digests(HEADS[method])
    for kind in ("training", "scoring"):
        assert before[kind] != after[kind], f"{method}'s {kind} digest missed an edit of {SHARED}"
        (changed,) = changed_modules(before[kind], after[kind])  # the edited file is named, nothing else
        assert changed.startswith(f"{SHARED} (") and changed.endswith("hyrsm_family.py)")
    assert before["encoding"] != after["encoding"], f"{method}'s cached encodings would survive an edit of {SHARED}"


def test_editing_the_shared_hyrsm_head_leaves_other_methods_alone(monkeypatch, tmp_path) -> None:
    others = [name for name in HEADS if name not in ("hyrsm", "hyrsmpp")]
    before = {name: digests(HEADS[name]) for name in others}
    edited_copy(monkeypatch, tmp_path, SHARED)
    assert {name: digests(HEADS[name]) for name in others} == before


@pytest.mark.parametrize("method", sorted(HEADS))
def test_every_module_of_a_heads_classes_is_digested(method: str) -> None:
    """Any fsar-bench or plugin module the head class (or a class it derives from) is defined in is hashed; the
    digest of a head deriving from FewShotHead alone is its own module and the listed modules, nothing more."""
    head = HEADS[method]
    ours = {cls.__module__ for cls in head.__mro__
            if cls.__module__.split(".")[0] in ("fsar_bench", "fsar_bench_plugins")}
    for module_names in (TRAINING_MODULES, SCORING_MODULES):
        digest = code_digest(head, module_names)
        assert ours <= set(digest), ours - set(digest)
        extra = {SHARED} if method in ("hyrsm", "hyrsmpp") else set()
        assert set(digest) == {head.__module__, *extra, *module_names}


def test_a_base_head_executed_from_a_file_without_registering_is_hashed_from_that_file(tmp_path):
    """A plugin may derive from another plugin's file loaded with ``importlib.util.module_from_spec`` (not put in
    ``sys.modules``): the base's file is still hashed under its module name (it raised KeyError under torchrun)."""
    import hashlib
    import importlib.util

    spec = importlib.util.spec_from_file_location("unregistered_otam", PROJECT_ROOT / "methods" / "otam.py")
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    derived = type("DerivedOTAM", (base.OTAMHead,), {"__module__": __name__})
    digest = code_digest(derived, ())
    expected = hashlib.sha256((PROJECT_ROOT / "methods" / "otam.py").read_bytes()).hexdigest()
    assert digest["unregistered_otam"] == expected and __name__ in digest


def test_a_backbone_plugin_installed_from_elsewhere_is_hashed_with_the_method(tmp_path, monkeypatch):
    """Checkpoints, runs and encodings also depend on the backbone's code: a plugin backbone outside the package
    (entry point or file) joins the digest through its card's ``build``; the shipped ones are listed already."""
    import hashlib
    import importlib

    from fsar_bench.code_digest import backbone_code

    source = "from fsar_bench.backbones.small_cnn import SmallCNN\n\n\ndef build(weights, image_size):\n    return SmallCNN()\n"
    (tmp_path / "thirdparty_backbone.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = importlib.import_module("thirdparty_backbone")
    head = HEADS["otam"]
    plain = code_digest(head, TRAINING_MODULES)
    with_plugin = code_digest(head, TRAINING_MODULES, (plugin.build,))
    assert set(with_plugin) - set(plain) == {"thirdparty_backbone"}
    assert with_plugin["thirdparty_backbone"] == hashlib.sha256(source.encode()).hexdigest()
    for shipped in ("small-cnn", "resnet50"):
        assert code_digest(head, TRAINING_MODULES, backbone_code(shipped)) == plain
        assert code_sha256(head, backbone_code(shipped)) == code_sha256(head)
