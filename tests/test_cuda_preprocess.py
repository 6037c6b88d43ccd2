"""The CUDA pre-processing library (`cmake/`) through its ctypes binding.

Without a GPU (CI, this machine): the library builds with nvcc, loads, its API version and struct
layouts match the binding, its letterbox geometry is the reference's, and every bad argument comes
back as its error code (a valid call without a GPU is ERR_CUDA with CUDA's reason), never a crash.
With a GPU (marked `gpu`, run on a lent machine with CuPy): parity with the OpenCV reference on
generated scenes and noise at odd sizes, BGR/RGB/NV12, FP32/FP16, pitched rows and batches.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from h2a.runtime.backends import cuda_preprocess as cp
from h2a.runtime.preprocess import Preprocessor, letterbox_geometry

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "build" / "native" / "libh2a_preprocess.so"


@pytest.fixture(scope="session")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """The library `make native` built, or a fresh build where nvcc exists."""
    if not BUILT.is_file():
        if shutil.which("nvcc") is None or shutil.which("cmake") is None:
            pytest.skip("nvcc and cmake are needed to build cmake/ (the CUDA toolkit)")
        build = tmp_path_factory.mktemp("native")
        for cmd in (["cmake", "-S", str(ROOT / "cmake"), "-B", str(build)], ["cmake", "--build", str(build)]):
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
        return cp.load_library(str(build / "libh2a_preprocess.so"))
    return cp.load_library(str(BUILT))


def _has_gpu() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # no CuPy, no driver, no device
        return False


HAS_GPU = _has_gpu()


def test_the_library_matches_the_binding(lib: ctypes.CDLL) -> None:
    assert lib.h2a_pp_api_version() == cp.API_VERSION
    for which, struct in enumerate(cp.STRUCTS):
        out = (ctypes.c_int64 * 8)()
        n = lib.h2a_pp_layout(which, out, 8)
        assert list(out[:n]) == cp.layout_of(struct), struct.__name__
    assert lib.h2a_pp_layout(9, (ctypes.c_int64 * 8)(), 8) == -1
    assert lib.h2a_pp_layout(0, (ctypes.c_int64 * 2)(), 2) == -1  # too small: refused, not overrun
    for code, name in cp.STATUS.items():
        assert lib.h2a_pp_status_string(code).decode(), name


@pytest.mark.parametrize("size", [224, 320, 511, 640])
def test_its_letterbox_geometry_is_the_references(lib: ctypes.CDLL, size: int) -> None:
    pre = cp.CudaPreprocessor(size, library=lib)
    rng = np.random.default_rng(size)
    shapes: list[tuple[int, ...]] = [
        (1, 1),
        (1920, 1080),
        (1080, 1920),
        (size, size),
        (641, 359),
        (37, 1000),
        (3, 2),
        (2, 3),
    ]
    shapes += [tuple(int(v) for v in rng.integers(1, 4000, 2)) for _ in range(300)]
    for w, h in shapes:
        assert pre.geometry(w, h) == letterbox_geometry(w, h, size), (w, h)


def _call(lib: ctypes.CDLL, image: cp.Image | None, params: cp.Params, dst: int, count: int = 1) -> int:
    images = None if image is None else (cp.Image * max(1, count))(*([image] * max(1, count)))
    return int(lib.h2a_pp_letterbox_batch(images, count, ctypes.byref(params), ctypes.c_void_p(dst), None))


def _params(**change: Any) -> cp.Params:
    p = cp.Params(
        224, 114, 0, (ctypes.c_float * 3)(0.485, 0.456, 0.406), (ctypes.c_float * 3)(0.229, 0.224, 0.225)
    )
    for key, value in change.items():
        setattr(p, key, value)
    return p


def _image(**change: Any) -> cp.Image:
    im = cp.Image(0x10000, None, 64, 48, 192, 0)
    for key, value in change.items():
        setattr(im, key, value)
    return im


@pytest.mark.parametrize(
    ("image", "params", "dst", "count", "status"),
    [
        (None, {}, 0x20000, 1, "ERR_NULL"),
        ({"data": None}, {}, 0x20000, 1, "ERR_NULL"),
        ({}, {}, 0, 1, "ERR_NULL"),
        ({}, {}, 0x20000, 0, "ERR_COUNT"),
        ({}, {}, 0x20000, 17, "ERR_COUNT"),
        ({"width": 0}, {}, 0x20000, 1, "ERR_SIZE"),
        ({"height": -5}, {}, 0x20000, 1, "ERR_SIZE"),
        ({"pitch": 191}, {}, 0x20000, 1, "ERR_SIZE"),
        ({"format": 7}, {}, 0x20000, 1, "ERR_FORMAT"),
        ({"format": 2, "width": 63, "pitch": 64}, {}, 0x20000, 1, "ERR_FORMAT"),
        ({"format": 2, "pitch": 63}, {}, 0x20000, 1, "ERR_SIZE"),
        ({}, {"size": 0}, 0x20000, 1, "ERR_SIZE"),
        ({}, {"size": 100_000}, 0x20000, 1, "ERR_SIZE"),
        ({}, {"dtype": 3}, 0x20000, 1, "ERR_DTYPE"),
        ({}, {"pad_value": 256}, 0x20000, 1, "ERR_VALUE"),
        ({}, {"std": (ctypes.c_float * 3)(0.2, 0.0, 0.2)}, 0x20000, 1, "ERR_VALUE"),
    ],
)
def test_bad_arguments_return_their_error_code(
    lib: ctypes.CDLL, image: dict[str, Any] | None, params: dict[str, Any], dst: int, count: int, status: str
) -> None:
    code = _call(lib, None if image is None else _image(**image), _params(**params), dst, count)
    assert cp.STATUS[code] == status


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU path")
def test_a_valid_call_without_a_gpu_is_a_cuda_error_with_a_reason(lib: ctypes.CDLL) -> None:
    pre = cp.CudaPreprocessor(224, library=lib)
    with pytest.raises(cp.PreprocessError, match=r"ERR_CUDA: .*\(cuda"):
        pre([cp.DeviceFrame(0x10000, 64, 48, 192)], 0x20000)


# ---- on a GPU ---------------------------------------------------------------------------------------
def _frames() -> list[np.ndarray]:
    """Generated scenes (stick figures on textured backdrops) and noise, at odd sizes."""
    from h2a.export_tools.data.scenes import SceneGenerator

    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate([(640, 360), (1280, 720), (641, 359), (37, 1000), (1000, 37), (224, 224)]):
        scene = SceneGenerator(512, seed=i).scene(i).image
        out.append(cv2.resize(scene, (w, h), interpolation=cv2.INTER_CUBIC))
    out.append(rng.integers(0, 256, (479, 853, 3), dtype=np.uint8))  # worst case for interpolation
    out.append(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8))  # upscaled 50x
    return out


def _pixel_error(gpu: np.ndarray, cpu: np.ndarray) -> float:
    """Max |difference| in 0..255 pixel units: each channel's normalisation undone."""
    std = np.asarray((0.229, 0.224, 0.225), np.float32).reshape(3, 1, 1)
    return float((np.abs(gpu.astype(np.float32) - cpu) * 255 * std).max())


#: One grey level, plus float rounding of the normalised values.
ONE_LEVEL = 1.0 + 1e-3


def _run(lib: ctypes.CDLL, frames: list[tuple[np.ndarray, str]], size: int, dtype: str) -> np.ndarray:
    import cupy

    pre = cp.CudaPreprocessor(size, dtype=dtype, library=lib)
    device = [cupy.asarray(np.ascontiguousarray(f)) for f, _ in frames]
    specs = []
    for (f, fmt), d in zip(frames, device, strict=True):
        h = f.shape[0] * 2 // 3 if fmt == "nv12" else f.shape[0]
        w = f.shape[1]
        pitch = w if fmt == "nv12" else w * 3
        specs.append(cp.DeviceFrame(int(d.data.ptr), w, h, pitch, fmt))
    out = cupy.zeros((len(frames), 3, size, size), np.float16 if dtype == "float16" else np.float32)
    pre(specs, int(out.data.ptr))
    cupy.cuda.runtime.deviceSynchronize()
    return cupy.asnumpy(out)


def _nv12(bgr: np.ndarray) -> np.ndarray:
    """(H * 3/2, W) NV12: the Y plane, then U and V interleaved at half resolution."""
    h, w = bgr.shape[:2]
    flat = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)  # Y, then all of U, then all of V
    quarter = (h // 2) * (w // 2)
    u = flat[h * w : h * w + quarter].reshape(h // 2, w // 2)
    v = flat[h * w + quarter :].reshape(h // 2, w // 2)
    return np.concatenate([flat[: h * w].reshape(h, w), np.stack([u, v], axis=-1).reshape(h // 2, w)])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and CuPy (run on a lent GPU machine)")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fmt", ["bgr", "rgb", "nv12"])
def test_gpu_output_matches_the_opencv_reference(lib: ctypes.CDLL, fmt: str, dtype: str) -> None:
    errors = []
    for frame in _frames():
        if fmt == "nv12":
            frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]
            if min(frame.shape[:2]) < 2:
                continue
            source = _nv12(frame)
            reference_bgr = cv2.cvtColor(source, cv2.COLOR_YUV2BGR_NV12)
        elif fmt == "rgb":
            source, reference_bgr = np.ascontiguousarray(frame[..., ::-1]), frame
        else:
            source, reference_bgr = frame, frame
        for size in (224, 320):
            (gpu,) = _run(lib, [(source, fmt)], size, dtype)
            cpu = Preprocessor(size)(reference_bgr)[0][0]
            errors.append(_pixel_error(gpu, cpu))
    fp16_slack = 0.02 * 255 * 0.229 if dtype == "float16" else 0.0  # half precision of values up to ~2.6
    assert max(errors) <= ONE_LEVEL + fp16_slack, errors


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and CuPy (run on a lent GPU machine)")
def test_gpu_batch_of_cameras_equals_one_call_each(lib: ctypes.CDLL) -> None:
    frames = [(f, "bgr") for f in _frames()[:5]]
    batch = _run(lib, frames, 256, "float32")
    for i, one in enumerate(frames):
        np.testing.assert_array_equal(batch[i], _run(lib, [one], 256, "float32")[0])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and CuPy (run on a lent GPU machine)")
def test_gpu_pitched_rows(lib: ctypes.CDLL) -> None:
    import cupy

    frame = _frames()[2]
    h, w = frame.shape[:2]
    pitch = (w * 3 + 255) // 256 * 256
    padded = np.zeros((h, pitch), np.uint8)
    padded[:, : w * 3] = frame.reshape(h, w * 3)
    padded[:, w * 3 :] = 255  # garbage a wrong pitch would pull in
    d = cupy.asarray(padded)
    out = cupy.zeros((1, 3, 224, 224), np.float32)
    cp.CudaPreprocessor(224, library=lib)([cp.DeviceFrame(int(d.data.ptr), w, h, pitch)], int(out.data.ptr))
    cupy.cuda.runtime.deviceSynchronize()
    assert _pixel_error(cupy.asnumpy(out)[0], Preprocessor(224)(frame)[0][0]) <= ONE_LEVEL


# ---- the engine's frame input ------------------------------------------------------------------------
def test_the_frame_input_on_each_backend_and_what_inspect_says(
    lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from h2a.runtime.backends import frame_input

    assert frame_input.describe("onnxruntime") == "OpenCV on the CPU"
    monkeypatch.setenv(cp.LIB_ENV, lib._name)
    assert frame_input.describe("tensorrt").startswith("CUDA kernel (")
    broken = tmp_path / "libh2a_preprocess.so"
    broken.write_bytes(b"not a library")
    monkeypatch.setenv(cp.LIB_ENV, str(broken))
    text = frame_input.describe("tensorrt")
    assert text.startswith("OpenCV on the CPU (cannot load") and str(broken) in text
    cpu = frame_input.open_frame_input("onnxruntime", object(), Preprocessor(64))
    assert isinstance(cpu, frame_input.CpuFrameInput)


def test_edge_run_inspect_names_the_preprocessing(tiny_bundle: Path) -> None:
    from .conftest import run_cli

    result = run_cli("h2a.edge.run_cli", "--engine", str(tiny_bundle), "--inspect")
    assert result.returncode == 0, result.stderr
    assert "preprocess  OpenCV on the CPU" in result.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and CuPy (run on a lent GPU machine)")
def test_gpu_frame_input_feeds_the_reference_input_through_cuda_python(lib: ctypes.CDLL) -> None:
    """The TensorRT path's frame input, with cuda-python (the default binding): pinned upload and
    kernel on one stream, read back from its device buffer."""
    from h2a.runtime.backends.cuda_memory import CudaPython
    from h2a.runtime.backends.frame_input import GpuFrameInput

    cuda = CudaPython()
    stream = cuda.stream_create()
    pre = Preprocessor(320)
    gpu = GpuFrameInput(cuda, stream, pre, lib._name)
    host = cuda.pinned_empty((1, 3, 320, 320), np.dtype(np.float32))
    for frame in [*_frames()[:4], _frames()[1]]:  # sizes change, then a smaller frame reuses buffers
        pointer, geometry = gpu(frame)
        cuda.dtoh_async(host, pointer.ptr, stream)
        cuda.stream_sync(stream)
        reference, ref_geometry = pre(frame)
        assert geometry == ref_geometry and pointer.shape == (1, 3, 320, 320)
        assert _pixel_error(host[0], reference[0]) <= ONE_LEVEL


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and CuPy (run on a lent GPU machine)")
def test_gpu_frame_input_double_buffered_upload_runs_ahead_and_stays_right(lib: ctypes.CDLL) -> None:
    """As the engine runs it: frame t+1 is submitted (its upload queued on the upload stream)
    before anything waits for frame t, with busy work standing in for `hoi` on the stream between
    kernels. Each frame's input, copied out right after its kernel on the stream, must still be
    its own frame's reference: the events keep the upload of t+1 off the buffer kernel t reads."""
    import cupy

    from h2a.runtime.backends.cuda_memory import CudaPython
    from h2a.runtime.backends.frame_input import GpuFrameInput

    cuda = CudaPython()
    stream = cuda.stream_create()
    pre = Preprocessor(320)
    gpu = GpuFrameInput(cuda, stream, pre, lib._name)
    frames = [*_frames()[:6], *_frames()[:3]]
    outs = [cuda.pinned_empty((1, 3, 320, 320), np.dtype(np.float32)) for _ in frames]
    busy = cupy.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    with cupy.cuda.ExternalStream(stream):
        for frame, out in zip(frames, outs, strict=True):
            pointer, _ = gpu(frame)
            cuda.dtoh_async(out, pointer.ptr, stream)
            for _ in range(4):  # `hoi` stand-in: a few ms of work on its stream
                busy = busy @ busy
                busy /= cupy.abs(busy).max()
    cuda.stream_sync(stream)
    for frame, out in zip(frames, outs, strict=True):
        assert _pixel_error(out[0], pre(frame)[0][0]) <= ONE_LEVEL
    gpu.close()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and CuPy (run on a lent GPU machine)")
def test_gpu_cuda_python_works_from_a_worker_thread_and_frees_pinned_buffers() -> None:
    """The caption worker allocates and copies on its own thread (review finding 2): with
    cuda-python's runtime API on the primary context that needs no context juggling."""
    import threading

    from h2a.runtime.backends.cuda_memory import CudaPython

    cuda = CudaPython()
    results: list[np.ndarray] = []

    def worker() -> None:
        stream = cuda.stream_create()
        host = cuda.pinned_empty((1024,), np.dtype(np.float32))
        host[:] = np.arange(1024)
        device = cuda.device_alloc(host.nbytes)
        back = cuda.pinned_empty((1024,), np.dtype(np.float32))
        cuda.htod_async(device, host, stream)
        cuda.dtoh_async(back, device, stream)
        cuda.stream_sync(stream)
        results.append(back.copy())
        cuda.device_free(device)
        cuda.pinned_free(host)
        cuda.pinned_free(back)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert len(results) == 1 and np.array_equal(results[0], np.arange(1024))
    assert not cuda._pinned  # every pinned buffer was given back
