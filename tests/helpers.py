"""Test helpers: a small random schema and batch, and the real-data location."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from infnet.data.batch import Batch
from infnet.data.schema import CategoricalField, Schema, SequenceSpec, Task
from infnet.data.sequences import GAP_BUCKETS

DATA_DIR = Path(
    os.environ.get(
        "INFNET_DATA_DIR", Path(__file__).resolve().parents[2] / "shared/data/kuairand-pure"
    )
)


def kuairand_dir() -> Path:
    """The KuaiRand-Pure folder, or skip the test with the reason."""
    if not (DATA_DIR / "user_features_pure.csv").is_file():
        pytest.skip(f"KuaiRand-Pure data not found at {DATA_DIR} (set INFNET_DATA_DIR)")
    return DATA_DIR


_IMAGES = (
    '<script>window.addEventListener("load", () => document.body.setAttribute("data-images", '
    "JSON.stringify([...document.images].map(i => [i.getAttribute('src'), "
    "i.complete && i.naturalWidth > 0]))));</script></body>"
)


def browser_images(page: Path) -> dict[str, bool]:
    """Render an HTML file in headless Chromium: {img src: whether the image loaded}. A
    copy of the page beside it gets a script that records each image once the page has
    loaded, and Chromium's --dump-dom hands back the DOM. Skips without a Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")
    probe = page.with_name(f"_probe_{page.name}")
    probe.write_text(page.read_text().replace("</body>", _IMAGES))
    try:
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
            + ["--dump-dom", probe.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    finally:
        probe.unlink()
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, f"{page}: the page did not finish loading in Chromium"
    return dict(json.loads(html.unescape(found.group(1))))


def make_schema(
    num_behaviours: int = 3,
    max_len: int = 8,
    tasks: tuple[tuple[str, str], ...] = (
        ("click", "binary"),
        ("like", "binary"),
        ("watch", "regression"),
    ),
) -> Schema:
    fields = [
        CategoricalField(name="video_id", group="item", vocab_size=50),
        CategoricalField(name="author_id", group="item", vocab_size=20),
        CategoricalField(name="tag", group="item", vocab_size=10),
        CategoricalField(name="user_id", group="user", vocab_size=30),
        CategoricalField(name="age", group="user", vocab_size=6),
        CategoricalField(name="hour", group="context", vocab_size=26),
    ]
    sequences = (
        SequenceSpec(
            behaviours=["click", "like", "long_view"][:num_behaviours] or ["click"],
            side_fields=["video_id", "author_id", "tag"],
            max_len=max_len,
        )
        if num_behaviours
        else None
    )
    return Schema(
        dataset="test",
        fields=fields,
        sequences=sequences,
        tasks=[Task(name=n, kind=k) for n, k in tasks],
    )


def make_batch(schema: Schema, batch_size: int = 16, seed: int = 0, empty_rows: int = 2) -> Batch:
    """A random batch; the first `empty_rows` rows have no history at all."""
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [torch.randint(1, f.vocab_size, (batch_size,), generator=g) for f in schema.fields], dim=1
    )
    F = schema.num_behaviours
    n = schema.sequences.max_len if schema.sequences else 1
    K = len(schema.sequences.side_fields) if schema.sequences else 1
    lengths = torch.randint(0, n + 1, (batch_size, F), generator=g)
    lengths[:empty_rows] = 0
    seq_mask = torch.arange(n).flip(0).view(1, 1, n) < lengths.unsqueeze(-1)  # left-padded
    if schema.sequences:
        vocab = torch.tensor([schema.field(s).vocab_size for s in schema.sequences.side_fields])
        ids = (torch.rand(batch_size, F, n, K, generator=g) * (vocab - 1)).long() + 1
    else:
        ids = torch.zeros(batch_size, F, n, K, dtype=torch.long)
    seq_ids = ids * seq_mask.unsqueeze(-1)
    T = schema.num_tasks
    labels = torch.zeros(batch_size, T)
    for i, t in enumerate(schema.tasks):
        labels[:, i] = (
            torch.randint(0, 2, (batch_size,), generator=g).float()
            if t.kind == "binary"
            else torch.rand(batch_size, generator=g) * 3
        )
    gaps = torch.randint(1, GAP_BUCKETS, (batch_size, F, n), generator=g)
    return Batch(
        categorical=cat,
        seq_ids=seq_ids,
        seq_mask=seq_mask,
        seq_gap=gaps * seq_mask,
        labels=labels,
        label_mask=torch.ones(batch_size, T, dtype=torch.bool),
        user=torch.randint(0, 5, (batch_size,), generator=g),
    )


def task_loss(model, batch: Batch) -> torch.Tensor:
    """BCE over the binary tasks plus MSE over the regression tasks of a model's logits."""
    y = model(batch).logits
    binary = [i for i, t in enumerate(model.schema.tasks) if t.kind == "binary"]
    reg = [i for i, t in enumerate(model.schema.tasks) if t.kind == "regression"]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        y[:, binary], batch.labels[:, binary]
    )
    return bce + torch.nn.functional.mse_loss(y[:, reg], batch.labels[:, reg])


def repeated_items(batch: Batch, items: int = 3, seed: int = 1) -> Batch:
    """The batch with every history drawn from `items` of its items: positions repeat
    within and across rows, as the items of a real training batch do."""
    pool = batch.seq_ids.flatten(0, 2)[batch.seq_mask.flatten()][:items]  # [items, K]
    g = torch.Generator().manual_seed(seed)
    ids = pool[torch.randint(0, len(pool), batch.seq_mask.shape, generator=g)]
    return Batch(**{**batch.__dict__, "seq_ids": ids * batch.seq_mask.unsqueeze(-1)})


def loss_gradients(model, batch: Batch, seq_index: torch.Tensor | None = None) -> dict:
    """The task loss ("loss") and every parameter's gradient, the rows scored through
    seq_index where given (the per-position path of the sequence models)."""

    class Indexed:
        schema = model.schema

        def __call__(self, b: Batch):
            return model(b, seq_index)

    model.train()
    loss = task_loss(model if seq_index is None else Indexed(), batch)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {**grads, "loss": loss.detach()}


def overfit_ratio(model, batch: Batch, steps: int = 100, lr: float = 1e-2) -> float:
    """The task loss after `steps` Adam steps on one batch, over the loss before them."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first = task_loss(model, batch).item()
    for _ in range(steps):
        opt.zero_grad()
        loss = task_loss(model, batch)
        loss.backward()
        opt.step()
    return loss.item() / first
