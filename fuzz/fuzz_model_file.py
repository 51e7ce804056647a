"""Coverage-guided fuzzing (atheris / libFuzzer) of the model-file reader.

    python fuzz/fuzz_model_file.py -max_total_time=60            # seeds generated at start
    python fuzz/fuzz_model_file.py CORPUS_DIR -runs=100000        # keep a corpus

Every input is a candidate model file. The first byte picks the mode:

* even: the remaining bytes are the file (raw mutation of ZIP / .npy / JSON bytes);
* odd: a structure-aware mutation of a valid file: one metadata field or one array entry of
  a seed (the plain model, or the ``calibration="synthetic"`` one with its ``weights``
  entry) is replaced by fuzzed data and the file is re-packed with a valid checksum, so the
  checks behind the checksum (types, shapes, consistency) are reached.

The reader (``structcore.io.read_model_file``) and the metadata checks that
``Detector.load`` runs before building the backbone must either accept the file or raise
exactly ``ValueError``; anything else (another exception type, a crash, a hang) is a finding.
The seed corpus (a fitted 8-dim detector saved as version 2, deflated, and as version 1; the
same detector with ``calibration="synthetic"``, version 3) is generated at start into a
temporary folder unless a corpus folder is given.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import warnings
import zipfile

import atheris

from _common import run

with atheris.instrument_imports(include=["structcore"]):
    import structcore.io as sio
    from structcore import Detector

import numpy as np

SEEDS: list[bytes] = []


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _pack(meta: dict | bytes, arrays: dict[str, np.ndarray], *, deflate: bool = False) -> bytes:
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode("utf-8", "surrogatepass")
    blob = np.frombuffer(text, np.uint8)
    buf = io.BytesIO()
    mode = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=mode) as zf:
        zf.writestr("metadata.npy", _npy(blob))
        for name, a in arrays.items():
            zf.writestr(f"{name}.npy", _npy(a))
    return buf.getvalue()


def _seal(meta: dict, arrays: dict[str, np.ndarray]) -> dict | bytes:
    """``meta`` with a valid checksum, serialised; unchanged if it cannot be serialised."""
    meta = dict(meta)
    meta["arrays"] = {n: {"dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()}
    try:
        return sio.seal_metadata(meta, arrays)
    except (TypeError, ValueError, UnicodeEncodeError):
        return meta


def _saved(det: Detector) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.npz")
        det.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def make_seeds() -> list[bytes]:
    """[plain version 2, deflated, version 1, calibration="synthetic" version 3]."""
    rng = np.random.default_rng(0)
    images = rng.integers(90, 160, size=(4, 36, 36, 3), dtype=np.uint8)
    params = dict(backbone="resnet18", weights=None, dim=8, resize=32, crop=32, folds=2, seed=0)
    plain = _saved(Detector(**params).fit(images))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tiny learned fit may fall back to max pooling
        learned = _saved(Detector(**params, calibration="synthetic").fit(images))
    meta, arrays = sio.read_model_file(plain)
    v1 = dict(meta, version=1, checksum=sio.array_checksum(arrays))
    return [plain, _pack(_seal(meta, arrays), arrays, deflate=True), _pack(v1, arrays), learned]


def _fuzz_value(fdp: atheris.FuzzedDataProvider) -> object:
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.ConsumeRegularFloat()
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 3:
        return [fdp.ConsumeInt(4) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 4:
        return None
    if kind == 5:
        return fdp.ConsumeBool()
    if kind == 6:
        return {fdp.ConsumeUnicodeNoSurrogates(6): fdp.ConsumeInt(2)}
    return [fdp.ConsumeUnicodeNoSurrogates(8) for _ in range(fdp.ConsumeIntInRange(0, 3))]


def _fuzz_array(fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    dtype = [np.float32, np.float64, np.uint8][fdp.ConsumeIntInRange(0, 2)]
    shape = tuple(fdp.ConsumeIntInRange(0, 5) for _ in range(fdp.ConsumeIntInRange(0, 3)))
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = fdp.ConsumeBytes(n).ljust(n, b"\0")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    meta, arrays = sio.read_model_file(SEEDS[0] if fdp.ConsumeBool() else SEEDS[3])
    if fdp.ConsumeBool():
        sections = [meta, meta["config"], meta["fitted"]]
        target = sections[fdp.ConsumeIntInRange(0, 2)]
        keys = sorted(target)
        key = keys[fdp.ConsumeIntInRange(0, len(keys) - 1)]
        if fdp.ConsumeIntInRange(0, 9) == 0:
            target.pop(key)
        else:
            target[key] = _fuzz_value(fdp)
    else:
        names = sorted(arrays)
        name = names[fdp.ConsumeIntInRange(0, len(names) - 1)]
        if fdp.ConsumeIntInRange(0, 9) == 0:
            arrays.pop(name)
        else:
            arrays[name] = _fuzz_array(fdp)
    sealed = meta if fdp.ConsumeIntInRange(0, 7) == 0 else _seal(meta, arrays)
    try:
        return _pack(sealed, arrays)
    except (TypeError, ValueError):  # e.g. NaN floats: json.dumps writes them, we refuse them
        return _pack(meta, arrays)


def check(data: bytes) -> None:
    try:
        state = sio.read_state(data)
        Detector._configured(state, "config", None)
    except sio.InvalidModelFile:
        pass
    except ValueError as exc:
        if type(exc) is not ValueError or "is not a valid structcore detector file" not in str(exc):
            raise


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        check(data[1:])
    else:
        check(structured(atheris.FuzzedDataProvider(data[1:])))


def main() -> None:
    SEEDS.extend(make_seeds())
    argv = list(sys.argv)
    corpus = next((a for a in argv[1:] if not a.startswith("-")), None)
    if corpus is None:
        corpus = tempfile.mkdtemp(prefix="structcore-model-corpus-")
        argv.append(corpus)
    os.makedirs(corpus, exist_ok=True)
    for i, seed in enumerate(SEEDS):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as fh:
            fh.write(b"\0" + seed)  # raw mode
        with open(os.path.join(corpus, f"seed{i}s"), "wb") as fh:
            fh.write(b"\1" + bytes(range(64)))  # structured mode
    run(argv, TestOneInput)


if __name__ == "__main__":
    main()
