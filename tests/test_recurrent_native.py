"""The native time loop of ACDCLSTM (forward and backpropagation through time in one op each) against the
step-by-step reference loop: float64 to 1e-12 and float32 loose, every state / depth / permutation / spectrum
setting, gradcheck in float64, and the dispatch that picks it."""
import pytest
import torch

from torch_acdc import ACDCLSTM, dispatch, native
from torch_acdc.recurrent import ACDCLSTMCell
from operator_checks import native_and_torch

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels could not be built")


def _run(model, x, state):
    """(output, h_n, c_n, grad x, grads of the state, grads of every parameter) of a mixed loss."""
    model.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_()
    st = None if state is None else tuple(s.clone().requires_grad_() for s in state)
    out, (h, c) = model(xg, st)
    (out.square().sum() + 0.3 * h.sum() + c.square().sum()).backward()
    grads = [xg.grad] + ([] if st is None else [st[0].grad, st[1].grad]) + [p.grad for p in model.parameters()]
    return [out.detach(), h.detach(), c.detach(), *grads]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("depth,permutation", [(1, "random"), (2, "random"), (3, None), (2, "riffle")])
@pytest.mark.parametrize("keep", [True, False])
def test_native_loop_matches_step_by_step_reference(dtype, tol, with_state, depth, permutation, keep):
    torch.manual_seed(depth)
    model = ACDCLSTM(5, 6, num_layers=2, depth=depth, permutation=permutation, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-1, 1)
    x = torch.randn(7, 3, 5, dtype=dtype)
    state = (torch.randn(2, 3, 6, dtype=dtype), torch.randn(2, 3, 6, dtype=dtype)) if with_state else None
    with dispatch.keeping_spectrum(keep):
        fast, ref = native_and_torch(lambda: _run(model, x, state))
    for f, r in zip(fast, ref):
        torch.testing.assert_close(f, r, rtol=tol, atol=tol)


def test_native_loop_gradcheck_float64():
    torch.manual_seed(0)
    model = ACDCLSTM(3, 2, num_layers=1, depth=2, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert dispatch.lstm_path(model.cells[0].hh, torch.zeros(4, 2, 8, dtype=torch.float64), None, None) == "native"
    assert torch.autograd.gradcheck(lambda x, h, c: model(x, (h, c))[0], (x, h0, c0))
    assert torch.autograd.gradcheck(lambda x: model(x)[1][1], (x,))


def test_one_native_op_call_per_layer_and_direction():
    model = ACDCLSTM(4, 8, num_layers=2)
    x = torch.randn(6, 2, 4)

    def count(fn):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        return {e.key: e.count for e in prof.key_averages() if e.key.startswith("torch_acdc_native::acdc_lstm")}

    with torch.no_grad():
        assert count(lambda: model(x)) == {"torch_acdc_native::acdc_lstm_forward": 2}
    calls = count(lambda: model(x)[0].sum().backward())
    assert calls == {"torch_acdc_native::acdc_lstm_forward": 2, "torch_acdc_native::acdc_lstm_backward": 2}


def test_path_choice_and_fallbacks():
    cell = ACDCLSTMCell(4, 8)
    xg = torch.randn(5, 2, 32)
    assert dispatch.lstm_path(cell.hh, xg, None, None) == "native"
    with native.use_native(False):
        assert dispatch.lstm_path(cell.hh, xg, None, None) == "torch"
    assert dispatch.lstm_path(cell.hh, xg.double(), None, None) == "torch"  # parameters float32, input float64
    assert dispatch.lstm_path(cell.hh, xg.half(), None, None) == "torch"


def test_generation_steps_match_a_whole_sequence():
    """Text generation feeds one step at a time with the state: the same outputs as the whole sequence."""
    torch.manual_seed(1)
    model = ACDCLSTM(4, 8, num_layers=2)
    x = torch.randn(9, 1, 4)
    with torch.no_grad():
        whole, (h, c) = model(x)
        state, steps = None, []
        for t in range(9):
            out, state = model(x[t:t + 1], state)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps), whole)
    torch.testing.assert_close(state[0], h)
    torch.testing.assert_close(state[1], c)
