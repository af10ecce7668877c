"""The homogeneous view of Graph3: offsets, symmetry and D^-1/2 A D^-1/2 worked out by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.data import HeteroData

from graphrec_dist.data.bundle import BOOK, RATES, REV_RATES, SIMILAR, USER, Bundle
from graphrec_dist.data.homogeneous import homogeneous_view


def _tiny() -> Bundle:
    g = HeteroData()
    g[USER].num_nodes, g[BOOK].num_nodes, g["tag"].num_nodes = 2, 2, 1
    ei = torch.tensor([[0, 1], [0, 1]])
    g[RATES].edge_index, g[RATES].edge_weight = ei, torch.ones(2)
    g[REV_RATES].edge_index, g[REV_RATES].edge_weight = ei.flip(0), torch.ones(2)
    g[BOOK, "has_tag", "tag"].edge_index = torch.tensor([[0], [0]])
    g[BOOK, "has_tag", "tag"].edge_weight = torch.tensor([3.0])
    g["tag", "rev_has_tag", BOOK].edge_index = torch.tensor([[0], [0]])
    g["tag", "rev_has_tag", BOOK].edge_weight = torch.tensor([3.0])
    g[SIMILAR].edge_index = torch.tensor([[0, 1], [1, 0]])
    g[SIMILAR].edge_weight = torch.tensor([0.5, 0.5])
    empty = torch.zeros(0, 2, dtype=torch.long)
    return Bundle(g, ei.T.contiguous(), empty, empty, pd.DataFrame({"book_id": [1, 2]}),
                  pd.DataFrame({"user_id": [1, 2]}))


def _dense(view) -> np.ndarray:
    a = np.zeros((view.num_nodes, view.num_nodes))
    a[view.edge_index[0].numpy(), view.edge_index[1].numpy()] = view.edge_weight.numpy()
    return a


def test_all_relations_by_hand() -> None:
    view = homogeneous_view(_tiny())
    assert view.offsets == {"user": 0, "book": 2, "tag": 4}
    assert view.num_nodes == 5
    # A: u0-b0 1, u1-b1 1, b0-t0 3, b0-b1 0.5 (stored both ways, counted once).
    # degrees: u0 1, u1 1, b0 4.5, b1 1.5, t0 3
    a = _dense(view)
    assert a[0, 2] == pytest.approx(1 / np.sqrt(1 * 4.5))
    assert a[2, 4] == pytest.approx(3 / np.sqrt(4.5 * 3))
    assert a[2, 3] == pytest.approx(0.5 / np.sqrt(4.5 * 1.5))
    assert np.allclose(a, a.T)
    assert view.edge_index.dtype == torch.int64 and view.edge_weight.dtype == torch.float32
    assert view.edge_index.shape[1] == 8


def test_rates_only() -> None:
    view = homogeneous_view(_tiny(), [RATES])
    assert view.offsets == {"user": 0, "book": 2}
    a = _dense(view)
    assert a[0, 2] == pytest.approx(1.0) and a[3, 1] == pytest.approx(1.0)
    assert view.edge_index.shape[1] == 4


def test_unknown_edge_type() -> None:
    with pytest.raises(KeyError):
        homogeneous_view(_tiny(), [(USER, "likes", BOOK)])
