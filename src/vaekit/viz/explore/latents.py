"""The model side of the latent explorer: validated decode, encode, interpolate and prior
draws, images as PNG bytes, behind one lock (the model is shared by the server's threads).
What it shows differs by model family (family.py)."""

from __future__ import annotations

import threading
from typing import Any

import torch

from ...data.core.dataset import to_float
from ...errors import VaekitError
from ...models import VAE, VQVAE
from .. import grid
from . import family

MAX_SLIDERS = 16  # more sliders than this are no longer a usable interface
Z_LIMIT = 100.0  # |z_d| beyond this is far outside the prior: refused, not decoded
MAX_STEPS = 32


class BadRequest(Exception):
    """A request the client got wrong: answered with `status` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Explorer:
    """The model side of the explorer: validated decode, encode and interpolate, as PNG."""

    def __init__(
        self,
        model: VAE,
        x_test: torch.Tensor,
        y_test: torch.Tensor | None = None,
        class_names: list[str] | None = None,
        rank_images: int = 1000,
    ) -> None:
        if x_test.shape[0] < 1:
            raise VaekitError("the explorer needs at least one test image")
        if model.is_table:
            raise VaekitError(
                "the explorer draws images, and this model's examples are table rows; use "
                "vaekit sample/reconstruct/interpolate RUN --out FILE.npy for the numbers"
            )
        self.model = model.eval()
        self.x = x_test
        self.y = y_test
        self.class_names = list(class_names or [])
        self.lock = threading.Lock()  # one decode at a time: the model is shared
        x, y = x_test[:rank_images], None if y_test is None else y_test[:rank_images]
        self.n_ranked = int(x.shape[0])  # the test images the numbers are over
        self.view = family.view(self.model, x, y, Z_LIMIT)
        self.kl, self.order, self.z_limit = self.view.kl, self.view.order, self.view.z_limit
        self.max_query = 512 + 24 * model.latent_dim  # room for every z_d with 20 digits

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "latent_dim": m.latent_dim,
            "latent_shape": None if m.latent_shape is None else list(m.latent_shape),
            "shown": self.order[:MAX_SLIDERS],
            "order": self.order,
            **family.family(m),
            **self.view.info(),
            "image_shape": list(m.input_shape),
            "n_test": int(self.x.shape[0]),
            "n_ranked": self.n_ranked,
            "conditional": bool(m.conditional),
            "num_classes": int(m.num_classes),
            "class_names": self.class_names,
            "max_steps": MAX_STEPS,
        }

    def _png(self, images: torch.Tensor, nrow: int) -> bytes:
        return grid.png_bytes(grid.to_pil(grid.make_grid(images, nrow=nrow, padding=0)))

    def _label(self, label: int | None, n: int) -> torch.Tensor | None:
        if not self.model.conditional:
            if label is not None:
                raise BadRequest("label: this model is not class-conditional")
            return None
        return torch.full((n,), label or 0, dtype=torch.long)

    @torch.no_grad()
    def decode(self, z: list[float], label: int | None = None) -> bytes:
        zt = torch.tensor([z], dtype=torch.float32)
        with self.lock:
            image = self.model.decode_images(zt, self._label(label, 1))  # the user's units
        return self._png(image, 1)

    @torch.no_grad()
    def decode_codes(self, codes: list[int]) -> bytes:
        """A VQ-VAE's map of codes (flat, as `encode` gives them) decoded."""
        model = self.model
        assert isinstance(model, VQVAE)
        with self.lock:
            image = model.decode_images(torch.tensor(codes).reshape(1, *model.code_shape()))
        return self._png(image, 1)

    @torch.no_grad()
    def encode(self, index: int) -> dict[str, Any]:
        x = self.model.prepare(self.x[index : index + 1])
        y = None if self.y is None else int(self.y[index])
        with self.lock:
            mu, _ = self.model.posterior(x, self._label(y, 1) if self.model.conditional else None)
            codes = self.model.quantized(x).codes if isinstance(self.model, VQVAE) else None
        encoded = {"index": index, "z": [round(float(v), 5) for v in mu[0]], "label": y}
        if codes is not None:
            encoded["codes"] = codes.flatten().tolist()
        return encoded

    @torch.no_grad()
    def sample(self, seed: int) -> dict[str, Any]:
        """One draw of the model's own prior with `seed` (family.sample), or a 409 naming
        why the model cannot sample and what works instead."""
        if self.view.sample_note:
            raise BadRequest(self.view.sample_note, 409)
        with self.lock:
            return family.sample(self.model, seed)

    def image(self, index: int) -> bytes:
        return self._png(to_float(self.x[index : index + 1]), 1)

    @torch.no_grad()
    def interpolate(self, a: int, b: int, steps: int, method: str) -> bytes:
        xa, xb = to_float(self.x[a : a + 1]), to_float(self.x[b : b + 1])
        ya = yb = None
        if self.model.conditional and self.y is not None:
            ya, yb = self.y[a : a + 1], self.y[b : b + 1]
        with self.lock:
            path = self.model.interpolate(xa, xb, steps, method, ya, yb)  # (1, S, C, H, W)
        return self._png(path[0], steps)
