"""VMamba's SS2D cross-scan: four scan orders of a 2-D map, and the merge that sums them back.

``cross_scan``: (B, C, H, W) → (B, 4, C, H·W) in the orders row-major, column-major, reversed row-major,
reversed column-major. ``cross_merge``: (B, 4, C, H·W) → (B, C, H·W), mapping each order back to row-major
and summing. The two are adjoint (each one's backward is the other). Maps may be plain (B, C, H, W) or
channels-last memory, and ``cross_merge(..., channels_last=True)`` returns its (B, C, H·W) result in
(B, H·W, C) memory, ready for channel-last layers. On CUDA with Triton both run fused kernels (one pass)
where they pay: ``cross_merge`` always, ``cross_scan`` on channels-last maps, where the tensor ops would
transpose in several passes (plain maps keep the tensor ops, as fast or faster there on an H100 except at
14×14, ``benchmarks/notes_scan.md``). ``fused=True/False`` forces either path.
"""

from __future__ import annotations

import torch


def _fused_available(t: torch.Tensor) -> bool:
    if not t.is_cuda:
        return False
    try:
        import ssmvlm.ops.cross_scan_triton  # noqa: F401
    except ImportError:
        return False
    return True


def cross_scan(
    x: torch.Tensor, *, fused: bool | None = None, grouped: bool = False, reverses: bool = True,
    time_major: bool = False,
) -> torch.Tensor:
    """(B, C, H, W) → (B, 4, C, H·W); ``fused=None`` uses the Triton kernel for channels-last maps on CUDA.

    ``grouped``: x holds four channel groups, (B, 4·C, H, W), and order k is taken of group k alone
    → (B, 4, C, H·W) (what each order's own projection of a map needs). ``reverses=False``: the row- and
    column-major orders only, (B, 2, C, H·W), for a scan that reads the reversed orders backwards from them
    (:class:`ssmvlm.ops.MirroredRows`). ``time_major``: the result in (B, H·W, 4, C) memory, for the CPU training
    scan (``ssmvlm.ops.scan_sequential``), which steps through time; from a channels-last map every order is then
    a copy of whole channel rows instead of a transpose (tensor ops only, with ``reverses`` and without ``fused``).
    """
    if grouped and x.shape[1] % 4:
        raise ValueError(f"cross_scan(grouped=True) needs four channel groups; got {x.shape[1]} channels")
    if grouped and not reverses:
        raise ValueError("cross_scan(grouped=True) takes order k of group k: every order, reverses included")
    if fused is None:
        fused = _fused_available(x) and x.stride(1) == 1 and x.shape[1] > 1
    if fused:
        from ssmvlm.ops.cross_scan_triton import CrossScanFused

        return CrossScanFused.apply(x, grouped, reverses)
    batch, channels, height, width = x.shape
    if time_major:
        return _cross_scan_time_major(x, grouped)
    if grouped:
        groups = x.view(batch, 4, channels // 4, height, width)
        rows, cols = groups[:, 0::2].flatten(3), groups[:, 1::2].transpose(3, 4).flatten(3)
        return torch.stack([rows[:, 0], cols[:, 0], rows[:, 1].flip(-1), cols[:, 1].flip(-1)], dim=1)
    row_major = x.flatten(2)
    col_major = x.transpose(2, 3).flatten(2)
    forward = torch.stack([row_major, col_major], dim=1)
    if not reverses:
        return forward
    return torch.cat([forward, forward.flip(-1)], dim=1).view(batch, 4, channels, height * width)


def _cross_scan_time_major(x: torch.Tensor, grouped: bool) -> torch.Tensor:
    batch, channels = x.shape[:2]
    per_order = channels // 4 if grouped else channels
    tokens = x.permute(0, 2, 3, 1)  # (B, H, W, C): a view of channels-last memory
    if grouped:
        groups = tokens.unflatten(3, (4, per_order))
        rows, cols = groups[..., 0::2, :], groups[..., 1::2, :].transpose(1, 2)
        rows, cols = rows.reshape(batch, -1, 2, per_order), cols.reshape(batch, -1, 2, per_order)
        orders = torch.stack([rows[:, :, 0], cols[:, :, 0], rows[:, :, 1].flip(1), cols[:, :, 1].flip(1)], dim=2)
    else:
        rows, cols = tokens.reshape(batch, -1, channels), tokens.transpose(1, 2).reshape(batch, -1, channels)
        forward = torch.stack([rows, cols], dim=2)
        orders = torch.cat([forward, forward.flip(1)], dim=2)
    return orders.permute(0, 2, 3, 1)  # (B, 4, C, H·W) in (B, H·W, 4, C) memory


def _is_time_major(y: torch.Tensor) -> bool:
    """Whether a (B, 4, C, L) tensor lies in (B, L, 4, C) memory."""
    return y.permute(0, 3, 1, 2).is_contiguous()


def cross_merge(
    y: torch.Tensor, height: int, width: int, *, fused: bool | None = None, channels_last: bool = False,
    grouped: bool = False, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 4, C, H·W) → (B, C, H·W), the sum of the four orders mapped back to row-major.

    ``fused=None`` uses the Triton kernel on CUDA when Triton imports; True forces it, False forbids it.
    ``channels_last`` lays the result out as (B, H·W, C) in memory. ``grouped`` maps order k back into
    channel group k instead of summing, (B, 4·C, H·W): the adjoint of ``cross_scan(..., grouped=True)``.
    ``out``: a (B, C, H, W) map (a channel slice of a larger one, say) the result is written into and
    returned as; as with torch's ``out=`` arguments, this is not differentiable.
    """
    batch, directions, channels, length = y.shape
    if directions != 4 or length != height * width:
        raise ValueError(f"cross_merge expects (B, 4, C, {height}*{width}); got {tuple(y.shape)}")
    if out is not None:
        merged_channels = 4 * channels if grouped else channels
        if out.shape != (batch, merged_channels, height, width):
            raise ValueError(f"cross_merge: out must be ({batch}, {merged_channels}, {height}, {width}); "
                             f"got {tuple(out.shape)}")
        if torch.is_grad_enabled() and (y.requires_grad or out.requires_grad):
            raise RuntimeError("cross_merge(out=...) does not support automatic differentiation")
    if out is None and not grouped and not y.is_cuda and _is_time_major(y):
        # time-major orders (the CPU training scan's): sums of whole channel rows, into channels-last memory.
        # unbind, not four indexings: its backward stacks the four gradients into one tensor, where each
        # indexing's would zero-fill a whole (B, L, 4, C) gradient and autograd would then add the four up.
        row_major, col_major, row_reversed, col_reversed = y.permute(0, 3, 1, 2).unbind(2)
        rows = row_major + row_reversed.flip(1)
        cols = col_major + col_reversed.flip(1)
        merged = (rows.view(batch, height, width, channels) + cols.view(batch, width, height, channels).transpose(1, 2))
        merged = merged.view(batch, length, channels).transpose(1, 2)
        return merged if channels_last else merged.contiguous()
    if fused if fused is not None else _fused_available(y):
        from ssmvlm.ops.cross_scan_triton import CrossMergeFused, merge

        if out is not None:
            return merge(y, height, width, channels_last, grouped, out=out)
        return CrossMergeFused.apply(y, height, width, channels_last, grouped)

    def to_row_major(column_major: torch.Tensor) -> torch.Tensor:
        return column_major.view(batch, channels, width, height).transpose(2, 3).reshape(batch, channels, length)

    if grouped:
        orders = [y[:, 0], to_row_major(y[:, 1]), y[:, 2].flip(-1), to_row_major(y[:, 3].flip(-1))]
        merged = torch.cat(orders, dim=1)
    else:
        merged = y[:, 0] + y[:, 2].flip(-1) + to_row_major(y[:, 1] + y[:, 3].flip(-1))
    if out is not None:
        return out.copy_(merged.view(out.shape))
    return merged.transpose(1, 2).contiguous().transpose(1, 2) if channels_last else merged
