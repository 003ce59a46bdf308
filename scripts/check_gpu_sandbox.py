"""Device check: a sandboxed run leased a GPU can use it, and a run not leased one cannot.

Run it where a GPU exists: `python scripts/check_gpu_sandbox.py [MLREPO_GPU_DEVICES value] [python]`
(the interpreter the sandbox starts, from the host's /usr; default python3). The test
suite cannot do this (no CI machine has a GPU; tests/executor/test_gpus.py checks the same sandbox with
stand-in device nodes). It uses the real ``GpuPool`` and ``BwrapRuntime`` with the host's /dev, and runs a
probe that talks to NVIDIA's driver API through ctypes, so it needs nothing but Python and the driver
inside the sandbox: initialise CUDA, create a context, allocate 256 MiB, fill it on the device and read it
back. It also reports the host's cgroup hierarchy and spins a CPU-bound run allocated a quarter of a core
for a second, to show the share holds there. Prints one JSON line; exits 0 when the runs behave, 1 when
not, 2 when there is no GPU here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from executor.gpus import GpuPool, parse_devices
from executor.runtimes.base import Limits, Package, RunRequest
from executor.runtimes.bwrap import BwrapRuntime
from infra.errors import Unavailable

SPIN = """
import json, time
started = time.monotonic()
while time.monotonic() - started < 1.0:
    pass
print(json.dumps({"cpu_s": round(time.process_time(), 3)}))
"""
CUDA_SUCCESS = 0
CUDA_ERROR_NO_DEVICE = 100
PROBE = r"""
import ctypes, json, os

out = {"nodes": sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))}
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError as exc:
    print(json.dumps({**out, "error": str(exc)}))
    raise SystemExit(0)
count = ctypes.c_int()
out["cuInit"] = cuda.cuInit(0)
out["cuDeviceGetCount"] = cuda.cuDeviceGetCount(ctypes.byref(count))
out["devices"] = count.value
if out["cuInit"] == 0 and count.value:
    device, name = ctypes.c_int(), ctypes.create_string_buffer(128)
    cuda.cuDeviceGet(ctypes.byref(device), 0)
    cuda.cuDeviceGetName(name, 128, device)
    out["name"] = name.value.decode()
    context, pointer, size = ctypes.c_void_p(), ctypes.c_uint64(), ctypes.c_size_t(256 << 20)
    out["cuCtxCreate"] = cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device)
    out["cuMemAlloc"] = cuda.cuMemAlloc_v2(ctypes.byref(pointer), size)
    out["cuMemsetD8"] = cuda.cuMemsetD8_v2(pointer, ctypes.c_ubyte(7), size)
    host = (ctypes.c_ubyte * 4096)()
    out["cuMemcpyDtoH"] = cuda.cuMemcpyDtoH_v2(host, pointer, ctypes.c_size_t(4096))
    out["roundtrip_ok"] = all(value == 7 for value in host)
print(json.dumps(out))
"""


async def probe(
    runtime: BwrapRuntime, code_dir: Path, gpus: tuple[int, ...], python: str, script: str = "probe.py"
) -> dict:
    package = Package(entrypoint=(python, script), code_dir=code_dir)
    limits = Limits(timeout_s=120, memory_mb=1024, gpus=gpus, cpus=0.25 if script == "spin.py" else 1.0)
    result = await runtime.run(package, RunRequest(command=package.entrypoint), limits)
    if not result.ok:
        return {
            "failure": f"{result.failure.kind}: {result.failure.reason}",
            "stderr": result.stderr[-2000:].decode(),
        }
    return {"gpus": list(gpus), "duration_s": round(result.duration_s, 3), **json.loads(result.stdout)}


async def main(spec: str, python: str) -> int:
    if not BwrapRuntime.available():
        print(json.dumps({"error": "bwrap, prlimit and setpriv are needed"}))
        return 2
    pool = GpuPool(parse_devices(spec))
    with tempfile.TemporaryDirectory() as tmp:
        code_dir = Path(tmp) / "probe"
        code_dir.mkdir()
        (code_dir / "probe.py").write_text(PROBE)
        (code_dir / "spin.py").write_text(SPIN)
        runtime = BwrapRuntime()
        try:
            async with pool.lease(1) as gpus:
                leased = await probe(runtime, code_dir, gpus, python)
        except Unavailable as exc:
            print(json.dumps({"error": exc.message, "devices": list(pool.devices)}))
            return 2
        not_leased = await probe(runtime, code_dir, (), python)
        quarter_core = await probe(runtime, code_dir, (), python, "spin.py")
    tree = runtime.cgroup_tree
    ok = (
        leased.get("cuInit") == CUDA_SUCCESS
        and leased.get("devices") == 1
        and leased.get("roundtrip_ok") is True
        and not_leased.get("cuInit") == CUDA_ERROR_NO_DEVICE
        and not not_leased.get("nodes")
    )
    report = {
        "ok": ok,
        "devices": list(pool.devices),
        "cgroups": tree.version if tree else None,
        "leased": leased,
        "not_leased": not_leased,
        "quarter_core_spin": quarter_core,
    }
    print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    spec = sys.argv[1] if len(sys.argv) > 1 else "auto"
    python = sys.argv[2] if len(sys.argv) > 2 else "python3"
    sys.exit(asyncio.run(main(spec, python)))
