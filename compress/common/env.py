"""Where a run happened: library versions and the machine's fingerprint, for every record."""

from __future__ import annotations

import os
import platform


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the artifacts."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("compress", "torch", "torch-pruning", "onnx", "onnxruntime", "numpy",
                "transformers", "optimum-onnx"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    """The CPU, its ISA flags that matter for int8, cores and OS."""
    from compress.common.ort import cpu_info

    cpu, flags = cpu_info()
    isa = sorted(f for f in flags if f.startswith(("avx512", "avx2", "avx_vnni", "amx", "asimd",
                                                   "sve", "dotprod", "i8mm")))
    return {"cpu": cpu, "flags": isa, "cores": os.cpu_count(), "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}"}
