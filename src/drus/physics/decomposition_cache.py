"""The on-disk cache of the decomposition of ``BH``: keyed by a hash of everything that defines it.

Each flip block is stored as ``bh-<key>-<parity>.safetensors`` (singular values and vectors, the
parity in the file's metadata) next to a ``.json`` with its provenance; writes are atomic, and a
block whose stored parity or shape does not match is rebuilt rather than trusted. The folder is
``$DRUS_CACHE`` or ``~/.cache/drus`` unless given. :func:`drus.physics.decompose.decompose_bh` reads
and writes it; ``drus decompose`` warms it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from drus.outputs import atomic_write, write_text_atomic
from drus.physics.beamform import MatchedFilterBeamformer
from drus.physics.decompose import SpectralBlock, _choice, _is_rectangular

__all__ = ["FORMAT_VERSION", "default_cache_dir", "cache_key"]

log = logging.getLogger(__name__)

#: Version of the cached decomposition format; part of the cache key.
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$DRUS_CACHE`` or ``~/.cache/drus``."""
    env = os.environ.get("DRUS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "drus"


def _sha256_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _definition(beamformer: MatchedFilterBeamformer, **options) -> dict:
    """Everything that defines ``BH`` and the decomposition, as JSON-able values (floats exact)."""
    m = beamformer.model
    p, w, pulse = m.probe, m.wave, m.pulse
    H, B = beamformer.H, beamformer.B
    return {
        "format_version": FORMAT_VERSION,
        "probe": {"n_elements": p.n_elements, "pitch": p.pitch, "center_frequency": p.center_frequency,
                  "bandwidth": p.bandwidth},
        "pulse": {"samples_sha256": _sha256_arrays(pulse.samples), "sampling_frequency": pulse.sampling_frequency,
                  "oversampling": pulse.oversampling},
        "grid": {"x": list(beamformer.grid.x), "z": list(beamformer.grid.z)},
        # only for a rectangular BH, so that the keys of square decompositions (caches) are unchanged
        **({"unknown_grid": {"x": list(beamformer.unknown_grid.x), "z": list(beamformer.unknown_grid.z)}}
           if _is_rectangular(beamformer) else {}),
        "wave": {"sampling_frequency": w.sampling_frequency, "sound_speed": w.sound_speed, "angle": w.angle,
                 "t0": w.t0, "n_samples": m.n_samples},
        "f_number": beamformer.f_number,
        "alpha": beamformer.alpha,
        "aperture_upsampling": m.aperture_upsampling,
        "matrix_dtype": str(m.dtype),
        # the matrices themselves: any change of the physics code changes the key
        "H_sha256": _sha256_arrays(H.indptr, H.indices, H.data),
        "B_sha256": _sha256_arrays(B.indptr, B.indices, B.data),
        **options,
    }


def cache_key(
    beamformer: MatchedFilterBeamformer,
    *,
    method: str = "gram",
    threshold: float = 1e-3,
    dtype: str = "float32",
    compute_dtype: str = "float64",
    complement: str = "auto",
    split: str = "flip",
) -> str:
    """SHA-256 (hex) of everything that defines ``BH`` and its cached decomposition.

    Covers probe, pulse samples, grid axes (and the unknown grid's axes for a rectangular ``BH``),
    wave, f-number, Tukey α, aperture upsampling, the dtype and content of ``H``/``B``, the
    decomposition options and :data:`FORMAT_VERSION`. The device is not part of the key (results
    agree to rounding). Square decompositions keep the keys they had before rectangular ones existed,
    and flip-split ones the keys they had before ``split="none"`` existed (``split`` enters the key
    only when it is ``"none"``). ``split="auto"`` must be resolved first (:func:`resolve_split`).
    """
    _choice("split", split, ("flip", "none"))
    extra = {"split": split} if split == "none" else {}
    d = _definition(beamformer, method=method, threshold=float(threshold), dtype=dtype,
                    compute_dtype=compute_dtype, complement=complement, **extra)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _paths(cache_dir: Path, key: str, parity: str) -> tuple[Path, Path]:
    stem = cache_dir / f"bh-{key[:24]}-{parity}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _save_block(cache_dir: Path, key: str, block: SpectralBlock, meta: dict) -> Path:
    from safetensors.torch import save_file

    cache_dir.mkdir(parents=True, exist_ok=True)
    st_path, json_path = _paths(cache_dir, key, block.parity)
    s = np.ascontiguousarray(block.singular_values, dtype=np.float64)
    v = block.vectors.detach().cpu().contiguous()
    checksum = _sha256_arrays(s, v.numpy())
    tensors = {"singular_values": torch.from_numpy(s), "vectors": v}
    atomic_write(st_path, lambda p: save_file(tensors, str(p), metadata={"key": key, "parity": block.parity}))
    meta = {**meta, "key": key, "parity": block.parity, "n": block.n, "n_stored": block.n_stored,
            "layout": block.layout, "s1_block": float(s[0]), "checksum_sha256": checksum,
            "file": st_path.name, "bytes": st_path.stat().st_size}
    write_text_atomic(json_path, json.dumps(meta, indent=1, sort_keys=True))
    log.info("cached the %s block in %s (%.1f MiB)", block.parity, st_path, meta["bytes"] / 2**20)
    return st_path


def _load_block(cache_dir: Path, key: str, parity: str, n: int) -> tuple[SpectralBlock, dict] | None:
    """The cached block, or None (missing; corrupt or mismatched files are warned about)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    st_path, json_path = _paths(cache_dir, key, parity)
    if not (st_path.exists() and json_path.exists()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        if meta.get("key") != key:
            raise ValueError(f"its key {str(meta.get('key'))[:12]}… differs from the requested {key[:12]}…")
        if meta.get("parity") != parity:  # e.g. the even and odd files swapped: same sizes, wrong subspace
            raise ValueError(f"it holds the {meta.get('parity')!r} block, not the {parity!r} one (swapped files?)")
        with safe_open(str(st_path), framework="pt") as f:
            stored_parity = (f.metadata() or {}).get("parity")
        if stored_parity != parity:
            raise ValueError(f"its arrays are those of the {stored_parity!r} block, not the {parity!r} one (swapped files?)")
        tensors = load_file(str(st_path))
        s, v = tensors["singular_values"].numpy(), tensors["vectors"]
        checksum = _sha256_arrays(s, v.numpy())
        if checksum != meta.get("checksum_sha256"):
            raise ValueError("the array checksum does not match the metadata")
        if s.shape != (n,) or v.shape[0] != n or not 1 <= v.shape[1] <= n:
            raise ValueError(f"unexpected shapes {tuple(s.shape)}, {tuple(v.shape)} for a block of size {n}")
    except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
        warnings.warn(f"ignoring the cached decomposition {st_path} ({exc}); rebuilding it", stacklevel=3)
        return None
    log.info("loaded the %s block from %s", parity, st_path)
    return SpectralBlock(parity, s.astype(np.float64), v), meta
