"""Checks shared by the tests of the diagonal operators (ACDC, AFDF) and their stacks."""
import torch


def check_vmap_matches_reference(op, reference, x, a, d):
    """vmap over (x, a) with d shared equals the per-example reference, and vmap(grad) gives per-example
    gradients equal to one backward per example."""
    out = torch.func.vmap(op, in_dims=(0, 0, None))(x, a, d)
    ref = torch.stack([reference(x[i], a[i], d) for i in range(x.shape[0])])
    torch.testing.assert_close(out, ref)
    g = torch.func.vmap(torch.func.grad(lambda a, x: op(x, a, d).square().sum()))(a, x)
    for i in range(x.shape[0]):
        ai = a[i].clone().requires_grad_()
        op(x[i], ai, d).square().sum().backward()
        torch.testing.assert_close(g[i], ai.grad)


def stack_by_hand(stack, x, reference, activation=torch.relu):
    """The stack's map written out: zero-pad, then per layer the reference operator with bias, and between
    layers the activation and the shuffle; truncate. Compare with ``stack(x)``."""
    h = torch.nn.functional.pad(x, (0, stack.features - stack.in_features))
    for i in range(stack.depth):
        h = reference(h, stack.a[i], stack.d[i], stack.bias[i])
        if i < stack.depth - 1:
            h = activation(h)[..., stack.perms[i]]
    return h[..., : stack.out_features]


def native_and_torch(fn):
    """(fn() with the native kernels, fn() with the pure-torch path forced): the pair the native tests compare."""
    from torch_acdc import native

    with native.use_native(True):
        fast = fn()
    with native.use_native(False):
        ref = fn()
    return fast, ref


def layer_outputs_and_grads(module, x):
    """(module(x), d/dx, d/dparameters...) of sum(module(x)^2): what the native tests compare per layer."""
    module.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_()
    y = module(xg)
    y.square().sum().backward()
    return y.detach(), xg.grad, *[p.grad for p in module.parameters()]
