"""Small network pieces shared by generators and meta-learners (no generative logic here)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_blocks(channels: int, depth: int, kernel: int) -> nn.Sequential:
    """`depth` size-preserving `kernel` x `kernel` convolutions with ELUs (empty, without parameters, at 0)."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, kernel, padding=kernel // 2), nn.ELU()]
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """Images [B, C, H, W] -> features [B, out_dim]: two stride-2 convolutions, `depth` more convolutions at
    H/4, and a linear layer. `kernel` (odd) is the convolutions' size."""

    def __init__(self, in_channels: int, size: int, channels: int, out_dim: int, depth: int = 0,
                 kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel, stride=2, padding=kernel // 2), nn.ELU(),  # [B, ch, H/2, W/2]
            nn.Conv2d(channels, 2 * channels, kernel, stride=2, padding=kernel // 2), nn.ELU(),  # [B, 2ch, H/4, W/4]
            *conv_blocks(2 * channels, depth, kernel),  # [B, 2ch, H/4, W/4]
        )
        flat = 2 * channels * ((size + 3) // 4) ** 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, out_dim), nn.ELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


class TextEncoder(nn.Module):
    """Token ids [B, L] (0 = padding) -> features [B, out_dim]: embeddings, a bidirectional GRU, the mean over
    the text's tokens and a linear layer."""

    def __init__(self, vocab_size: int, width: int, out_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.gru = nn.GRU(width, width, batch_first=True, bidirectional=True)
        self.fc = nn.Sequential(nn.Linear(2 * width, out_dim), nn.ELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != 0).unsqueeze(-1).float()  # [B, L, 1]
        h, _ = self.gru(self.embed(x))  # [B, L, 2 * width]
        return self.fc((h * mask).sum(1) / mask.sum(1).clamp(min=1))


def example_encoder(example_shape: tuple[int, ...], width: int, out_dim: int, vocab_size: int = 0) -> nn.Module:
    """The per-example encoder of a set: ConvEncoder for images [C, H, W], TextEncoder for texts [L]."""
    if len(example_shape) == 1:
        return TextEncoder(vocab_size, width, out_dim)
    return ConvEncoder(example_shape[0], example_shape[-1], width, out_dim)


class ConvDecoder(nn.Module):
    """Vectors [B, in_dim] -> logits [B, C, H, W]: a linear layer, `depth` convolutions (size `kernel`) at H/4 and
    two stride-2 transposed convolutions."""

    def __init__(self, in_dim: int, out_channels: int, size: int, channels: int, depth: int = 0,
                 kernel: int = 3) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"image size must be a multiple of 4, got {size}")
        self.shape = (2 * channels, size // 4, size // 4)
        self.fc = nn.Sequential(nn.Linear(in_dim, 2 * channels * (size // 4) ** 2), nn.ELU())
        self.blocks = conv_blocks(2 * channels, depth, kernel)  # [B, 2ch, H/4, W/4]
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1), nn.ELU(),  # [B, ch, H/2, W/2]
            nn.ConvTranspose2d(channels, out_channels, 4, stride=2, padding=1),  # [B, C, H, W]
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.blocks(self.fc(h).view(-1, *self.shape)))


class MapEncoder(nn.Module):
    """Images [B, C, H, W] -> feature maps [B, out_channels, H/2, W/2] that see the whole image: a small U-Net
    (stride-2 convolutions down to H/4, a 3x3 convolution there, a transposed convolution back up to H/2 with
    a skip)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        ch = channels
        self.down2 = nn.Sequential(nn.Conv2d(in_channels, ch, 3, stride=2, padding=1), nn.ELU())  # [B, ch, H/2]
        self.down4 = nn.Sequential(nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.ELU(),
                                   nn.Conv2d(2 * ch, 2 * ch, 3, padding=1), nn.ELU())  # [B, 2ch, H/4, W/4]
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1), nn.ELU())  # [B, ch, H/2]
        self.out = nn.Conv2d(2 * ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"image size must be a multiple of 4, got {list(x.shape[-2:])}")
        d2 = self.down2(x)
        return self.out(torch.cat([self.up2(self.down4(d2)), d2], 1))


def resample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Feature maps [B, D, h, w] at size (H, W): average-pooled down or bilinearly upsampled."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if maps.shape[-1] > size[1]:
        return F.adaptive_avg_pool2d(maps, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


class MapDecoder(nn.Module):
    """Vectors [B, in_dim] and a context map [B, M, h, w] -> logits [B, C, H, W]. Like ConvDecoder, but the
    context map, resampled to each scale, joins the features at H/4 and H/2 (the skips of a U-Net whose
    encoder saw the support set instead of the image)."""

    def __init__(self, in_dim: int, out_channels: int, size: int, channels: int, map_channels: int, depth: int = 0,
                 kernel: int = 3) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"image size must be a multiple of 4, got {size}")
        ch, m = channels, map_channels
        self.size = size
        self.shape = (2 * ch, size // 4, size // 4)
        self.fc = nn.Sequential(nn.Linear(in_dim, 2 * ch * (size // 4) ** 2), nn.ELU())
        self.mix4 = nn.Sequential(nn.Conv2d(2 * ch + m, 2 * ch, 3, padding=1), nn.ELU())
        self.blocks = conv_blocks(2 * ch, depth, kernel)  # [B, 2ch, H/4, W/4], after the map joins
        self.up2 = nn.Sequential(nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1), nn.ELU())
        self.mix2 = nn.Sequential(nn.Conv2d(ch + m, ch, 3, padding=1), nn.ELU())
        self.up1 = nn.ConvTranspose2d(ch, out_channels, 4, stride=2, padding=1)

    def forward(self, h: torch.Tensor, cond_map: torch.Tensor) -> torch.Tensor:
        x = self.fc(h).view(-1, *self.shape)  # [B, 2ch, H/4, W/4]
        x = self.mix4(torch.cat([x, resample(cond_map, (self.size // 4,) * 2)], 1))  # [B, 2ch, H/4, W/4]
        x = self.up2(self.blocks(x))  # [B, ch, H/2, W/2]
        return self.up1(self.mix2(torch.cat([x, resample(cond_map, (self.size // 2,) * 2)], 1)))  # [B, C, H, W]


class CrossAttention(nn.Module):
    """Queries [B, query_dim] or [B, N, query_dim] attend over memories [B, M, memory_dim] -> [B, (N,) dim];
    invariant to the order of M."""

    def __init__(self, query_dim: int, memory_dim: int, dim: int, heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} must be a multiple of its {heads} heads")
        self.heads = heads
        self.q = nn.Linear(query_dim, dim)
        self.kv = nn.Linear(memory_dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        B, M, _ = memory.shape
        H = self.heads
        single = query.dim() == 2
        q = self.q(query.unsqueeze(1) if single else query)  # [B, N, dim]
        N = q.shape[1]
        q = q.view(B, N, H, -1).transpose(1, 2)  # [B, H, N, d]
        k, v = self.kv(memory).view(B, M, 2, H, -1).permute(2, 0, 3, 1, 4)  # each [B, H, M, d]
        out = self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, -1))  # [B, N, dim]
        return out[:, 0] if single else out


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ELU(), nn.Linear(hidden, out_dim))


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor | None = None,
                logvar_p: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) summed over the last dim; the prior defaults to N(0, I)."""
    if mu_p is None or logvar_p is None:
        return 0.5 * (mu_q.pow(2) + logvar_q.exp() - 1.0 - logvar_q).sum(-1)
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0).sum(-1)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim."""
    return -0.5 * (logvar + (z - mu).pow(2) / logvar.exp() + torch.log(z.new_tensor(2 * torch.pi))).sum(-1)
