"""Scorer parameters are checked at construction: a bad value is one ``ValueError`` naming the
scorer, the parameter, the value and what is allowed, not a failure deep inside ``fit``."""

from __future__ import annotations

import math
import numbers

import numpy as np
import pytest

from anomaly_inspect.features.extractor import Features
from anomaly_inspect.scorers import available_scorers, build_scorer, get_scorer_class
from anomaly_inspect.scorers.coreset import TwoRoundCoreset
from anomaly_inspect.scorers.ood_baselines import vim_fit
from anomaly_inspect.scorers.params import check_choice, check_number
from anomaly_inspect.scorers.tail_sampler import TailSampler

HEAD_SCORERS = ["msp", "energy", "max_logit", "head_nan", "head_feature_norm", "l2norm", "line",
                "react", "dice", "vim", "odin", "odin_feature"]
BANKS = ["patchcore", "softpatch", "tailedcore"]


# --- the helper ------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, value, message", [
    ({"low": 0, "high": 1, "low_open": True}, 0, "s: x must be a number in (0, 1], got 0"),
    ({"low": 0, "high": 1, "high_open": True}, 1.0, "s: x must be a number in [0, 1), got 1.0"),
    ({"low": 1, "whole": True}, 2.5, "s: x must be a whole number >= 1, got 2.5"),
    ({"low": 1, "whole": True}, 2.0, "s: x must be a whole number >= 1, got 2.0"),
    ({"low": 1, "whole": True}, True, "s: x must be a whole number >= 1, got True"),
    ({"low": 1, "whole": True}, "3", "s: x must be a whole number >= 1, got '3'"),
    ({"low": 0, "low_open": True}, math.nan, "s: x must be a number > 0, got nan"),
    ({"high": 5, "high_open": True}, 5, "s: x must be a number < 5, got 5"),
    ({"low": 1, "whole": True, "allowed": (None,)}, 0, "s: x must be a whole number >= 1 or None, got 0"),
    ({"low": 0, "high": 1, "low_open": True, "allowed": (None, "auto")}, "half",
     "s: x must be a number in (0, 1], None or 'auto', got 'half'"),
])
def test_check_number_names_owner_parameter_value_and_range(kwargs, value, message):
    with pytest.raises(ValueError) as err:
        check_number("s", "x", value, **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("kwargs, value", [
    ({"low": 0, "high": 1, "low_open": True}, 1),  # an int where a real number is asked
    ({"low": 0, "high": 1, "low_open": True}, np.float32(0.5)),
    ({"low": 0, "high": 1}, 0.0),
    ({"low": 1, "whole": True}, np.int64(1)),
    ({"low": 1, "whole": True}, np.uint8(7)),
    ({"low": 0, "low_open": True}, math.inf),
    ({"low": 1, "whole": True, "allowed": (None,)}, None),
    ({"low": 0, "high": 1, "allowed": (None, "auto")}, "auto"),
])
def test_check_number_accepts_numbers_in_range_and_the_allowed_values(kwargs, value):
    check_number("s", "x", value, **kwargs)


def test_check_choice():
    check_choice("s", "mode", "b", ("a", "b"))
    with pytest.raises(ValueError) as err:
        check_choice("s", "mode", "c", ("a", "b"))
    assert str(err.value) == "s: mode must be one of 'a', 'b', got 'c'"
    with pytest.raises(ValueError, match="s: mode must be one of 'a', 'b', got None"):
        check_choice("s", "mode", None, ("a", "b"))


# --- every scorer, every parameter -------------------------------------------------------------
BAD = [
    # PatchCore and its subclasses
    *[(s, p, v, f) for s in BANKS for p, v, f in [
        ("first_round_ratio", -1, "first_round_ratio must be a number in (0, 1], None or 'auto', got -1"),
        ("first_round_ratio", 2.0, "in (0, 1], None or 'auto', got 2.0"),
        ("first_round_ratio", 0, "in (0, 1], None or 'auto', got 0"),
        ("first_round_ratio", "half", "got 'half'"),
        ("index", "kdtree", "index must be one of 'auto', 'flat', 'hnsw', 'ivf', got 'kdtree'"),
        ("seed", -1, "seed must be a whole number >= 0, got -1"),
        ("seed", 1.0, "seed must be a whole number >= 0, got 1.0"),
        ("seed", None, "seed must be a whole number >= 0, got None"),
        ("coreset_ratio", 0, "coreset_ratio must be a number in (0, 1], got 0"),
        ("max_bank_items", 0, "max_bank_items must be a whole number >= 1 or None, got 0"),
    ]],
    # SoftPatch / TailedCore
    *[(s, p, v, f) for s in ("softpatch", "tailedcore") for p, v, f in [
        ("lof_k", 0, "lof_k must be a whole number >= 1, got 0"),
        ("lof_k", 2.5, "lof_k must be a whole number >= 1, got 2.5"),
        ("lof_discard", 1.0, "lof_discard must be a number in [0, 1), got 1.0"),
        ("lof_discard", -0.1, "lof_discard must be a number in [0, 1), got -0.1"),
        ("lof_projection_dim", 0, "lof_projection_dim must be a whole number >= 1 or None, got 0"),
        ("lof_projection_dim", 64.0, "got 64.0"),
    ]],
    ("tailedcore", "tail_keep", 0, "tail_keep must be a number in (0, 1], got 0"),
    ("tailedcore", "tail_keep", 1.5, "tail_keep must be a number in (0, 1], got 1.5"),
    ("tailedcore", "tail_mass", 0.0, "tail_mass must be a number in (0, 1), got 0.0"),
    ("tailedcore", "tail_mass", 1.0, "tail_mass must be a number in (0, 1), got 1.0"),
    ("tailedcore", "tail_coreset_ratio", 0, "tail_coreset_ratio must be a number in (0, 1] or None, got 0"),
    ("tailedcore", "tail_coreset_ratio", 1.5, "got 1.5"),
    ("tailedcore", "embedding", "mean", "embedding must be one of 'pooled', 'patch_mean', got 'mean'"),
    # distance scorers
    *[(s, p, v, f) for s in ("knn", "knn_nan") for p, v, f in [
        ("k", 2.5, "k must be a whole number >= 1, got 2.5"),
        ("k", "3", "k must be a whole number >= 1, got '3'"),
        ("k", 0, "k must be a whole number >= 1, got 0"),
        ("k", True, "k must be a whole number >= 1, got True"),
        ("reduction", "max", "reduction must be one of 'kth', 'mean', got 'max'"),
    ]],
    ("mahalanobis", "shrinkage", 1.5, "shrinkage must be a number in (0, 1] or None, got 1.5"),
    ("mahalanobis", "shrinkage", -0.1, "shrinkage must be a number in (0, 1] or None, got -0.1"),
    # 0 left the covariance singular: blind to directions in which no training image varies
    ("mahalanobis", "shrinkage", 0, "shrinkage must be a number in (0, 1] or None, got 0"),
    ("mahalanobis", "shrinkage", 0.0, "shrinkage must be a number in (0, 1] or None, got 0.0"),
    ("mahalanobis", "shrinkage", "0.1", "got '0.1'"),
    ("patch_mahalanobis", "batch_size", 0, "batch_size must be a whole number >= 1, got 0"),
    ("patch_mahalanobis", "batch_size", 32.0, "batch_size must be a whole number >= 1, got 32.0"),
    ("patch_mahalanobis", "shrinkage", 2, "shrinkage must be a number in (0, 1], got 2"),
    ("patch_mahalanobis", "shrinkage", 0, "shrinkage must be a number in (0, 1], got 0"),
    ("feature_norm", "p", 0, "p must be a number > 0, got 0"),
    ("feature_norm", "p", -2.0, "p must be a number > 0, got -2.0"),
    ("feature_norm", "p", "fro", "p must be a number > 0, got 'fro'"),
    # the classifier head, shared by every head scorer
    *[(s, p, v, f) for s in HEAD_SCORERS for p, v, f in [
        ("hidden", 0, "hidden must be a whole number >= 1, got 0"),
        ("hidden", 16.0, "hidden must be a whole number >= 1, got 16.0"),
        ("epochs", 0, "epochs must be a whole number >= 1, got 0"),
        ("batch_size", 2.5, "batch_size must be a whole number >= 1, got 2.5"),
        ("seed", -1, "seed must be a whole number >= 0, got -1"),
        ("dropout", 1.0, "dropout must be a number in [0, 1), got 1.0"),
        ("dropout", -0.1, "dropout must be a number in [0, 1), got -0.1"),
        ("lr", 0, "lr must be a number > 0, got 0"),
        ("weight_decay", -1e-4, "weight_decay must be a number >= 0, got -0.0001"),
    ]],
    ("line", "clip_value", 0, "clip_value must be a number > 0 or None, got 0"),
    ("line", "clip_value", -1.0, "clip_value must be a number > 0 or None, got -1.0"),
    ("line", "p_a", 101, "p_a must be a number in [0, 100), got 101"),
    ("line", "p_w", 100, "p_w must be a number in [0, 100), got 100"),
    ("react", "percentile", 0, "percentile must be a number in (0, 100], got 0"),
    ("dice", "sparsity", 100, "sparsity must be a number in [0, 100), got 100"),
    ("vim", "dim", 256, "dim must be a whole number in [1, 255] or None, got 256"),
    ("vim", "dim", 0, "dim must be a whole number in [1, 255] or None, got 0"),
    ("odin", "temperature", 0, "temperature must be a number > 0, got 0"),
    ("odin_feature", "epsilon", -0.1, "epsilon must be a number >= 0, got -0.1"),
]


@pytest.mark.parametrize("scorer, param, value, fragment", BAD, ids=lambda x: repr(x)[:40])
def test_a_bad_parameter_fails_at_construction_naming_it(scorer, param, value, fragment):
    with pytest.raises(ValueError) as err:
        build_scorer(scorer, **{param: value})
    message = str(err.value)
    assert message.startswith(f"{scorer}: {param} must be "), message
    assert fragment in message and "\n" not in message


def _numeric_params():
    """(scorer, parameter) for every constructor parameter whose default is a number."""
    import inspect

    for name in available_scorers():
        cls = get_scorer_class(name)
        signature = inspect.signature(cls.__init__).parameters
        for param in cls.constructor_params():
            default = signature[param].default
            if isinstance(default, numbers.Real) and not isinstance(default, bool):
                yield name, param


NUMERIC = list(_numeric_params())


def test_the_numeric_parameter_sweep_covers_every_family():
    assert {s for s, _ in NUMERIC} >= {"patchcore", "softpatch", "tailedcore", "knn", "knn_nan",
                                        "patch_mahalanobis", "feature_norm", *HEAD_SCORERS}
    assert len(NUMERIC) > 100


@pytest.mark.parametrize("scorer, param", NUMERIC)
def test_every_numeric_parameter_refuses_a_string(scorer, param):
    with pytest.raises(ValueError, match=rf"^{scorer}: {param} must be .*, got '1'$"):
        build_scorer(scorer, **{param: "1"})


@pytest.mark.parametrize("name", available_scorers())
def test_every_registered_scorer_constructs_with_its_defaults(name):
    import inspect

    cls = get_scorer_class(name)
    scorer = build_scorer(name)
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if k in scorer.get_params()}
    assert scorer.get_params() == defaults


VALID_EDGES = [
    *[(s, {"first_round_ratio": v}) for s in BANKS for v in (None, "auto", 1, 1.0, 1e-6)],
    *[(s, {"index": k}) for s in BANKS for k in ("auto", "flat", "hnsw", "ivf")],
    *[(s, {"seed": v}) for s in BANKS for v in (0, np.int64(7))],
    ("patchcore", {"coreset_ratio": 1, "num_neighbors": np.int32(3), "max_bank_items": 1,
                   "projection_dim": None, "chunk_size": None}),
    ("softpatch", {"lof_k": 1, "lof_discard": 0, "lof_projection_dim": None}),
    ("softpatch", {"lof_k": np.int64(6), "lof_discard": 0.999, "lof_projection_dim": np.int16(1)}),
    ("tailedcore", {"tail_keep": 1, "tail_mass": 0.999, "tail_coreset_ratio": 1.0}),
    ("tailedcore", {"tail_keep": 1e-3, "tail_mass": 1e-3, "tail_coreset_ratio": None,
                    "embedding": "patch_mean"}),
    ("knn", {"k": 1}), ("knn", {"k": np.int64(20), "reduction": "mean"}),
    ("knn_nan", {"k": np.uint8(3)}),
    ("mahalanobis", {"shrinkage": 1e-9}), ("mahalanobis", {"shrinkage": 1.0}),
    ("mahalanobis", {"shrinkage": None}), ("mahalanobis", {"shrinkage": np.float32(0.5)}),
    ("patch_mahalanobis", {"batch_size": 1, "shrinkage": 1e-9}),
    ("patch_mahalanobis", {"batch_size": np.int64(8), "shrinkage": 1}),
    ("feature_norm", {"p": 1}), ("feature_norm", {"p": 0.5}), ("feature_norm", {"p": np.inf}),
    *[(s, {"hidden": 1, "epochs": 1, "batch_size": 1, "seed": 0, "dropout": 0, "lr": 1e-9,
           "weight_decay": 0}) for s in HEAD_SCORERS if s != "vim"],
    *[(s, {"hidden": np.int64(8), "dropout": 0.999, "seed": np.int32(3)}) for s in HEAD_SCORERS],
    ("line", {"clip_value": 1e-6}), ("line", {"clip_value": None}),
    ("line", {"p_a": 0, "p_w": 99.9, "clip_percentile": 100}),
    ("react", {"percentile": 100}), ("dice", {"sparsity": 0}),
    ("vim", {"dim": 1}), ("vim", {"dim": 255}), ("vim", {"dim": None}), ("vim", {"hidden": 8, "dim": 7}),
    ("odin", {"epsilon": 0}), ("odin_feature", {"temperature": 1e-3}),
]


@pytest.mark.parametrize("scorer, params", VALID_EDGES, ids=lambda x: repr(x)[:50])
def test_valid_edge_values_are_accepted_and_kept_as_given(scorer, params):
    got = build_scorer(scorer, **params).get_params()
    for key, value in params.items():
        assert got[key] is value


# --- first_round_ratio, the coreset builder and TailSampler ----------------------------------
@pytest.mark.parametrize("value", [-1, 0, 2.0, "half", True])
def test_the_coreset_builder_refuses_a_first_round_ratio_it_used_to_clamp(value):
    # before: -1 kept `ratio` of each chunk and 2.0 kept every row, silently
    with pytest.raises(ValueError, match=r"^coreset: first_round_ratio must be a number in \(0, 1\], "
                                         r"None or 'auto', got "):
        TwoRoundCoreset(0.1, first_round_ratio=value)


def test_first_round_ratio_one_keeps_every_row_of_a_chunk():
    assert TwoRoundCoreset(0.1, first_round_ratio=1).keep_ratio == 1.0
    assert TwoRoundCoreset(0.1, first_round_ratio=0.05).keep_ratio == 0.1  # never below the ratio


@pytest.mark.parametrize("kwargs, message", [
    ({"keep": 0}, "TailSampler: keep must be a number in (0, 1], got 0"),
    ({"tail_mass": 1}, "TailSampler: tail_mass must be a number in (0, 1), got 1"),
])
def test_tail_sampler_names_the_bad_setting(kwargs, message):
    with pytest.raises(ValueError) as err:
        TailSampler(**kwargs)
    assert str(err.value) == message


# --- ViM: more training images than its principal dimension --------------------------------
def test_vim_fit_with_no_more_rows_than_dim_is_degenerate():
    # why ViM.fit refuses it: 2 rows in 3 dimensions with dim = 2 span the principal subspace,
    # so every training residual is ~0 and alpha = mean max-logit / ~0 would explode
    w, b = np.eye(3), np.zeros(3)
    a_train = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    with pytest.raises(ValueError, match="vim: the training features span no residual space"):
        vim_fit(a_train, w, b, dim=2)
    _, _, alpha = vim_fit(np.vstack([a_train, [0.0, 0.0, 0.5]]), w, b, dim=2)  # 3 rows > dim
    assert alpha == pytest.approx(7.0)  # mean max logit 3.5 / 3 over mean residual 0.5 / 3


def _two_classes(n: int) -> tuple[Features, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.normal(0, 1, (n, 6)) + np.where(y[:, None] == 1, 2.0, -2.0)
    return Features(pooled=x.astype(np.float32)), y


@pytest.mark.parametrize("params, n, dim", [({"hidden": 8}, 4, 4), ({"hidden": 8}, 3, 4),
                                            ({"hidden": 8, "dim": 6}, 6, 6)])
def test_vim_refuses_at_fit_no_more_training_images_than_dim(params, n, dim, monkeypatch):
    import anomaly_inspect.scorers.classifier_scorers as heads

    def no_training(*args, **kwargs):
        raise AssertionError("the head was trained before the image count was checked")

    monkeypatch.setattr(heads, "train_head", no_training)
    features, y = _two_classes(n)
    with pytest.raises(ValueError) as err:
        build_scorer("vim", epochs=5, **params).fit(features, y)
    assert str(err.value) == f"vim needs more training images than dim={dim}, got {n}"


def test_vim_fits_with_one_more_training_image_than_dim():
    features, y = _two_classes(5)  # hidden 8 -> dim 4
    vim = build_scorer("vim", hidden=8, epochs=5).fit(features, y)
    assert vim.principal_dim == 4 and vim.residual.shape == (8, 4)
    assert np.isfinite(vim.alpha) and vim.alpha < 1e6
    assert np.isfinite(vim.score(features).image_scores).all()


@pytest.mark.parametrize("scorer, param", [
    ("knn", "normalize"), ("mahalanobis", "class_conditional"), ("softpatch", "soft_weight"),
    ("msp", "standardize"), ("vim", "standardize"),
    ("line", "standardize"), ("head_nan", "l2_normalize"),
])
def test_switches_take_true_or_false_only(scorer, param):
    from anomaly_inspect.scorers import build_scorer, get_scorer_class

    runtime = get_scorer_class(scorer).runtime_kwargs(progress=False)
    for value in (True, False, np.bool_(True)):
        assert build_scorer(scorer, **{param: value}, **runtime).get_params()[param] == value
    with pytest.raises(ValueError, match=rf"{scorer}: {param} must be true or false.*got 'false'"):
        build_scorer(scorer, **{param: "false"}, **runtime)  # truthy: would have meant true
