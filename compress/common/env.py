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


OPTIMUM_INSTALL = "pip install 'compress[optimum]'"


def optimum_missing(module: str = "optimum.onnxruntime") -> str | None:
    """Why optimum-onnx's ``module`` cannot be used here, in one line ending with how to get it;
    ``None`` when it imports. optimum-onnx is an extra of its own: 0.1 caps transformers<4.58,
    and the ``hf`` extra's transformers 5 breaks its imports."""
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "optimum":
            return f"optimum-onnx is not installed ({OPTIMUM_INSTALL})"
        return f"optimum-onnx does not import here: {_first_line(e)} ({OPTIMUM_INSTALL})"
    except Exception as e:  # noqa: BLE001 - an installed but incompatible optimum breaks many ways
        return (f"optimum-onnx does not import here: {type(e).__name__}: {_first_line(e)} "
                f"({OPTIMUM_INSTALL}, in a venv of its own)")
    return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def machine() -> dict:
    """The CPU, its ISA flags that matter for int8, cores and OS."""
    from compress.common.ort import cpu_info

    cpu, flags = cpu_info()
    isa = sorted(f for f in flags if f.startswith(("avx512", "avx2", "avx_vnni", "amx", "asimd",
                                                   "sve", "dotprod", "i8mm")))
    return {"cpu": cpu, "flags": isa, "cores": os.cpu_count(), "machine": platform.machine(),
            "os": f"{platform.system()} {platform.release()}"}
