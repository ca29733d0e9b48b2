"""A module whose fitted state lives in buffers of shapes known only after fitting."""

from __future__ import annotations

import torch
from torch import nn


class FittedModule(nn.Module):
    """``nn.Module`` whose buffers start empty and take their shapes from a loaded state dict.

    Fitted estimators register their state as empty buffers (names ending in ``_``) and
    replace them in ``fit``. ``load_state_dict`` then works on a fresh, unfitted instance:
    each buffer is resized to the saved shape before the values are copied in.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buf in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if buf is not None and saved is not None and buf.shape != saved.shape:
                self._buffers[name] = torch.empty_like(saved, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
