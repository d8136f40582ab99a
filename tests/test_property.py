"""A random sequence of operations agrees with a simple model, before and after a reopen."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from layerstore import DuplicateName, LayerHasChildren, LayerStore, LayerUnknown

# Letters past "f", so a name can never be read as an id prefix.
NAMES = st.sampled_from(["kilo", "lima", "mike", "november", "oscar", "papa"])


class StoreMachine(RuleBasedStateMachine):
    layers = Bundle("layers")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="layerstore-property-")
        self.store = LayerStore(self.directory, driver="vfs")
        self.names: dict[str, list[str]] = {}  # id -> names, in order
        self.parents: dict[str, str] = {}
        self.live: list[str] = []

    def owner(self, name: str) -> str | None:
        return next((i for i, names in self.names.items() if name in names), None)

    def take(self, layer_id: str, names: list[str]) -> None:
        for other, other_names in self.names.items():
            if other != layer_id:
                other_names[:] = [n for n in other_names if n not in names]

    @rule(target=layers, names=st.lists(NAMES, max_size=3), use_parent=st.booleans())
    def create(self, names: list[str], use_parent: bool) -> str:
        parent = self.live[-1] if use_parent and self.live else None
        wanted = list(dict.fromkeys(names))
        if any(self.owner(name) for name in wanted):
            with pytest.raises(DuplicateName):
                self.store.create(parent=parent, names=wanted)
            return ""
        layer = self.store.create(parent=parent, names=wanted)
        self.names[layer.id] = wanted
        self.parents[layer.id] = parent or ""
        self.live.append(layer.id)
        return layer.id

    @rule(layer_id=layers, names=st.lists(NAMES, max_size=3))
    def add_names(self, layer_id: str, names: list[str]) -> None:
        if layer_id not in self.names:
            return
        self.store.add_names(layer_id, names)
        self.take(layer_id, names)
        self.names[layer_id] = list(dict.fromkeys(self.names[layer_id] + names))

    @rule(layer_id=layers, names=st.lists(NAMES, max_size=3))
    def remove_names(self, layer_id: str, names: list[str]) -> None:
        if layer_id not in self.names:
            return
        self.store.remove_names(layer_id, names)
        self.names[layer_id] = [n for n in self.names[layer_id] if n not in names]

    @rule(layer_id=layers, names=st.lists(NAMES, max_size=3))
    def set_names(self, layer_id: str, names: list[str]) -> None:
        if layer_id not in self.names:
            return
        self.store.set_names(layer_id, names)
        self.take(layer_id, names)
        self.names[layer_id] = list(dict.fromkeys(names))

    @rule(layer_id=layers)
    def delete(self, layer_id: str) -> None:
        if layer_id not in self.names:
            with pytest.raises(LayerUnknown):
                self.store.delete(layer_id or "no-such-layer")
            return
        if any(parent == layer_id for parent in self.parents.values()):
            with pytest.raises(LayerHasChildren):
                self.store.delete(layer_id)
            return
        self.store.delete(layer_id)
        del self.names[layer_id]
        del self.parents[layer_id]
        self.live.remove(layer_id)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = LayerStore(self.directory, driver="vfs")

    @invariant()
    def lookups_agree(self) -> None:
        for name in ["kilo", "lima", "mike", "november", "oscar", "papa"]:
            owner = self.owner(name)
            if owner is None:
                assert not self.store.exists(name)
            else:
                assert self.store.lookup(name) == owner
        for layer in self.store.layers():
            assert list(layer.names) == self.names[layer.id]
            assert layer.parent == self.parents[layer.id]
        assert sorted(layer.id for layer in self.store.layers()) == sorted(self.names)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


StoreMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_store_agrees_with_model = StoreMachine.TestCase
