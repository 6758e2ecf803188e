"""Scorer subclasses hand their parent's parameters on by keyword: a parameter added to a
parent (anywhere in its list) must not shift ``seed`` / ``progress`` / ``patch_maps`` or any
other value into the wrong slot."""

from __future__ import annotations

import inspect

import pytest

from anomaly_inspect.scorers import get_scorer_class

BANK = {"coreset_ratio": 0.25, "max_bank_items": 500, "projection_dim": 32, "chunk_size": 1024,
        "first_round_ratio": 0.5, "index": "flat", "num_neighbors": 3, "seed": 7,
        "progress": False, "patch_maps": False}
LOF = {"lof_k": 4, "lof_discard": 0.05, "lof_projection_dim": 16}
HEAD = {"hidden": 16, "epochs": 5, "lr": 0.01, "weight_decay": 0.001, "batch_size": 8,
        "dropout": 0.1, "seed": 7, "standardize": False}
ODIN = {"temperature": 10.0, "epsilon": 0.01, **HEAD}
#: every constructor parameter of each subclass scorer, none at its default
NON_DEFAULT = {
    "softpatch": {**BANK, **LOF, "soft_weight": True},
    "tailedcore": {**BANK, **LOF, "tail_coreset_ratio": 0.3, "tail_keep": 0.7, "tail_mass": 0.2,
                   "embedding": "patch_mean", "tail_views": "rot45flip"},
    "react": {"percentile": 80.0, **HEAD},
    "dice": {"sparsity": 70.0, **HEAD},
    "vim": {"dim": 5, **HEAD},
    "line": {"p_a": 80.0, "p_w": 70.0, "clip_percentile": 95.0, "clip_value": 2.5, **HEAD},
    "odin": ODIN,
    "odin_feature": ODIN,
}


def _ancestor_inits(cls: type) -> list[type]:
    """The classes past ``cls``'s own constructor whose ``__init__`` it reaches by super()."""
    owners = [c for c in cls.__mro__ if "__init__" in c.__dict__
              and c.__module__.startswith("anomaly_inspect.")]
    return owners[1:]


def _check_kept(name: str, scorer) -> None:
    params = NON_DEFAULT[name]
    for key, value in params.items():
        got = getattr(scorer, key)
        assert got == value and type(got) is type(value), f"{name}.{key}: {got!r} != {value!r}"
    runtime = type(scorer).runtime_params
    assert scorer.get_params() == {k: v for k, v in params.items() if k not in runtime}


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_the_table_names_every_parameter_off_its_default(name):
    signature = inspect.signature(get_scorer_class(name).__init__).parameters
    params = NON_DEFAULT[name]
    assert set(params) == set(signature) - {"self"}
    assert all(signature[k].default != v for k, v in params.items())
    assert _ancestor_inits(get_scorer_class(name))  # a subclass: it calls a parent's __init__


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_a_subclass_keeps_every_parameter_as_given(name):
    _check_kept(name, get_scorer_class(name)(**NON_DEFAULT[name]))


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_a_parameter_added_first_to_a_parent_shifts_nothing(name, monkeypatch):
    # every parent's constructor takes a new (defaulted) first parameter: a positional
    # super().__init__(...) call would hand each value to its left neighbour
    def with_added_first(init):
        def shifted(self, added_first=None, *args, **kwargs):
            assert added_first is None, f"a positional argument reached {init.__qualname__}"
            init(self, *args, **kwargs)
        return shifted

    cls = get_scorer_class(name)
    for parent in _ancestor_inits(cls):
        monkeypatch.setattr(parent, "__init__", with_added_first(parent.__dict__["__init__"]))
    _check_kept(name, cls(**NON_DEFAULT[name]))


@pytest.mark.parametrize("name", ["react", "dice", "vim", "odin", "odin_feature"])
def test_post_hoc_head_scorers_train_without_l2_normalisation(name):
    assert get_scorer_class(name)(**NON_DEFAULT[name]).l2_normalize is False
