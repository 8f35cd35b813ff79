"""The CLIP's convolutional image trunk on ONNX Runtime, for inference on the CPU.

Measured on this 2-core machine (``bench/clip_runtime.py``): timm's EfficientNet-Lite0 trunk at
160 px runs about 3x as many photos per second on one thread through ONNX Runtime's CPU kernels
as through torch eager, with the same features (largest difference ~1e-5). Every locked-trunk
feature of the system goes through it: the image-text check in ``ipl prepare``, the base CLIP's
corpus in ``ipl synth``, the encoder fine-tuning's locked features, the index's embeddings and
Perception in serving.

:class:`OrtTrunk` exports the trunk as it is (torch.onnx, in memory, under a second) and runs
it, after checking that it gives torch's features on a probe batch; :meth:`OrtTrunk.matches` tells whether the trunk's weights changed since (every in-place
update of a parameter or buffer bumps its version counter: an optimizer step, ``load_state_dict``),
so a trunk being trained is exported again rather than served stale. Only used for a trunk in
eval mode on the CPU (:meth:`ipl.models.clip.Clip.trunk_features` decides); a GPU runs torch.
"""
from __future__ import annotations

import io
import logging
import warnings
from typing import Optional

import numpy as np
import torch

log = logging.getLogger(__name__)
TOLERANCE = 1e-3  # largest difference from torch's features allowed at export (relative to their scale)


def _versions(module: torch.nn.Module) -> tuple:
    return tuple(t._version for t in (*module.parameters(), *module.buffers()))


class OrtTrunk:
    def __init__(self, trunk: torch.nn.Module, image_size: tuple[int, int], threads: Optional[int] = None):
        import onnxruntime as ort

        self.versions = _versions(trunk)
        buf = io.BytesIO()
        was_training = trunk.training
        trunk.eval()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # torch's TorchScript-based exporter (the one that needs no onnxscript) says it is the
                # legacy one; the result is checked against torch below
                warnings.simplefilter("ignore")
                probe = torch.randn(2, 3, *image_size, generator=torch.Generator().manual_seed(0))
                torch.onnx.export(trunk, (probe[:1],), buf, input_names=["pixels"], output_names=["features"],
                                  dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                                  opset_version=17, dynamo=False)
                expected = trunk(probe.to(next(trunk.parameters()).device)).float().cpu()
        finally:
            trunk.train(was_training)
        options = ort.SessionOptions()
        threads = max(1, int(threads if threads is not None else torch.get_num_threads()))
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if threads > 1:  # no busy-waiting threads on a machine the other stages share
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        self.threads = threads
        got = self(probe)
        err = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
        if not err <= TOLERANCE * max(1.0, float(expected.abs().max())):
            raise ValueError(f"ONNX Runtime's features differ from torch's by {err:.3g}")

    def matches(self, trunk: torch.nn.Module) -> bool:
        """Whether ``trunk``'s weights are still the ones exported."""
        return _versions(trunk) == self.versions

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features of a batch of preprocessed pixels (N, 3, H, W), float32 on the CPU."""
        x = np.ascontiguousarray(pixels.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run(None, {"pixels": x})[0])


def try_ort_trunk(trunk: torch.nn.Module, image_size: tuple[int, int]) -> Optional[OrtTrunk]:
    """An :class:`OrtTrunk`, or None with a warning where onnx / onnxruntime are missing, the trunk
    does not export or its features differ from torch's (the caller then stays on torch)."""
    try:
        return OrtTrunk(trunk, image_size)
    except Exception as exc:  # an architecture the exporter cannot take, or no onnx installed
        log.warning("the image trunk stays on torch (ONNX Runtime export failed: %s: %s)", type(exc).__name__, exc)
        return None
