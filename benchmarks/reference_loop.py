"""The reference: an MLP VAE trained the canonical way (pytorch/examples vae/main.py).

    python benchmarks/reference_loop.py [--epochs 10] [--records FILE.jsonl] [--threads N]

What makes it "canonical", and what vaekit does differently:
- a per-sample `Dataset` that returns a float tensor per image: torchvision's
  `FashionMNIST` + `ToTensor()`, whose `__getitem__` (a PIL image, then a float tensor)
  is copied below because torchvision does not import beside the CPU torch here; the
  arrays come from vaekit's IDX reader. Checked against the real thing (torchvision
  0.29.1's FashionMNIST with torch 2.14.1, in a venv of its own, epochs alternating in
  one process): the copy ran 14,222 / 15,267 / 13,673 samples/s to torchvision's 13,583 /
  14,397 / 12,901, ~5% faster, so ratios against it are if anything conservative;
- a torch `DataLoader` (batch 128, shuffled, no workers: pytorch/examples on the CPU);
- 784-400-20 ReLU, a sigmoid output and `F.binary_cross_entropy(..., reduction="sum")`;
- plain `torch.optim.Adam(lr=1e-3)`, `loss.item()` every step, the test loss every epoch.

Run as a script it trains `--epochs` epochs and appends one JSON record per epoch
(training seconds, samples/s, test -ELBO) to `--records`; time_to_quality.py runs it as a
subprocess beside vaekit. With `--on-request`, it waits for a line on stdin before each
epoch and prints the epoch's record as one line on stdout: mlp_speed.py drives it so, in
a process of its own, because vaekit turns on flush-to-zero for denormals (per thread,
inherited by threads started later), which a canonical loop does not have.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torch import nn
from torch.nn import functional as F

BATCH_SIZE = 128


class ImageDataset(torch.utils.data.Dataset):
    """torchvision's MNIST/FashionMNIST with transform=ToTensor(): one image at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.data = torch.from_numpy(images)  # (N, 28, 28) uint8, as torchvision holds it
        self.targets = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # torchvision.datasets.MNIST.__getitem__
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        return to_tensor(img), target


def to_tensor(pic: Image.Image) -> torch.Tensor:
    """torchvision.transforms.functional.to_tensor for a PIL image (mode L)."""
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()  # put it from HWC to CHW format
    return img.to(dtype=torch.get_default_dtype()).div(255)


class VAE(nn.Module):
    """pytorch/examples vae/main.py, unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    # Reconstruction + KL divergence losses summed over all elements and batch
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    # see Appendix B from VAE paper: https://arxiv.org/abs/1312.6114
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


class Reference:
    """Model, optimizer and loaders of the reference run, built the way pytorch/examples does."""

    def __init__(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        seed: int = 1,
    ) -> None:
        torch.manual_seed(seed)
        self.model = VAE()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.train_loader = torch.utils.data.DataLoader(
            ImageDataset(x_train, y_train), batch_size=BATCH_SIZE, shuffle=True
        )
        self.test_loader = torch.utils.data.DataLoader(
            ImageDataset(x_test, y_test), batch_size=BATCH_SIZE, shuffle=False
        )

    def train_epoch(self, max_steps: int = 0) -> tuple[int, float]:
        """One epoch (or `max_steps` steps): returns (samples, mean training loss)."""
        self.model.train()
        train_loss, seen = 0.0, 0
        for batch_idx, (data, _) in enumerate(self.train_loader):
            self.optimizer.zero_grad()
            recon_batch, mu, logvar = self.model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            self.optimizer.step()
            seen += len(data)
            if max_steps and batch_idx + 1 >= max_steps:
                break
        return seen, train_loss / max(seen, 1)

    def test_nelbo(self) -> float:
        """The test loss of pytorch/examples: -ELBO per image, one z sample each (nats)."""
        self.model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for data, _ in self.test_loader:
                recon_batch, mu, logvar = self.model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
        return test_loss / len(self.test_loader.dataset)


def fashion_mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST as numpy arrays (N, 28, 28) uint8 and labels, from vaekit's IDX reader."""
    from vaekit.config import DataConfig
    from vaekit.data import load_data

    data = load_data(DataConfig(name="fashion-mnist"), progress=False)
    assert data.y_train is not None and data.y_test is not None
    return (
        data.x_train[:, 0].numpy(),
        data.y_train.numpy(),
        data.x_test[:, 0].numpy(),
        data.y_test.numpy(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--records", type=Path, help="append one JSON line per epoch here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--on-request",
        action="store_true",
        help="wait for a line on stdin before each epoch (stop at end of input)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ref = Reference(*fashion_mnist_arrays())
    for epoch in range(1, args.epochs + 1):
        if args.on_request and not sys.stdin.readline():
            break
        started = time.perf_counter()
        seen, train_loss = ref.train_epoch()
        seconds = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "seconds": seconds,
            "samples_per_s": seen / seconds,
            "train_nelbo": train_loss,
            "test_nelbo": ref.test_nelbo(),
        }
        line = json.dumps(record)
        print(line, flush=True)
        if args.records:
            with args.records.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
