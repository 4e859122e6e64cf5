"""`DistributedOptimizer`: any `torch.optim` optimizer, averaged with the neighbours
every k steps. The one-line change to a training script, as `dstsgd` was in MALT-2:

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = asap.DistributedOptimizer(opt, model)          # the added line
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from . import _asap, _default_period


class DistributedOptimizer:
    """Wraps `optimizer` (any `torch.optim.Optimizer` over `model`'s parameters) and
    behaves as it does. If `asap.init` has not run, it runs here with `options` (rank,
    world and peers from torchrun, Slurm or Open MPI), so wrapping the optimizer is the
    whole change to a training script. It behaves as the optimizer does (`zero_grad`, `step`, `state_dict`, `load_state_dict`,
    `param_groups`, ...). Every `every` steps (default: `init`'s `period`, else 1), after
    `step()`, it starts a round of stochastic reduce with the neighbours.

    The round overlaps the next step's compute: it averages a snapshot of the model
    taken after the step, on asap's network thread, while the training loop goes on;
    at the next `step()` the average's correction (averaged snapshot minus snapshot) is
    added to the model, so the local progress made during the round is kept.

    The model's float32 CPU parameters are laid out in one contiguous buffer at
    construction (each parameter becomes a view into it), so a round copies the model
    once, into the snapshot, and hands asap that buffer without another copy.
    Construction runs one round (every member waits for its neighbours there, as at
    DDP's construction); start all members from the same weights (the same
    `torch.manual_seed`), as DDP's broadcast would make them.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: torch.nn.Module,
        every: Optional[int] = None,
        **options: Any,
    ) -> None:
        if not _asap.is_initialized():
            # The one-line change: the member starts here, from torchrun's (or Slurm's,
            # or Open MPI's) environment and `options` (as `asap.init` takes them).
            from . import init

            init(**options)
        elif options:
            raise ValueError("asap is already initialised: give the options to asap.init, not here")
        every = _default_period() if every is None else every
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every {every!r}: a whole number of steps, at least 1")
        params = [p for p in model.parameters()]
        if not params:
            raise ValueError("the model has no parameters")
        for p in params:
            if p.device.type != "cpu" or p.dtype != torch.float32:
                raise ValueError(f"a {p.dtype} parameter on {p.device}: asap averages float32 CPU parameters")
        self.optimizer = optimizer
        self.model = model
        self.every = every
        self._steps = 0
        total = sum(p.numel() for p in params)
        flat = torch.empty(total, dtype=torch.float32)
        offset = 0
        with torch.no_grad():
            for p in params:
                n = p.numel()
                flat[offset : offset + n].copy_(p.reshape(-1))
                p.data = flat[offset : offset + n].view_as(p)
                offset += n
        self._flat = flat
        self._model = flat.numpy()
        self._sent = np.empty_like(self._model)
        self._averaged = np.empty_like(self._model)
        self._pending: Any = None
        # One round at once: every member waits for its neighbours here, as DDP's
        # construction does, and replicas that started apart are pulled together.
        _asap.average_(self._model)

    # The wrapped optimizer's surface.
    @property
    def param_groups(self) -> list:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @property
    def defaults(self) -> dict:
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, group: dict) -> None:
        raise ValueError("asap.DistributedOptimizer averages the model it was built with: add parameters before wrapping")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["optimizer"], name)

    def __repr__(self) -> str:
        return f"asap.DistributedOptimizer({self.optimizer!r}, every={self.every})"

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """The wrapped optimizer's step; then the last round's correction is applied
        and, every `every` steps, a new round starts."""
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self._steps += 1
        self._apply_pending()
        if self._steps % self.every == 0:
            np.copyto(self._sent, self._model)
            np.copyto(self._averaged, self._sent)
            self._pending = _asap.average_async(self._averaged)
        return loss

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        pending.wait()
        # model += averaged - sent, in place (the parameters are views of _model).
        np.subtract(self._averaged, self._sent, out=self._averaged)
        np.add(self._model, self._averaged, out=self._model)

    def synchronize(self, rounds: int = 0) -> None:
        """Waits for the round in flight and applies it, then averages the model itself
        `rounds` more times (no step between): e.g. before evaluating or saving, to
        bring the replicas together."""
        self._apply_pending()
        for _ in range(rounds):
            _asap.average_(self._model)
