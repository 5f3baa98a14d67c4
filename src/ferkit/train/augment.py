"""Batched augmentation on tensors (CPU or GPU), no torchvision.

One random affine per image (flip, rotation, shift, zoom) applied with a single grid_sample, then
random erasing; mixup/cutmix mix whole batches. Every draw comes from the generator passed in, so a
resumed run repeats the same augmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(device)


def random_affine(x: torch.Tensor, gen: torch.Generator, flip: bool, rotation: float, shift: float,
                  zoom: float) -> torch.Tensor:
    n = x.shape[0]
    dev = x.device
    angle = _uniform(n, -rotation, rotation, gen, dev) * math.pi / 180
    scale = _uniform(n, 1 - zoom, 1 + zoom, gen, dev)
    tx = _uniform(n, -shift, shift, gen, dev) * 2
    ty = _uniform(n, -shift, shift, gen, dev) * 2
    sign = torch.ones(n, device=dev)
    if flip:
        sign = torch.where(torch.rand(n, generator=gen).to(dev) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * sign, -sin, tx], 1), torch.stack([sin * sign, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h)[None]).to(x.device)
    cols = (ox[:, None] + torch.arange(w)[None]).to(x.device)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return padded[:, 0][idx, rows[:, :, None], cols[:, None, :]][:, None]


def random_erasing(x: torch.Tensor, gen: torch.Generator, p: float, area=(0.02, 0.2)) -> torch.Tensor:
    n, _, h, w = x.shape
    apply = torch.rand(n, generator=gen) < p
    frac = torch.rand(n, generator=gen) * (area[1] - area[0]) + area[0]
    aspect = torch.exp(torch.rand(n, generator=gen) * math.log(3.3 / 0.3) + math.log(0.3))
    eh = (torch.sqrt(frac * aspect) * h).clamp(1, h).long()
    ew = (torch.sqrt(frac / aspect) * w).clamp(1, w).long()
    y0 = (torch.rand(n, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(n, generator=gen) * (w - ew + 1)).long()
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    my = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    mx = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = (my[:, :, None] & mx[:, None, :] & apply[:, None, None])[:, None].to(x.device)
    noise = torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
    return torch.where(mask, noise, x)


def mix_batch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, mixup: float, cutmix: float,
              prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix on a batch with one-hot/soft targets y (N, C); returns mixed (x, y)."""
    if (mixup <= 0 and cutmix <= 0) or float(torch.rand(1, generator=gen)) >= prob:
        return x, y
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(torch.rand(1, generator=gen)) < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = _beta(alpha, gen)
    if use_cutmix:
        h, w = x.shape[2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y + (1 - lam) * y[perm]


def _beta(alpha: float, gen: torch.Generator) -> float:
    """Beta(alpha, alpha) from two gammas drawn with our generator (torch's Beta ignores generators)."""
    g1 = _gamma(alpha, gen)
    g2 = _gamma(alpha, gen)
    return g1 / (g1 + g2)


def _gamma(alpha: float, gen: torch.Generator) -> float:
    # Marsaglia-Tsang for alpha >= 1; boost for alpha < 1.
    boost = 1.0
    if alpha < 1:
        boost = float(torch.rand(1, generator=gen)) ** (1 / alpha)
        alpha += 1
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        z = float(torch.randn(1, generator=gen))
        v = (1 + c * z) ** 3
        if v > 0 and math.log(float(torch.rand(1, generator=gen)) + 1e-12) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost


def augment(x: torch.Tensor, gen: torch.Generator, cfg) -> torch.Tensor:
    """Apply the config's geometric and erasing augmentation to a normalised batch (N, 1, H, W)."""
    if cfg.crop_pad > 0:
        x = random_crop(x, gen, cfg.crop_pad)
    if cfg.flip or cfg.rotation > 0 or cfg.shift > 0 or cfg.zoom > 0:
        x = random_affine(x, gen, cfg.flip, cfg.rotation, cfg.shift, cfg.zoom)
    if cfg.erasing > 0:
        x = random_erasing(x, gen, cfg.erasing)
    return x
