"""``nn.Buffer(t, persistent=False)`` assigned to a module attribute registers a buffer that ``state_dict`` leaves out,
as torch's (``register_buffer(name, t, persistent=False)``); kiln's ``Buffer`` took no ``persistent``."""

from __future__ import annotations

from oracles import require_torch


def _layout(torch):
    nn = torch.nn

    class Rotary(nn.Module):
        def __init__(self):
            super().__init__()
            self.inv_freq = nn.Buffer(torch.ones(2))
            self.cache = nn.Buffer(torch.zeros(3), persistent=False)
            self.freqs = nn.Buffer(torch.polar(torch.ones(2), torch.zeros(2)), persistent=False)
            self.weight = nn.Parameter(torch.ones(2))

    module = Rotary()
    return ([name for name, _ in module.named_buffers()], [name for name, _ in module.named_parameters()],
            list(module.state_dict()), isinstance(module.cache, nn.Parameter))


def test_buffer_persistent_as_torch():
    import kiln

    assert _layout(kiln) == _layout(require_torch())
