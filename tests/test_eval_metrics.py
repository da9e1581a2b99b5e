"""Ranking metrics against hand-computed values: nDCG@k, recall@k and MRR@k.

Cases cover graded relevance, duplicates in a ranking and queries with nothing relevant.
"""

from __future__ import annotations

import math

import pytest

from agentkit.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k


def test_ndcg_is_one_for_the_ideal_ranking_and_zero_for_none() -> None:
    rel = {"a": 2, "b": 1}
    assert ndcg_at_k(["a", "b", "x"], rel, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], rel, 10) == 0.0
    assert ndcg_at_k(["a"], {}, 10) == 0.0


def test_ndcg_discounts_by_rank_with_linear_gain() -> None:
    # "b" (grade 1) first, "a" (grade 2) second.
    dcg = 1 / math.log2(2) + 2 / math.log2(3)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 10) == pytest.approx(dcg / idcg)


def test_cutoff_and_duplicates() -> None:
    rel = {"a": 1}
    assert ndcg_at_k(["x", "a"], rel, 1) == 0.0
    # A repeated id is not credited twice and does not push others out of the cutoff.
    assert ndcg_at_k(["a", "a"], {"a": 1, "b": 1}, 2) == ndcg_at_k(["a"], {"a": 1, "b": 1}, 2)
    assert recall_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 2) == 1.0


def test_recall_and_mrr() -> None:
    rel = {"a": 1, "b": 1, "c": 0}
    assert recall_at_k(["x", "a", "c"], rel, 3) == 0.5
    assert mrr_at_k(["x", "c", "b"], rel, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "c", "b"], rel, 2) == 0.0
    assert recall_at_k(["a"], {}, 3) == 0.0
