#!/usr/bin/env python3
"""gradcheck vs torch.autograd.gradcheck: time and peak memory, side by side.

    python3 benchmarks/bench.py                 # full run (several minutes)
    python3 benchmarks/bench.py --quick         # reduced set, < 60 s (smoke test)
    python3 benchmarks/bench.py --markdown      # Markdown tables (for README / RESULTS.md)
    python3 benchmarks/bench.py --device cuda   # on a GPU (peak memory = CUDA allocator peak)

For every case (a layer at one size) four tools check the same layer, at the
same point, in the same process, one after the other:

* ``ours``        -- :func:`gradcheck_cli.check` with its defaults (grouped moves where
  verified, vmap where possible and faster); ``ours loop`` is the same with
  ``batch=False``, ``ours single`` with ``batch=False, grouping=False`` (one element
  per pair of forwards);
* ``torch slow``  -- ``torch.autograd.gradcheck(fast_mode=False)``: full numerical
  and analytical N x M Jacobians, then compared;
* ``torch fast``  -- ``torch.autograd.gradcheck(fast_mode=True)``: checks one random
  projection u^T J v per input.  It can tell that *something* is wrong, never
  *which element*, so it is not a replacement for an element-by-element check;
* ``plain loop``  -- the naive approach: for every element, perturb it in place by
  +-h, evaluate L = 1/2 sum y^2 with one forward per perturbation, take the
  central difference.

torch's checks get every input and parameter (via ``torch.func.functional_call``)
so all tools check the same N+P elements.

How peak memory is measured
---------------------------
Each case runs in a fresh child process (``bench.py --child ...``), so nothing a
previous case allocated (or left in the allocator's free lists) is counted.
Inside the child, before each tool: ``gc.collect()``, glibc ``malloc_trim(0)``
(hands freed heap pages back to the OS, so the next tool has to fault its
memory in again and cannot hide in pages a previous tool left resident), then
the kernel's peak-RSS counter is reset by writing ``5`` to
``/proc/self/clear_refs`` (Linux >= 4.0), which sets ``VmHWM`` to the current
``VmRSS``.  After the tool, ``VmHWM`` (from ``/proc/self/status``) is the peak
resident set size during that tool; the table shows the *increase* over the RSS
just before it (``VmHWM - VmRSS_before``), i.e. what the check itself needed on
top of Python + torch + the layer and its inputs (~250 MB for torch alone).
The absolute peak (``VmHWM``) is in the JSON output.  Where ``clear_refs``
cannot be written, each tool gets its own fresh child instead and the same
difference is taken.  ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is not used: it
is the maximum over *all* children ever waited for, so it is not per case
(per-process ``os.wait4`` rusage is used for the end-to-end CLI runs).
On CUDA the column is ``torch.cuda.max_memory_allocated()`` minus the memory
allocated before the tool (after ``reset_peak_memory_stats``).

Every child first warms every tool up on a small instance (256 elements) of the
same layer (one-time costs such as vmap's first use and lazy imports are not
counted); the end-to-end CLI timing at the bottom includes all of them.  A tool
whose first call takes under a second is called up to five times and the
fastest call is reported (memory is the first call's).

Anchor runs that cannot finish are not waited for
---------------------------------------------------
torch's slow mode holds several N x M float64 Jacobians (8 N M bytes each; the
measured peak is about 8 of them) and its time grows ~(N M)^1..1.5.  Before
each slow-mode run the driver projects its peak memory and time from the
largest smaller size of the same layer measured in this run (or, with no
measurement, from 8 N M bytes x 8) and skips it, with the reason in a footnote,
when the peak would exceed ``--anchor-mem-gb`` (4 GB) or the time
``--anchor-time-limit`` (120 s).  A slow-mode run that overruns its projection
is stopped after 3x the time limit.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK = "BENCH-RESULT "
DEFAULT_JACOBIAN_COPIES = 8.0  # measured: torch slow mode peaks at ~8x one N x M float64 Jacobian

# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------
FAMILIES = {
    "gauss": "Gaussian filter (seed), input (1, N) + sigma, mu",
    "silu": "elementwise x*sigmoid(x), input (1, N)",
    "linear": "linear, x (8, 64), W (64, 64), b (64)",
    "gauss_novmap": "Gaussian filter, forward not vmappable",
    # issue 17: real sizes
    "gauss_long_conv": "seed Gaussian filter, kernel as long as the signal, by conv1d",
    "gauss_long": "seed Gaussian filter, kernel as long as the signal, by FFT",
    "conv2d": "conv2d 8x16x32x32, 3x3 weight 16->16, bias",
    "attention": "attention q, k, v (4, 8, 128, 64)",
    "layernorm": "LayerNorm over 1024 features, x (32, 1024), weight, bias",
    "lstm": "LSTM cell, x, h, c (16, 128), W_ih, W_hh (512, 128), biases",
    "embedding": "embedding weight (1000, 64) gathered by int64 indices (32, 16)",
    "dense": "dense y = x tanh(mean x) + 0.1 x^2, x (1024, 1024)",
    "dense_one_wrong": "dense, input gradient of element [120, 577] 0.1% off",
    "dense_doubled": "dense, input gradient doubled",
    "entmax": "1.5-entmax over rows, z (32, 100)",
    "scan": "selective scan (mamba.py pscan), a, x (2, 8192)",
    "sleepy": "tanh(x) * sum(x), forward sleeps 10 ms, not vmappable, x (4, 40)",
    "sleepy_vmap": "tanh(x) * sum(x), forward sleeps 10 ms, vmappable, x (4, 40)",
}
# Families of issue 17: ``ours`` is compared with the code before it (``today``) and torch.
REAL = ("gauss_long_conv", "gauss_long", "conv2d", "attention", "layernorm", "lstm", "embedding", "dense", "dense_one_wrong",
        "dense_doubled", "entmax", "scan", "sleepy", "sleepy_vmap")


def case_list(quick: bool) -> list[dict]:
    """(family, size, tools) in the order they run; sizes ascend within a family."""
    def case(family, size, *extra):
        return {"family": family, "size": size, "tools": ["ours", *extra, "today", "torch_fast", "plain_loop", "torch_slow"]}

    def real(family, size=0):
        return {"family": family, "size": size, "tools": ["ours", "today", "torch_fast", "plain_loop", "torch_slow"]}

    if quick:
        return [
            case("gauss", 1000, "ours_loop", "ours_single"),
            case("silu", 4096),
            real("gauss_long_conv", 1000),
            real("layernorm"),
            real("sleepy"),
        ]
    return [
        case("gauss", 250, "ours_loop", "ours_single"),
        case("gauss", 1000, "ours_loop", "ours_single"),
        case("gauss", 4000, "ours_loop", "ours_single"),
        case("silu", 1024, "ours_loop", "ours_single"),
        case("silu", 4096, "ours_loop", "ours_single"),
        case("silu", 16384, "ours_loop", "ours_single"),
        case("silu", 65536),
        case("linear", 64, "ours_loop", "ours_single"),
        {"family": "gauss_novmap", "size": 1000, "tools": ["ours", "ours_single", "today"]},
        real("gauss_long_conv", 1000),
        real("gauss_long", 1000),
        real("gauss_long", 100000),
        real("conv2d"),
        real("attention"),
        real("layernorm"),
        real("lstm"),
        real("embedding"),
        real("dense"),
        real("dense_one_wrong"),
        real("dense_doubled"),
        real("entmax"),
        real("scan"),
        real("sleepy"),
        real("sleepy_vmap"),
    ]


# ----------------------------------------------------------------------------
# memory helpers (child side)
# ----------------------------------------------------------------------------
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else 0


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:
        pass


def reset_peak_rss() -> bool:
    """Set VmHWM to the current VmRSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") <= _status_kb("VmRSS") + 1024


class Alarm(Exception):
    pass


def _on_alarm(signum, frame):
    raise Alarm()


# ----------------------------------------------------------------------------
# child: one case, several tools, one process
# ----------------------------------------------------------------------------
def build(family: str, size: int, dtype, device):
    """(module, inputs): the layer and its positional inputs (floating ones in ``dtype``) on ``device``."""
    import torch

    sys.path.insert(0, str(HERE))
    import layers

    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    if family == "gauss":
        module, xs = layers.GaussFilter(), [r(1, size)]
    elif family == "gauss_novmap":
        module, xs = layers.GaussFilterNoVmap(), [r(1, size)]
    elif family == "silu":
        module, xs = layers.SiLU(), [r(1, size)]
    elif family == "linear":
        module, xs = layers.Linear(64, 64), [r(8, 64)]
    elif family in ("gauss_long", "gauss_long_conv"):
        module, xs = layers.long_gauss(size, conv=family == "gauss_long_conv"), [r(1, size)]
    elif family == "conv2d":
        module, xs = layers.Conv2d(16), [r(8, 16, 32, 32)]
    elif family == "attention":
        module, xs = layers.Attention(), [r(4, 8, 128, 64), r(4, 8, 128, 64), r(4, 8, 128, 64)]
    elif family == "layernorm":
        module, xs = layers.LayerNorm(1024), [r(32, 1024)]
    elif family == "lstm":
        module, xs = layers.LSTMCell(128, 128), [r(16, 128), r(16, 128), r(16, 128)]
    elif family == "embedding":
        module, xs = layers.Embedding(1000, 64), [torch.randint(0, 1000, (32, 16), generator=gen)]
    elif family.startswith("dense"):
        module = {"dense": layers.Dense, "dense_one_wrong": layers.DenseOneWrong, "dense_doubled": layers.DenseDoubled}[family]()
        xs = [r(1024, 1024)]
    elif family == "entmax":
        module, xs = layers.Entmax15(), [r(32, 100)]
    elif family == "scan":
        module, xs = layers.SelectiveScan(), [r(2, 8192), r(2, 8192)]
    elif family == "sleepy":
        module, xs = layers.Sleepy(), [r(4, 40)]
    elif family == "sleepy_vmap":
        module, xs = layers.SleepyBatched(), [r(4, 40)]
    else:
        raise ValueError(family)
    xs = [x.to(dtype=dtype, device=device) if x.is_floating_point() else x.to(device) for x in xs]
    return module.to(dtype=dtype, device=device), xs


def warm_size(family: str) -> int:
    """The size of the small instance a child warms every tool up on."""
    return 256 if family in ("gauss", "gauss_novmap", "silu", "linear", "gauss_long", "gauss_long_conv") else 0


# A tool whose first run takes less than this is run up to REPEATS times; the fastest counts.
REPEAT_BELOW_S = 1.0
REPEATS = 5


def run_child(spec: dict) -> None:
    # This checkout's gradcheck_cli (not whatever is installed), or the code before this change ("today").
    sys.path.insert(0, spec.get("code") or str(ROOT))
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])  # 0: leave torch's default
    import gradcheck_cli
    from gradcheck_cli import check

    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def emit(obj):
        print(MARK + json.dumps(obj), flush=True)

    module, x = build(spec["family"], spec["size"], dtype, device)
    names = [n for n, _ in module.named_parameters()]

    def torch_gradcheck(mod, inputs, fast):
        from torch.func import functional_call

        params = [p.detach().clone().requires_grad_(True) for p in mod.parameters()]
        floats = [i for i, t in enumerate(inputs) if t.is_floating_point()]
        xin = [t.detach().clone().requires_grad_(True) if t.is_floating_point() else t for t in inputs]

        def fn(*args):
            xs = list(xin)
            for k, i in enumerate(floats):
                xs[i] = args[k]
            return functional_call(mod, dict(zip(names, args[len(floats):])), tuple(xs))

        return bool(torch.autograd.gradcheck(fn, tuple(xin[i] for i in floats) + tuple(params), fast_mode=fast, raise_exception=False))

    def half_square(y):
        ys = y if isinstance(y, tuple) else (y,)
        return sum(0.5 * t.square().sum() for t in ys)

    def plain_loop(mod, inputs, h=1e-6):
        """The naive check: one perturbation per forward, central difference of 1/2 sum y^2."""
        xs = [t.detach().clone() for t in inputs]
        tensors = [t for t in xs if t.is_floating_point()] + [p for p in mod.parameters()]
        grads = []
        with torch.no_grad():
            for t in tensors:
                flat = t.view(-1)
                g = torch.empty_like(flat)
                for i in range(flat.numel()):
                    orig = flat[i].clone()
                    flat[i] = orig + h
                    lp = half_square(mod(*xs))
                    flat[i] = orig - h
                    lm = half_square(mod(*xs))
                    flat[i] = orig
                    g[i] = (lp - lm) / (2 * h)
                grads.append(g)
        sync()
        # sanity: the loop really computed the gradient of 1/2 sum y^2
        from torch.func import functional_call

        ref_x = [t.detach().clone().requires_grad_(True) if t.is_floating_point() else t for t in inputs]
        ref_p = [p.detach().clone().requires_grad_(True) for p in mod.parameters()]
        y = functional_call(mod, dict(zip(names, ref_p)), tuple(ref_x))
        ref = torch.autograd.grad(half_square(y), [t for t in ref_x if t.is_floating_point()] + ref_p)
        err = max(float((g - r.reshape(-1)).abs().max() / (r.abs().max() + 1e-300)) for g, r in zip(grads, ref))
        return err < 1e-4, {"max_rel_err_vs_autograd": err}

    def ours(mod, inputs, **options):
        """check() with these options; a timed-out check reports the estimate its plan made."""
        seen = {}

        def progress(name, done, total, estimate):
            if not name:
                seen["estimate_s"] = estimate
                emit({"kind": "estimate", "tool": spec["tools"][0], "estimate_s": estimate})

        try:
            r = check(mod, list(inputs), dtype=spec["dtype"], device=spec["device"], progress=progress, **options)
        except gradcheck_cli.LayerError as exc:
            if "timeout" in options and "--timeout" in str(exc):
                return None, {"stopped_s": options["timeout"], "estimate_s": seen.get("estimate_s")}
            raise
        tensors = [{"name": t.name, "status": t.status, "n_checked": t.n_checked, "n_elements": t.n_elements,
                    "worst_index": list(t.worst_index) if t.worst_index is not None else None, "counts": t.counts,
                    "diagnosis": t.diagnosis, "sets": dict(t.sets) if getattr(t, "sets", None) else None} for t in r.tensors]
        return bool(r.passed), {"timing": dict(r.timing), "notes": list(r.notes), "tensors": tensors}

    tools = {
        "ours": lambda m, i: ours(m, i),
        "ours_loop": lambda m, i: ours(m, i, batch=False),
        "ours_single": lambda m, i: ours(m, i, batch=False, grouping=False),
        "today": lambda m, i: ours(m, i),
        "torch_slow": lambda m, i: (torch_gradcheck(m, i, False), {}),
        "torch_fast": lambda m, i: (torch_gradcheck(m, i, True), {}),
        "plain_loop": plain_loop,
    }

    # Warm-up on a tiny instance of the same layer: one-time costs are not counted.
    wm, wx = build(spec["family"], warm_size(spec["family"]) or spec["size"], dtype, device)
    if warm_size(spec["family"]) == 0:  # no small instance: warm up on a tiny layer of another family
        wm, wx = build("gauss", 256, dtype, device)
    for name in spec["tools"]:
        if name not in spec.get("skip", {}) and name != "plain_loop":
            tools[name](wm, wx)

    # Case facts: N checked, M outputs, one forward's time.
    with torch.no_grad():
        y = module(*x)
        ys = y if isinstance(y, tuple) else (y,)
        times = []
        for _ in range(21 if not spec["family"].startswith("sleepy") else 5):
            t0 = time.perf_counter()
            module(*x)
            sync()
            times.append(time.perf_counter() - t0)
    p = sum(q.numel() for q in module.parameters())
    n_input = sum(t.numel() for t in x if t.is_floating_point())
    emit({"kind": "facts", "n_input": n_input, "p": p, "n": n_input + p, "m": sum(t.numel() for t in ys), "t_fwd": statistics.median(times),
          "threads": torch.get_num_threads()})
    del y, ys

    n_all, t_fwd = n_input + p, statistics.median(times)
    skip = dict(spec.get("skip", {}))
    loop_s = 2 * n_all * t_fwd
    if "plain_loop" in spec["tools"] and "plain_loop" not in skip and loop_s > spec.get("loop_limit", math.inf):
        skip["plain_loop"] = f"not run: projected 2(N+P) t_fwd = {fmt_s(loop_s)} ({2 * n_all:,} forwards) > {spec['loop_limit']:.0f} s"
    slow_s = 2 * n_all * t_fwd * 1.5  # 2(N+P) forwards and M backwards, about
    if "torch_slow" in spec["tools"] and "torch_slow" not in skip and slow_s > spec.get("slow_limit", math.inf):
        skip["torch_slow"] = f"not run: projected at least {fmt_s(slow_s)} (2(N+P) forwards) > {spec['slow_limit']:.0f} s"
    signal.signal(signal.SIGALRM, _on_alarm)
    for name in spec["tools"]:
        if name in skip:
            emit({"kind": "tool", "tool": name, "skipped": skip[name], "projected_s": loop_s if name == "plain_loop" else None})
            continue
        gc.collect()
        _malloc_trim()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        cuda0 = torch.cuda.memory_allocated(device) if cuda else 0
        reset_ok = reset_peak_rss()
        rss0 = _status_kb("VmRSS")
        limit = spec.get("limits", {}).get(name)
        if limit:
            signal.alarm(int(math.ceil(limit)))
        t0 = time.perf_counter()
        try:
            ok, extra = tools[name](module, x)
            sync()
            elapsed = time.perf_counter() - t0
            signal.alarm(0)
            if ok is None:  # stopped at its time limit
                emit({"kind": "tool", "tool": name, **extra})
                continue
        except Alarm:
            emit({"kind": "tool", "tool": name, "skipped": f"stopped after {limit:.0f} s (ran past 3x the projected time limit)"})
            continue
        except Exception as exc:  # report, keep going with the other tools
            signal.alarm(0)
            emit({"kind": "tool", "tool": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"})
            continue
        hwm = _status_kb("VmHWM")
        # Short runs are repeated (same tool, same inputs) and the fastest counts, as timeit does:
        # one run of a few ms is mostly scheduling noise on a shared machine. Memory is the first run's.
        runs = [elapsed]
        while elapsed < REPEAT_BELOW_S and len(runs) < REPEATS and spec["family"] not in REAL:
            t0 = time.perf_counter()
            tools[name](module, x)
            sync()
            runs.append(time.perf_counter() - t0)
        out = {"kind": "tool", "tool": name, "time_s": min(runs), "runs": len(runs), "ok": ok, "rss_before_mb": rss0 / 1024,
               "rss_peak_mb": hwm / 1024, "rss_peak_inc_mb": (hwm - rss0) / 1024, "hwm_reset": reset_ok, **extra}
        if cuda:
            out["cuda_peak_inc_mb"] = (torch.cuda.max_memory_allocated(device) - cuda0) / 2**20
        emit(out)


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def spawn_child(spec: dict, timeout: float) -> list[dict]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, rc = f"killed after {timeout:.0f} s", None
    results = [json.loads(line[len(MARK):]) for line in out.splitlines() if line.startswith(MARK)]
    if rc != 0:
        tail = (err or "").strip().splitlines()[-1:] or [""]
        results.append({"kind": "child_error", "rc": rc, "stderr": tail[0][:300]})
    return results


def mem_available() -> float:
    """MemAvailable from /proc/meminfo in bytes (16 GB if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            return int(re.search(r"^MemAvailable:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024.0
    except Exception:
        return 16.0 * 2**30


def project_anchor(history: list[dict], n: int, m: int, jac_limit: float, peak_limit: float, time_limit: float):
    """Projected (peak bytes, seconds) of torch slow mode at N x M, and a skip reason or None.

    * one N x M float64 Jacobian (8 N M bytes) above ``jac_limit``: not run;
    * projected peak above ``peak_limit``: not run.  The peak is a multiple of one
      Jacobian, measured on this layer at a smaller size where that run's peak was
      large enough to read (>= 50 MB), else DEFAULT_JACOBIAN_COPIES;
    * projected time above ``time_limit``: not run.  Time scales as (N M)^a with a
      fitted on the two largest measured sizes (1 <= a <= 1.5; 1.2 from one size).
    """
    nm = n * m
    jac = 8.0 * nm
    measured = [h for h in history if h.get("time_s") is not None]
    copies, basis = DEFAULT_JACOBIAN_COPIES, "default multiple"
    big = [h for h in measured if (h.get("rss_peak_inc_mb") or 0) >= 50]
    if big:
        ref = max(big, key=lambda h: h["nm"])
        copies, basis = ref["rss_peak_inc_mb"] * 2**20 / (8.0 * ref["nm"]), "measured at a smaller size"
    peak = copies * jac
    seconds = None
    if measured:
        last = max(measured, key=lambda h: h["nm"])
        exponent = 1.2
        if len(measured) >= 2:
            a, b = sorted(measured, key=lambda h: h["nm"])[-2:]
            if b["nm"] > a["nm"] and a["time_s"] > 0:
                exponent = min(1.5, max(1.0, math.log(b["time_s"] / a["time_s"]) / math.log(b["nm"] / a["nm"])))
        seconds = last["time_s"] * (nm / last["nm"]) ** exponent
    gb = 2**30
    when = f"; projected time {seconds:.0f} s" if seconds else ""
    if jac > jac_limit:
        return peak, seconds, (f"not run: one N x M float64 Jacobian is {n}x{m}x8 B = {jac / gb:.1f} GB "
                               f"(> {jac_limit / gb:.0f} GB limit); projected peak {peak / gb:.0f} GB{when}")
    if peak > peak_limit:
        return peak, seconds, (f"not run: Jacobians of {n}x{m} doubles, {jac / gb:.2f} GB each; projected peak "
                               f"{peak / gb:.1f} GB ({copies:.1f} Jacobians, {basis}) > {peak_limit / gb:.1f} GB "
                               f"(half the memory available){when}")
    if seconds is not None and seconds > time_limit:
        return peak, seconds, f"not run: projected {seconds:.0f} s (> {time_limit:.0f} s limit) from the smaller sizes of this layer"
    return peak, seconds, None


def dims(family: str, size: int) -> tuple[int, int]:
    """(N + P checked, M outputs) of a case, known without running it."""
    fixed = {
        "linear": (8 * 64 + 64 * 64 + 64, 8 * 64),
        "conv2d": (8 * 16 * 32 * 32 + 16 * 16 * 9 + 16, 8 * 16 * 32 * 32),
        "attention": (3 * 4 * 8 * 128 * 64, 4 * 8 * 128 * 64),
        "layernorm": (32 * 1024 + 2 * 1024, 32 * 1024),
        "lstm": (3 * 16 * 128 + 2 * 512 * 128 + 2 * 512, 2 * 16 * 128),
        "embedding": (1000 * 64, 32 * 16 * 64),
        "entmax": (3200, 3200),
        "scan": (2 * 2 * 8192, 2 * 8192),
        "sleepy": (160, 160),
        "sleepy_vmap": (160, 160),
    }
    if family in fixed:
        return fixed[family]
    if family.startswith("dense"):
        return 1 << 20, 1 << 20
    if family.startswith("gauss"):
        return size + 2, size
    return size, size


def baseline_tree(ref: str) -> str:
    """The code at ``ref`` (the "today" of the comparison), unpacked once into a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="gradcheck-baseline-"))
    archive = subprocess.run(["git", "archive", ref, "gradcheck_cli"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return str(folder)


def run_cases(args) -> list[dict]:
    hwm_ok = reset_peak_rss()
    rows = []
    anchor_history: dict[str, list[dict]] = {}
    baseline = None
    for case in case_list(args.quick):
        if args.only_real and case["family"] not in REAL:
            continue
        fam, size = case["family"], case["size"]
        n, m = dims(fam, size)  # inputs + parameters, outputs
        skip, limits = {}, {}
        if "torch_slow" in case["tools"]:
            peak_limit = args.anchor_peak_gb * 2**30 if args.anchor_peak_gb else 0.5 * mem_available()
            peak, secs, reason = project_anchor(anchor_history.get(fam, []), n, m, args.anchor_mem_gb * 2**30, peak_limit, args.anchor_time_limit)
            if reason:
                skip["torch_slow"] = reason
            limits["torch_slow"] = 3 * args.anchor_time_limit
        if "plain_loop" in case["tools"]:
            limits["plain_loop"] = args.loop_time_limit
            if args.quick and n > 16384:
                skip["plain_loop"] = "skipped in --quick"
        base = {"family": fam, "size": size, "device": args.device, "dtype": args.dtype, "threads": args.threads, "skip": skip,
                "limits": limits, "loop_limit": args.loop_project_limit, "slow_limit": args.anchor_time_limit, "today_limit": args.today_limit}
        tools = [t for t in case["tools"] if t != "today"]
        groups = [tools] if hwm_ok else [[t] for t in tools]
        results = []
        log(f"[bench] {FAMILIES[fam]} size {size}: {', '.join(t for t in case['tools'])}")
        started = time.perf_counter()
        for group in groups:
            results += spawn_child({**base, "tools": group}, timeout=args.case_timeout)
        if "today" in case["tools"] and args.baseline:
            baseline = baseline or baseline_tree(args.baseline)
            # Stopped by the wall clock (warm-up and facts come first): its own estimate is what it says it would take.
            today = spawn_child({**base, "tools": ["today"], "code": baseline}, timeout=args.today_limit + 60)
            done = [r for r in today if r["kind"] == "tool"]
            if not done:
                est = next((r["estimate_s"] for r in today if r["kind"] == "estimate"), None)
                today.append({"kind": "tool", "tool": "today", "stopped_s": args.today_limit, "estimate_s": est})
            results += [r for r in today if r["kind"] not in ("facts", "estimate", "child_error")]
        facts = next((r for r in results if r["kind"] == "facts"), {"n": n, "m": m})
        tools = {r["tool"]: r for r in results if r["kind"] == "tool"}
        errors = [r for r in results if r["kind"] == "child_error"]
        for name in case["tools"]:
            if name not in tools and not (name == "today" and not args.baseline):
                tools[name] = {"tool": name, "error": errors[0]["stderr"] if errors else "no result"}
        slow = tools.get("torch_slow", {})
        if slow.get("time_s") is not None:
            anchor_history.setdefault(fam, []).append({"nm": facts["n"] * facts["m"], "time_s": slow["time_s"], "rss_peak_inc_mb": slow.get("rss_peak_inc_mb")})
        row = {"family": fam, "size": size, **{k: facts.get(k) for k in ("n", "p", "m", "t_fwd", "threads")}, "tools": tools, "errors": errors}
        rows.append(row)
        for name, r in tools.items():
            if "time_s" in r:
                log(f"    {name:11s} {r['time_s']:.3f} s, +{r.get('rss_peak_inc_mb', 0):.0f} MB, ok={r.get('ok')}"
                    + (f", estimate {r['timing'].get('estimate_s', 0):.2f} s of {r['timing'].get('check_s', 0):.2f} s" if r.get("timing") else ""))
            elif "stopped_s" in r:
                log(f"    {name:11s} stopped at {r['stopped_s']:.0f} s; its estimate {r.get('estimate_s')}")
            else:
                log(f"    {name:11s} {r.get('skipped') or r.get('error', '')}")
        log(f"    ({time.perf_counter() - started:.1f} s)")
    return rows


def cli_costs(args, rows) -> dict:
    """End-to-end: `gradcheck run` on a tiny layer vs `python -c "import torch"`, median of 3 (+ peak RSS)."""
    # `python -m gradcheck_cli` is the same entry point as the `gradcheck` script, without the
    # launcher a version manager may put in front of it (a pyenv shim adds ~0.35 s of bash here).
    exe = None
    gc_cmd = [sys.executable, "-m", "gradcheck_cli"]
    tiny = gc_cmd + ["run", "benchmarks/layers.py:SiLU", "--input", "1x16", "-q", "--no-color", "--device", args.device]
    torch_cmd = [sys.executable, "-c", "import torch"]

    def timed(cmd):
        with tempfile.TemporaryFile() as errfile:  # a file, not a pipe: nothing can block while we wait4
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errfile)
            _, status, usage = os.wait4(p.pid, 0)  # this child's own rusage: its peak RSS
            elapsed = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
            errfile.seek(0)
            err = errfile.read().decode(errors="replace")
        return elapsed, usage.ru_maxrss / 1024, p.returncode, err

    timed(torch_cmd), timed(tiny)  # warm the page cache
    t_torch, t_tiny = [], []
    for _ in range(3):
        t_torch.append(timed(torch_cmd)[0])
        e, _, rc, err = timed(tiny)
        t_tiny.append(e)
    out = {"cmd": " ".join(["gradcheck" if exe else "python -m gradcheck_cli"] + tiny[len(gc_cmd):]), "rc": rc,
           "stderr_tail": err.strip().splitlines()[-3:] if rc else [],
           "tiny_s": statistics.median(t_tiny), "import_torch_s": statistics.median(t_torch), "tiny_all": t_tiny, "torch_all": t_torch}
    out["ratio"] = out["tiny_s"] / out["import_torch_s"]
    if not args.quick:
        big = gc_cmd + ["run", "benchmarks/layers.py:SiLU", "--input", "1x16384", "-q", "--no-color", "--device", args.device]
        e, rss, rc, err = timed(big)
        out["silu16384"] = {"cmd": " ".join(["gradcheck"] + big[len(gc_cmd):]), "wall_s": e, "peak_rss_mb": rss, "rc": rc,
                            "stderr_tail": err.strip().splitlines()[-3:] if rc else []}
    return out


# ----------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------
def fmt_s(s):
    if s is None:
        return "—"
    return f"{s * 1000:.0f} ms" if s < 0.1 else f"{s:.2f} s" if s < 10 else f"{s:.0f} s" if s < 1000 else f"{s / 60:.0f} min"


def fmt_mb(mb):
    if mb is None:
        return "—"
    return f"{mb:.0f} MB" if mb < 1000 else f"{mb / 1024:.1f} GB"


def fmt_x(r):
    return "—" if r is None else f"{r:.2f}×" if r < 0.1 else f"{r:.1f}×" if r < 100 else f"{r:.0f}×"


class Notes:
    def __init__(self):
        self.items: list[str] = []

    def ref(self, text: str) -> str:
        if text not in self.items:
            self.items.append(text)
        return f"[{self.items.index(text) + 1}]"


def path_of(tool: str, timing: dict) -> str:
    """How a run of ours evaluated: grouped tensors (stride), then the path of the rest."""
    rest = "batched (vmap)" if timing.get("batched") else {"ours": "loop", "ours_loop": "loop (batch=False)"}.get(
        tool, "one element per forward pair (batch=False, grouping=False)")
    grouped = timing.get("grouped") or {}
    by_sets = timing.get("sets") or {}
    parts = []
    if grouped:
        parts.append("grouped " + ", ".join(f"{k} s={v}" for k, v in grouped.items()))
    if by_sets:
        parts.append("sets " + ", ".join(f"{k} ({v} test{'s' if v != 1 else ''})" for k, v in by_sets.items()))
    if not parts:
        return rest
    return "; ".join(parts) + f"; {rest} for the rest"


REAL_LABELS = {
    "gauss_long_conv": "seed Gaussian, kernel = signal (conv1d)",
    "gauss_long": "seed Gaussian, kernel = signal (FFT)",
    "conv2d": "conv2d 8×16×32×32, 3×3",
    "attention": "attention 4×8×128×64 (q, k, v)",
    "layernorm": "LayerNorm 32×1024",
    "lstm": "LSTM cell 16×128→128",
    "embedding": "embedding 1000×64, 512 lookups",
    "dense": "dense x·tanh(mean x)+0.1x², 1024×1024",
    "dense_one_wrong": "dense 1024×1024, [120, 577] 0.1% off",
    "dense_doubled": "dense 1024×1024, gradient ×2",
    "entmax": "1.5-entmax 32×100",
    "scan": "selective scan 2×8192 (a, x)",
    "sleepy": "sleepy 4×40 (10 ms forward, no vmap)",
    "sleepy_vmap": "sleepy 4×40 (10 ms a call, vmappable)",
}


def layer_label(row) -> str:
    fam = row["family"]
    if fam in REAL_LABELS:
        return REAL_LABELS[fam] + (f", N={row['size']:,}" if fam.startswith("gauss_long") else "")
    if fam == "gauss":
        return "Gaussian filter"
    if fam == "gauss_novmap":
        return "Gaussian filter, not vmappable"
    if fam == "silu":
        return "elementwise x·σ(x)"
    return "linear 64→64, batch 8"


def tool_cell(t: dict, notes: Notes, mem_key: str) -> tuple[str, str]:
    if "time_s" in t:
        bad = "" if t.get("ok") else " (FAILED)"
        return fmt_s(t["time_s"]) + bad, fmt_mb(t.get(mem_key))
    reason = t.get("skipped") or ("error: " + t.get("error", "?"))
    return "skipped " + notes.ref(reason), "—"


def tables(rows, cli, args, markdown: bool) -> str:
    mem_key = "cuda_peak_inc_mb" if args.device.startswith("cuda") else "rss_peak_inc_mb"
    mem_name = "CUDA peak" if args.device.startswith("cuda") else "peak ΔRSS"
    notes = Notes()
    head = ["layer", "N checked (N+P)", "ours", "fwd calls", "path", f"ours {mem_name}", "torch slow", f"slow {mem_name}",
            "speed-up vs slow", "memory slow/ours", "torch fast ⁽ᶠ⁾", "plain loop", "speed-up vs loop", "ours / 2(N+P)·t_fwd"]
    body = []
    old, real = [r for r in rows if r["family"] not in REAL], [r for r in rows if r["family"] in REAL]
    for row in old:
        t = row["tools"]
        o = t.get("ours", {})
        o_time, o_mem = tool_cell(o, notes, mem_key)
        s_time, s_mem = tool_cell(t["torch_slow"], notes, mem_key) if "torch_slow" in t else ("—", "—")
        f_time, _ = tool_cell(t["torch_fast"], notes, mem_key) if "torch_fast" in t else ("—", "—")
        l_time, _ = tool_cell(t["plain_loop"], notes, mem_key) if "plain_loop" in t else ("—", "—")
        timing = o.get("timing", {})
        ot = o.get("time_s")
        st = t.get("torch_slow", {}).get("time_s")
        lt = t.get("plain_loop", {}).get("time_s")
        om, sm = o.get(mem_key), t.get("torch_slow", {}).get(mem_key)
        bound = 2 * row["n"] * row["t_fwd"] if row.get("t_fwd") and row.get("n") else None
        body.append([
            layer_label(row), f"{row['n']:,}" if row.get("n") else "?", o_time, str(timing.get("forward_calls", "—")),
            path_of("ours", timing) if timing else "—", o_mem, s_time, s_mem,
            fmt_x(st / ot) if st and ot else "—", fmt_x(sm / max(om, 1.0)) if sm is not None and om is not None else "—",
            f_time, l_time, fmt_x(lt / ot) if lt and ot else "—", f"{ot / bound:.2f}" if ot and bound else "—",
        ])
    out = [render(head, body, markdown)]
    # loop path rows
    lhead = ["layer", "N checked", "t_fwd (median of 21)", "2(N+P)·t_fwd", "path", "check time", "fwd calls", "ratio check / 2(N+P)·t_fwd"]
    lbody = []
    for row in old:
        if not row.get("t_fwd"):
            continue
        bound = 2 * row["n"] * row["t_fwd"]
        for name in ("ours", "ours_loop", "ours_single"):
            o = row["tools"].get(name)
            if not o or "time_s" not in o:
                continue
            path = path_of(name, o["timing"])
            lbody.append([layer_label(row), f"{row['n']:,}", f"{row['t_fwd'] * 1e6:.1f} µs", fmt_s(bound), path, fmt_s(o["time_s"]),
                          str(o["timing"].get("forward_calls")), f"{o['time_s'] / bound:.2f}"])
    out.append(("\n**Cost model**: check time vs 2·(N+P) single forwards\n\n" if markdown else "\nCost model: check time vs 2(N+P) single forwards\n")
               + render(lhead, lbody, markdown))
    out.append(targets(old, cli, markdown))
    if real:
        out.append(real_tables(real, notes, mem_key, mem_name, markdown))
    foot = ["⁽ᶠ⁾ torch fast mode checks one random projection uᵀJv per input: it can say that a gradient is wrong, "
            "not which element, so it cannot localise a bug. It is shown for scale only.",
            f"{mem_name}: peak resident memory of the check above what the process held just before it "
            "(Python + torch + layer ≈ 250 MB); fresh process per case, peak counter reset per tool (see bench.py docstring).",
            "speed-up vs slow = torch slow-mode time / ours; memory slow/ours = ratio of the peak increases.",
            "plain loop = one perturbation per forward, central difference of ½Σy² per element (the naive approach)."]
    foot += [f"[{i + 1}] {text}" for i, text in enumerate(notes.items)]
    out.append("\n" + ("\n".join(f"- {x}" for x in foot) if markdown else "\n".join(foot)))
    return "\n".join(out)


def targets(rows, cli, markdown: bool) -> str:
    def find(fam, size):
        return next((r for r in rows if r["family"] == fam and r["size"] == size), None)

    lines = []

    def add(target, measured, met):
        lines.append([target, measured, "—" if met is None else ("MET" if met else "NOT MET")])

    g = find("gauss", 1000)
    if g:
        o, s = g["tools"]["ours"].get("time_s"), g["tools"]["torch_slow"].get("time_s")
        add("Gaussian N=1000: ≥30× faster than torch slow mode", f"{fmt_s(s)} / {fmt_s(o)} = {fmt_x(s / o)}" if o and s else "not measured",
            (s / o >= 30) if o and s else None)
    for row in rows:
        for name in ("ours_single", "ours_loop", "ours"):
            o = row["tools"].get(name)
            if not o or "time_s" not in o or not row.get("t_fwd"):
                continue
            ratio = o["time_s"] / (2 * row["n"] * row["t_fwd"])
            batched = o["timing"].get("batched") or o["timing"].get("grouped")
            how = {"ours_single": "one element per forward pair", "ours_loop": "batch=False"}.get(name, "default")
            if name != "ours" or not batched:
                add(f"{layer_label(row)} N={row['n']:,}, {how}: check ≤ 1.5 × 2(N+P)·t_fwd", f"{ratio:.2f}×", ratio <= 1.5)
            else:
                add(f"{layer_label(row)} N={row['n']:,}, {how} (batched or grouped): check < 2(N+P)·t_fwd (below the loop bound)",
                    f"{ratio:.2f}×", ratio < 1.0)
    e = find("silu", 16384)
    if e:
        o = e["tools"]["ours"]
        add("elementwise N=16384: completes, peak RSS < 500 MB (library, in the benchmark child)",
            f"{'completed' if 'time_s' in o else 'did not complete'}; peak RSS {fmt_mb(o.get('rss_peak_mb'))} (+{fmt_mb(o.get('rss_peak_inc_mb'))} for the check)",
            ("time_s" in o and o.get("rss_peak_mb", 1e9) < 500))
    if cli and cli.get("silu16384"):
        c = cli["silu16384"]
        why = f" ({' / '.join(c['stderr_tail'])[:160]})" if c.get("stderr_tail") else ""
        add("elementwise N=16384 via the CLI: peak RSS < 500 MB (whole process, os.wait4)",
            f"exit {c['rc']}{why}, {fmt_s(c['wall_s'])}, peak RSS {fmt_mb(c['peak_rss_mb'])}",
            c["rc"] == 0 and c["peak_rss_mb"] < 500)
    e = find("silu", 65536)
    if e:
        o, lp = e["tools"]["ours"].get("time_s"), e["tools"]["plain_loop"].get("time_s")
        add("elementwise N=65536: ≥3× faster than the plain loop", f"{fmt_s(lp)} / {fmt_s(o)} = {fmt_x(lp / o)}" if o and lp else "not measured",
            (lp / o >= 3) if o and lp else None)
    if cli:
        add("`gradcheck run` tiny layer ≤ 1.3 × `python -c \"import torch\"`",
            f"{fmt_s(cli['tiny_s'])} / {fmt_s(cli['import_torch_s'])} = {cli['ratio']:.2f}× (median of 3)"
            + (f"; exit {cli['rc']}" if cli["rc"] else ""), cli["ratio"] <= 1.3 and cli["rc"] == 0)
    title = "\n**Issue-5 targets**\n\n" if markdown else "\nIssue-5 targets\n"
    return title + render(["target", "measured", "verdict"], lines, markdown)


def verdict_of(o: dict) -> str:
    """PASS / FAIL of a run of ours, and for a failing one the worst element and the diagnosis."""
    if "time_s" not in o:
        return "—"
    if o.get("ok"):
        return "PASS"
    bad = [t for t in o.get("tensors", []) if t["status"] != "PASS"]
    where = "; ".join(f"{t['name']} {t['status']} at {t['worst_index']}" + (f" ({t['diagnosis']})" if t.get("diagnosis") else "") for t in bad)
    return f"FAIL: {where}" if where else "FAIL"


def today_cell(t: dict, notes: Notes) -> str:
    if "time_s" in t:
        calls = t.get("timing", {}).get("forward_calls")
        return fmt_s(t["time_s"]) + (f", {calls:,} fwd" if calls else "") + ("" if t.get("ok") else " (FAILED)")
    if "stopped_s" in t:
        est = t.get("estimate_s")
        if not est:
            return f"stopped at {t['stopped_s']:.0f} s"
        return f"stopped at {t['stopped_s']:.0f} s; it estimated {fmt_s(est)} " + notes.ref(
            "the code before set testing checks this tensor element by element, so the plain loop's projection is about its "
            "cost; its own estimate was far too low (its per-element timing was wrong, one of the estimate bugs of issue 17)")
    return "skipped " + notes.ref(t.get("skipped") or ("error: " + t.get("error", "?"))) if t else "—"


def real_tables(rows, notes: Notes, mem_key: str, mem_name: str, markdown: bool) -> str:
    """Issue 17: the real-size rows (ours with sets, the code before them, torch, a plain loop) and the targets."""
    head = ["layer", "N checked", "ours", "fwd calls", "path", f"ours {mem_name}", "estimate / check time", "verdict",
            "today (before sets)", "torch slow", "torch fast ⁽ᶠ⁾", "plain loop"]
    body = []
    for row in rows:
        t = row["tools"]
        o = t.get("ours", {})
        timing = o.get("timing", {})
        o_time, o_mem = tool_cell(o, notes, mem_key)
        ratio = timing.get("estimate_s", 0) / timing["check_s"] if timing.get("check_s") else None
        loop = t.get("plain_loop", {})
        loop_cell = tool_cell(loop, notes, mem_key)[0] if "time_s" in loop else (
            f"projected {fmt_s(loop['projected_s'])}" if loop.get("projected_s") else tool_cell(loop, notes, mem_key)[0] if loop else "—")
        body.append([
            layer_label(row), f"{row['n']:,}" if row.get("n") else "?", o_time, f"{timing.get('forward_calls', '—'):,}" if timing else "—",
            path_of("ours", timing) if timing else "—", o_mem,
            f"{fmt_s(timing.get('estimate_s'))} / {fmt_s(timing.get('check_s'))} = {ratio:.2f}×" if ratio else "—",
            verdict_of(o), today_cell(t.get("today", {}), notes),
            tool_cell(t["torch_slow"], notes, mem_key)[0] if "torch_slow" in t else "—",
            tool_cell(t["torch_fast"], notes, mem_key)[0] if "torch_fast" in t else "—", loop_cell,
        ])
    title = "\n**Real sizes (issue 17)**: default options; 'today' is the code before set testing\n\n" if markdown else "\nReal sizes (issue 17)\n"
    return title + render(head, body, markdown) + real_targets(rows, markdown)


def real_targets(rows, markdown: bool) -> str:
    def find(fam, size=0):
        return next((r for r in rows if r["family"] == fam and r["size"] == size), None)

    lines = []

    def add(target, measured, met):
        lines.append([target, measured, "—" if met is None else ("MET" if met else "NOT MET")])

    def ours(row):
        return row["tools"].get("ours", {}) if row else {}

    d = ours(find("dense_one_wrong"))
    if d:
        worst = next((t["worst_index"] for t in d.get("tensors", []) if t["status"] == "FAIL"), None)
        add("dense 2^20, one element 0.1% off: exit 1 with that element as the worst, < 60 s",
            f"{verdict_of(d)}; {fmt_s(d.get('time_s'))}", (not d.get("ok")) and worst == [120, 577] and d.get("time_s", 1e9) < 60)
    d = ours(find("dense"))
    if d:
        add("dense 2^20, correct: passes, < 30 s", f"{verdict_of(d)}; {fmt_s(d.get('time_s'))}", bool(d.get("ok")) and d.get("time_s", 1e9) < 30)
    g = find("gauss_long_conv", 1000)
    if g:
        o, today, slow = ours(g), g["tools"].get("today", {}), g["tools"].get("torch_slow", {})
        add("seed Gaussian (kernel = signal) N=1000: by sets below 0.5 s", f"{fmt_s(o.get('time_s'))} ({path_of('ours', o.get('timing', {}))}); "
            f"today {today_cell(today, Notes())}", o.get("time_s", 1e9) < 0.5 and bool(o.get("ok")))
        if slow.get("time_s") and o.get("time_s"):
            add("seed Gaussian N=1000: faster than torch slow mode", f"{fmt_s(slow['time_s'])} / {fmt_s(o['time_s'])} = {fmt_x(slow['time_s'] / o['time_s'])}",
                slow["time_s"] > o["time_s"])
    g = ours(find("gauss_long", 100000))
    if g:
        full = all(t["n_checked"] == t["n_elements"] for t in g.get("tensors", []))
        add("seed Gaussian (kernel = signal) N=100,000: < 60 s, full coverage", f"{verdict_of(g)}; {fmt_s(g.get('time_s'))}; "
            f"{'every element checked' if full else 'not every element checked'}", bool(g.get("ok")) and full and g.get("time_s", 1e9) < 60)
    for fam, text in (("entmax", "1.5-entmax 32×100: < 5 s"), ("scan", "selective scan 2×8192: < 5 s")):
        o = ours(find(fam))
        if o:
            add(text, f"{verdict_of(o)}; {fmt_s(o.get('time_s'))}", bool(o.get("ok")) and o.get("time_s", 1e9) < 5)
    # A failing check then bisects down to the wrong elements, which no plan can foresee: its rows are
    # shown apart (the estimate is of the check of a correct layer; the progress bar revises it).
    worst, where, failing = 0.0, "", []
    for row in rows:
        o = ours(row)
        timing = o.get("timing", {})
        if timing.get("check_s"):
            r = timing["estimate_s"] / timing["check_s"]
            off = max(r, 1 / r) if r > 0 else math.inf
            if not o.get("ok"):
                failing.append(f"{layer_label(row)} {off:.1f}×")
            elif off > worst:
                worst, where = off, layer_label(row)
    if where:
        apart = f"; rows that fail (their bisection is not foreseen): {', '.join(failing)}" if failing else ""
        add("estimate within 2× of the real check time on every row that passes", f"worst {worst:.2f}× off ({where}){apart}", worst <= 2)
    slower = []
    for row in rows:
        o, today = ours(row), row["tools"].get("today", {})
        if today.get("ok") and today.get("time_s") and o.get("time_s") and o["time_s"] > 1.1 * today["time_s"]:
            slower.append(f"{layer_label(row)} {fmt_s(today['time_s'])} → {fmt_s(o['time_s'])}")
    ran = [row for row in rows if row["tools"].get("today", {}).get("ok")]
    if ran:
        add("nothing that passes today gets slower by more than 10%", "; ".join(slower) or f"none slower ({len(ran)} rows passed today)", not slower)
    title = "\n\n**Issue-17 targets**\n\n" if markdown else "\n\nIssue-17 targets\n"
    return title + render(["target", "measured", "verdict"], lines, markdown)


def render(head, body, markdown: bool) -> str:
    if markdown:
        def esc(s):
            return str(s).replace("|", "\\|")
        return "\n".join(["| " + " | ".join(map(esc, head)) + " |", "|" + "|".join("---" for _ in head) + "|"]
                         + ["| " + " | ".join(map(esc, r)) + " |" for r in body])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    def fmt(r):
        return "  ".join(str(x).ljust(w) for x, w in zip(r, widths))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body])


def machine(args) -> str:
    import torch

    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except Exception:
        pass
    gpu = ""
    if args.device.startswith("cuda") and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; {platform.system()} {platform.machine()}, "
            f"nproc {os.cpu_count()}, CPU {cpu}{gpu}; Python {platform.python_version()}, torch {torch.__version__}; "
            f"device {args.device}, dtype {args.dtype}, torch threads {args.threads or torch.get_num_threads()}; load average {load}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced set, < 60 s (smoke test)")
    ap.add_argument("--only-real", action="store_true", help="only the real-size rows of issue 17")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--dtype", default="float64", help="float64 (default) or float32")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--json", metavar="FILE", help="also write every raw measurement as JSON")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads in the children (default 1: stable timings on shared machines; 0 = torch's default)")
    ap.add_argument("--anchor-mem-gb", type=float, default=4.0, help="skip torch slow mode when one N x M Jacobian exceeds this (GB, default 4)")
    ap.add_argument("--anchor-peak-gb", type=float, default=0.0,
                    help="skip torch slow mode when its projected peak exceeds this (GB; default half of MemAvailable)")
    ap.add_argument("--anchor-time-limit", type=float, default=120.0, help="skip torch slow mode above this projected time (s, default 120)")
    ap.add_argument("--loop-time-limit", type=float, default=900.0, help="stop the plain loop after this long (s)")
    ap.add_argument("--loop-project-limit", type=float, default=120.0,
                    help="skip the plain loop (and torch slow mode) where 2(N+P) forwards are projected above this (s, default 120)")
    ap.add_argument("--baseline", default="3f89ca8",
                    help="git ref of the code before issue 17, run as 'today' on the real-size rows ('' to skip)")
    ap.add_argument("--today-limit", type=float, default=60.0, help="stop a 'today' check after this long and report its own estimate (s)")
    ap.add_argument("--case-timeout", type=float, default=3600.0, help="kill a case's child process after this long (s)")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end CLI timings")
    ap.add_argument("--from-json", metavar="FILE", help="print the tables of a run saved with --json (runs nothing)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(json.loads(args.child))
        return 0
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            log("--device cuda: CUDA is not available here.")
            return 2
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        header, rows, cli, total = saved["machine"], saved["rows"], saved["cli"], saved["total_s"]
        args.quick = saved.get("quick", False)
    else:
        started = time.perf_counter()
        header = machine(args)
        log(f"[bench] {header}")
        rows = run_cases(args)
        cli = None
        if not args.no_cli:
            log("[bench] end-to-end CLI timings")
            cli = cli_costs(args, rows)
        total = time.perf_counter() - started
    text = tables(rows, cli, args, args.markdown)
    title = f"gradcheck benchmark{' (--quick)' if args.quick else ''}"
    if args.markdown:
        print(f"### {title}\n\n{header}; whole run {total:.0f} s.\n\n{text}")
    else:
        print(f"{title}\n{header}; whole run {total:.0f} s\n\n{text}")
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps({"machine": header, "quick": args.quick, "rows": rows, "cli": cli, "total_s": total}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
