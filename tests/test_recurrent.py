"""ACDCLSTMCell / ACDCLSTM: float64 equivalence with nn.LSTM built from to_dense(), contract, gradients, learning."""
import io

import pytest
import torch
from torch import nn

from torch_acdc.recipe import param_groups
from torch_acdc.recurrent import ACDCLSTM, ACDCLSTMCell, acdc_lstm_parameter_count


def randomise_(module: nn.Module) -> nn.Module:
    """Move all diagonals/biases away from the near-identity init so that the test sees real mixing."""
    torch.manual_seed(123)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-1, 1)
    return module


def dense_weights(cell: ACDCLSTMCell):
    """(W_ih, b_ih, W_hh) of the dense LSTM cell computing exactly what ``cell`` computes."""
    zero = torch.zeros(1, cell.input_size, dtype=cell.ih.a.dtype)
    return cell.ih.to_dense(), cell.ih(zero)[0], cell.hh.to_dense()


def dense_lstm(model: ACDCLSTM) -> nn.LSTM:
    """The nn.LSTM with the effective dense weights of ``model`` (the float64 reference)."""
    ref = nn.LSTM(model.input_size, model.hidden_size, model.num_layers, batch_first=model.batch_first,
                  dtype=torch.float64)
    with torch.no_grad():
        for layer, cell in enumerate(model.cells):
            w_ih, b_ih, w_hh = dense_weights(cell)
            getattr(ref, f"weight_ih_l{layer}").copy_(w_ih)
            getattr(ref, f"bias_ih_l{layer}").copy_(b_ih)
            getattr(ref, f"weight_hh_l{layer}").copy_(w_hh)
            getattr(ref, f"bias_hh_l{layer}").zero_()
    return ref


@pytest.mark.parametrize("input_size,hidden", [(3, 5), (24, 4), (6, 6)])
def test_cell_matches_dense_lstm_cell(input_size, hidden):
    cell = randomise_(ACDCLSTMCell(input_size, hidden, depth=3, dtype=torch.float64))
    ref = nn.LSTMCell(input_size, hidden, dtype=torch.float64)
    with torch.no_grad():
        ref.weight_ih[:], ref.bias_ih[:], ref.weight_hh[:] = dense_weights(cell)
        ref.bias_hh.zero_()
    x = torch.randn(7, input_size, dtype=torch.float64)
    state = (torch.randn(7, hidden, dtype=torch.float64), torch.randn(7, hidden, dtype=torch.float64))
    for got, want in zip(cell(x, state), ref(x, state)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for got, want in zip(cell(x), ref(x)):  # zero state
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    h, c = cell(x[0], (state[0][0], state[1][0]))  # unbatched
    assert h.shape == c.shape == (hidden,)
    torch.testing.assert_close(h, cell(x, state)[0][0])


@pytest.mark.parametrize("batch_first", [False, True])
def test_layer_matches_dense_nn_lstm(batch_first):
    model = randomise_(ACDCLSTM(5, 6, num_layers=2, batch_first=batch_first, dtype=torch.float64))
    ref = dense_lstm(model)
    x = torch.randn(4, 9, 5, dtype=torch.float64)  # (T, B, I) or (B, T, I)
    state = (torch.randn(2, 4 if batch_first else 9, 6, dtype=torch.float64),) * 2
    state = (state[0], torch.randn_like(state[1]))
    for kwargs in ({}, {"state": state}):
        out, (h, c) = model(x, *kwargs.values())
        ref_out, (ref_h, ref_c) = ref(x, *kwargs.values())
        assert out.shape == ref_out.shape == (4, 9, 6)
        for got, want in ((out, ref_out), (h, ref_h), (c, ref_c)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # unbatched (T, I) input whatever batch_first says, (num_layers, H) state
    out, (h, c) = model(x[0], (state[0][:, 0], state[1][:, 0]))
    ref_out, (ref_h, ref_c) = ref(x[0], (state[0][:, 0], state[1][:, 0]))
    assert out.shape == (9, 6) and h.shape == c.shape == (2, 6)
    for got, want in ((out, ref_out), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_state_passing_splits_a_sequence_and_last_output_is_h_n():
    model = ACDCLSTM(3, 8, num_layers=3, batch_first=True)
    x = torch.randn(2, 10, 3)
    out, (h, c) = model(x)
    assert out.shape == (2, 10, 8) and h.shape == c.shape == (3, 2, 8)
    torch.testing.assert_close(out[:, -1], h[-1])
    out1, s1 = model(x[:, :6])
    out2, (h2, c2) = model(x[:, 6:], s1)
    torch.testing.assert_close(torch.cat([out1, out2], 1), out)
    torch.testing.assert_close((h2, c2), (h, c))
    empty_out, (h0, c0) = model(x[:, :0], s1)  # an empty sequence passes the state through
    assert empty_out.shape == (2, 0, 8)
    torch.testing.assert_close((h0, c0), s1)


def test_layer_loop_equals_cell_steps():
    model = ACDCLSTM(4, 5, num_layers=1)
    x = torch.randn(6, 3, 4)
    state = None
    outs = []
    for t in range(6):
        state = model.cells[0](x[t], state)
        outs.append(state[0])
    torch.testing.assert_close(model(x)[0], torch.stack(outs))


def test_parameter_count_formula_and_recipe_groups():
    for args in [(3, 5, 1, True, 2), (40, 8, 3, False, 1), (6, 6, 2, True, 4)]:
        model = ACDCLSTM(*args[:4], depth=args[4])
        assert sum(p.numel() for p in model.parameters()) == acdc_lstm_parameter_count(*args)
    model = ACDCLSTM(16, 64, num_layers=2)
    dense = nn.LSTM(16, 64, num_layers=2)
    assert acdc_lstm_parameter_count(16, 64, 2) == 2 * 20 * 2 * 64  # 20 * depth * H per layer
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters()) / 10
    groups = {g["name"]: g for g in param_groups(model, lr=1.0)}
    assert len(groups["acdc_A"]["params"]) == len(groups["acdc_D"]["params"]) == 4  # ih, hh per layer


def test_gradcheck_tiny_float64_cell():
    cell = randomise_(ACDCLSTMCell(3, 2, depth=2, dtype=torch.float64))
    names = [n for n, _ in cell.named_parameters()]

    def f(x, h, c, *params):
        return torch.func.functional_call(cell, dict(zip(names, params)), (x, (h, c)))

    inputs = [torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64),
              torch.randn(2, 2, dtype=torch.float64)]
    inputs += [p.detach().clone() for p in cell.parameters()]
    for t in inputs:
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)


def test_gradients_reach_every_parameter_through_time():
    model = ACDCLSTM(3, 4, num_layers=2, dropout=0.0)
    out, _ = model(torch.randn(5, 2, 3))
    out[-1].sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dropout_only_between_layers_in_training():
    torch.manual_seed(0)
    model = ACDCLSTM(3, 4, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    model.train()
    assert not torch.allclose(model(x)[0], model(x)[0])
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    one_layer = ACDCLSTM(3, 4, num_layers=1, dropout=0.5).train()
    torch.testing.assert_close(one_layer(x)[0], one_layer(x)[0])


def test_conventions_repr_dtype_state_dict():
    model = ACDCLSTM(3, 4, num_layers=2, batch_first=True, dropout=0.1, depth=3, permutation="riffle",
                     dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    text = repr(model)
    assert "batch_first=True" in text and "depth=3" in text and "permutation='riffle'" in text
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = ACDCLSTM(3, 4, num_layers=2, batch_first=True, depth=3, permutation="random", dtype=torch.float64)
    other.load_state_dict(torch.load(buf))
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(other(x)[0], model.eval()(x)[0])
    half = ACDCLSTM(3, 4)(torch.randn(5, 2, 3, dtype=torch.bfloat16))[0]
    assert half.dtype == torch.bfloat16


def test_shape_errors_name_expected_and_given():
    model = ACDCLSTM(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match="Expected 3, got 5"):
        model(torch.randn(5, 2, 5))
    with pytest.raises(RuntimeError, match="2D or 3D, got 4D"):
        model(torch.randn(1, 5, 2, 3))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(2, 2, 4\), got \(1, 2, 4\)"):
        model(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    cell = ACDCLSTMCell(3, 4)
    with pytest.raises(RuntimeError, match="got 2 expected 3"):
        cell(torch.randn(2, 2))
    with pytest.raises(RuntimeError, match=r"hidden\[1\] size \(2, 4\)"):
        cell(torch.randn(2, 3), (torch.zeros(2, 4), torch.zeros(3, 4)))
    with pytest.raises(ValueError, match="dropout"):
        ACDCLSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="hidden_size"):
        ACDCLSTMCell(3, 0)


def test_learns_a_delayed_copy_task():
    """Recall the symbol seen 2 steps ago: impossible without memory, chance loss is log 4 = 1.386.

    One thread: the ops are tiny, and a second OpenMP thread only adds waiting on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_delayed_copy()
    finally:
        torch.set_num_threads(threads)


def _train_delayed_copy():
    torch.manual_seed(0)
    vocab, delay = 4, 2
    rnn, head = ACDCLSTM(vocab, 16), nn.Linear(16, vocab)
    model = nn.ModuleList([rnn, head])
    opt = torch.optim.Adam(param_groups(model, lr=1e-2), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(80):
        seq = torch.randint(0, vocab, (8, 32), generator=gen)
        out, _ = rnn(nn.functional.one_hot(seq, vocab).float())
        loss = nn.functional.cross_entropy(head(out[delay:]).reshape(-1, vocab), seq[:-delay].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert first > 1.2 and last < 0.5, (first, last)  # measured: 1.32 -> 0.23


def test_lstm_bench_fast_writes_results_and_plot(tmp_path, capsys):
    import json

    from torch_acdc.cli import main
    from torch_acdc.experiments.lstm_bench import crossover

    assert main(["lstm-bench", "--fast", "--no-progress", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["hidden"] for r in results["rows"]] == [16, 32]
    for r in results["rows"]:
        assert r["dense_ms"] > 0 and r["acdc_ms"] > 0 and r["speedup"] == pytest.approx(r["dense_ms"] / r["acdc_ms"])
        assert r["acdc_params"] == acdc_lstm_parameter_count(r["hidden"], r["hidden"])
        assert r["dense_params"] == sum(p.numel() for p in nn.LSTM(r["hidden"], r["hidden"]).parameters())
    assert (tmp_path / "lstm_scaling.png").stat().st_size > 0
    assert "| hidden |" in capsys.readouterr().out
    # the crossover interpolates log-log between the bracketing sizes (ratio 0.5 at 256, 2 at 1024 -> 512)
    rows = [{"hidden": 256, "dense_ms": 1.0, "acdc_ms": 2.0}, {"hidden": 1024, "dense_ms": 4.0, "acdc_ms": 2.0}]
    assert crossover(rows) == pytest.approx(512)
    assert crossover(rows[:1]) is None


def test_lstm_bench_skips_dense_beyond_the_memory_limit(tmp_path):
    import json

    from torch_acdc.cli import main

    main(["lstm-bench", "--fast", "--no-progress", "--max-memory-gb", "5e-5", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert "dense_ms" in rows[0] and "dense_ms" not in rows[1] and rows[1]["acdc_ms"] > 0
    assert "--max-memory-gb" in rows[1]["note"]


@pytest.mark.parametrize("with_state", [False, True])
def test_packed_sequences_follow_nn_lstm(with_state):
    """A PackedSequence in, a PackedSequence out, h_n / c_n at each sequence's own last step: the same as
    nn.LSTM with the effective dense weights (float64), and the same as running each sequence alone."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    model = randomise_(ACDCLSTM(3, 4, num_layers=2, dtype=torch.float64))
    ref = dense_lstm(model)
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    state = (torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)) if with_state else None
    out, (h, c) = model(packed, state)
    ref_out, (ref_h, ref_c) = ref(packed, state)
    assert isinstance(out, type(packed))
    torch.testing.assert_close(pad_packed_sequence(out)[0], pad_packed_sequence(ref_out)[0])
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(c, ref_c)
    for b, n in enumerate(lengths.tolist()):  # each sequence alone
        st = None if state is None else (state[0][:, b:b + 1], state[1][:, b:b + 1])
        alone, (hb, _) = model(x[:n, b:b + 1], st)
        torch.testing.assert_close(hb[:, 0], h[:, b])
