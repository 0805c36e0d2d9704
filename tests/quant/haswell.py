"""Run ONNX models on AVX2-class int8 kernels: this interpreter under ``qemu-x86_64 -cpu Haswell``.

qemu's TCG emulates no AVX-512 and no VNNI, so ONNX Runtime (which picks kernels by CPUID) runs
its AVX2 kernels even on a VNNI host. The guest still reads the host's /proc/cpuinfo, so code
that reads flags is told the ISA through ``$COMPRESS_ISA``. The child is torch-free: it only runs
sessions and saves their first outputs.

Fetch qemu with ``bash benchmarks/qemu/fetch_qemu.sh`` (Debian's qemu-user 10.0.2, ~3 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
QEMU = ROOT / ".cache" / "qemu" / "root" / "usr" / "bin" / "qemu-x86_64"
# hle/rtm: Haswell's TSX, which TCG does not emulate (it warns on every start without these)
CPU = "Haswell,-hle,-rtm"
SKIP = f"qemu-x86_64 not fetched ({QEMU}): run `bash benchmarks/qemu/fetch_qemu.sh`"


def available() -> bool:
    return QEMU.is_file() and os.access(QEMU, os.X_OK)


def run_models(models: dict[str, tuple[Path, str]], x: np.ndarray, work: Path,
               timeout: float = 600) -> dict[str, np.ndarray]:
    """First outputs of each ``name: (onnx path, ORT opt level)`` over ``x``, computed under
    qemu -cpu Haswell (ORT 1 thread, batches of up to 64)."""
    np.save(work / "x.npy", x)
    spec = work / "models.json"
    spec.write_text(json.dumps({k: [str(p), lvl] for k, (p, lvl) in models.items()}))
    env = {**os.environ, "COMPRESS_ISA": "x86-avx2", "OMP_NUM_THREADS": "1"}
    cmd = [str(QEMU), "-cpu", CPU, sys.executable, __file__, str(spec), str(work / "x.npy"),
           str(work / "out.npz")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    with np.load(work / "out.npz") as z:
        return {k: z[k] for k in z.files}


def _child(spec: str, x_path: str, out: str) -> None:
    from compress.common.ort import make_session

    x = np.load(x_path)
    outs = {}
    for name, (path, level) in json.loads(Path(spec).read_text()).items():
        sess = make_session(path, 1, level)
        inp = sess.get_inputs()[0]
        fixed = isinstance(inp.shape[0], int)
        bs = inp.shape[0] if fixed else 64
        stop = len(x) - len(x) % bs if fixed else len(x)  # a fixed batch drops the tail
        outs[name] = np.concatenate([sess.run(None, {inp.name: x[i:i + bs]})[0]
                                     for i in range(0, stop, bs)])
    np.savez(out, **outs)


if __name__ == "__main__":
    _child(*sys.argv[1:4])
