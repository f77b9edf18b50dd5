"""fd.py, the finite-difference kernel, on outputs whose differences are known exactly."""

from __future__ import annotations

import torch

from gradcheck_cli.fd import BaseOutputs, Differences, attributed_differences, loss_differences, ulp_of

D = dict(dtype=torch.float64)


def base(y, w=None):
    y = torch.tensor(y, **D)
    w = torch.ones_like(y) if w is None else torch.tensor(w, **D)
    return BaseOutputs(y, w, torch.zeros_like(y), ulp_of(y, torch.float64))


def test_central_and_one_sided_slopes_of_both_losses():
    """y = x^2 at x = 3 moved by h = 0.5 (all exact in float64): L2 = y^2/2 = x^4/2."""
    b = base([9.0], [2.0])
    yp, ym = torch.tensor([[3.5**2]], **D), torch.tensor([[2.5**2]], **D)
    h = torch.tensor([0.5], **D)
    d = loss_differences(yp, ym, b, h, h)
    l2p, l2m = (3.5**4 - 3**4) / 2, (3**4 - 2.5**4) / 2
    assert d["l2"].right.item() == l2p / 0.5 and d["l2"].left.item() == l2m / 0.5
    assert d["l2"].central.item() == (l2p + l2m) / 1.0
    assert d["weighted"].central.item() == 2.0 * (3.5**2 - 2.5**2) / 1.0


def test_the_l2_change_is_not_the_difference_of_two_whole_losses():
    """Outputs of 1e8 that move by 1e-8: differencing whole losses loses every digit, output by output keeps them."""
    y0 = torch.full((1000,), 1e8, **D)
    delta = 1e-8
    b = BaseOutputs(y0, torch.ones_like(y0), torch.zeros_like(y0), ulp_of(y0, torch.float64))
    yp, ym = (y0 + delta)[None], (y0 - delta)[None]
    h = torch.tensor([1.0], **D)
    got = loss_differences(yp, ym, b, h, h)["l2"].central.item()
    want = float(((yp - ym) * (yp + ym) / 2).sum() / 2)  # sum of y0 * delta * 2 / 2h
    assert abs(got - want) <= 1e-6 * abs(want)
    whole = float(((yp**2).sum() / 2 - (ym**2).sum() / 2) / 2)
    assert abs(whole - want) > 1e-3 * abs(want)  # what the naive formula would have given


def test_an_output_that_did_not_move_adds_only_its_hidden_sub_ulp_noise():
    b = base([1.0, 1e6])
    same = b.y[None].clone()
    h = torch.tensor([1e-6], **D)
    d = loss_differences(same, same, b, h, h)["l2"]
    assert d.central.item() == 0.0 and d.noise.item() > 0.0


def test_credited_groups_give_what_moving_each_element_alone_gives():
    """Two elements moved together, each output credited to its owner: the sums of moving each alone."""
    b = base([1.0, 2.0, 3.0], [1.0, -1.0, 0.5])
    h = torch.full((2,), 0.25, **D)
    # element 0 owns output 0, element 1 owns outputs 1 and 2
    yp, ym = torch.tensor([[1.5, 2.5, 3.25]], **D), torch.tensor([[0.5, 1.5, 2.75]], **D)
    members, owner = torch.tensor([[0, 1]]), torch.tensor([[0, 1, 1]])
    grouped = attributed_differences([(members, owner, yp, ym)], 2, b, h, h)
    alone0 = loss_differences(torch.tensor([[1.5, 2.0, 3.0]], **D), torch.tensor([[0.5, 2.0, 3.0]], **D), b, h[:1], h[:1])
    alone1 = loss_differences(torch.tensor([[1.0, 2.5, 3.25]], **D), torch.tensor([[1.0, 1.5, 2.75]], **D), b, h[:1], h[:1])
    for loss in ("l2", "weighted"):
        assert torch.allclose(grouped[loss].central, torch.cat([alone0[loss].central, alone1[loss].central]))


def test_differences_select_and_concatenate():
    d = Differences(*(torch.arange(4.0) + k for k in range(4)))
    assert Differences.cat([d.select(torch.tensor([0, 1])), d.select(torch.tensor([3]))]).central.tolist() == [0.0, 1.0, 3.0]
