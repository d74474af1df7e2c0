"""Batched point-source + smooth-light renderer with sub-pixel PSF phases (torch, CPU or CUDA).

This module owns the turning of star lists (positions in pixels, count rates per band) and
smooth light maps into noiseless images in e⁻/s per pixel. It must not sample stars, know
about physics, or add noise.

Method (one code path on every device):

1. The cutout is embedded in a canvas padded by the kernel radius ``R`` on every side, so that
   light of stars just outside the cutout spills in and the circular FFT convolution never wraps
   light into the cutout.
2. The sub-pixel phase nodes form a regular grid of spacing 1/P px (node ``j`` is pixel
   ``j // P``, phase ``j % P``, at offset :func:`simulators.psf.phase_offsets`). Each star's flux is
   shared among the 3 × 3 nodes nearest to its exact position with quadratic Lagrange weights
   (plain nearest-phase binning leaves peak errors up to ~13 % for the narrow F336W core at P = 3;
   interpolating between phase kernels brings them to ~1 %). One ``index_add_`` deposits all stars
   of the batch (ragged lists, flattened with a sample index: no padding to a common K).
3. Each phase plane is convolved in Fourier space with the PSF kernel shifted to that phase; the
   products are summed over phases before a single inverse FFT per band. Kernel FFTs are computed
   once at construction. Smooth light (point samples of the surface brightness at pixel centres) is
   added to the zero-offset plane.

With P = 3 and quadratic weights, stellar peaks of the undersampled WFC3/UVIS PSF stay within a
few per cent of the exact value (tested: < 6 %). A slow per-star
reference (:func:`render_stars_reference`) evaluates the effective PSF at each star's exact
position and is the baseline in tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from .errors import SimulatorError
from .psf import EffectivePSF

__all__ = ["PhaseRenderer", "render_stars_reference"]


class PhaseRenderer:
    """Renders star lists and smooth light into (B, C, H, W) images.

    Parameters
    ----------
    psfs : sequence of EffectivePSF
        One per band, in band order.
    image_size : int
        Cutout side H = W (px).
    n_phase : int
        Sub-pixel phases per axis, P (3 by default).
    radius_px : int, optional
        PSF kernel half-size R (px); defaults to the smallest radius of ``psfs``.
    device : torch.device or str
        Device of the precomputed kernel FFTs and of the outputs.
    interpolation : str
        How a star's flux is shared among phase planes: ``"quadratic"`` (default; 2-D quadratic
        Lagrange weights over the 3 × 3 nearest phase nodes, flux-conserving) or ``"nearest"``
        (all flux in the nearest phase).
    chunk_size : int
        Samples rendered per FFT chunk (bounds memory to about
        ``chunk_size · C · (P² + 1) · (H + 2R)² · 12`` bytes).
    """

    def __init__(
        self,
        psfs: Sequence[EffectivePSF],
        image_size: int,
        *,
        n_phase: int = 3,
        radius_px: int | None = None,
        device: torch.device | str = "cpu",
        chunk_size: int = 64,
        interpolation: str = "quadratic",
    ) -> None:
        if interpolation not in ("quadratic", "nearest"):
            raise SimulatorError(
                f"interpolation must be 'quadratic' or 'nearest', got {interpolation!r}"
            )
        self.interpolation = interpolation
        if n_phase < 1:
            raise SimulatorError(f"n_phase must be >= 1, got {n_phase}")
        self.n_phase = int(n_phase)
        self.radius = int(min(p.radius_px for p in psfs) if radius_px is None else radius_px)
        self.image_size = int(image_size)
        self.canvas = self.image_size + 2 * self.radius
        self.n_bands = len(psfs)
        self.chunk_size = int(chunk_size)
        self.device = torch.device(device)
        p2 = self.n_phase**2
        # zero-offset plane: the middle phase for odd P, an extra plane for even P
        self.centre_plane = (self.n_phase // 2) * (self.n_phase + 1) if self.n_phase % 2 else p2
        self.n_planes = p2 if self.n_phase % 2 else p2 + 1
        n, r = self.canvas, self.radius
        kern = torch.zeros(self.n_bands, self.n_planes, n, n, dtype=torch.float64)
        for c, psf in enumerate(psfs):
            k = psf.phase_kernels(self.n_phase, r)
            if self.n_planes > p2:
                k = torch.cat(
                    [
                        k,
                        EffectivePSF(psf.data, psf.oversampling, psf.pixel_scale).phase_kernels(
                            1, r
                        ),
                    ],
                    0,
                )
            kern[c, :, : 2 * r + 1, : 2 * r + 1] = k
        kern = torch.roll(kern, shifts=(-r, -r), dims=(-2, -1))
        self.kernel_ft = torch.fft.rfft2(kern).to(torch.complex64).to(self.device)
        self.kernel_sum = kern.sum((-2, -1))  # 1 by construction (checked in tests)

    def to(self, device: torch.device | str) -> PhaseRenderer:
        """The renderer with its kernel FFTs on ``device``."""
        new = object.__new__(PhaseRenderer)
        new.__dict__.update(self.__dict__)
        new.device = torch.device(device)
        new.kernel_ft = self.kernel_ft.to(new.device)
        new.__dict__.pop("_work", None)
        return new

    def _deposit(self, y, x, flux, how: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat buffer offsets and fluxes of the phase-node deposits of one list of stars.

        Returns ``(offset, flux)``: int64 (S, k²) offsets into one sample's (C=1, planes, N, N)
        block (band and sample strides are added by the caller) and float32 (C, S, k²) fluxes,
        k = 3 for ``"quadratic"`` and 1 for ``"nearest"``. Nodes that fall off the canvas get
        zero flux at offset 0 (no boolean compaction: same shape for every star).
        """
        n, r, p = self.canvas, self.radius, self.n_phase
        plane = n * n
        offs = None
        parts = []
        for coord in (y, x):
            # continuous coordinate on the grid of phase nodes (node j sits at (j + 0.5)/P - 0.5 canvas px)
            t = (coord.float() + r + 0.5) * p - 0.5
            j = torch.round(t)
            w = self._weights(t - j, how)  # (S, k)
            if offs is None:
                k = w.shape[1]
                offs = torch.arange(k, device=self.device) - (k // 2)
            node = j.long()[:, None] + offs  # (S, k)
            pix = torch.div(node, p, rounding_mode="floor")
            phase = node - pix * p
            valid = (pix >= 0) & (pix < n)
            parts.append((pix, phase, torch.where(valid, w, torch.zeros_like(w))))
        (iy, py, wy), (ix, px, wx) = parts
        # separable: offset = (py·P + px)·N² + iy·N + ix
        off_y = py * (p * plane) + iy * n  # (S, k)
        off_x = px * plane + ix
        offset = (off_y[:, :, None] + off_x[:, None, :]).flatten(1)  # (S, k²)
        w = (wy[:, :, None] * wx[:, None, :]).flatten(1)  # (S, k²), 0 off the canvas
        offset = torch.where(w != 0, offset, torch.zeros_like(offset))
        return offset, flux.float().T[:, :, None] * w[None]

    def _weights(self, e: torch.Tensor, how: str) -> torch.Tensor:
        """Interpolation weights over the nearest phase nodes for residual offsets e ∈ [-½, ½] (node units).

        ``"quadratic"``: Lagrange weights on nodes (−1, 0, +1) (flux-conserving, error O(h³));
        ``"nearest"``: all weight on the nearest node (plain phase binning).
        """
        if how == "nearest":
            return torch.ones_like(e)[:, None]
        return torch.stack([0.5 * e * (e - 1.0), 1.0 - e * e, 0.5 * e * (e + 1.0)], dim=1)

    def _buffer(self, numel: int) -> torch.Tensor:
        """A zeroed flat float32 work buffer, reused across calls (avoids page-faulting fresh memory)."""
        buf = self.__dict__.get("_work")
        if buf is None or buf.numel() < numel or buf.device != self.device:
            buf = torch.empty(numel, device=self.device, dtype=torch.float32)
            self._work = buf
        view = buf[:numel]
        view.zero_()
        return view

    def canvas_coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre coordinates (y, x) of the canvas in *cutout* pixel units, each (N,)."""
        ar = torch.arange(self.canvas, device=self.device, dtype=torch.float32) - self.radius
        return ar, ar

    def render(
        self,
        n_samples: int,
        sample_index: torch.Tensor,
        y: torch.Tensor,
        x: torch.Tensor,
        flux: torch.Tensor,
        smooth: torch.Tensor | None = None,
        *,
        crop: bool = True,
        faint_flux: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noiseless images of point sources plus optional smooth light.

        Parameters
        ----------
        n_samples : int
            Batch size B.
        sample_index : torch.Tensor
            int64 (S,): the sample each star belongs to (0 ≤ index < B).
        y, x : torch.Tensor
            float (S,): star positions in cutout pixel coordinates (pixel centres at 0 … H−1).
            Stars off the canvas are dropped.
        flux : torch.Tensor
            float (S, C): count rate of each star per band (e⁻/s).
        smooth : torch.Tensor, optional
            (B, C, N, N) smooth light on the canvas (N = H + 2R), e⁻/s per pixel as point samples at
            pixel centres; convolved with the zero-offset PSF.
        crop : bool
            Return the (H, W) cutout (default) or the full (N, N) canvas.
        faint_flux : torch.Tensor, optional
            (C,) e⁻/s: stars fainter than this in every band go to their nearest phase node only
            (their sub-pixel error is far below the noise; saves memory for rich fields).

        Returns
        -------
        torch.Tensor
            float32 (B, C, H, W) (or (B, C, N, N)), e⁻/s per pixel.
        """
        n, r, c_n = self.canvas, self.radius, self.n_bands
        dev = self.device
        sample_index, y, x, flux = (t.to(dev) for t in (sample_index, y, x, flux))
        # stars whose nearest nodes can touch the canvas, in valid samples
        lo, hi = -r - 1.5, self.image_size + r + 0.5
        on = (
            (y > lo)
            & (y < hi)
            & (x > lo)
            & (x < hi)
            & (sample_index >= 0)
            & (sample_index < n_samples)
        )
        if faint_flux is not None and self.interpolation != "nearest":
            faint = (flux < faint_flux.to(dev, flux.dtype)).all(1)
            groups = [(on & ~faint, self.interpolation), (on & faint, "nearest")]
        else:
            groups = [(on, self.interpolation)]
        size = n if not crop else self.image_size
        out = torch.empty(n_samples, c_n, size, size, device=dev, dtype=torch.float32)
        plane_stride = n * n
        band_stride = self.n_planes * plane_stride
        sample_stride = c_n * band_stride
        n_chunks = -(-n_samples // self.chunk_size)
        # per group: deposits ordered by chunk (stars sorted by chunk, not the k² deposits)
        deposits = []
        for mask, how in groups:
            idx = mask.nonzero().flatten()
            chunk_of = torch.div(sample_index[idx], self.chunk_size, rounding_mode="floor")
            if n_chunks > 1:
                order = torch.sort(chunk_of, stable=True)
                idx, chunk_of = idx[order.indices], order.values
            offset, fl = self._deposit(y[idx], x[idx], flux[idx], how)
            q = offset + (sample_index[idx] * sample_stride)[:, None]
            per_star = q.shape[1]
            bounds = (
                torch.searchsorted(chunk_of, torch.arange(n_chunks + 1, device=dev)) * per_star
            ).tolist()
            deposits.append((q.flatten(), fl.reshape(c_n, -1), bounds))
        for k, start in enumerate(range(0, n_samples, self.chunk_size)):
            stop = min(start + self.chunk_size, n_samples)
            bc = stop - start
            planes = self._buffer(bc * sample_stride)
            for q, fl, bounds in deposits:
                a, b = bounds[k], bounds[k + 1]
                if a == b:
                    continue
                qk = q[a:b] - start * sample_stride
                for c in range(c_n):
                    planes.index_add_(0, qk + c * band_stride if c else qk, fl[c, a:b])
            planes = planes.view(bc, c_n, self.n_planes, n, n)
            if smooth is not None:
                planes[:, :, self.centre_plane] += smooth[start:stop].to(dev, torch.float32)
            spec = torch.fft.rfft2(planes)
            acc = spec[:, :, 0] * self.kernel_ft[:, 0]
            for j in range(1, self.n_planes):
                acc.addcmul_(spec[:, :, j], self.kernel_ft[:, j])
            img = torch.fft.irfft2(acc, s=(n, n))
            out[start:stop] = (
                img[..., r : r + self.image_size, r : r + self.image_size] if crop else img
            )
        return out


def render_stars_reference(
    psfs: Sequence[EffectivePSF],
    image_size: int,
    y: np.ndarray,
    x: np.ndarray,
    flux: np.ndarray,
    radius_px: int = 8,
) -> np.ndarray:
    """Straightforward per-star renderer: the exact effective PSF at each star's exact position.

    Slow (a Python loop over stars and bands, cubic-spline interpolation of the oversampled PSF);
    the accuracy and speed baseline of :class:`PhaseRenderer`.

    Parameters
    ----------
    psfs : sequence of EffectivePSF
        One per band.
    image_size : int
        Cutout side (px).
    y, x : numpy.ndarray
        (S,) positions in cutout pixel coordinates.
    flux : numpy.ndarray
        (S, C) count rates (e⁻/s).
    radius_px : int
        Half-size of the stamp drawn around each star (px).

    Returns
    -------
    numpy.ndarray
        float64 (C, H, W) image, e⁻/s per pixel (light beyond the stamp is renormalised into it).
    """
    n_b = len(psfs)
    img = np.zeros((n_b, image_size, image_size))
    grid = np.arange(-radius_px, radius_px + 1, dtype=float)
    for s in range(len(x)):
        cy, cx = int(np.floor(y[s] + 0.5)), int(np.floor(x[s] + 0.5))
        dy, dx = y[s] - cy, x[s] - cx
        for b, psf in enumerate(psfs):
            o, c = psf.oversampling, psf.data.shape[0] // 2
            yy = c + (grid[:, None] - dy) * o + 0 * grid[None, :]
            xx = c + (grid[None, :] - dx) * o + 0 * grid[:, None]
            stamp = np.clip(map_coordinates(psf.data, [yy, xx], order=3, mode="constant"), 0, None)
            stamp *= flux[s, b] / stamp.sum()
            y0, x0 = cy - radius_px, cx - radius_px
            ys, xs = (
                slice(max(y0, 0), min(y0 + 2 * radius_px + 1, image_size)),
                slice(max(x0, 0), min(x0 + 2 * radius_px + 1, image_size)),
            )
            if ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            img[b, ys, xs] += stamp[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return img
