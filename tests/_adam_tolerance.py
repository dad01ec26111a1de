"""How close the parameters of a sharded and an unsharded Adam update can be asked to be.

Adam's first step moves each parameter by ``lr * g / (|g| + eps)``: an element whose gradient is
near zero moves by an amount that depends on the summation order of that gradient, and sharding
changes the order. Parameters after an update therefore agree to a small fraction of the learning
rate, not to float32 rounding (seen: 2.3e-5 on one of 2,048 elements at lr 1e-2, on one machine
and not another). The losses and gradient norms the updates report agree to float32 rounding;
the tests compare those tightly.
"""


def adam_step_atol(learning_rate: float) -> float:
    """1 % of one Adam step, and never below float32's 2e-5 at these parameter scales."""
    return max(2e-5, 1e-2 * learning_rate)
