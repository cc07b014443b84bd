"""Memory under load: does the gateway worker's RSS grow over a long run, or per connection?

The issue asks for two things that a throughput table cannot show (see bench/README.md):

- `soak`: the small route at 50 connections for N seconds. A leak (per-request state kept alive,
  an unbounded cache, a pool that never shrinks) grows RSS with the request count, so the
  worker's VmRSS is sampled every ~10 s and a least-squares slope is fitted. The load is split
  into consecutive 30 s wrk runs, each bounded like every other wrk run of the bench, and the
  samples are taken *inside* the runs (5, 15, 25 s in), never at a boundary where the 50
  connections are being closed and reopened, so every sample sees the same load.
- `stream_memory`: the streamed 1 MiB route at 10, then 100 connections. A gateway that buffered
  whole bodies would need about 1 MiB more per extra connection; a streaming one only its
  chunk and socket buffers. The reference proxy (aiohttp + uvicorn, same streaming loop) is
  measured the same way, so the gateway's number can be told apart from what the stack it is
  built on costs. The verdict uses the median of 10 Hz VmRSS samples (what the connections
  hold while streaming): one allocation burst moves the peak (VmHWM, reset right before each
  measured run) by tens of MiB from run to run, so the peak is reported beside it, not judged.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import load
from bench.load import LoadResult
from bench.procs import peak_rss_mib, reset_peak_rss, rss_mib

__all__ = ["format_soak", "format_stream_memory", "soak", "stream_memory"]

SOAK_CONNECTIONS = 50
SOAK_CHUNK_S = 30  # one wrk run; samples are taken between its start and end
SOAK_SAMPLE_EVERY_S = 10.0
# "No growth": allocator noise and lazily built caches move RSS by a few MiB at most; a leak of
# even 100 bytes per request at ~2,000 req/s is ~11 MiB/min, far over the slope limit.
GROWTH_LIMIT_MIB = 5.0
SLOPE_LIMIT_MIB_PER_MIN = 0.5

STREAM_CONNECTIONS = (10, 100)
STREAM_SAMPLE_EVERY_S = 0.1
BODY_KIB = 1024
# A buffering gateway costs >= one body (1024 KiB) per extra connection; streaming costs only
# the buffers on the path (aiohttp reader, uvicorn write buffer: tens to a few hundred KiB).
BUFFERED_LIMIT_KIB = BODY_KIB / 2


@dataclass
class RssSample:
    t_s: float  # seconds since the measured part began
    rss_mib: float


def _worker_rss(pid: int) -> float:
    try:
        mib = rss_mib(pid)
    except OSError:
        mib = 0.0
    if mib <= 0:  # gone or a zombie: a restarted worker would reset RSS and fake a clean result
        raise RuntimeError(f"server process {pid} is gone (crashed or recycled)")
    return mib


def _load_and_sample(
    url: str,
    connections: int,
    seconds: int,
    lua: Path,
    pid: int,
    offsets: list[float],
    headers: dict[str, str] | None = None,
) -> tuple[LoadResult, list[tuple[float, float]]]:
    """One wrk run; VmRSS of `pid` read at each offset (s) after wrk started: (monotonic, MiB)."""
    wrk = load.start_wrk(url, connections=connections, seconds=seconds, lua=lua, headers=headers)
    started = time.monotonic()
    samples = []
    try:
        for offset in offsets:
            time.sleep(max(0.0, started + offset - time.monotonic()))
            samples.append((time.monotonic(), _worker_rss(pid)))
    except BaseException:
        wrk.kill()
        wrk.wait()
        raise
    return load.finish_wrk(wrk, seconds), samples


def _slope_per_min(samples: list[RssSample]) -> float:
    """Least-squares slope of RSS over time, in MiB per minute (0 with fewer than 2 samples)."""
    if len(samples) < 2:
        return 0.0
    minutes = [s.t_s / 60 for s in samples]
    return statistics.linear_regression(minutes, [s.rss_mib for s in samples]).slope


def soak(url: str, pid: int, seconds: float, warmup: float, lua: Path) -> dict[str, Any]:
    """`seconds` of small-route load after `warmup` s of unsampled load; RSS trend and verdict."""
    idle = _worker_rss(pid)
    if warmup > 0:
        load.run_wrk(url, connections=SOAK_CONNECTIONS, seconds=warmup, lua=lua)
    after_warmup = _worker_rss(pid)
    total = max(1, round(seconds))
    full, rest = divmod(total, SOAK_CHUNK_S)
    chunks = [SOAK_CHUNK_S] * full + ([rest] if rest else [])
    half = SOAK_SAMPLE_EVERY_S / 2
    reset_ok = reset_peak_rss([pid])
    began = time.monotonic()
    samples: list[RssSample] = []
    runs: list[dict[str, float]] = []
    for length in chunks:
        # 5, 15, 25 s into a 30 s run: mid-load, never at a run's start or end.
        offsets = [half + k * SOAK_SAMPLE_EVERY_S for k in range(length)]
        offsets = [o for o in offsets if o < length] or [length / 2]
        result, taken = _load_and_sample(url, SOAK_CONNECTIONS, length, lua, pid, offsets)
        samples += [RssSample(round(t - began, 1), mib) for t, mib in taken]
        runs.append(
            {"requests": result.requests, "errors": result.errors, "seconds": result.seconds}
        )
        print(
            f"  soak {time.monotonic() - began:5.0f}/{total} s  RSS {taken[-1][1]:7.1f} MiB  "
            f"{result.rps:7,.0f} req/s  {result.errors} errors",
            flush=True,
        )
    start, end = samples[0].rss_mib, samples[-1].rss_mib
    peak = max(s.rss_mib for s in samples)
    if reset_ok:
        peak = max(peak, peak_rss_mib([pid]))
    slope = _slope_per_min(samples)
    grows = end - start >= GROWTH_LIMIT_MIB or slope >= SLOPE_LIMIT_MIB_PER_MIN
    requests = sum(int(r["requests"]) for r in runs)
    return {
        "connections": SOAK_CONNECTIONS,
        "warmup_s": warmup,
        "seconds": total,
        "idle_rss_mib": idle,
        "after_warmup_rss_mib": after_warmup,
        "start_rss_mib": start,
        "end_rss_mib": end,
        "peak_rss_mib": peak,
        "slope_mib_per_min": slope,
        "requests": requests,
        "errors": sum(int(r["errors"]) for r in runs),
        "rps": requests / sum(r["seconds"] for r in runs),
        "verdict": "GROWS" if grows else "no growth",
        "limits": {"end_minus_start_mib": GROWTH_LIMIT_MIB, "slope": SLOPE_LIMIT_MIB_PER_MIN},
        "samples": [asdict(s) for s in samples],
        "runs": runs,
    }


def format_soak(s: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"soak: small route, {s['connections']} connections, {s['warmup_s']:.0f} s warm-up "
            f"+ {s['seconds']} s measured, {len(s['samples'])} RSS samples",
            f"  RSS idle {s['idle_rss_mib']:.1f} MiB, "
            f"after warm-up {s['after_warmup_rss_mib']:.1f}",
            f"  RSS start {s['start_rss_mib']:.1f} MiB, end {s['end_rss_mib']:.1f}, "
            f"peak {s['peak_rss_mib']:.1f}, "
            f"end - start {s['end_rss_mib'] - s['start_rss_mib']:+.1f}",
            f"  slope {s['slope_mib_per_min']:+.3f} MiB/min (least squares over the samples)",
            f"  requests {s['requests']:,} ({s['rps']:,.0f} req/s), errors {s['errors']}",
            f"  verdict: {s['verdict']} (limits: end - start < {GROWTH_LIMIT_MIB} MiB and "
            f"slope < {SLOPE_LIMIT_MIB_PER_MIN} MiB/min)",
        ]
    )


def stream_memory(
    url: str,
    pid: int,
    seconds: float,
    warmup: float,
    lua: Path,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """RSS of one server process on the 1 MiB body at 10 and 100 connections, per extra one."""
    length = max(1, round(seconds))
    steps = int(length / STREAM_SAMPLE_EVERY_S)
    offsets = [0.5 + k * STREAM_SAMPLE_EVERY_S for k in range(steps)]
    offsets = [o for o in offsets if o < length - 0.2] or [length / 2]
    idle = _worker_rss(pid)
    runs = []
    # Ascending: memory kept by the allocator after the smaller run is part of the larger's too.
    for connections in STREAM_CONNECTIONS:
        if warmup > 0:
            load.run_wrk(url, connections=connections, seconds=warmup, lua=lua, headers=headers)
        reset_ok = reset_peak_rss([pid])
        result, taken = _load_and_sample(url, connections, length, lua, pid, offsets, headers)
        sampled = [mib for _, mib in taken]
        peak = max([*sampled, peak_rss_mib([pid])] if reset_ok else sampled)
        runs.append(
            {
                "connections": connections,
                "peak_rss_mib": peak,
                "median_rss_mib": statistics.median(sampled),
                "requests": result.requests,
                "errors": result.errors,
                "rps": result.rps,
                "bytes_per_response": result.bytes / result.requests if result.requests else 0,
            }
        )
        print(
            f"  1 MiB body c{connections:<3} peak RSS {peak:7.1f} MiB, "
            f"median {runs[-1]['median_rss_mib']:7.1f}, {result.rps:6,.0f} req/s, "
            f"{result.errors} errors",
            flush=True,
        )
    low, high = runs[0], runs[-1]
    extra = high["connections"] - low["connections"]
    per_conn_peak = (high["peak_rss_mib"] - low["peak_rss_mib"]) * 1024 / extra
    per_conn_median = (high["median_rss_mib"] - low["median_rss_mib"]) * 1024 / extra
    buffers = per_conn_median >= BUFFERED_LIMIT_KIB
    return {
        "idle_rss_mib": idle,
        "seconds": length,
        "warmup_s": warmup,
        "runs": runs,
        "per_connection_kib_peak": per_conn_peak,
        "per_connection_kib_median": per_conn_median,
        "verdict": "TOO HIGH (>= half a body per connection)" if buffers else "streams",
    }


def format_stream_memory(name: str, s: dict[str, Any]) -> str:
    low, high = s["runs"][0], s["runs"][-1]
    return "\n".join(
        [
            f"stream memory, {name}: 1 MiB body, {s['seconds']} s per run, idle RSS "
            f"{s['idle_rss_mib']:.1f} MiB",
            *(
                f"  c{r['connections']:<4} peak {r['peak_rss_mib']:7.1f} MiB  median "
                f"{r['median_rss_mib']:7.1f} MiB  {r['rps']:6,.0f} req/s  "
                f"{r['bytes_per_response'] / 1024:,.0f} KiB/response  {r['errors']} errors"
                for r in s["runs"]
            ),
            f"  RSS per extra connection (c{high['connections']} - c{low['connections']}): "
            f"{s['per_connection_kib_peak']:.0f} KiB by peak, "
            f"{s['per_connection_kib_median']:.0f} KiB by median "
            f"(whole bodies buffered: >= {BODY_KIB} KiB)",
            f"  verdict: {s['verdict']} ('streams' needs < {BUFFERED_LIMIT_KIB:.0f} KiB by median)",
        ]
    )
