"""torch_acdc.dispatch: the one place that decides a call's route and kernel, and says why the others were not
taken."""
import pytest
import torch

from torch_acdc import ACDC, AFDF, StackedACDC, dispatch, explain, native


def test_routes_follow_the_ambient_mode():
    x, layer = torch.randn(2, 8), ACDC(8)
    with torch.no_grad():
        assert explain(layer, x).route == "inference"
    assert explain(layer, x).route == "autograd"  # the parameters require grad
    with torch.inference_mode():
        assert explain(layer, x).route == "inference"
    decision = torch.func.vmap(lambda row: torch.tensor(dispatch.ROUTES.index(dispatch.route(row))))(x)
    assert decision.tolist() == [dispatch.ROUTES.index("functorch")] * 2


def test_every_other_implementation_has_a_reason():
    x = torch.randn(2, 8)
    with torch.no_grad():
        d = explain(ACDC(8), x)
    assert set(d.not_taken) == (set(dispatch.ROUTES) - {d.route}) | ({"native", "torch"} - {d.kernel})
    assert all(isinstance(why, str) and why for why in d.not_taken.values())
    assert "route=inference" in str(d)


@pytest.mark.skipif(not native.available(), reason="native kernels could not be built")
def test_kernel_reasons_name_the_cause():
    x = torch.randn(2, 8)
    with torch.no_grad():
        assert explain(StackedACDC(8, 8, 2), x).kernel == "native"
        with native.use_native(False):
            assert "switched off" in explain(ACDC(8), x).not_taken["native"]
        low = explain(ACDC(8, dtype=torch.float16), x.half())
        assert low.kernel == "torch" and "dtype" in low.not_taken["native"]
        assert "native" not in explain("dct", x).not_taken or "no native kernel" in explain("dct", x).not_taken["native"]
        assert explain(AFDF(8), x).op == "afdf"
    with pytest.raises(ValueError, match="unknown operation"):
        explain("fft", x)


def test_keeping_spectrum_switch_restores():
    assert dispatch.keep_spectrum()
    with dispatch.keeping_spectrum(False):
        assert not dispatch.keep_spectrum()
    assert dispatch.keep_spectrum()


@pytest.mark.parametrize("case", ["plain", "grad", "half", "mixed", "off", "double"])
def test_kernel_and_its_reasons_always_agree(case):
    """kernel() (the fast form) and explain()'s reasons (the spelled-out rules) give the same decision."""
    from torch_acdc.dispatch import _kernel_reasons

    x, a, d = torch.randn(2, 8), torch.randn(8), torch.randn(8)
    tensors = {"plain": (x, a, d), "grad": (x.requires_grad_(), a, d), "half": (x.half(), a.half(), d.half()),
               "mixed": (x, a.double(), d), "off": (x, a, d), "double": (x.double(), a.double(), d.double())}[case]
    with native.use_native(case != "off"):
        for grad_mode in (True, False):
            with torch.set_grad_enabled(grad_mode):
                chosen = dispatch.kernel(*tensors)
                assert chosen not in _kernel_reasons("acdc", list(tensors)), (case, grad_mode)
